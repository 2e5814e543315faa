"""The Prometheus mapping (kstatpy/exporter.py) on an in-process chain, scraped as kstatd scrapes.

Written for the survivors of mutation testing (docs/TESTING.md): family names at their
edges, every kstat type's fields (kstat_io_t, kstat_intr_t, the first kstat_timer_t),
each unit conversion, text and identifier series, what is left out (RAW, ``kstat_*``,
pseudo statistics, ``no_source``, strings without metadata, unnamed records), the
error count (failed reads, duplicate series, type conflicts, a scrape refused behind a
stuck one, a failed scrape), the metadata cache across a re-created kstat, a panic
during a scrape, and the exporter's own handle (unprivileged, start and stop). The
chain, the ioctl dispatch and the client are the real ones (kstatd's in-process
transport); collectors are asked for their families as prometheus-client asks.
"""

from __future__ import annotations

import errno
import logging
import math
import re
import threading
import time
import urllib.request
from collections.abc import Sequence
from typing import Any

import pytest
from bounded import join
from bounded import wait
from prometheus_client.core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from kstatpy.chain import Chain
from kstatpy.constants import KSTAT_FLAG_WRITABLE
from kstatpy.constants import KstatDataType as D
from kstatpy.constants import KstatType as T
from kstatpy.errors import KstatAccessError
from kstatpy.exporter import Exporter
from kstatpy.exporter import metric_name
from kstatpy.exporter import parse_listen
from kstatpy.exporter import parse_select
from kstatpy.ioctl import IoctlHandler
from kstatpy.kmem import BadTrap
from kstatpy.kmem import KmemObject
from kstatpy.metadata import StatMeta
from kstatpy.metadata import counter
from kstatpy.metadata import gauge
from kstatpy.metadata import identifier
from kstatpy.metadata import kstat_set_meta
from kstatpy.metadata import no_source
from kstatpy.metadata import text
from kstatpy.records import kstat_named_init
from kstatpy.records import kstat_named_setstr
from kstatpy.records import kstat_timer_init

OWN = ("kstat_exporter_scrape_duration_seconds", "kstat_exporter_scrape_errors", "kstat_exporter_series",
       "kstat_exporter_kstats")  # fmt: skip


def exporter(chain: Chain, *select: str, **kw: Any) -> Exporter:
    return Exporter(IoctlHandler(chain, None), "127.0.0.1", 0, [parse_select(s) for s in select], **kw)


def scrape(exp: Exporter) -> dict[str, Metric]:
    """One scrape, as prometheus-client's exposition asks for it: the families by name."""
    return {f.name: f for f in exp.collector.collect()}


def own(fams: dict[str, Metric], name: str) -> float:
    (sample,) = fams["kstat_exporter_" + name].samples
    return sample.value


def values(fams: dict[str, Metric]) -> dict[str, dict[tuple[str, ...], Any]]:
    """{sample name: {(module, instance, name, class[, value]): value}}, the exporter's own left out."""
    out: dict[str, dict[tuple[str, ...], Any]] = {}
    for name, fam in fams.items():
        if name in OWN:
            continue
        for s in fam.samples:
            key = tuple(s.labels[k] for k in ("module", "kstat_instance", "name", "class"))
            out.setdefault(s.name, {})[key + ((s.labels["value"],) if "value" in s.labels else ())] = s.value
    return out


def named(chain: Chain, module: str, inst: int, name: str, records: Sequence[tuple[str, int, Any]],
          meta: dict[str, StatMeta] | None = None, ks_class: str = "misc", flags: int = 0) -> Any:  # fmt: skip
    ksp = chain.kstat_create(module, inst, name, ks_class, T.NAMED, len(records), flags)
    for knp, (stat, dtype, value) in zip(ksp.ks_data, records, strict=True):
        kstat_named_init(knp, stat, dtype)
        if dtype == D.STRING:
            kstat_named_setstr(knp, value)
        elif value is not None:
            knp.value = value
    if meta:
        kstat_set_meta(ksp, meta)
    chain.kstat_install(ksp)
    return ksp


# --- names and options ----------------------------------------------------------------------


