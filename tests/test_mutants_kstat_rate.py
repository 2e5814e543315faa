"""``kstat --rate`` (kstatpy/cli/kstat_rate.py) on an in-process chain with a scripted clock.

Written for the survivors of mutation testing (docs/TESTING.md): every kstat type's
counters (NAMED of each width, kstat_io_t, kstat_intr_t, the first kstat_timer_t),
32-bit wraps, resets, re-created and vanished kstats, statistics with no source, and
what RateState forgets. The chain is real (kstatpy.chain through kstat_open_chain,
the dispatch code kstatd runs); ``time.monotonic_ns`` is patched to a clock the test
moves, so every crtime and snaptime, and so every rate, is exact.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from kstatpy.chain import Chain
from kstatpy.cli.kstat_rate import RateState
from kstatpy.cli.kstat_rate import format_rate
from kstatpy.cli.kstat_rate import rate_of
from kstatpy.cli.kstat_select import read_instances
from kstatpy.client import kstat_open_chain
from kstatpy.constants import KstatDataType as D
from kstatpy.constants import KstatType as T
from kstatpy.metadata import counter
from kstatpy.metadata import gauge
from kstatpy.metadata import kstat_set_meta
from kstatpy.metadata import no_source
from kstatpy.metadata import text
from kstatpy.raw import CPU_STAT
from kstatpy.records import kstat_named_init
from kstatpy.records import kstat_named_setstr
from kstatpy.records import kstat_timer_init
from kstatpy.select import SelectorPatterns

S = 1_000_000_000  # ns
T0 = 1 * S  # the clock when the kstats are created (their crtime): early, as for most kstats


class Host:
    """A chain of one kstat of each type, a kstat handle on it, and the clock."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = T0
        monkeypatch.setattr(time, "monotonic_ns", lambda: self.now)  # the clock, not our code
        self.chain = Chain()
        self.named = self.make_named()
        self.io = self.chain.kstat_create("rate", 0, "io", "disk", T.IO, 1)
        self.chain.kstat_install(self.io)
        self.intr = self.chain.kstat_create("rate", 0, "intr", "controller", T.INTR, 1)
        self.chain.kstat_install(self.intr)
        self.timer = self.chain.kstat_create("rate", 0, "timer", "misc", T.TIMER, 2)
        kstat_timer_init(self.timer.ks_data[0], "first")
        kstat_timer_init(self.timer.ks_data[1], "second")
        self.chain.kstat_install(self.timer)
        # A RAW kstat kstat(8) decodes: printed as it is (RAW statistics have no metadata).
        self.raw = self.chain.kstat_create("cpu_stat", 0, "cpu_stat0", "misc", T.RAW, CPU_STAT.size)
        self.chain.kstat_install(self.raw)
        self.kc = kstat_open_chain(self.chain, read_chain=False)
        self.rates = RateState()

    def make_named(self) -> Any:
        recs = [("ev", D.UINT64), ("u32", D.UINT32), ("i32", D.INT32), ("i64", D.INT64), ("lvl", D.UINT64),
                ("lab", D.STRING), ("plain", D.UINT64), ("unknown", D.UINT64), ("strcount", D.STRING)]  # fmt: skip
        ksp = self.chain.kstat_create("rate", 0, "named", "misc", T.NAMED, len(recs))
        for knp, (name, dt) in zip(ksp.ks_data, recs, strict=True):
            kstat_named_init(knp, name, dt)
        kstat_named_setstr(ksp.ks_data[5], "a label")
        kstat_named_setstr(ksp.ks_data[8], "not a number")
        kstat_set_meta(ksp, {
            "ev": counter("count", "events"), "u32": counter("count", "32-bit events"),
            "i32": counter("count", "signed 32-bit events"), "i64": counter("count", "signed 64-bit events"),
            "lvl": gauge("count", "a level"), "lab": text("a label"), "unknown": no_source(description="not counted"),
            "strcount": counter("count", "declared a counter, holds a string"),
        })  # fmt: skip
        self.chain.kstat_install(ksp)
        return ksp

    def set_named(self, ksp: Any, ev: int, u32: int, i32: int, i64: int, plain: int = 7) -> None:
        d = ksp.ks_data
        d[0].value, d[1].value, d[2].value, d[3].value = ev, u32, i32, i64
        d[4].value, d[6].value, d[7].value = 42, plain, 0

    def set_others(self, reads: int, nread: int, wcnt: int, hard: int, events: int) -> None:
        io = self.io.ks_data[0]
        io.reads, io.nread, io.wcnt, io.writes = reads, nread, wcnt, 3
        self.intr.ks_data[0].intrs[:] = [hard, 5, 0, 0, 0]
        self.timer.ks_data[0].num_events = events
        self.timer.ks_data[0].min_time = 9
        self.timer.ks_data[1].num_events = 10**6  # not decoded: kstat(8) shows the first timer only
        self.raw.ks_data[:] = CPU_STAT.pack({"idle": events, "user": 3})

    def report(self, at: int) -> tuple[dict[str, dict[str, str]], dict[str, bool | None], list[str]]:
        """One --rate report at clock ``at``: ({kstat: {statistic: text}}, {kstat: reset}, notes)."""
        self.now = at
        self.kc.chain_update()
        instances = read_instances(self.kc, [SelectorPatterns()], False)
        notes = self.rates.apply(self.kc, instances)
        mine = [i for i in instances if i.module in ("rate", "cpu_stat")]
        return {i.name: {s[0]: s[1] for s in i.stats} for i in mine}, {i.name: i.reset for i in mine}, notes


