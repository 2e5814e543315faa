"""The debug heap: kernel-like allocations whose use after free traps at once.

Contract (docs/KMEM.md §1-§3):

* ``kmem.zalloc(cls, *args)`` builds a :class:`KmemObject` and gives it a stable
  fake kernel address, a size, its type name and the allocating stack.
* ``kmem.free(obj)`` poisons the object in place: any later attribute read or
  write through any old reference raises :class:`BadTrap`. A second free of the
  same buffer is a :class:`BadTrap` too. Live objects pay nothing: poisoning swaps
  the object's class for a trapping subclass, so attribute access on a live object
  is plain Python.
* ``kmem.whatis(addr)`` answers as mdb's ``::whatis``: which buffer holds the
  address, allocated or freed, and by whom.
* ``Kmem(audit=True)`` adds the reference audit (``kstatpy.kmem_audit``): a
  ``free`` of a buffer that a live kstat still points into (``ks_private``,
  ``ks_lock``, ``ks_data``) raises :class:`FreeWhileReferenced` at the free itself,
  and the buffer stays allocated.

Addresses are never reused, so a stale pointer always names the buffer it came
from. Over 400 lines on purpose: the heap, its compact buffer record and the
poisoning are one concept and share private helpers. Locking: one internal lock guards the buffer table; ``zalloc``/``free`` are
safe from any thread.
"""

from __future__ import annotations

import bisect
import sys
import threading
import time
from collections import deque

TYPE_CHECKING = False  # not typing's: the embedded kstat's start-up never imports typing
if TYPE_CHECKING:
    from typing import Any
    from typing import TypeVar

    _T = TypeVar("_T", bound="KmemObject")

__all__ = [
    "BadTrap",
    "FreeWhileReferenced",
    "Kmem",
    "KmemBuf",
    "KmemObject",
    "frame_symbol",
    "kmem_addr",
    "kmem_alloc_time",
    "whatis_text",
]

#: Where the fake heap starts (the "0xfffffe..." kernel heap range of the seed bug).
HEAP_BASE = 0xFFFFFE8BF4800000
# Buffers start on page boundaries; the table is keyed by page number, because
# page-aligned addresses make poor dict keys (all share their low bits).
PAGESHIFT = 12
PAGEOFFSET = (1 << PAGESHIFT) - 1
#: Bytes of bookkeeping kept for freed buffers (``::whatis`` history, ``kstatd
#: --kmem-history``); the oldest age out past it (their objects still trap).
FREED_HISTORY_BYTES = 1 << 20

# Python module prefixes and the illumos module each stands for in a stack trace.
_KMODULE = {
    "kstatpy.chain": "genunix",
    "kstatpy.kstat": "genunix",
    "kstatpy.records": "genunix",
    "kstatpy.headers": "genunix",
    "kstatpy.kmem": "genunix",
    "kstatpy.handles": "genunix",
    "kstatpy.idspace": "genunix",
    "kstatpy.server": "kstat",
    "kstatpy.ioctl": "kstat",
    "kstatpy.driver": "kstat",
    "kstatpy.instance": "genunix",
    "kstatpy.kmem_audit": "genunix",
    "kstatpy.lockorder": "genunix",
    "kstatpy.deadman": "genunix",
    "kstatpy.plugins": "genunix",
}


def frame_symbol(frame: Any) -> str:
    """``module:function+0xOFF`` for a Python frame, as an illumos stack line names it."""
    modname = frame.f_globals.get("__name__", "?")
    kmod = _KMODULE.get(modname)
    if kmod is None:
        parts = modname.split(".")
        kmod = parts[1] if parts[0] == "kstatpy_providers" and len(parts) > 1 else parts[-1]
    return f"{kmod}:{frame.f_code.co_name}+0x{frame.f_lasti:x}"


# Every distinct stack once: buffers allocated from the same call site share one
# tuple (and its strings), so a kstat's record costs a pointer, not ~400 bytes of
# symbols. Grows with the number of distinct call paths only; dict.setdefault is
# atomic under the GIL, so no lock.
_stacks: dict[tuple[str, ...], tuple[str, ...]] = {}
# Likewise thread idents (one int object per thread, not per buffer).
_threads: dict[int, int] = {}


def _stack(skip: int, depth: int = 8) -> tuple[str, ...]:
    frame: Any = sys._getframe(skip)
    out: list[str] = []
    while frame is not None and len(out) < depth:
        if not frame.f_globals.get("__name__", "").startswith("pluggy"):  # hook plumbing says nothing
            out.append(frame_symbol(frame))
        frame = frame.f_back
    stack = tuple(out)
    return _stacks.setdefault(stack, stack)


