"""kstat selection and printing passes: the selector matrix, what is read, failed reads,
-q, interval reports with -T u, and chain updates between reports."""

from __future__ import annotations

import errno
import json
import re
import time

import pytest
from cli_chain import build_chain
from cli_chain import run_kstat

from kstatpy.chain import Chain
from kstatpy.client import kstat_open_chain
from kstatpy.constants import KstatDataType as D
from kstatpy.constants import KstatType as T
from kstatpy.records import kstat_named_init


@pytest.fixture
def chain() -> Chain:
    return build_chain(Chain())


@pytest.fixture
def kc(chain: Chain):
    return kstat_open_chain(chain)


def lines(out: bytes) -> list[str]:
    return out.decode().splitlines()


def names(out: bytes) -> list[str]:
    return [line.split("\t")[0] for line in lines(out)]


MATRIX = [
    # selector operands -> the module:instance:name of every printed line (deduplicated, in order)
    (["unix"], ["unix:0:system_misc"]),
    (["uni"], []),  # globs are anchored
    (["/uni/"], ["unix:0:system_misc"]),  # regexes are not
    (["/^nix/"], []),
    (["::system_misc"], ["unix:0:system_misc"]),
    (["::/misc/"], ["unix:0:system_misc"]),
    ([":1:"], ["case:1:tie", "Case:1:Tie"]),
    ([":/^1/:"], ["case:1:tie", "Case:1:Tie", "case:10:tie", "longnames:123456:a_statistic_name_of_thirty_chx"]),
    ([":-1"], ["neg:-1:negative"]),
    (["[cC]ase::[tT]ie"], ["case:0:tie", "case:1:tie", "Case:1:Tie", "case:2:tie", "case:10:tie"]),
    (["case:2::stat"], ["case:2:tie"]),
    ([":::nosuchstat"], []),
]


@pytest.mark.parametrize(("argv", "expected"), MATRIX, ids=[" ".join(m[0]) for m in MATRIX])
def test_selector_matrix(kc, argv: list[str], expected: list[str]) -> None:
    code, out, err = run_kstat(kc, "-p", *argv)
    assert err == b""
    assert code == (0 if expected else 1)
    seen: list[str] = []
    for n in names(out):
        triplet = n.rsplit(":", 1)[0]
        if triplet not in seen:
            seen.append(triplet)
    assert seen == expected


def test_duplicates_across_selectors_print_twice_grouped_by_selector(kc) -> None:
    code, out, _ = run_kstat(kc, "-p", "unix:::ncpus", "intr:::hard", "unix:::ncpus")
    assert code == 0
    assert lines(out) == ["unix:0:system_misc:ncpus\t4", "intr:0:intr0:hard\t1", "unix:0:system_misc:ncpus\t4"]


def test_statistic_filter_suppresses_whole_instance(kc) -> None:
    # Default format: an eligible instance with no matching statistic prints no header.
    code, out, _ = run_kstat(kc, ":::hard")
    assert code == 0
    assert out.count(b"module:") == 1 and b"intr0" in out
    assert out.endswith(b"\thard                            1\n\n")


def test_statistic_case_sensitive_glob(kc) -> None:
    _, out, _ = run_kstat(kc, "-p", "case:2::stat")
    assert lines(out) == ["case:2:tie:stat\t2"]
    _, out, _ = run_kstat(kc, "-p", "case:2::/^stat$|^STAT$/")
    assert lines(out) == ["case:2:tie:STAT\t3", "case:2:tie:stat\t2"]


def test_class_pattern_combines_with_operands(kc) -> None:
    _, out, _ = run_kstat(kc, "-p", "-c", "disk", "sd", "unix")
    assert {n.split(":")[0] for n in names(out)} == {"sd"}


def test_quiet_prints_nothing_but_sets_status(kc) -> None:
    assert run_kstat(kc, "-q", "unix:::ncpus") == (0, b"", b"")
    assert run_kstat(kc, "-q", "nosuch") == (1, b"", b"")


def test_parseable_list_values_only(kc) -> None:
    _, out, _ = run_kstat(kc, "-l", "intr")
    assert lines(out) == [f"intr:0:intr0:{s}" for s in
                          ["class", "crtime", "hard", "multiple_service", "snaptime", "soft", "spurious", "watchdog"]]  # fmt: skip
    _, out, _ = run_kstat(kc, "-C", "intr:::hard")
    assert lines(out) == ["intr:0:intr0:hard:1"]
    _, out, _ = run_kstat(kc, "-p", "-V", "intr:::hard", "sd:::nread")
    assert lines(out) == ["1", "4096"]


