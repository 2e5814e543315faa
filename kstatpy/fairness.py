"""kstatd's fair sharing of CPU and reply memory between users (issue 21, RELIABILITY.md).

:class:`FairGate`
    Expensive requests (SELECT, READ_MANY, DESCRIBE) of users other than root and
    kstatd's own take turns: at most ``slots`` run at once, and a waiting request is
    admitted round-robin by uid, so one user's 64 connections get one turn in each round
    like everyone else's single one. Root's and kstatd's own requests do not queue (they
    are not limited; a privileged caller only competes with at most ``slots`` others).
    Held from the start of the dispatch to the end of the reply's encoding, never while
    a reply waits for its reader (a reply in pieces holds it while each piece is made,
    and gives it up while the piece is sent: docs/PROTOCOL.md §9.8).

:class:`ReplyBudget`
    Bytes of encoded replies waiting for a reader that does not read (the socket buffer
    full), by uid: a reply that would take a uid past ``per_uid`` or all users past
    ``total`` is not kept; its connection is closed instead. A user who does not read
    costs their own connections, never the daemon's memory. Root's and kstatd's uid's
    replies are neither limited nor counted in the others' total.

:class:`PrivFirst`
    Privileged requests first: while any request on a privileged socket (root's, a zone
    admin's; :mod:`kstatpy.listener`) is in flight, the other work that opts in (the
    public accept loop; every request and hang-up of public connections, and inside
    their expensive requests: SELECT's compiles and reads, READ_MANY, DESCRIBE, their
    reply packing and sending) waits at its next safe point, so a privileged request does not queue for the GIL behind it (CPython hands
    the GIL over only every switch interval, and to no thread in particular).

    The bound (a flood of privileged requests never starves the others): one pause
    lasts at most ``burst`` seconds, and a thread is paused at most ``burst + share * T``
    seconds in any stretch of ``T`` seconds (a token bucket of ``burst`` seconds filled
    at ``share`` seconds a second): with the defaults, 50 ms at once and at most half of
    any longer stretch. A privileged request that takes its time (a slow provider) lets
    the others go on at half speed, not stop.

:class:`RateLimitedLog`
    One log line per ``interval`` seconds per key, then a count of those suppressed.

Locking: each class has its own lock, taken for a few dict operations only; none calls
out while holding it. Imports the standard library and :mod:`kstatpy.lockorder` (the
per-thread held-lock state PrivFirst checks).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from kstatpy.lockorder import curthread

__all__ = ["FairGate", "PausedHolding", "PrivFirst", "RateLimitedLog", "ReplyBudget"]


class FairGate:
    """Round-robin admission of expensive requests by uid (see the module docstring)."""

    def __init__(self, slots: int) -> None:
        self._lock = threading.Lock()
        self._free = max(1, slots)
        self._queues: dict[int, deque[threading.Lock]] = {}  # uid -> waiting tickets (held locks)
        self._ring: deque[int] = deque()  # uids with waiters, in turn order
        self.waits = 0  # requests that had to wait (for tests and benchmarks)

    def acquire(self, uid: int) -> None:
        """Wait for this uid's turn and a free slot."""
        with self._lock:
            if self._free > 0 and not self._ring:
                self._free -= 1
                return
            self.waits += 1
            # A ticket is a lock taken here and released by the grant: the waiter alone
            # wakes (no herd of every waiting thread at each release).
            ticket = threading.Lock()
            ticket.acquire()
            queue = self._queues.get(uid)
            if queue is None:
                queue = self._queues[uid] = deque()
                self._ring.append(uid)
            queue.append(ticket)
        ticket.acquire()  # granted: the slot was handed over by release()

    def release(self) -> None:
        """Free a slot: the next uid in turn gets it (its oldest request)."""
        with self._lock:
            if not self._ring:
                self._free += 1
                return
            uid = self._ring.popleft()
            queue = self._queues[uid]
            ticket = queue.popleft()
            if queue:
                self._ring.append(uid)  # its next request waits for the next round
            else:
                del self._queues[uid]
        ticket.release()


