"""kstatd's own statistics, published as kstats ``kstatpy:0:*`` on the chain it serves.

``kstatpy:0:connections`` current, total, refused (every EBUSY refusal: quotas, no fds)
``kstatpy:0:requests``    one counter per command (chain_id, read, write, hello,
                          read_many, provider, unknown, describe, select) and ``bad_frames``
``kstatpy:0:errors``      one counter per errno of docs/PROTOCOL.md §3 (``EPERM`` ...),
                          and ``other`` for any errno outside that table
``kstatpy:0:daemon``      panics, stuck_readers (now past ``--read-timeout``),
                          stuck_readers_total, read_timeout_ms
``kstatpy:0:replies``     parked_bytes (bytes of replies waiting now for readers that
                          have not taken them), parked_peak_bytes, refused (replies
                          not kept over the budget: connection closed), in_pieces
                          (replies sent in pieces, docs/PROTOCOL.md §9.8)

Counting is lock-free on the request path: each connection owns a :class:`Counters`
only its serving thread writes; ``ks_update`` sums the live connections' counters and
those folded in when connections closed (``_lock`` guards the set of live counters and
the folded totals).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from kstatpy.constants import KSTAT_DATA_UINT64
from kstatpy.constants import KSTAT_TYPE_NAMED
from kstatpy.constants import Errno
from kstatpy.constants import KstatIoctl
from kstatpy.metadata import StatMeta
from kstatpy.metadata import counter
from kstatpy.metadata import gauge
from kstatpy.metadata import kstat_set_meta
from kstatpy.records import kstat_named_init

if TYPE_CHECKING:
    from collections.abc import Callable

    from kstatpy.chain import Chain
    from kstatpy.kstat import Kstat

__all__ = ["CMD_SLOTS", "ERRNO_SLOTS", "Counters", "DaemonStats"]

#: request counter index by cmd; any other cmd counts as "provider" or "unknown".
CMD_NAMES = ("chain_id", "read", "write", "hello", "read_many", "provider", "unknown", "bad_frames", "describe", "select")
CMD_SLOTS = {
    int(KstatIoctl.CHAIN_ID): 0,
    int(KstatIoctl.READ): 1,
    int(KstatIoctl.WRITE): 2,
    int(KstatIoctl.HELLO): 3,
    int(KstatIoctl.READ_MANY): 4,
    int(KstatIoctl.DESCRIBE): 8,
    int(KstatIoctl.SELECT): 9,
}
SLOT_PROVIDER = 5
SLOT_UNKNOWN = 6
SLOT_BAD_FRAME = 7
ERRNO_NAMES = (*tuple(e.name for e in Errno), "other")
ERRNO_SLOTS = {int(e): i for i, e in enumerate(Errno)}
SLOT_OTHER_ERRNO = len(ERRNO_NAMES) - 1


_META = {
    ("connections", "current"): gauge("count", "connections open now"),
    ("connections", "total"): counter("count", "connections accepted"),
    ("connections", "refused"): counter(
        "count", "connections refused EBUSY (connection, per-uid, per-zone or reserved quota; no fds)"
    ),
    ("requests", "bad_frames"): counter("count", "malformed frames (answered, then the connection closed)"),
    ("daemon", "panics"): counter("count", "BAD TRAPs survived with --on-panic=continue"),
    ("daemon", "stuck_readers"): gauge("count", "readers now past --read-timeout in a ks_update"),
    ("daemon", "stuck_readers_total"): counter("count", "readers that went past --read-timeout"),
    ("daemon", "read_timeout_ms"): gauge("ms", "kstatd --read-timeout"),
    ("replies", "parked_bytes"): gauge("bytes", "reply bytes waiting now for readers that have not taken them"),
    ("replies", "parked_peak_bytes"): gauge("bytes", "the most reply bytes that have waited for readers at once"),
    ("replies", "refused"): counter("count", "replies not kept over the reply memory budget (connection closed)"),
    ("replies", "in_pieces"): counter("count", "replies sent in pieces (docs/PROTOCOL.md §9.8)"),
}


def _meta_of(kstat: str, field: str) -> StatMeta:
    # requests:<cmd> and errors:<ERRNO> are one counter each.
    if kstat == "requests":
        what = "provider ioctls" if field == "provider" else f"{field} requests"
        return counter("count", f"{what} received" if field != "unknown" else "unknown kstat ioctls received")
    return counter("count", f"replies with errno {field}" if field != "other" else "replies with another errno")


def cmd_slot(cmd: int) -> int:
    """The request counter a cmd counts in."""
    slot = CMD_SLOTS.get(cmd)
    if slot is not None:
        return slot
    return SLOT_UNKNOWN if 0x4B00 <= cmd <= 0x4BFF else SLOT_PROVIDER


class Counters:
    """One connection's request and error counts; written by its serving thread only."""

    __slots__ = ("errors", "requests")

    def __init__(self) -> None:
        self.requests = [0] * len(CMD_NAMES)
        self.errors = [0] * len(ERRNO_NAMES)

    def count_error(self, code: int) -> None:
        """Count one reply with errno ``code`` (non-zero)."""
        self.errors[ERRNO_SLOTS.get(code, SLOT_OTHER_ERRNO)] += 1