def test_metric_names_at_their_edges() -> None:
    assert metric_name("m", "x", "") == "kstat_m_x"  # no unit: no trailing "_"
    assert metric_name("M-1", "A.c", "") == "kstat_m_1_a_c"  # lower case, digits kept
    assert metric_name("m", "ms", "seconds") == "kstat_m_value_seconds"  # nothing left but the unit
    assert metric_name("m", "ms", "") == "kstat_m_value"
    assert metric_name("m", "a_seconds", "seconds") == "kstat_m_a_seconds"  # not twice
    assert metric_name("m", "xseconds", "seconds") == "kstat_m_xseconds_seconds"  # a whole token only
    for abbrev in ("s", "ms", "us", "ns", "sec", "b", "kb", "mb", "gb", "tb", "pb", "m", "h", "d"):
        assert metric_name("m", f"busy_{abbrev}", "") == "kstat_m_busy", abbrev
    # Hertz's spellings go only when the value is in hertz.
    assert metric_name("c", "speed_kHz", "hertz") == "kstat_c_speed_hertz"
    assert metric_name("c", "speed_GHz", "") == "kstat_c_speed_ghz"
    assert metric_name("c", "speed_hz", "bytes") == "kstat_c_speed_hz_bytes"
    # _total is a counter's (the default typ) alone.
    assert metric_name("m", "buf_total", "") == "kstat_m_buf_total"
    for typ in ("gauge", "info", "unknown", "any"):  # any typ but counter, whichever way it sorts
        assert metric_name("m", "buf_total", "", typ) == "kstat_m_buf_total_value", typ
    assert metric_name("m", "buf_totals", "", "gauge") == "kstat_m_buf_totals"


def test_parse_listen_and_select_at_their_edges() -> None:
    assert parse_listen("h:0") == ("h", 0)
    assert parse_listen("h:65535") == ("h", 65535)
    assert parse_listen("[::]:1") == ("::", 1)
    assert parse_listen("[]:1") == ("0.0.0.0", 1)
    assert parse_listen("[::1:2") == ("[::1", 2)  # brackets go only as a pair
    assert parse_listen("x]:2") == ("x]", 2)
    for bad in ("h:65536", "h:-1", "h:1.5", "", ":"):
        with pytest.raises(ValueError, match=r": expected HOST:PORT$"):
            parse_listen(bad)
    with pytest.raises(ValueError, match=r"^'a:b:c:d:e': at most module:instance:name:statistic$"):
        parse_select("a:b:c:d:e")
    for bad in ("/(/", "a:/(/", "a:b:/(/", "a:b:c:/(/"):  # a regex in any of the four fields
        with pytest.raises(ValueError, match="^" + re.escape(repr(bad))):
            parse_select(bad)
    sel = parse_select("")
    assert all(p.match("anything") for p in (sel.module, sel.instance, sel.name, sel.statistic))


# --- the mapping --------------------------------------------------------------------------


def test_io_intr_and_timer_kstats_export_their_fields() -> None:
    chain = Chain()
    io = chain.kstat_create("d", 1, "sd1", "disk", T.IO, 1)
    io.ks_data[0].nread, io.ks_data[0].rtime, io.ks_data[0].wcnt = 4096, 3 * 10**9, 2
    chain.kstat_install(io)
    intr = chain.kstat_create("i", 0, "intr0", "controller", T.INTR, 1)
    intr.ks_data[0].intrs[:] = [5, 6, 7, 8, 9]
    chain.kstat_install(intr)
    timer = chain.kstat_create("tm", 0, "t0", "misc", T.TIMER, 2)
    kstat_timer_init(timer.ks_data[0], "first")
    kstat_timer_init(timer.ks_data[1], "second")
    timer.ks_data[0].num_events, timer.ks_data[0].elapsed_time, timer.ks_data[0].max_time = 4, 500_000_000, 10**9
    timer.ks_data[1].num_events = 99
    chain.kstat_install(timer)
    raw = chain.kstat_create("r", 0, "raw0", "misc", T.RAW, 16)
    chain.kstat_install(raw)
    for t in (T.TIMER, T.NAMED):  # no records at all: read, nothing to export
        chain.kstat_install(chain.kstat_create("empty", int(t), "none", "misc", t, 0))
    exp = exporter(chain)
    try:
        fams = scrape(exp)
        got = values(fams)
        d, i, t = ("d", "1", "sd1", "disk"), ("i", "0", "intr0", "controller"), ("tm", "0", "t0", "misc")
        assert got["kstat_d_nread_bytes_total"] == {d: 4096}
        assert got["kstat_d_rtime_seconds_total"] == {d: 3.0}
        assert got["kstat_d_wcnt"] == {d: 2} and fams["kstat_d_wcnt"].type == "gauge"
        assert fams["kstat_d_rlastupdate_seconds"].type == "gauge"
        assert {n: v for n, v in got.items() if n.startswith("kstat_i_")} == {
            "kstat_i_hard_total": {i: 5}, "kstat_i_soft_total": {i: 6}, "kstat_i_watchdog_total": {i: 7},
            "kstat_i_spurious_total": {i: 8}, "kstat_i_multiple_service_total": {i: 9}}  # fmt: skip
        assert got["kstat_tm_name_info"] == {(*t, "first"): 1}  # the first timer only, as kstat(8)
        assert got["kstat_tm_num_events_total"] == {t: 4}
        assert got["kstat_tm_elapsed_time_seconds_total"] == {t: 0.5}
        assert got["kstat_tm_max_time_seconds"] == {t: 1.0}
        assert len([n for n in got if n.startswith("kstat_d_")]) == 12
        assert len([n for n in got if n.startswith("kstat_tm_")]) == 7
        assert not [n for n in got if n.startswith(("kstat_r_", "kstat_unix_"))]  # RAW, and unix:0:kstat_types
        assert own(fams, "kstats") == 5
        assert own(fams, "series") == 12 + 5 + 7 == sum(len(v) for v in got.values())
        assert own(fams, "scrape_errors") == 0
    finally:
        exp.stop()