class ReplyBudget:
    """Bytes of replies parked for readers that do not read, bounded (module docstring)."""

    def __init__(self, total: int, per_uid: int, trusted: frozenset[int]) -> None:
        self.total, self.per_uid, self.trusted = total, per_uid, trusted
        self._lock = threading.Lock()
        self._by_uid: dict[int, int] = {}
        self.parked = 0  # bytes parked now, all users but the trusted ones
        self.held = 0  # bytes parked now, every user (kstatpy:0:replies)
        self.peak = 0  # the most ``held`` has been
        self.refused = 0  # replies not kept (their connections closed)
        self.in_pieces = 0  # replies sent in pieces (docs/PROTOCOL.md §9.8)

    def park(self, uid: int, nbytes: int) -> bool:
        """Count ``nbytes`` for ``uid``; False (nothing counted) when over a bound."""
        with self._lock:
            mine = self._by_uid.get(uid, 0)
            if uid not in self.trusted:  # trusted: counted for its uid; never limited, never in the total
                if mine + nbytes > self.per_uid or self.parked + nbytes > self.total:
                    self.refused += 1
                    return False
                self.parked += nbytes
            self._by_uid[uid] = mine + nbytes
            self.held += nbytes
            self.peak = max(self.peak, self.held)
            return True

    def count_in_pieces(self) -> None:
        """One more reply is sent in pieces (its pieces park here one at a time)."""
        with self._lock:
            self.in_pieces += 1

    def unpark(self, uid: int, nbytes: int) -> None:
        """The reply went (or its connection did): ``nbytes`` are free again."""
        with self._lock:
            left = self._by_uid.get(uid, 0) - nbytes
            if left > 0:
                self._by_uid[uid] = left
            else:
                self._by_uid.pop(uid, None)
            if uid not in self.trusted:
                self.parked -= nbytes
            self.held -= nbytes


class PausedHolding(RuntimeError):
    """A safe point was reached with a hold or lock held (a kstatpy bug: the caller's)."""


class PrivFirst:
    """Other work waits at safe points while privileged requests run (module docstring).

    Contract of a safe point (:meth:`checkpoint`): its caller holds no chain lock, no
    kstat hold, no ``ks_lock`` and no ``Session.lock`` (a paused thread must not delay
    the privileged request it yields to, nor the watchdog). It may hold its
    :class:`FairGate` slot: the other users' expensive requests then wait behind the
    paused one, which is the point. ``begin``/``end`` pair up per privileged request
    (kstatd counts a privileged connection from its accept to its first reply, and each
    request from its decoding to its reply's send).

    Where the lock-order checker runs (``kstatd --kmem-audit``, :mod:`kstatpy.lockorder`),
    a pause with a hold or lock the checker knows of held raises :class:`PausedHolding`
    naming them, before it waits.
    """

    def __init__(self, burst: float = 0.05, share: float = 0.5) -> None:
        self.burst, self.share = burst, share
        self._cv = threading.Condition(threading.Lock())
        #: privileged requests in flight; read without the lock as a hint by checkpoint()
        self.busy = 0
        self._local = threading.local()  # per thread: pausable, tokens (s), when last filled
        self.waiting = 0  # threads paused now (tests)
        self.pauses = 0  # pauses so far
        self.cut = 0  # pauses the bound ended (privileged work still in flight)

    def begin(self) -> None:
        """A privileged request is in flight."""
        with self._cv:
            self.busy += 1

    def end(self) -> None:
        """A privileged request is done: paused threads go on when none is left."""
        with self._cv:
            self.busy -= 1
            if self.busy <= 0:
                self.busy = 0
                self._cv.notify_all()

    def pausable(self, on: bool) -> None:
        """Whether this thread's checkpoints may pause it (default: no)."""
        local = self._local
        local.on = on
        local.tokens = self.burst
        local.filled = time.monotonic()

    def checkpoint(self) -> None:
        """A safe point (see the class docstring): wait while privileged requests run, within the bound."""
        if not self.busy:
            return
        local = self._local
        if not getattr(local, "on", False):
            return
        now = time.monotonic()
        tokens = min(self.burst, local.tokens + (now - local.filled) * self.share)
        local.filled = now
        if tokens <= 0.0005:  # the bound reached: go on, the bucket refills meanwhile
            local.tokens = tokens
            return
        st = curthread.st
        if st is not None and st.held:
            held = ", ".join(f"{entry[1].kind} {entry[1].name}" for entry in st.held)
            raise PausedHolding(f"a PrivFirst safe point reached holding {held}: a paused thread must hold nothing")
        with self._cv:
            self.pauses += 1
            self.waiting += 1
            try:
                done = self._cv.wait_for(lambda: not self.busy, tokens)
            finally:
                self.waiting -= 1
            if not done:
                self.cut += 1
        local.tokens = tokens - (time.monotonic() - now)


class RateLimitedLog:
    """At most one line per ``interval`` seconds per key, then how many were suppressed."""

    def __init__(self, log: logging.Logger, interval: float = 10.0) -> None:
        self._log = log
        self._interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, tuple[float, int]] = {}  # key -> (when logged, suppressed since)

    def error(self, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            when, suppressed = self._last.get(key, (-self._interval, 0))
            if now - when < self._interval:
                self._last[key] = (when, suppressed + 1)
                return
            self._last[key] = (now, 0)
        if suppressed:
            msg += f" ({suppressed} more like it since the last report)"
        self._log.error(msg, *args)