def r(value: float) -> str:
    return format_rate(value)


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> Host:
    return Host(monkeypatch)


def test_every_kstat_type_first_report_then_over_the_interval(host: Host) -> None:
    host.set_named(host.named, ev=1000, u32=2**32 - 100, i32=2**31 - 10, i64=400)
    host.set_others(reads=2**32 - 50, nread=4096, wcnt=0, hard=2**32 - 2, events=20)
    got, reset, notes = host.report(T0 + 2 * S)
    assert notes == [] and set(reset.values()) == {False}
    n = got["named"]
    # First report: the average since crtime (2 s).
    assert (n["ev"], n["u32"], n["i32"], n["i64"]) == (r(500), r((2**32 - 100) / 2), r((2**31 - 10) / 2), r(200))
    assert (n["lvl"], n["lab"], n["plain"], n["strcount"]) == ("42", "a label", "7", "not a number")
    assert "unknown" not in n  # no source: left out, its 0 is not a rate
    io, intr, timer = got["io"], got["intr"], got["timer"]
    assert (io["reads"], io["nread"], io["wcnt"], io["writes"]) == (r((2**32 - 50) / 2), r(2048), "0", r(1.5))
    assert (intr["hard"], intr["soft"]) == (r((2**32 - 2) / 2), r(2.5))
    assert (timer["num_events"], timer["min_time"], timer["name"]) == (r(10), "9", "first")
    assert (got["cpu_stat0"]["idle"], got["cpu_stat0"]["user"]) == ("20", "3")

    # Four seconds later: (value - previous) / 4 s, 32-bit counters unwrapped.
    host.set_named(host.named, ev=5000, u32=300, i32=-(2**31) + 10, i64=2400, plain=14)
    host.set_others(reads=350, nread=4096 + 8192, wcnt=0, hard=6, events=60)
    got, reset, notes = host.report(T0 + 6 * S)
    assert notes == [] and set(reset.values()) == {False}
    n = got["named"]
    assert (n["ev"], n["u32"], n["i32"], n["i64"], n["plain"]) == (r(1000), r(100), r(5), r(500), "14")
    io, intr, timer = got["io"], got["intr"], got["timer"]
    assert (io["reads"], io["nread"], io["wcnt"], io["writes"]) == (r(100), r(2048), "0", r(0))
    assert (intr["hard"], intr["soft"]) == (r(2), r(0))
    assert timer["num_events"] == r(10)
    assert (got["cpu_stat0"]["idle"], got["cpu_stat0"]["user"]) == ("60", "3")


