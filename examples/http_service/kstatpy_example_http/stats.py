"""The service's statistics: a provider object the service attaches to its own chain.

Kstats (module ``http``, instance 0, class ``web``)
    ``http:0:requests`` NAMED: ``requests``, ``errors`` (status >= 500), ``status_2xx``,
    ``status_4xx``, ``status_5xx`` (UINT64 counts), ``bytes_out`` (UINT64 bytes).
    ``http:0:server`` IO: ``writes`` responses, ``nwritten`` bytes, and the run queue
    (``rcnt`` requests in service now; ``rtime``/``rlentime`` ns, for utilisation and
    mean concurrency), kept with ``kstat_runq_enter``/``kstat_runq_exit``.
    ``http:0:latency`` TIMER: one timer ``request``: ``num_events``, ``elapsed_time``,
    ``min_time``, ``max_time`` (ns), ``start_time``/``stop_time`` of the last request.

Locking and lifetime
    One :class:`~kstatpy.kstat.KMutex` is ``ks_lock`` of all three kstats; the
    request path takes it around every update, and the read path holds it around
    the snapshot, so a reader never sees half a request. ``kstatpy_detach`` first
    drops the kstat pointers under the lock, then deletes the kstats (never with the
    lock held: ``kstat_delete`` waits for readers and refuses a caller holding
    ``ks_lock``), so a request finishing during shutdown updates nothing instead of
    touching a deleted kstat.
"""

from __future__ import annotations

import time
from typing import Any

from kstatpy import KSTAT_DATA_UINT64
from kstatpy import KSTAT_TYPE_IO
from kstatpy import KSTAT_TYPE_NAMED
from kstatpy import KSTAT_TYPE_TIMER
from kstatpy import KMutex
from kstatpy import hookimpl
from kstatpy import kstat_named_init
from kstatpy import kstat_runq_enter
from kstatpy import kstat_runq_exit
from kstatpy import kstat_timer_init

__all__ = ["COUNTERS", "HttpStats"]

COUNTERS = ("requests", "errors", "status_2xx", "status_4xx", "status_5xx", "bytes_out")


class HttpStats:
    """The service's kstats; register it as a provider (``kstatpy.serve(plugins=[("http", stats)])``)."""

    def __init__(self, instance: int = 0) -> None:
        self.instance = instance
        self.lock = KMutex()  # ks_lock of the three kstats; guards self._kstats too
        self._kstats: tuple[Any, Any, Any] | None = None  # (requests, server, latency) while attached

    @hookimpl
    def kstatpy_attach(self, chain: Any) -> None:
        """Create and install ``http:<instance>:requests``, ``:server`` and ``:latency``."""
        named = chain.kstat_create("http", self.instance, "requests", "web", KSTAT_TYPE_NAMED, len(COUNTERS))
        for knp, name in zip(named.ks_data, COUNTERS, strict=True):
            kstat_named_init(knp, name, KSTAT_DATA_UINT64)
        io = chain.kstat_create("http", self.instance, "server", "web", KSTAT_TYPE_IO, 1)
        timer = chain.kstat_create("http", self.instance, "latency", "web", KSTAT_TYPE_TIMER, 1)
        kstat_timer_init(timer.ks_data[0], "request")
        for ksp in (named, io, timer):
            ksp.ks_lock = self.lock
            chain.kstat_install(ksp)
        with self.lock:
            self._kstats = (named, io, timer)

    @hookimpl
    def kstatpy_detach(self, chain: Any) -> None:
        """Forget the kstats under the lock, then delete them (each waits for its reader)."""
        with self.lock:
            kstats, self._kstats = self._kstats, None
        for ksp in kstats or ():
            chain.kstat_delete(ksp)

    def request_start(self) -> tuple[int, Any]:
        """A request enters service; the token (start ns, run queue entered) for :meth:`request_done`."""
        now = time.monotonic_ns()
        with self.lock:
            if self._kstats is None:
                return now, None
            kiop = self._kstats[1].ks_data[0]
            kstat_runq_enter(kiop, now)
        return now, kiop

    def request_done(self, token: tuple[int, Any], status: int, nbytes: int) -> None:
        """The request of ``token`` answered ``status`` with ``nbytes`` of body."""
        start, entered = token
        now = time.monotonic_ns()
        elapsed = now - start
        with self.lock:
            if self._kstats is None:  # detached meanwhile: nothing to count into
                return
            named, io, timer = self._kstats
            values = {knp.name: knp for knp in named.ks_data}
            values["requests"].value += 1
            values["bytes_out"].value += nbytes
            bucket = f"status_{status // 100}xx"
            if bucket in values:
                values[bucket].value += 1
            if status >= 500:
                values["errors"].value += 1
            kiop = io.ks_data[0]
            if entered is kiop:  # else it entered a run queue that was detached since
                kstat_runq_exit(kiop, now)
            kiop.writes += 1
            kiop.nwritten += nbytes
            ktp = timer.ks_data[0]
            if ktp.num_events == 0 or elapsed < ktp.min_time:
                ktp.min_time = elapsed
            ktp.max_time = max(ktp.max_time, elapsed)
            ktp.elapsed_time += elapsed
            ktp.num_events += 1
            ktp.start_time, ktp.stop_time = start, now
