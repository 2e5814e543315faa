"""The lock-order checker: the order framework-visible locks are taken in, and the cycle that closes it.

In the spirit of illumos' lock order assertions, FreeBSD's witness(4) and Linux's
lockdep. On wherever the debug heap's reference audit is on (``Kmem(audit=True)``,
``kstatd --kmem-audit``, the test plugin): ``kmem.witness`` is a :class:`Witness`.

Locks it sees, by *class* (as lockdep: one node per kind of lock, not per instance)
    ``hold MODULE:*:NAME``
        a kstat's hold (``kstat_hold_*``, a read, ``kstat_install``, and the hold
        ``kstat_delete`` waits for); every instance of a kstat name is one class.
    ``mutex NAME``
        a :class:`kstatpy.KMutex`: its ``name``, else the site that built it
        (``module:function:line``). A KMutex is known from ``kstat_install`` (as a
        ``ks_lock``) or from the first time a thread the chain has seen takes it.
    ``ks_lock MODULE:*:NAME``, ``kstat_chain_lock``
        a ``ks_lock`` that is no KMutex, taken by the read path; KID 0's is the chain
        lock, which is also checked (never held) at ``kstat_create``.

Rules
    Each thread keeps the locks it holds (:class:`ThreadState`, curthread's). Taking
    lock B while holding A records the edge A -> B with the stack, thread and call
    where it was *first* seen. A new edge that closes a cycle (B already reaches A) is
    a :class:`LockOrderViolation` raised at once, before the thread blocks, even when
    no other thread runs: the deadlock of illumos 8149 is caught the first time its
    two orders have both happened. The edge is not recorded. Try-locks make no edge;
    nesting two instances of one class is not checked (lockdep's nesting).

Cost
    An acquisition costs a lookup per lock already held (a set of known edges); the
    graph is searched only on a new edge. Neither depends on the chain's size or the
    number of lock instances. Measured in BENCHMARKS.md ("The lock-order checker").

Locking
    ``Witness._lock`` guards the graph; it is taken under the chain lock (never the
    reverse) and nothing else is taken under it.

The same per-thread state carries the controlled scheduler of the race harness
(``ThreadState.sched``, :mod:`kstatpy.testing.schedule`): the framework's
synchronisation points call it when it is set.

Size
    Over 400 lines on purpose: the graph and the acquisition paths that feed it
    (KMutex, ks_lock, the synchronisation points) share the per-thread held-lock
    state, whose contract (who pushes, who pops, when) is easiest to check in one file.
"""

from __future__ import annotations

import threading

from kstatpy.kmem import BadTrap
from kstatpy.kmem import _stack
from kstatpy.kmem import kmem_addr

TYPE_CHECKING = False  # not typing's: the embedded kstat's start-up never imports typing
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "Edge",
    "LockClass",
    "LockOrderViolation",
    "ThreadState",
    "Witness",
    "curthread",
    "kstat_label",
    "lock_enter",
    "lock_exit",
    "mutex_enter",
    "mutex_exit",
    "sync_point",
    "thread_state",
]


#: curthread's lock state (illumos keeps it in kthread_t): ``.st`` is the thread's
#: :class:`ThreadState`, absent for a thread no checker or scheduler has touched.
class _CurThread(threading.local):
    st: ThreadState | None = None  # a class default: reading it never raises (a getattr default would, slowly)


curthread = _CurThread()

#: Frames kept of the stack where an edge was first seen.
EDGE_STACK_DEPTH = 12


class ThreadState:
    """One thread's locks held (for the checker) and its controlled scheduler, if any."""

    __slots__ = ("held", "sched", "witness")

    def __init__(self) -> None:
        self.held: list[list[Any]] = []  # [witness, LockClass, lock object, why], oldest first
        self.sched: Any = None  # kstatpy.testing.schedule's scheduler of this thread
        self.witness: Witness | None = None  # the checker of the chain this thread used