def test_named_records_units_and_what_is_left_out() -> None:
    chain = Chain()
    records = [
        ("c", D.CHAR, b"ab\0cd\0\0\0"),  # text up to the NUL
        ("s_str", D.STRING, None),  # a NULL string: empty text
        ("ident", D.UINT32, 7),
        ("snaptime", D.UINT64, 11),  # pseudo-statistic names: never a series
        ("crtime", D.UINT64, 12),
        ("unseen", D.UINT64, 0),  # no_source: a zero that means "unknown"
        ("bare", D.STRING, "free text"),  # a string without metadata: no series
        ("plain", D.INT64, -3),  # a number without metadata: untyped
        ("lat_us", D.UINT64, 250),
        ("wait_ms", D.UINT64, 1500),
        ("lbolt", D.UINT64, 300),  # ticks, no scale: left as it is
        ("hz_ticks", D.UINT64, 300),  # ticks, scale 0.01
        ("clock_MHz", D.UINT32, 2400),
        ("avenrun", D.UINT32, 512),  # 1/256
        ("speed", D.UINT64, 8000),  # bits/s
        ("up", D.UINT64, 9),  # seconds
        ("weird", D.UINT64, 4),  # a unit of its own, kept
        ("blocks", D.UINT64, 5),  # a gauge in "total": not a UNIT of a _total_value name
        ("half", D.UINT64, 10),  # count with a scale
    ]
    meta = {"c": text("a char"), "s_str": text("a string"), "ident": identifier("an id"),
            "unseen": no_source(description="nothing counts it"), "lat_us": counter("us", "latency"),
            "wait_ms": gauge("ms", "wait"), "lbolt": counter("ticks", "ticks"),
            "hz_ticks": counter("ticks", "ticks", 0.01), "clock_MHz": gauge("MHz", "clock"),
            "avenrun": gauge("1/256", "load"), "speed": gauge("bits/s", "link speed"),
            "up": counter("seconds", "uptime"), "weird": gauge("furlongs", "distance"),
            "blocks": gauge("total", "blocks"), "half": counter("count", "halves", 0.5)}  # fmt: skip
    named(chain, "n", 2, "k", records, meta, ks_class="net")
    exp = exporter(chain)
    try:
        fams = scrape(exp)
        got = values(fams)
        k = ("n", "2", "k", "net")
        assert got == {
            "kstat_n_c_info": {(*k, "ab"): 1},
            "kstat_n_str_info": {(*k, ""): 1},
            "kstat_n_ident_info": {(*k, "7"): 1},
            "kstat_n_plain": {k: -3},
            "kstat_n_lat_seconds_total": {k: pytest.approx(250e-6)},
            "kstat_n_wait_seconds": {k: 1.5},
            "kstat_n_lbolt_ticks_total": {k: 300},
            "kstat_n_hz_ticks_seconds_total": {k: 3.0},
            "kstat_n_clock_hertz": {k: 2.4e9},
            "kstat_n_avenrun": {k: 2.0},
            "kstat_n_speed_bytes_per_second": {k: 1000.0},
            "kstat_n_up_seconds_total": {k: 9},
            "kstat_n_weird_furlongs": {k: 4},
            "kstat_n_blocks_total_value": {k: 5},
            "kstat_n_half_total": {k: 10},  # scale without a unit to convert: unscaled
        }, got
        assert fams["kstat_n_plain"].type == "unknown" and fams["kstat_n_plain"].documentation == "n statistic plain"
        assert fams["kstat_n_c"].type == "info" and fams["kstat_n_c"].documentation == "a char"
        assert fams["kstat_n_ident"].type == "info"
        assert fams["kstat_n_wait_seconds"].unit == "seconds"
        assert fams["kstat_n_lat_seconds"].unit == "seconds" and fams["kstat_n_lat_seconds"].type == "counter"
        assert fams["kstat_n_blocks_total_value"].unit == ""
        assert fams["kstat_n_avenrun"].unit == "" and fams["kstat_n_avenrun"].type == "gauge"
        assert own(fams, "series") == 15 and own(fams, "scrape_errors") == 0
        om = generate_openmetrics(exp.registry).decode()  # and it is valid OpenMetrics
        assert "# UNIT kstat_n_weird_furlongs furlongs\n" in om and "# UNIT kstat_n_blocks" not in om
        assert 'kstat_n_str_info{class="net",kstat_instance="2",module="n",name="k",value=""} 1.0' in om
    finally:
        exp.stop()