def _thread() -> int:
    ident = threading.get_ident()
    return _threads.setdefault(ident, ident)


_NO_FREE = ((), 0, 0)


class KmemBuf:
    """One allocation: the bookkeeping ``::whatis`` and the panic report print.

    Compact (one per kstat and per heap object): slots only; the stacks are shared
    tuples (``_stack``); the cache name is derived from the size; the free record
    (``free_stack``, ``free_time``, ``free_thread``) is one tuple, set at the free.
    """

    __slots__ = ("_free", "addr", "alloc_stack", "alloc_time", "audit", "size", "thread", "type_name")

    def __init__(
        self,
        addr: int,
        size: int,
        type_name: str,
        alloc_stack: tuple[str, ...],
        alloc_time: int,
        thread: int,
        freed: bool = False,
        free_stack: tuple[str, ...] = (),
        free_time: int = 0,
        free_thread: int = 0,
        cache: str = "",
        audit: Any = None,
    ) -> None:
        del cache  # a crash dump's record names it; it is always derived from size
        self.addr = addr
        self.size = size
        self.type_name = sys.intern(type_name)
        self.alloc_stack = alloc_stack
        self.alloc_time = alloc_time
        self.thread = thread
        self.audit = audit  # the heap's kstatpy.kmem_audit.RefIndex, for a holder it audits
        self._free: tuple[tuple[str, ...], int, int] | None = (free_stack, free_time, free_thread) if freed else None

    def __repr__(self) -> str:
        state = "freed" if self.freed else "allocated"
        return f"<KmemBuf 0x{self.addr:x} {self.type_name} size={self.size} {state}>"

    @property
    def cache(self) -> str:
        """The kmem cache: ``kmem_alloc_<size rounded up to a power of two>``."""
        return _cache_name(self.size)

    @property
    def freed(self) -> bool:
        return self._free is not None

    @property
    def free_stack(self) -> tuple[str, ...]:
        return (self._free or _NO_FREE)[0]

    @property
    def free_time(self) -> int:
        return (self._free or _NO_FREE)[1]

    @property
    def free_thread(self) -> int:
        return (self._free or _NO_FREE)[2]

    def mark_freed(self, stack: tuple[str, ...], when: int, thread: int) -> None:
        """Record the free (the heap's lock held)."""
        self._free = (stack, when, thread)


class BadTrap(Exception):
    """A fault on kernel memory: a freed buffer was touched, or freed twice.

    illumos answers this with a panic; ``kstatpy.panic`` turns it into the report.
    ``addr`` is the faulting address, ``buf`` the buffer it lies in, ``what`` the
    access (``read ks_private``, ``double free``), ``ksp`` the kstat being read
    when the trap happened (set by the read path).
    """

    def __init__(self, addr: int, buf: KmemBuf | None, what: str) -> None:
        self.addr = addr
        self.buf = buf
        self.what = what
        self.ksp: Any = None
        super().__init__(f"BAD TRAP: {what} at addr=0x{addr:x}")


class FreeWhileReferenced(BadTrap):
    """The reference audit's trap: ``kmem_free`` of a buffer live kstats still point into.

    ``refs`` lists each pointer (:class:`kstatpy.kmem_audit.AuditRef`: the kstat and
    the field); ``free_stack`` is the stack of the refused free (innermost first);
    each kstat's own buffer records its creation stack. The buffer was not freed.
    """

    def __init__(self, buf: KmemBuf, refs: list[Any], free_stack: tuple[str, ...]) -> None:
        holders = {id(r.holder) for r in refs}
        super().__init__(buf.addr, buf, f"kmem_free while {len(holders)} kstat(s) point into it")
        self.refs = refs
        self.free_stack = free_stack


def _field_offset(obj: Any, name: str) -> int:
    # A stable pseudo-offset of a field inside its buffer, 8 bytes a field.
    names = [n for c in type(obj).__mro__ for n in getattr(c, "__slots__", ())]
    try:
        return 8 * names.index(name)
    except ValueError:
        return 8 * (sum(map(ord, name)) % 64)


def _trap_getattribute(self: Any, name: str) -> Any:
    if name == "__class__":
        return object.__getattribute__(self, name)
    buf = object.__getattribute__(self, "_kmem_buf")
    raise BadTrap(buf.addr + _field_offset(self, name), buf, f"read {name}")


def _trap_setattr(self: Any, name: str, value: Any) -> None:
    buf = object.__getattribute__(self, "_kmem_buf")
    raise BadTrap(buf.addr + _field_offset(self, name), buf, f"write {name}")


def _trap_delattr(self: Any, name: str) -> None:
    _trap_setattr(self, name, None)