def thread_state(create: bool = False) -> ThreadState | None:
    """The calling thread's :class:`ThreadState` (made when ``create``)."""
    st = curthread.st
    if st is None and create:
        st = curthread.st = ThreadState()
    return st


def kstat_label(ksp: Any) -> str:
    """``module:instance:name`` of a live kstat."""
    return f"{ksp.ks_module}:{ksp.ks_instance}:{ksp.ks_name}"


class LockClass:
    """One node of the order graph: ``kind`` (hold, mutex, ks_lock, chain) and ``name``."""

    __slots__ = ("id", "kind", "name")

    def __init__(self, id: int, kind: str, name: str) -> None:
        self.id = id
        self.kind = kind
        self.name = name

    def __repr__(self) -> str:
        return f"<LockClass {self.name}>"


class Edge:
    """A -> B, as first seen: ``held`` (the A instance), ``what`` (the call taking B),
    the thread (id and name), the stack (innermost first) and ``kstat`` (the address of
    the kstat involved, 0 for none)."""

    __slots__ = ("a", "b", "held", "kstat", "stack", "thread", "thread_name", "what")

    def __init__(self, a: LockClass, b: LockClass, held: str, what: str, stack: tuple[str, ...], kstat: int) -> None:
        self.a = a
        self.b = b
        self.held = held
        self.what = what
        self.stack = stack
        self.kstat = kstat
        t = threading.current_thread()
        self.thread = threading.get_ident()
        self.thread_name = t.name

    def as_json(self) -> dict[str, Any]:
        """The crash dump's record of this edge (docs/KMEM.md §7)."""
        return {
            "from": self.a.name,
            "to": self.b.name,
            "held": self.held,
            "what": self.what,
            "thread": self.thread,
            "thread_name": self.thread_name,
            "kstat": self.kstat,
            "stack": list(self.stack),
        }


class LockOrderViolation(BadTrap):
    """A lock order that closes a cycle: a deadlock waiting for its second thread.

    A :class:`~kstatpy.kmem.BadTrap`, so every host treats it as a panic (kstatd's
    report and crash dump, the harness's failure). ``cycle`` lists the edges, the new
    one first (its stack is the current one), then the recorded path back to its
    start; ``ksp`` is the kstat of the closing call, when there is one.
    """

    def __init__(self, cycle: list[Edge], ksp: Any) -> None:
        new = cycle[0]
        addr = kmem_addr(ksp)
        buf = object.__getattribute__(ksp, "_kmem_buf") if addr else None
        super().__init__(addr, buf, f"lock order reversal: {new.what} while holding {new.held}")
        self.cycle = cycle
        self.ksp = ksp
        self.args = (f"deadlock: {self.what} (a cycle of {len(cycle)} lock classes)",)