def test_an_unnamed_record_and_a_nameless_kstat_family() -> None:
    chain = Chain()
    ksp = chain.kstat_create("u", 0, "k", "misc", T.NAMED, 2)
    kstat_named_init(ksp.ks_data[0], "x", D.UINT64)
    ksp.ks_data[0].value = 1
    kstat_named_init(ksp.ks_data[1], "", D.UINT64)  # a record with no name: kstat(8) skips it
    ksp.ks_data[1].value = 2
    chain.kstat_install(ksp)
    named(chain, "u", 0, "kstat_own", [("y", D.UINT64, 3)])  # a kstat_* name: the framework's, skipped
    named(chain, "u", 0, "not_kstat_", [("z", D.UINT64, 4)])
    exp = exporter(chain)
    try:
        got = values(scrape(exp))
        assert got == {"kstat_u_x": {("u", "0", "k", "misc"): 1}, "kstat_u_z": {("u", "0", "not_kstat_", "misc"): 4}}
    finally:
        exp.stop()


def test_failed_reads_duplicates_and_type_conflicts_are_counted() -> None:
    chain = Chain()
    for inst in range(6):  # six reads fail, more than succeed (n - r and n % r differ): no series, six errors
        bad = named(chain, "e", inst, "bad", [("x", D.UINT64, 1)])
        bad.ks_update = lambda ksp, rw: errno.EIO
    # "Hits" and "hits" make one family name and one series: the second is a duplicate.
    named(chain, "e", 0, "dup", [("Hits", D.UINT64, 1), ("hits", D.UINT64, 2)])
    # One family name, typed two ways by two kstats: the first kept.
    named(chain, "e", 1, "a", [("level", D.UINT64, 5)], {"level": counter("count", "as a counter")})
    named(chain, "e", 2, "b", [("level", D.UINT64, 6)], {"level": gauge("count", "as a gauge")})
    named(chain, "e", 3, "c", [("depth", D.UINT64, 7)], {"depth": gauge("count", "as a gauge")})  # the other way
    named(chain, "e", 4, "d", [("depth", D.UINT64, 8)], {"depth": counter("count", "as a counter")})
    exp = exporter(chain)
    try:
        fams = scrape(exp)
        got = values(fams)
        assert got["kstat_e_hits"] == {("e", "0", "dup", "misc"): 1}, got  # the first kept
        assert got["kstat_e_level_total"] == {("e", "1", "a", "misc"): 5}, got
        assert got["kstat_e_depth"] == {("e", "3", "c", "misc"): 7}, got
        assert "kstat_e_level" not in got and "kstat_e_depth_total" not in got and "kstat_e_x" not in got
        assert own(fams, "scrape_errors") == 6 + 1 + 2  # failed reads, the duplicate, the type conflicts
        assert own(fams, "kstats") == 5 and own(fams, "series") == 3
        assert own(scrape(exp), "scrape_errors") == 18  # since start
    finally:
        exp.stop()