def test_a_64_bit_counter_that_went_back_is_a_reset_and_a_note(host: Host) -> None:
    host.set_named(host.named, ev=1000, u32=10, i32=10, i64=10)
    host.set_others(reads=10, nread=4096, wcnt=0, hard=10, events=20)
    host.report(T0 + 2 * S)
    host.set_named(host.named, ev=40, u32=20, i32=20, i64=4)  # ev and i64 went back
    host.set_others(reads=10, nread=1024, wcnt=0, hard=10, events=20)  # nread went back
    got, reset, notes = host.report(T0 + 4 * S)
    assert got["named"]["ev"] == r(10) and got["named"]["i64"] == r(1)  # since crtime, 4 s
    assert got["named"]["u32"] == r(5)  # the others over the interval
    assert got["io"]["nread"] == r(256) and got["io"]["reads"] == r(0)
    assert reset == {"named": True, "io": True, "intr": False, "timer": False, "cpu_stat0": False}
    assert notes == ["rate:0:io: nread went backwards; rates since crtime",  # in kstat(8)'s order
                     "rate:0:named: ev, i64 went backwards; rates since crtime"]  # fmt: skip
    # The next report is over the interval again, from the values that went back.
    host.set_named(host.named, ev=140, u32=20, i32=20, i64=4)
    got, reset, notes = host.report(T0 + 6 * S)
    assert got["named"]["ev"] == r(50) and reset["named"] is False and notes == []


def test_a_recreated_kstat_is_a_reset_since_its_new_crtime(host: Host) -> None:
    host.set_named(host.named, ev=1000, u32=10, i32=10, i64=10)
    host.report(T0 + 2 * S)
    old_kid = host.named.ks_kid
    host.chain.kstat_delete(host.named)
    host.now = T0 + 3 * S
    host.named = host.make_named()  # same module:instance:name, crtime T0 + 3 s
    host.set_named(host.named, ev=5000, u32=10, i32=10, i64=10)
    got, reset, notes = host.report(T0 + 5 * S)
    assert got["named"]["ev"] == r(2500) and got["named"]["u32"] == r(5)  # since the new crtime, 2 s
    assert reset["named"] is True and reset["io"] is False
    assert notes == [f"rate:0:named: re-created (kid {old_kid} -> {host.named.ks_kid}); rates since its new crtime"]
    host.set_named(host.named, ev=6000, u32=10, i32=10, i64=10)
    got, reset, notes = host.report(T0 + 7 * S)
    assert got["named"]["ev"] == r(500) and reset["named"] is False and notes == []


def test_a_kstat_recreated_within_the_same_clock_tick_is_still_a_reset(host: Host) -> None:
    host.set_named(host.named, ev=1000, u32=10, i32=10, i64=10)
    host.report(T0 + 2 * S)
    old_kid = host.named.ks_kid
    host.chain.kstat_delete(host.named)
    host.now = T0  # the same crtime as the one deleted: only the kid tells them apart
    host.named = host.make_named()
    host.set_named(host.named, ev=600, u32=10, i32=10, i64=10)
    got, reset, notes = host.report(T0 + 3 * S)
    assert host.named.ks_crtime == T0 and host.named.ks_kid != old_kid
    assert got["named"]["ev"] == r(200) and reset["named"] is True  # since crtime, not (600 - 1000) / 1 s
    assert notes == [f"rate:0:named: re-created (kid {old_kid} -> {host.named.ks_kid}); rates since its new crtime"]


def test_a_kstat_that_left_the_chain_is_forgotten(host: Host) -> None:
    host.set_named(host.named, ev=1000, u32=10, i32=10, i64=10)
    host.report(T0 + 2 * S)
    kid = host.named.ks_kid
    host.chain.kstat_delete(host.named)
    got, _reset, notes = host.report(T0 + 3 * S)
    assert "named" not in got and notes == []
    assert ("rate", 0, "named") not in host.rates.prev
    assert all(k != kid for k, _crtime in host.rates.meta)
    assert all(k != kid for k, _crtime in host.rates.no_source)
    # Back on the chain: a first report (not a re-creation), the average since its crtime.
    host.now = T0 + 4 * S
    host.named = host.make_named()
    host.set_named(host.named, ev=600, u32=10, i32=10, i64=10)
    got, reset, notes = host.report(T0 + 6 * S)
    assert got["named"]["ev"] == r(300) and reset["named"] is False and notes == []