class Witness:
    """The order graph of one chain's locks (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _classes' inserts, _edges, _succ
        self._classes: dict[Any, LockClass] = {}
        self._edges: dict[tuple[int, int], Edge] = {}  # read without the lock: a dict lookup is atomic
        self._succ: dict[int, list[LockClass]] = {}
        self.chain_class = self._class(("chain",), "chain", "kstat_chain_lock")

    # --- classes ---------------------------------------------------------------

    def _class(self, key: Any, kind: str, name: str) -> LockClass:
        cls = self._classes.get(key)
        if cls is None:
            with self._lock:
                cls = self._classes.get(key)
                if cls is None:
                    cls = self._classes[key] = LockClass(len(self._classes), kind, name)
        return cls

    def hold_class(self, ksp: Any) -> LockClass:
        """The class of ``ksp``'s hold: ``hold MODULE:*:NAME``."""
        key = ("hold", ksp.ks_module, ksp.ks_name)
        cls = self._classes.get(key)
        return cls if cls is not None else self._class(key, "hold", f"hold {ksp.ks_module}:*:{ksp.ks_name}")

    def mutex_class(self, m: Any) -> LockClass:
        """The class of KMutex ``m``: its name, else where it was built."""
        key = ("mutex", m.name or m._site)
        cls = self._classes.get(key)
        if cls is None:
            site = m._site
            cls = self._class(key, "mutex", f"mutex {m.name or f'{site[0]}:{site[1]}:{site[2]}'}")
        return cls

    def lock_class(self, lock: Any, ksp: Any, chain_lock: Any) -> LockClass:
        """The class of a ks_lock that is no KMutex (the chain lock is ``kstat_chain_lock``)."""
        if lock is chain_lock:
            return self.chain_class
        key = ("ks_lock", ksp.ks_module, ksp.ks_name)
        cls = self._classes.get(key)
        return cls if cls is not None else self._class(key, "ks_lock", f"ks_lock {ksp.ks_module}:*:{ksp.ks_name}")

    # --- acquisitions ----------------------------------------------------------

    def check(self, cls: LockClass, why: str, ksp: Any = None, obj: Any = None) -> None:
        """About to take a lock of ``cls`` (``obj``): record edges from every lock held.

        ``why`` names the call (``read``, ``kstat_delete``, ``mutex_enter``, ``ks_lock``,
        or a full call text); the report's text is made only for a new edge.
        :raises LockOrderViolation: a new edge closes a cycle.
        """
        st = curthread.st
        if st is None or not st.held:
            return
        edges = self._edges
        for entry in st.held:
            a = entry[1]
            if entry[0] is self and a is not cls and entry[2] is not obj and (a.id, cls.id) not in edges:
                self._new_edge(entry, cls, why, ksp)

    def _new_edge(self, entry: list[Any], b: LockClass, why: str, ksp: Any) -> None:
        a = entry[1]
        what = _call_text(b, why, ksp)
        with self._lock:
            if (a.id, b.id) in self._edges:
                return
            edge = Edge(a, b, _held_text(entry), what, _stack(4, EDGE_STACK_DEPTH), kmem_addr(ksp))
            path = self._path(b, a)
            if path is None:
                self._edges[(a.id, b.id)] = edge
                self._succ.setdefault(a.id, []).append(b)
                return
        raise LockOrderViolation([edge, *path], ksp)

    def _path(self, start: LockClass, goal: LockClass) -> list[Edge] | None:
        # The recorded edges from start to goal (breadth first: the shortest), or None.
        # Under _lock.
        back: dict[int, Edge | None] = {start.id: None}
        frontier = [start]
        while frontier:
            nxt = []
            for node in frontier:
                for succ in self._succ.get(node.id, ()):
                    if succ.id in back:
                        continue
                    back[succ.id] = self._edges[(node.id, succ.id)]
                    if succ is goal:
                        path = []
                        at: Edge | None = back[goal.id]
                        while at is not None:
                            path.append(at)
                            at = back[at.a.id]
                        return path[::-1]
                    nxt.append(succ)
            frontier = nxt
        return None

    def push(self, cls: LockClass, obj: Any, why: Any) -> None:
        """``obj`` (of ``cls``) is now held by the calling thread (``why``: as :meth:`check`, or the kstat of a ks_lock)."""
        st = curthread.st
        if st is None:
            st = curthread.st = ThreadState()
        st.witness = self  # the chain this thread works for now
        st.held.append([self, cls, obj, why])

    def pop(self, obj: Any) -> None:
        """``obj`` is released by the calling thread (unknown: ignored)."""
        st = curthread.st
        if st is None:
            return
        held = st.held
        for i in range(len(held) - 1, -1, -1):
            if held[i][2] is obj:
                del held[i]
                return

    def bind_thread(self) -> None:
        """The calling thread works for this chain: KMutexes it takes are checked."""
        st = thread_state(create=True)
        assert st is not None
        st.witness = self

    def edges(self) -> list[Edge]:
        """Every edge recorded, in the order first seen."""
        with self._lock:
            return list(self._edges.values())