class KmemObject:
    """Base of every object that lives on the debug heap.

    Subclasses may use ``__slots__`` or a ``__dict__``; ``_kmem_buf`` is set by
    :meth:`Kmem.zalloc` and is ``None`` for an object built outside the heap.
    """

    __slots__ = ("__weakref__", "_kmem_buf")
    #: Size reported by ``::whatis``; subclasses set their C analogue's size.
    kmem_size = 64
    #: Fields the reference audit checks at every free (a holder's pointers); none here.
    kmem_audit_refs: tuple[str, ...] = ()
    #: Extra fields embedded in the buffer, for the audit (containers and locks always are).
    kmem_embedded: tuple[str, ...] = ()
    #: When set, exactly the fields embedded in the buffer, for the audit (overrides the above).
    kmem_extent: tuple[str, ...] | None = None

    @property
    def kmem_addr(self) -> int:
        """The fake kernel address of this object (0 when not on the heap)."""
        buf = _buf_of(self)
        return buf.addr if buf is not None else 0


def _buf_of(obj: object) -> KmemBuf | None:
    # The object's buffer record, read without going through a poisoned class.
    try:
        return object.__getattribute__(obj, "_kmem_buf")
    except (AttributeError, TypeError):
        return None


def kmem_alloc_time(obj: object) -> int:
    """When ``obj`` was allocated (ns, ``time.monotonic_ns``); 0 off the heap."""
    buf = _buf_of(obj)
    return buf.alloc_time if buf is not None else 0


def kmem_addr(obj: object) -> int:
    """The fake kernel address of ``obj``, read without touching a poisoned class; 0 off the heap."""
    buf = _buf_of(obj)
    return buf.addr if buf is not None else 0


_poisoned_classes: dict[type, type] = {}
_poisoned_lock = threading.Lock()


def _poisoned(cls: type) -> type:
    # One trapping subclass per class, made once; "__slots__ = ()" keeps the
    # layout identical so "obj.__class__ = poisoned" is allowed.
    with _poisoned_lock:
        pcls = _poisoned_classes.get(cls)
        if pcls is None:
            pcls = type(
                f"freed {cls.__name__}",
                (cls,),
                {
                    "__slots__": (),
                    "__getattribute__": _trap_getattribute,
                    "__setattr__": _trap_setattr,
                    "__delattr__": _trap_delattr,
                    "__module__": cls.__module__,
                },
            )
            _poisoned_classes[cls] = pcls
        return pcls