class DaemonStats:
    """The daemon-wide counters and the kstats that publish them."""

    def __init__(self, read_timeout: float) -> None:
        self._lock = threading.Lock()  # guards _live, _closed, connections_* and stuck_*
        self._live: set[Counters] = set()
        self._closed = Counters()
        self.connections_current = 0
        self.connections_total = 0
        self.connections_refused = 0
        self.panics = 0
        self.stuck_readers = 0
        self.stuck_readers_total = 0
        self.read_timeout_ms = int(read_timeout * 1000)
        self._kstats: list[Kstat] = []

    # --- events (any thread) --------------------------------------------------

    def conn_open(self) -> Counters:
        """A connection was accepted; returns its counters."""
        counters = Counters()
        with self._lock:
            self._live.add(counters)
            self.connections_current += 1
            self.connections_total += 1
        return counters

    def conn_close(self, counters: Counters) -> None:
        """A connection went; its counts fold into the totals."""
        with self._lock:
            if counters in self._live:
                self._live.discard(counters)
                self.connections_current -= 1
                for i, n in enumerate(counters.requests):
                    self._closed.requests[i] += n
                for i, n in enumerate(counters.errors):
                    self._closed.errors[i] += n

    def refused(self) -> None:
        """A connection was refused with EBUSY (any quota of docs/PROTOCOL.md §9.4, or no fds).

        Counted in ``connections:refused`` and, as the EBUSY reply it got, in ``errors:EBUSY``.
        """
        with self._lock:
            self.connections_refused += 1
            self._closed.count_error(Errno.EBUSY)

    def panic(self) -> None:
        """A reader hit a BadTrap and the daemon went on (``--on-panic=continue``)."""
        with self._lock:
            self.panics += 1

    def stuck(self, delta: int) -> None:
        """A reader went past its deadline (+1) or its update finally returned (-1)."""
        with self._lock:
            self.stuck_readers += delta
            if delta > 0:
                self.stuck_readers_total += delta

    def totals(self) -> tuple[list[int], list[int]]:
        """(requests, errors) summed over every connection, live and closed."""
        with self._lock:
            requests = list(self._closed.requests)
            errors = list(self._closed.errors)
            live = list(self._live)
        for c in live:
            for i, n in enumerate(c.requests):
                requests[i] += n
            for i, n in enumerate(c.errors):
                errors[i] += n
        return requests, errors

    # --- kstats -----------------------------------------------------------------

    def install(self, chain: Chain, replies: Callable[[], tuple[int, int, int, int]] | None = None) -> None:
        """Create and install ``kstatpy:0:{connections,requests,errors,daemon}``, and
        ``kstatpy:0:replies`` from ``replies()`` when given."""

        def make(name: str, fields: tuple[str, ...], values: object) -> None:
            ksp = chain.kstat_create("kstatpy", 0, name, "misc", KSTAT_TYPE_NAMED, len(fields), 0)
            for knp, field in zip(ksp.ks_data, fields, strict=True):
                kstat_named_init(knp, field, KSTAT_DATA_UINT64)
            kstat_set_meta(ksp, {f: _META.get((name, f)) or _meta_of(name, f) for f in fields})

            def update(ksp: Kstat, rw: int) -> int:
                for knp, value in zip(ksp.ks_data, values(), strict=True):  # type: ignore[operator]
                    knp.value = value
                return 0

            ksp.ks_update = update
            chain.kstat_install(ksp)
            self._kstats.append(ksp)

        make(
            "connections",
            ("current", "total", "refused"),
            lambda: (self.connections_current, self.connections_total, self.connections_refused),
        )
        make("requests", CMD_NAMES, lambda: self.totals()[0])
        make("errors", ERRNO_NAMES, lambda: self.totals()[1])
        make(
            "daemon",
            ("panics", "stuck_readers", "stuck_readers_total", "read_timeout_ms"),
            lambda: (self.panics, max(self.stuck_readers, 0), self.stuck_readers_total, self.read_timeout_ms),
        )
        if replies is not None:
            make("replies", ("parked_bytes", "parked_peak_bytes", "refused", "in_pieces"), replies)

    def uninstall(self, chain: Chain) -> None:
        """Delete the kstats (clean shutdown)."""
        for ksp in self._kstats:
            chain.kstat_delete(ksp)
        self._kstats.clear()