def _call_text(b: LockClass, why: str, ksp: Any) -> str:
    # The call that takes a lock of class b, for a report (made only for a new edge).
    if b.kind == "hold":
        return f"hold of {kstat_label(ksp)}" if why == "kstat_hold" else f"{why}({kstat_label(ksp)})"
    if b.kind == "mutex":
        return f"mutex_enter({b.name[6:]})"
    if why == "ks_lock" and ksp is not None:
        return f"ks_lock of {kstat_label(ksp)}"
    return why


def _held_text(entry: list[Any]) -> str:
    # What a held-lock entry is, for a report.
    cls, obj, why = entry[1], entry[2], entry[3]
    if cls.kind == "hold":
        return f"hold of {kstat_label(obj)} ({why})"
    if cls.kind == "ks_lock" and why is not None:
        return f"ks_lock of {kstat_label(why)}"
    return cls.name


def _mutex_label(m: Any, w: Witness | None) -> str:
    return w.mutex_class(m).name if w is not None else f"mutex {m.name or m._site}"


def mutex_enter(m: Any, blocking: bool, timeout: float) -> bool:
    """KMutex.acquire when a checker or a scheduler watches (the slow path)."""
    st = curthread.st
    w = m._witness
    if w is None and st is not None and st.witness is not None:
        w = m._witness = st.witness
    cls = None
    if w is not None:
        cls = m._lclass
        if cls is None or cls[0] is not w:
            cls = m._lclass = (w, w.mutex_class(m))
        cls = cls[1]
        if blocking:
            w.check(cls, "mutex_enter", None, m)
    sched = st.sched if st is not None else None
    if sched is not None:
        sched.point(f"mutex_enter {_mutex_label(m, w)}")
        got = m._lock.acquire(False)
        while not got and blocking:
            sched.block(f"mutex_enter {_mutex_label(m, w)}", m._owner)
            got = m._lock.acquire(False)
    else:
        got = m._lock.acquire(blocking, timeout)
    if got:
        m._owner = threading.get_ident()
        if cls is not None and w is not None:
            w.push(cls, m, None)
    return got


def mutex_exit(m: Any) -> None:
    """KMutex.release when a checker or a scheduler watches."""
    w = m._witness
    if w is not None:
        w.pop(m)
    m._owner = None
    m._lock.release()
    st = curthread.st
    if st is not None and st.sched is not None:
        st.sched.released(f"mutex_exit {_mutex_label(m, w)}")


def lock_enter(chain: Any, lock: Any, ksp: Any) -> None:
    """The read path takes ``ks_lock`` (checked, scheduled; a KMutex checks itself)."""
    if hasattr(lock, "_witness"):  # a KMutex
        lock.acquire()
        return
    w = chain.witness
    cls = None
    if w is not None:
        cls = w.lock_class(lock, ksp, chain.lock)
        w.check(cls, "ks_lock", ksp, lock)
    st = curthread.st
    sched = st.sched if st is not None else None
    if sched is not None:
        sched.point(f"ks_lock of {kstat_label(ksp)}")
        while not lock.acquire(False):
            sched.block(f"ks_lock of {kstat_label(ksp)}", None)
    else:
        lock.acquire()
    if cls is not None and w is not None:
        w.push(cls, lock, ksp)


def lock_exit(chain: Any, lock: Any) -> None:
    """The read path releases ``ks_lock``."""
    if hasattr(lock, "_witness"):
        lock.release()
        return
    w = chain.witness
    if w is not None:
        w.pop(lock)
    lock.release()
    st = curthread.st
    if st is not None and st.sched is not None:
        st.sched.released("ks_lock release")


def sync_point(what: str, witness: Witness | None = None) -> None:
    """A synchronisation point with no lock (kmem_free, a provider ioctl's entry).

    Binds the thread to ``witness`` (so KMutexes it takes are checked) and lets a
    controlled scheduler switch threads here.
    """
    st = curthread.st
    if witness is not None:
        if st is None:
            st = thread_state(create=True)
        assert st is not None
        st.witness = witness
    if st is not None and st.sched is not None:
        st.sched.point(what)
