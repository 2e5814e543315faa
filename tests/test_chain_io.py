"""IO, INTR and TIMER kstats: queue accounting, snapshot closing, timers (illumos `sys/kstat.h`, `kstat_fr.c`)."""

from __future__ import annotations

import pytest

from kstatpy import constants as c
from kstatpy import kstat as k
from kstatpy.chain import Chain
from tests.chain_io import chain_read
from tests.chain_io import chain_write


def test_waitq_and_runq_accounting() -> None:
    io = k.KstatIO()
    k.kstat_waitq_enter(io, now=100)  # cnt 0 -> 1: no time added
    assert (io.wcnt, io.wtime, io.wlentime) == (1, 0, 0)
    k.kstat_waitq_enter(io, now=150)  # cnt 1 -> 2: 50 ns with 1 queued
    assert (io.wcnt, io.wtime, io.wlentime) == (2, 50, 50)
    k.kstat_waitq_to_runq(io, now=170)  # wait exit (20 ns x 2) and run enter at one time
    assert (io.wcnt, io.wtime, io.wlentime, io.wlastupdate) == (1, 70, 90, 170)
    assert (io.rcnt, io.rtime, io.rlastupdate) == (1, 0, 170)
    k.kstat_runq_back_to_waitq(io, now=200)
    assert (io.rcnt, io.rtime, io.rlentime) == (0, 30, 30)
    assert (io.wcnt, io.wtime, io.wlentime) == (2, 100, 120)
    k.kstat_waitq_exit(io, now=210)
    k.kstat_waitq_exit(io, now=220)
    assert (io.wcnt, io.wtime, io.wlentime) == (0, 120, 150)
    k.kstat_runq_enter(io, now=300)
    k.kstat_runq_exit(io, now=310)
    assert (io.rcnt, io.rtime, io.rlentime) == (0, 40, 40)


def test_exit_from_empty_queue_is_fatal() -> None:
    from kstatpy.errors import KstatFatalError

    with pytest.raises(KstatFatalError, match="kstat_runq_exit with an empty run queue"):
        k.kstat_runq_exit(k.KstatIO(), now=1)
    with pytest.raises(KstatFatalError, match="exit with an empty wait queue"):
        k.kstat_waitq_exit(k.KstatIO(), now=1)


def test_io_snapshot_closes_open_intervals_in_the_copy_only(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    ksp = chain.kstat_create("sd", 0, "sd0", "disk", c.KSTAT_TYPE_IO, 1)
    chain.kstat_install(ksp)
    io = ksp.ks_data[0]
    k.kstat_waitq_enter(io, now=1000)
    k.kstat_waitq_enter(io, now=1000)
    k.kstat_runq_enter(io, now=1000)
    monkeypatch.setattr(k.time, "monotonic_ns", lambda: 5000)
    data = chain_read(chain, ksp.ks_kid)["data"]
    assert data["wtime"] == 4000 and data["wlentime"] == 8000 and data["wlastupdate"] == 5000
    assert data["rtime"] == 4000 and data["rlentime"] == 4000 and data["rlastupdate"] == 5000
    assert (io.wtime, io.wlentime, io.wlastupdate, io.rtime) == (0, 0, 1000, 0)  # live data untouched
    assert set(data) == set(k.IO_FIELDS)


def test_timer_start_stop() -> None:
    t = k.KstatTimer()
    k.kstat_timer_init(t, "flush")
    k.kstat_timer_start(t, now=10)
    k.kstat_timer_stop(t, now=50)
    k.kstat_timer_start(t, now=100)
    k.kstat_timer_stop(t, now=110)
    k.kstat_timer_start(t, now=200)
    k.kstat_timer_stop(t, now=300)
    assert (t.num_events, t.elapsed_time, t.min_time, t.max_time) == (3, 150, 10, 100)
    assert (t.start_time, t.stop_time, t.name) == (200, 300, "flush")


def test_intr_and_timer_reads(chain: Chain) -> None:
    intr = chain.kstat_create("e1000g", 0, "e1000g0", "controller", c.KSTAT_TYPE_INTR, 1)
    intr.ks_data[0].intrs[c.KSTAT_INTR_HARD] = 7
    intr.ks_data[0].intrs[c.KSTAT_INTR_MULTSVC] = 2
    chain.kstat_install(intr)
    assert chain_read(chain, intr.ks_kid)["data"] == {
        "hard": 7,
        "soft": 0,
        "watchdog": 0,
        "spurious": 0,
        "multiple_service": 2,
    }
    assert chain_read(chain, intr.ks_kid)["data_size"] == 20
    timers = chain.kstat_create("m", 0, "timers", "misc", c.KSTAT_TYPE_TIMER, 2)
    k.kstat_timer_init(timers.ks_data[0], "a")
    k.kstat_timer_init(timers.ks_data[1], "b")
    chain.kstat_install(timers)
    out = chain_read(chain, timers.ks_kid)
    assert [t["name"] for t in out["data"]] == ["a", "b"] and out["data_size"] == 160


def test_raw_read_and_write(chain: Chain) -> None:
    raw = chain.kstat_create("unix", 0, "var", "misc", c.KSTAT_TYPE_RAW, 8, c.KSTAT_FLAG_WRITABLE)
    raw.ks_data[:] = b"abcdefgh"
    chain.kstat_install(raw)
    assert chain_read(chain, raw.ks_kid)["data"] == b"abcdefgh"
    chain_write(chain, raw.ks_kid, 8, b"ABCDEFGH")
    assert bytes(raw.ks_data) == b"ABCDEFGH"


def test_intr_io_timer_writes_are_checked(chain: Chain) -> None:
    io = chain.kstat_create("sd", 1, "sd1", "disk", c.KSTAT_TYPE_IO, 1, c.KSTAT_FLAG_WRITABLE)
    chain.kstat_install(io)
    new = dict.fromkeys(k.IO_FIELDS, 0) | {"nread": 512}
    chain_write(chain, io.ks_kid, 1, new)
    assert io.ks_data[0].nread == 512
    import errno

    from kstatpy.errors import KstatError

    with pytest.raises(KstatError) as info:
        chain_write(chain, io.ks_kid, 1, new | {"reads": -1})
    assert info.value.errno == errno.EINVAL