def test_metadata_is_asked_once_per_kstat_and_kept_only_while_read(host: Host) -> None:
    asked: list[list[int]] = []
    ioctl = host.kc.ioctl

    def counting(cmd: Any, arg: Any = None) -> Any:
        if isinstance(arg, dict) and "kids" in arg:
            asked.append(list(arg["kids"]))
        return ioctl(cmd, arg)

    host.kc.ioctl = counting  # type: ignore[method-assign]
    host.set_named(host.named, ev=1000, u32=10, i32=10, i64=10)
    host.report(T0 + 2 * S)
    kids = {k.ks_kid for k in (host.named, host.io, host.intr, host.timer)}
    assert len(asked) == 1 and kids <= set(asked[0])
    host.report(T0 + 3 * S)
    assert len(asked) == 1  # cached per (kid, crtime)
    live = {(k.ks_kid, k.ks_crtime) for k in host.kc.kc_chain}
    assert set(host.rates.meta) <= live and set(host.rates.no_source) <= live
    assert (host.named.ks_kid, host.named.ks_crtime) in host.rates.no_source
    assert host.rates.no_source[(host.named.ks_kid, host.named.ks_crtime)] == {"unknown"}


def test_a_kstat_gone_before_its_metadata_prints_its_values_as_they_are(host: Host) -> None:
    host.set_named(host.named, ev=1000, u32=10, i32=10, i64=10)
    host.now = T0 + 2 * S
    host.kc.chain_update()
    instances = read_instances(host.kc, [SelectorPatterns()], False)
    host.chain.kstat_delete(host.named)  # DESCRIBE answers ENXIO for it: no metadata
    notes = host.rates.apply(host.kc, instances)
    (named,) = [i for i in instances if i.name == "named"]
    stats = {s[0]: s[1] for s in named.stats}
    assert notes == [] and named.reset is False
    assert (stats["ev"], stats["unknown"]) == ("1000", "0")  # nothing known: no rate, nothing left out
    (io,) = [i for i in instances if i.name == "io"]
    assert dict((s[0], s[1]) for s in io.stats)["nread"] == r(0)  # the others still rates


def test_an_unread_kstat_is_left_as_it_is(host: Host) -> None:
    host.named.ks_update = lambda ksp, rw: 5  # EIO: read fails, the instance has no data
    host.set_named(host.named, ev=1000, u32=10, i32=10, i64=10)
    got, reset, notes = host.report(T0 + 2 * S)
    assert "snaptime" not in got["named"] and "ev" not in got["named"]
    assert reset["named"] is None and notes == []
    assert ("rate", 0, "named") not in host.rates.prev


@pytest.mark.parametrize(
    ("value", "prev", "width", "elapsed", "since", "expected"),
    [
        (2**32 + 5, None, 32, S, S, (5.0, False)),  # a 32-bit value is taken modulo 2**32
        (2**64 + 5, None, 64, S, S, (5.0, False)),
        (-1, None, 64, S, S, (float(2**64 - 1), False)),  # an INT64 read negative: modulo 2**64
        (5, 2**32 + 5, 32, S, S, (0.0, False)),  # the previous value is masked too
        (5, 6, 32, S, S, (float(2**32 - 1), False)),  # one below: a wrap, never a reset
        (5, 6, 64, S, 2 * S, (2.5, True)),  # one below, 64 bits: a reset, since crtime
        (5, 5, 64, S, 2 * S, (0.0, False)),  # unchanged: 0, not a reset
        (7, 5, 64, 2 * S, S, (1.0, False)),  # the interval divides, not the age
        (7, None, 64, 2 * S, 4 * S, (1.75, False)),  # the age divides, not the interval
        (7, 5, 64, -S, S, (0.0, False)),  # a clock that went back: 0, never negative
        (1, 5, 64, S, -S, (0.0, True)),
        (7, None, 64, S, 0, (0.0, False)),
        (7, None, 16, S, S, (7.0, False)),
        (2**16 + 7, 2**16 + 5, 16, S, S, (2.0, False)),
        (5, 6, 16, S, S, (5.0, True)),  # only a 32-bit counter wraps: any other width went back
        (7, 5, 64, 3 * S, S, (2 / 3, False)),  # a fraction, not floored
        (7, 5, 64, 1, S, (2e9, False)),  # one ns is time passed
        (7, None, 64, S, 1, (7e9, False)),
    ],
)
def test_rate_of_edges(value: int, prev: int | None, width: int, elapsed: int, since: int,
                       expected: tuple[float, bool]) -> None:  # fmt: skip
    assert rate_of(value, prev, width, elapsed, since) == expected


def test_format_rate_has_three_decimals() -> None:
    assert (format_rate(0.0), format_rate(2.0), format_rate(1 / 3)) == (
        "0.000", "2.000", "0.333"
    )  # fmt: skip