def _counting_kstat(chain: Chain, module: str, calls: list[str], fail: int = 0):
    ksp = chain.kstat_create(module, 0, "counted", "misc", T.NAMED, 1)
    kstat_named_init(ksp.ks_data[0], "value", D.UINT64)

    def update(ksp, rw):
        calls.append(module)
        return fail

    ksp.ks_update = update
    chain.kstat_install(ksp)
    return ksp


def test_only_selected_kstats_are_read(chain: Chain) -> None:
    calls: list[str] = []
    _counting_kstat(chain, "countme", calls)
    _counting_kstat(chain, "other", calls)
    kc = kstat_open_chain(chain)
    # The statistic field is not a prefilter: module and name are.
    assert run_kstat(kc, "-p", "countme:::value")[0] == 0
    assert calls == ["countme"]
    assert run_kstat(kc, "-p", "nosuch:::value")[0] == 1
    assert calls == ["countme"]


def test_failed_read_keeps_instance_with_crtime_and_class(chain: Chain) -> None:
    calls: list[str] = []
    _counting_kstat(chain, "broken", calls, fail=errno.EIO)
    kc = kstat_open_chain(chain)
    code, out, _ = run_kstat(kc, "-p", "broken")
    assert code == 0 and calls == ["broken"]
    assert names(out) == ["broken:0:counted:class", "broken:0:counted:crtime"]
    code, out, _ = run_kstat(kc, "broken")
    assert b"\tcrtime" in out and b"snaptime" not in out and b"class" in out  # class: the header only


def test_interval_reports_timestamps_and_chain_update(chain: Chain) -> None:
    import io

    from kstatpy.cli.kstat import run

    armed: list[bool] = []

    def refresh() -> None:
        # Called before every selection: once the 1st report is out, a new kstat appears.
        if armed == [True]:
            armed.append(False)
            ksp = chain.kstat_create("unix", 0, "late", "misc", T.NAMED, 1)
            kstat_named_init(ksp.ks_data[0], "ncpus", D.UINT32)
            ksp.ks_data[0].value = 8
            chain.kstat_install(ksp)

    class ArmingOut(io.BytesIO):
        def write(self, data) -> int:  # type: ignore[override]
            if b"system_misc" in bytes(data) and not armed:
                armed.append(True)  # the first report has been written
            return super().write(data)

    kc = kstat_open_chain(chain, refresh=refresh)
    t0 = time.time()
    outs, errs = ArmingOut(), io.BytesIO()
    code = run(["-p", "-T", "u", "unix:::ncpus", "1", "2"], outs, errs, kc=kc)
    out, err = outs.getvalue(), errs.getvalue()
    elapsed = time.time() - t0
    assert (code, err) == (0, b"")
    text = out.decode()
    m = re.fullmatch(
        r"(\d+)\nunix:0:system_misc:ncpus\t4\n\n(\d+)\nunix:0:late:ncpus\t8\nunix:0:system_misc:ncpus\t4\n", text
    )
    assert m, text
    assert int(t0) <= int(m[1]) <= int(m[2]) <= int(time.time())
    assert 0.5 <= elapsed < 5


def test_json_interval_reports_are_complete_arrays(kc) -> None:
    code, out, _ = run_kstat(kc, "-j", "-T", "d", "intr", "1", "2")
    assert code == 0
    reports = out.decode().split("]\n\n")
    assert len(reports) == 2
    for i, report in enumerate(reports):
        stamp, body = report.split("\n", 1)
        body += "]\n" if i == 0 else ""
        assert re.fullmatch(r"\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \S+ \d{4}", stamp), stamp
        doc = json.loads(body)
        assert [o["module"] for o in doc] == ["intr"]
        assert body.startswith("[{") and body.endswith("}]\n")


def test_quiet_with_timestamps_still_prints_them(kc) -> None:
    code, out, _ = run_kstat(kc, "-q", "-T", "u", "nosuch")
    assert code == 1
    assert re.fullmatch(rb"\d+\n", out)


def test_header_widths_count_bytes_like_c(chain: Chain) -> None:
    # 20 characters, 40 bytes: %-30.30s keeps 30 bytes (15 characters) and pads nothing.
    ksp = chain.kstat_create("\u00f6" * 20, 0, "n", "\u00e4" * 20, T.NAMED, 1)
    kstat_named_init(ksp.ks_data[0], "\u00fc" * 20, D.UINT32)
    chain.kstat_install(ksp)
    kc = kstat_open_chain(chain)
    code, out, _ = run_kstat(kc, "\u00f6*")
    assert code == 0
    head, name_line, *_ = out.decode().splitlines()
    assert head == "module: " + "\u00f6" * 15 + "  instance: 0     "
    assert name_line == "name:   n" + " " * 29 + "  class:    " + "\u00e4" * 15
    # kstat_named_init kept 30 bytes of the statistic's name; %-30s then adds no padding.
    assert ("\t" + "\u00fc" * 15 + "  0\n") in out.decode()