class Kmem:
    """A debug heap. One per chain (``chain.kmem``); never a module global."""

    def __init__(
        self,
        base: int = HEAP_BASE,
        history_bytes: int = FREED_HISTORY_BYTES,
        audit: bool = False,
        lockorder: bool | None = None,
    ) -> None:
        self._lock = threading.Lock()  # guards _bufs, _freed, _freed_bytes, _base
        self._bufs: dict[int, KmemBuf] = {}
        self._freed: deque[tuple[int, int]] = deque()  # (page, bytes charged), oldest first
        self._freed_bytes = 0
        #: Bound of the freed-buffer history in bytes (set before use, or at any time).
        self.history_bytes = history_bytes
        self._base = base
        #: The reference audit is on (``kstatd --kmem-audit``); fixed at construction.
        self.audit = audit
        self._refs: Any = None  # the audit's RefIndex (own lock): who points where
        if audit:
            from kstatpy.kmem_audit import RefIndex

            self._refs = RefIndex()
        #: The lock-order checker (``kstatpy.lockorder.Witness``): on with the audit
        #: unless ``lockorder=False`` (the benchmark's baseline); None when off.
        self.witness: Any = None
        if audit if lockorder is None else lockorder:
            from kstatpy.lockorder import Witness

            self.witness = Witness()
        #: Called with "kmem_free" at each free when set (the race harness's scheduler).
        self.sync: Any = None

    def zalloc(self, cls: type[_T], *args: Any, size: int | None = None, **kwargs: Any) -> _T:
        """kmem_zalloc(9F): build ``cls(*args, **kwargs)`` on the heap."""
        obj = cls(*args, **kwargs)
        nbytes = size if size is not None else cls.kmem_size
        rounded = (max(nbytes, 8) + PAGEOFFSET) & ~PAGEOFFSET  # page-spaced, so offsets read well
        with self._lock:
            addr = self._base
            self._base += rounded
            buf = KmemBuf(
                addr=addr,
                size=nbytes,
                type_name=cls.__name__,
                alloc_stack=_stack(2),
                alloc_time=time.monotonic_ns(),
                thread=_thread(),
            )
            self._bufs[addr >> PAGESHIFT] = buf
        object.__setattr__(obj, "_kmem_buf", buf)
        if self._refs is not None and cls.kmem_audit_refs:
            buf.audit = self._refs
            self._refs.track(obj, addr)
        return obj

    def free(self, obj: KmemObject) -> None:
        """kmem_free(9F): poison ``obj``; a second free traps.

        :raises BadTrap: double free.
        :raises FreeWhileReferenced: (audit on) a live kstat still points into
            ``obj``; nothing is freed.
        """
        if self.sync is not None:
            self.sync("kmem_free")
        buf = _buf_of(obj)
        if buf is None:
            raise ValueError(f"kmem_free: {obj!r} was not allocated from this heap")
        if self._refs is not None and not buf.freed:
            self._audit_free(obj, buf)
        with self._lock:
            if buf.freed:
                raise BadTrap(buf.addr, buf, "double free")
            if buf.audit is not None:  # a holder leaves the index before it is poisoned
                buf.audit.untrack(buf.addr)
            buf.mark_freed(_stack(2), time.monotonic_ns(), _thread())
            cost = _record_bytes(buf)
            self._freed.append((buf.addr >> PAGESHIFT, cost))
            self._freed_bytes += cost
            while self._freed and self._freed_bytes > self.history_bytes:
                page, old = self._freed.popleft()
                self._freed_bytes -= old
                self._bufs.pop(page, None)
        obj.__class__ = _poisoned(type(obj))

    def _audit_free(self, obj: KmemObject, buf: KmemBuf) -> None:
        # The reference audit (kstatpy.kmem_audit); obj is still live here.
        from kstatpy.kmem_audit import buffer_extent

        refs = self._refs.find(buffer_extent(obj, lambda v: isinstance(v, KmemObject)), buf.addr)
        if refs:
            raise FreeWhileReferenced(buf, refs, _stack(3, depth=12))

    def buffers(self) -> list[KmemBuf]:
        """Every buffer the heap remembers (live, and the freed history), by address."""
        with self._lock:
            return sorted(self._bufs.values(), key=lambda b: b.addr)

    def is_freed(self, obj: KmemObject) -> bool:
        """True once ``obj`` was freed (does not trap)."""
        buf = _buf_of(obj)
        return buf is not None and buf.freed

    def lookup(self, addr: int) -> KmemBuf | None:
        """The buffer that holds ``addr``, live or remembered freed, else None."""
        with self._lock:
            buf = self._bufs.get(addr >> PAGESHIFT)
            if buf is None:
                pages = sorted(self._bufs)
                i = bisect.bisect_right(pages, addr >> PAGESHIFT) - 1
                buf = self._bufs.get(pages[i]) if i >= 0 else None
        if buf is not None and buf.addr <= addr < buf.addr + max(buf.size, 1):
            return buf
        return None

    def whatis(self, addr: int) -> str:
        """mdb ``::whatis``: where ``addr`` lies, allocated or freed, and by whom."""
        return whatis_text(addr, self.lookup(addr))


def whatis_text(addr: int, buf: KmemBuf | None) -> str:
    """The text of ``::whatis`` for ``addr`` lying in ``buf`` (None: not in the heap)."""
    if buf is None:
        return f"{addr:x} is not in the kmem heap"
    state = "freed from" if buf.freed else "allocated from"
    head = f"{addr:x} is {buf.addr:x}+{addr - buf.addr:x}, {state} {buf.cache} ({buf.type_name}):"
    stack = buf.free_stack if buf.freed else buf.alloc_stack
    thread = buf.free_thread if buf.freed else buf.thread
    when = buf.free_time if buf.freed else buf.alloc_time
    lines = [
        head,
        "            ADDR TYPE            START              END             SIZE",
        "                                THREAD        TIMESTAMP",
        f"{buf.addr:16x} {'FREE' if buf.freed else 'ALLC'} {buf.addr:16x} {buf.addr + buf.size:16x} {buf.size:16d}",
        f"{'':16s} {thread:21x} {when:16x}",
    ]
    lines += [f"                 {sym}" for sym in stack]
    return "\n".join(lines)


def _record_bytes(buf: KmemBuf) -> int:
    # What remembering a freed buffer costs: its record and its two stacks (counted as
    # if owned, though shared stacks are not: the bound stays conservative).
    size = sys.getsizeof(buf) + sys.getsizeof(buf._free)
    for stack in (buf.alloc_stack, buf.free_stack):
        size += sys.getsizeof(stack) + sum(map(sys.getsizeof, stack))
    return size


def _cache_name(nbytes: int) -> str:
    # "kmem_alloc_<power of two>", one string object per cache.
    return sys.intern(f"kmem_alloc_{_cache_size(nbytes)}")


def _cache_size(nbytes: int) -> int:
    size = 8
    while size < nbytes:
        size *= 2
    return size