def test_selectors_pick_kstats_and_statistics() -> None:
    chain = Chain()
    recs = [("x", D.UINT64, 1), ("y", D.UINT64, 2), ("z", D.UINT64, 3)]
    named(chain, "s", 0, "k", recs)
    named(chain, "s", 12, "k", recs)
    named(chain, "s", 0, "other", recs)
    named(chain, "t", 0, "k", recs)
    exp = exporter(chain, "s:0:k:x", "s:0:k:/^y$/", "s:12::z", "t:::")
    try:
        fams = scrape(exp)
        got = values(fams)
        assert got == {
            "kstat_s_x": {("s", "0", "k", "misc"): 1},
            "kstat_s_y": {("s", "0", "k", "misc"): 2},
            "kstat_s_z": {("s", "12", "k", "misc"): 3},
            "kstat_t_x": {("t", "0", "k", "misc"): 1},
            "kstat_t_y": {("t", "0", "k", "misc"): 2},
            "kstat_t_z": {("t", "0", "k", "misc"): 3},
        }, got
        assert own(fams, "kstats") == 3
    finally:
        exp.stop()


def test_metadata_follows_a_recreated_kstat_and_is_forgotten_with_it() -> None:
    chain = Chain()
    first = named(chain, "r", 0, "k", [("v", D.UINT64, 5)], {"v": counter("ns", "time")})
    other = named(chain, "r", 1, "k", [("w", D.UINT64, 1)], {"w": gauge("count", "w")})
    exp = exporter(chain)
    try:
        fams = scrape(exp)
        assert fams["kstat_r_v_seconds"].type == "counter" and values(fams)["kstat_r_v_seconds_total"]
        chain.kstat_delete(first)  # the same module:instance:name again, declared otherwise
        named(chain, "r", 0, "k", [("v", D.UINT64, 5)], {"v": gauge("bytes", "size")})
        fams = scrape(exp)
        assert fams["kstat_r_v_bytes"].type == "gauge" and "kstat_r_v_seconds" not in fams
        assert values(fams)["kstat_r_v_bytes"] == {("r", "0", "k", "misc"): 5}
        chain.kstat_delete(other)
        scrape(exp)
        live = {(k.ks_kid, k.ks_crtime) for k in exp.kc.kc_chain if k.ks_module == "r"}
        assert set(exp.collector._meta) == live and len(live) == 1  # no entry per kstat ever seen
    finally:
        exp.stop()


def test_a_kstat_deleted_between_its_read_and_its_describe_is_exported_untyped() -> None:
    # READ_MANY read kstat a, then b's ks_update deletes a: DESCRIBE of a answers ENXIO. a's
    # values of this scrape are still exported, without metadata; the scrape does not fail.
    chain = Chain()
    a = named(chain, "g", 0, "a", [("x", D.UINT64, 5)], {"x": counter("count", "x")})
    b = named(chain, "g", 0, "b", [("x", D.UINT64, 6)])
    deleted: list[Any] = []

    def delete_a(ksp: Any, rw: int) -> int:
        if not deleted:
            deleted.append(a)
            chain.kstat_delete(a)
        return 0

    b.ks_update = delete_a
    exp = exporter(chain)
    try:
        fams = scrape(exp)
        assert deleted and fams["kstat_g_x"].type == "unknown"
        assert values(fams) == {"kstat_g_x": {("g", "0", "a", "misc"): 5, ("g", "0", "b", "misc"): 6}}
        assert own(fams, "scrape_errors") == 0 and own(fams, "kstats") == 2
    finally:
        exp.stop()


# --- scrapes that fail ----------------------------------------------------------------------


def test_a_scrape_behind_a_stuck_one_exports_only_the_exporters_series() -> None:
    chain = Chain()
    entered, release = threading.Event(), threading.Event()

    def stuck(ksp: Any, rw: int) -> int:
        entered.set()
        release.wait(60)  # bounded: the test sets it
        return 0

    named(chain, "st", 0, "k", [("x", D.UINT64, 1)]).ks_update = stuck
    exp = exporter(chain)
    first: list[dict[str, Metric]] = []
    t = threading.Thread(target=lambda: first.append(scrape(exp)))
    try:
        t.start()
        wait(entered, 60, "the first scrape reaching the stuck provider")
        exp.collector.lock_timeout = 0.05  # the first scrape holds the lock until `release`
        fams = scrape(exp)
        assert set(fams) == set(OWN), set(fams)
        assert own(fams, "scrape_errors") == 1 and own(fams, "series") == 0 and own(fams, "kstats") == 0
    finally:
        release.set()
        join(t, 60, "the stuck scrape")
        exp.stop()
    assert values(first[0]) == {"kstat_st_x": {("st", "0", "k", "misc"): 1}}


