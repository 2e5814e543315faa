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

:class:`RateLimitedLog`
    One log line per ``interval`` seconds per key, then a count of those suppressed.

Locking: each class has its own lock, taken for a few dict operations only; none calls
out while holding it. Imports the standard library only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

__all__ = ["FairGate", "RateLimitedLog", "ReplyBudget"]


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