def test_a_failed_scrape_is_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    chain = Chain()
    named(chain, "f", 0, "k", [("x", D.UINT64, 1)])
    broken = threading.Event()

    def refresh() -> None:  # a provider's kstatpy_refresh, failing from the second scrape on
        if broken.is_set():
            raise RuntimeError("provider refresh failed")

    exp = Exporter(IoctlHandler(chain, None, refresh=refresh), "127.0.0.1", 0)
    try:
        assert values(scrape(exp)) == {"kstat_f_x": {("f", "0", "k", "misc"): 1}}
        broken.set()
        with caplog.at_level(logging.WARNING, logger="kstatpy.exporter"):
            fams = scrape(exp)
        assert set(fams) == set(OWN) and own(fams, "scrape_errors") == 1, set(fams)
        assert own(fams, "series") == 0 and own(fams, "kstats") == 0
        mine = [r.getMessage() for r in caplog.records if r.name == "kstatpy.exporter"]
        assert len(mine) == 1 and mine[0].startswith("metrics scrape failed: "), mine
    finally:
        exp.stop()


class _Soft(KmemObject):
    __slots__ = ("n",)
    kmem_size = 64

    def __init__(self) -> None:
        self.n = 0


def _uaf_chain() -> tuple[Chain, Any]:
    # A provider's soft state freed while its kstat stays installed (the pre-14281 bug).
    chain = Chain()
    ksp = chain.kstat_create("test", 0, "uaf", "misc", T.NAMED, 1)
    kstat_named_init(ksp.ks_data[0], "n", D.UINT64)
    ksp.ks_private = chain.kmem.zalloc(_Soft)

    def update(ksp: Any, rw: int) -> int:
        ksp.ks_private.n += 1
        ksp.ks_data[0].value = ksp.ks_private.n
        return 0

    ksp.ks_update = update
    chain.kstat_install(ksp)
    named(chain, "ok", 0, "k", [("x", D.UINT64, 1)])
    return chain, ksp


def test_a_panic_during_a_scrape_goes_to_on_panic() -> None:
    chain, ksp = _uaf_chain()
    panics: list[BadTrap] = []
    exp = exporter(chain, on_panic=panics.append)
    try:
        assert values(scrape(exp))["kstat_test_n"] == {("test", "0", "uaf", "misc"): 1}
        chain.kmem.free(ksp.ks_private)
        fams = scrape(exp)
        assert len(panics) == 1 and isinstance(panics[0], BadTrap)
        assert set(fams) == set(OWN) and own(fams, "scrape_errors") == 1 and own(fams, "series") == 0
    finally:
        exp.stop()


def test_a_panic_during_a_scrape_without_on_panic_is_raised() -> None:
    chain, ksp = _uaf_chain()
    exp = exporter(chain)
    try:
        chain.kmem.free(ksp.ks_private)
        with pytest.raises(BadTrap):
            scrape(exp)
        assert exp.collector.errors == 1
    finally:
        exp.stop()


# --- the exporter's own handle and series -----------------------------------------------------


def test_the_exporter_reads_unprivileged_and_serves_until_stopped() -> None:
    chain = Chain()
    named(chain, "w", 0, "k", [("x", D.UINT64, 1)], flags=KSTAT_FLAG_WRITABLE)
    exp = exporter(chain, conn_timeout=30.0, max_connections=3)
    try:
        exp.kc.chain_update()
        ksp = next(k for k in exp.kc.kc_chain if k.ks_module == "w")
        exp.kc.read(ksp)
        with pytest.raises(KstatAccessError):
            exp.kc.write(ksp)  # a scrape can never write (docs/PROTOCOL.md §6)
        host, port = exp.start()
        assert host == "127.0.0.1" and port > 0
        assert (exp.conn_timeout, exp.max_connections) == (30.0, 3)
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=30) as resp:
            body = resp.read().decode()
        assert 'kstat_w_x{class="misc",kstat_instance="0",module="w",name="k"} 1.0' in body
    finally:
        exp.stop()
    exp.stop()  # twice: nothing left to stop
    assert exp._server is None


def test_the_scrape_duration_is_within_the_scrape() -> None:
    exp = exporter(Chain())
    try:
        t0 = time.perf_counter()
        duration = own(scrape(exp), "scrape_duration_seconds")
        outside = time.perf_counter() - t0
        assert 0 < duration <= outside and math.isfinite(duration), (duration, outside)
    finally:
        exp.stop()
