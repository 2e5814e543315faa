"""KSTATPY_IOC_SELECT (docs/PROTOCOL.md §9.2): the selection equals kstat(8)'s whole-chain path.

The reference is ``run(..., select=False)``: the chain read with KID 0 and selected in
the command, as before SELECT. Compared over the golden cases, random selectors
(hypothesis), a real kstatd, and a server without SELECT (the client falls back).
"""

from __future__ import annotations

import errno
import fnmatch
import io
import threading
import time
from unittest import mock

import pytest
from bounded import join
from cli_chain import FIXED_NS
from cli_chain import build_chain
from cli_chain import zero_crtime
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from kstatd_fixture import rpc
from kstatd_fixture import running_kstatd
from test_cli_daemon import PROVIDER_ENV
from test_cli_daemon import kstat
from test_cli_daemon import kstat_env
from test_cli_daemon import untimed
from test_cli_golden import CASES

from kstatpy.chain import Chain
from kstatpy.cli.kstat import run
from kstatpy.client import kstat_open
from kstatpy.client import kstat_open_chain
from kstatpy.constants import KstatDataType as D
from kstatpy.constants import KstatType as T
from kstatpy.errors import KstatError
from kstatpy.ioctl import IoctlHandler
from kstatpy.kstat import kstat_named_init
from kstatpy.select import Pattern
from kstatpy.select import RegexError

SELECT = 0x4B12


def _old_server(kc):
    # A version-1 server from before SELECT: its dispatch table lacks 0x4B12, so
    # dispatch answers EINVAL ("unknown kstat ioctl") as any unknown kstat cmd.
    handler: IoctlHandler = kc.kc_kd.handler
    del handler._table[SELECT]
    return kc


def _run(kc, argv, select=True):
    out, err = io.BytesIO(), io.BytesIO()
    code = run(list(argv), out, err, kc=kc, select=select)
    return code, out.getvalue(), err.getvalue()


def _three_ways(argv):
    """(status, out, err) through SELECT, the old-server fallback, and the whole chain."""
    answers = []
    with mock.patch.object(time, "monotonic_ns", lambda: FIXED_NS):
        for how in ("select", "old server", "whole chain"):
            chain = build_chain(Chain())
            zero_crtime(chain, "neg", "negative")
            kc = kstat_open_chain(chain, read_chain=how == "whole chain")
            if how == "old server":
                _old_server(kc)
            answers.append(_run(kc, argv, select=how != "whole chain"))
    return answers


@pytest.mark.parametrize(("golden", "status", "argv"), CASES, ids=[c[0] for c in CASES])
def test_golden_cases_select_equals_whole_chain(golden, status, argv):
    selected, fallback, whole = _three_ways(argv)
    assert selected == whole == fallback
    assert selected[0] == status


# Pattern pieces that hit the known chain (tests/cli_chain.py) and miss it, globs,
# regexes (some invalid: the error must come out after the same output), empties.
_NAMES = ["unix", "strs", "Case", "case", "longnames", "neg", "m\u00f6d", "intr", "sd", "timers", "rawmod",
          "system_misc", "strings", "tie", "Tie", "t", "sd0", "intr0", "kstat_secret", "rawdata",
          "ncpus", "avenrun_1min", "utf8", "Stat", "stat", "crtime", "snaptime", "class", "hard", "nread",
          "0", "1", "2", "10", "-1", "123456", "00", "misc", "disk", "controller", "cl\u00e4ss", "nosuch"]  # fmt: skip
_GLOBS = ["*", "?", "u*", "*a*", "[a-c]*", "[!u]*", "c?se", "[", "*s", "s*", "[Cc]ase", "1*", "\\*", "?isc"]
_REGEXES = ["/^u/", "/a|b/", "/(/", "/a**/", "/[[:upper:]]/", "//", "/e$/", "/^[0-9]+$/", "/x{2,1}/", "/./"]
_PATTERN = st.one_of(st.sampled_from(_NAMES), st.sampled_from(_GLOBS), st.sampled_from(_REGEXES), st.just(""))
# An operand that strtoul accepts is kstat's interval: keep digits-only ones out.
_OPERAND = st.lists(_PATTERN, min_size=1, max_size=4).map(":".join).filter(
    lambda t: ":" in t or not any(c.isdigit() for c in t)
)
_FLAGS = st.sampled_from([[], ["-p"], ["-j"], ["-l"], ["-C"], ["-q"], ["-p", "-V"], ["-j", "-p"]])
_OPTION = st.tuples(st.sampled_from(["-c", "-m", "-i", "-n", "-s"]), _PATTERN).map(list)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flags=_FLAGS, options=st.lists(_OPTION, max_size=2), operands=st.lists(_OPERAND, max_size=3))
def test_random_selectors_select_equals_whole_chain(flags, options, operands):
    argv = flags + [a for opt in options for a in opt] + operands
    selected, fallback, whole = _three_ways(argv)
    assert selected == whole, argv
    assert fallback == whole, argv


def test_bad_regex_after_output_prints_the_same_prefix():
    # Selector 2's instance regex is only reached after selector 1 printed.
    selected, _, whole = _three_ways(["-p", "unix:0:system_misc:ncpus", "strs:/(/"])
    assert selected == whole
    assert selected[0] == 2 and selected[1] == b"unix:0:system_misc:ncpus\t4\n"
    assert selected[2].startswith(b"kstat: parentheses not balanced\nUsage:")


# --- the request itself ---------------------------------------------------------


@pytest.fixture
def kc():
    chain = build_chain(Chain())
    return kstat_open_chain(chain, read_chain=False)


def test_select_reads_only_what_matches(kc):
    out = kc.select([["unix", "0", "system_misc", "avenrun*"]])
    assert [(code, ksp.ks_name) for code, ksp, _ in out] == [(0, "system_misc")]
    ksp = out[0][1]
    assert [r.name for r in ksp.ks_data] == ["avenrun_1min", "avenrun_5min", "avenrun_15min"]
    assert ksp.ks_ndata == 11  # the kstat's, not the filtered count
    assert kc.kc_chain == []  # no KID 0 read


def test_select_answers_kid_order_and_filters(kc):
    out = kc.select([["case"], ["Case"]])
    assert [ksp.ks_instance for _, ksp, _ in out] == [1, 1, 0, 10, 2]  # KID order, both modules
    assert [k.ks_module for _, k, _ in kc.select([["/ase/"]], ks_class="/^nomatch/")] == []
    skipped = kc.select([["unix"]], skip_name="kstat_*", types=[1, 2, 3, 4])
    assert [k.ks_name for _, k, _ in skipped] == ["system_misc"]
    everything = kc.select([["unix"]])
    assert [k.ks_name for _, k, _ in everything] == ["kstat_headers", "kstat_types", "system_misc", "kstat_secret"]
    assert kc.select([["unix", "0", "system_misc", "*"], ["unix", "0", "system_misc", "ncpus"]])[0][1].ks_ndata == 11


def test_select_prev_snaptime_and_failed_reads(kc):
    chain: Chain = kc.kc_kd.handler.chain
    ksp = chain.kstat_create("broken", 0, "b", "misc", T.NAMED, 1)
    kstat_named_init(ksp.ks_data[0], "v", D.UINT32)
    ksp.ks_update = lambda k, rw: errno.EIO
    chain.kstat_install(ksp)
    ksp.ks_snaptime = 42
    ((code, user, prev),) = kc.select([["broken"]])
    assert (code, user.ks_name, user.ks_data, prev, user.ks_snaptime) == (errno.EIO, "b", None, 42, 42)
    ((code, user, prev),) = kc.select([["unix", "0", "system_misc"]])
    first = user.ks_snaptime
    ((code, user, prev),) = kc.select([["unix", "0", "system_misc"]])
    assert code == 0 and prev == first and user.ks_snaptime >= first


def test_select_refuses_regexes_and_the_client_matches_them_itself(kc):
    # kstatd never evaluates a client's /regex/ (one that backtracks would stall it
    # with the GIL held): EINVAL without "regerror", before any pattern is compiled.
    for arg in (
        {"selectors": [["/(/"]]},
        {"selectors": [["unix", "0", "/^(.*.*)*x$/"]]},
        {"selectors": [["*"]], "class": "/misc/"},
        {"selectors": [["*"]], "skip_name": "/kstat_/"},
    ):
        with pytest.raises(KstatError) as info:
            kc.kc_kd.ioctl(SELECT, arg)
        assert info.value.errno == errno.EINVAL and "regerror" not in info.value.extra, arg
    with pytest.raises(RegexError, match="parentheses"):
        kc.select([["/(/"]])
    assert kc.select([["nosuch", "/(/"]]) == []  # a regex never evaluated is no error
    out = kc.select([["/^un/", "0", "/_misc$/", "/^ncpus$/"]])
    assert [(c, k.ks_name, [r.name for r in k.ks_data]) for c, k, _ in out] == [(0, "system_misc", ["ncpus"])]


@pytest.mark.timeout(60)
def test_globs_match_in_polynomial_time():
    # 30 stars against 60 characters: a backtracking translation tries about 10^17
    # splits (it never returns); the atomic-group one answers at once.
    assert not Pattern("*a" * 30 + "*b").match("a" * 60)
    assert Pattern("*a" * 30 + "*b").match("a" * 60 + "b")
    assert Pattern("x*[ab]?c*d").match("xzzbqczzd") and not Pattern("x*[ab]?c*d").match("xzzbqczz")


@given(st.text("ab*?", max_size=8), st.text("ab", max_size=10))
def test_globs_agree_with_fnmatch_on_stars_and_question_marks(pattern, s):
    assert Pattern(pattern).match(s) == fnmatch.fnmatchcase(s, pattern)


@pytest.mark.parametrize(
    ("arg", "code"),
    [
        (None, errno.EINVAL),
        ({}, errno.EINVAL),
        ({"selectors": []}, errno.EINVAL),
        ({"selectors": "unix"}, errno.EINVAL),
        ({"selectors": [["a", "b", "c", "d", "e"]]}, errno.EINVAL),
        ({"selectors": [[1]]}, errno.EINVAL),
        ({"selectors": [["*"]], "class": 3}, errno.EINVAL),
        ({"selectors": [["*"]], "skip_name": []}, errno.EINVAL),
        ({"selectors": [["*"]], "types": [1, "x"]}, errno.EINVAL),
        ({"selectors": [["*"]] * 4097}, errno.E2BIG),
        ({"selectors": [[]]}, errno.EINVAL),  # §9.2: 1 to 4 strings (empty would match all)
        ({"selectors": [["*"], []]}, errno.EINVAL),
        ({"selectors": [["*"]] * 257}, errno.E2BIG),  # MAX_SELECTORS
        ({"selectors": [["a" * 8192, "*", "b" * 8193]]}, errno.E2BIG),  # 16 KiB of patterns
        ({"selectors": [["*" * 100, "*", "*" * 100, "*" * 100]] * 55}, errno.E2BIG),
    ],
)
def test_select_malformed_arguments(kc, arg, code):
    with pytest.raises(KstatError) as info:
        kc.kc_kd.ioctl(SELECT, arg)
    assert info.value.errno == code


def test_select_limits_are_inclusive(kc):
    # Exactly MAX_SELECTORS selectors and exactly 16 KiB of patterns are served.
    assert kc.kc_kd.ioctl(SELECT, {"selectors": [["nosuch"]] * 256})["results"] == []
    assert kc.kc_kd.ioctl(SELECT, {"selectors": [["a" * 8192, "*", "b" * 8191]]})["results"] == []
    assert kc.kc_kd.ioctl(SELECT, {"selectors": [["\u00e4" * 4096, "*", "*" * 8191]]})["results"] == []
    with pytest.raises(KstatError) as info:  # bytes, not characters: 8,192 bytes of ä
        kc.kc_kd.ioctl(SELECT, {"selectors": [["\u00e4" * 4096, "*", "*" * 8192]]})
    assert info.value.errno == errno.E2BIG


def test_client_refuses_an_empty_selector(kc):
    for sels in ([[]], [["unix"], []], [["a", "b", "c", "d", "e"]]):
        with pytest.raises(KstatError, match="1 to 4 pattern strings") as info:
            kc.select(sels)
        assert info.value.errno == errno.EINVAL
    assert not kc.kc_chain  # refused before anything was read


def test_select_too_big_for_kstatd_is_selected_by_the_client(kc):
    # kstatd answers E2BIG for the request as a whole (too many selectors, too many pattern
    # bytes): KstatCtl.select selects itself, as with an old server, with the same result.
    def seen(out):
        return [(c, k.ks_module, k.ks_instance, k.ks_name, [getattr(r, "name", r) for r in k.ks_data or ()])
                for c, k, _ in out]  # fmt: skip

    sels = [["unix", "0", "system_misc"], ["case"]]
    want = seen(kc.select(sels))
    assert len(want) == 5
    many = sels + [[f"nosuch{i}"] for i in range(400)]
    with pytest.raises(KstatError) as info:
        kc.kc_kd.ioctl(SELECT, {"selectors": many})
    assert info.value.errno == errno.E2BIG
    long = [*sels, ["x" * 20000]]
    for sels in (many, long):
        kc2 = kstat_open_chain(kc.kc_kd.handler.chain, read_chain=False)
        assert seen(kc2.select(sels)) == want
        assert kc2.kc_chain  # selected here: it read the chain


def test_select_on_an_old_server_falls_back_to_the_chain(kc):
    _old_server(kc)
    out = kc.select([["unix", "0", "system_misc", "ncpus"]])
    assert [(c, k.ks_name, [r.name for r in k.ks_data]) for c, k, _ in out] == [(0, "system_misc", ["ncpus"])]
    assert kc.kc_chain  # it had to read the chain
    with pytest.raises(RegexError):
        kc.select([["/(/"]])


def test_select_races_with_delete_one_hold_at_a_time():
    # Kstats come and go while threads select them: each answer is data or a
    # failed read with its header (ENXIO), never a crash or a stuck hold.
    chain = Chain()
    kc = kstat_open_chain(chain, read_chain=False)
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn():
        i = 0
        while not stop.is_set():
            ksp = chain.kstat_create("churn", i % 8, "k", "misc", T.NAMED, 1)
            kstat_named_init(ksp.ks_data[0], "v", D.UINT64)
            chain.kstat_install(ksp)
            chain.kstat_delete(chain.kstat_lookup_name("churn", (i + 4) % 8, "k"))
            i += 1

    def reader():
        try:
            for _ in range(300):
                for code, ksp, _ in kc.select([["churn"]]):
                    assert code in (0, errno.ENXIO), code
                    assert ksp.ks_module == "churn"
                    assert (ksp.ks_data is not None) == (code == 0)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=churn)] + [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads[1:]:
        join(t, 120, "a reader's 300 selects")
    stop.set()
    join(threads[0], 30, "the churn thread's stop")
    assert not errors, errors
    assert all(k.e_owner is None for k in chain.kstats())  # every hold was released


# --- through kstatd ---------------------------------------------------------------


@pytest.fixture(scope="module")
def kd(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kstatd")
    with running_kstatd(tmp, plugins=("cli_provider",), env=PROVIDER_ENV) as kd:
        yield kd


def _requests(path):
    _, _code, res = rpc(path, 0x4B02, {"kid": 0})
    kid = next(h["kid"] for h in res["kstat"]["data"] if (h["module"], h["name"]) == ("kstatpy", "requests"))
    _, _code, res = rpc(path, 0x4B02, {"kid": kid})
    return {name: value for name, _, value in res["kstat"]["data"]}


@pytest.mark.parametrize(
    "argv",
    [["-p", "/^[^k]/"], ["-j", "unix:0:system_misc"], ["-l", "case"], ["-p", "-c", "disk"], ["-p", "/^[^k]/:::/a/", "sd"],
     ["-p", "strs:/(/"], ["-p", "unix:0:system_misc:ncpus"]],
)  # fmt: skip
def test_kstat_through_kstatd_equals_whole_chain(kd, tmp_path, argv):
    before = _requests(kd.socket)["select"]
    proc = kstat(kstat_env(tmp_path, KSTAT_SOCKET=kd.socket), *argv)
    # The command used SELECT, unless a /regex/ made it select by itself (kstatd
    # matches globs only).
    regex = any(f.startswith("/") and f.endswith("/") and len(f) > 1 for a in argv for f in a.split(":"))
    assert _requests(kd.socket)["select"] == before + (0 if regex else 1)
    with kstat_open(kd.socket) as kc:
        code, out, err = _run(kc, argv, select=False)
    assert (proc.returncode, untimed(proc.stdout), proc.stderr) == (code, untimed(out), err)


def test_kstat_with_more_operands_than_kstatd_selects_for(kd, tmp_path):
    # 300 operands (> MAX_SELECTORS): kstatd answers SELECT E2BIG, the command selects
    # itself and prints what the whole-chain path prints.
    argv = ["-p", "unix:0:system_misc:ncpus", *[f"nosuch{i}" for i in range(299)]]
    before = _requests(kd.socket)["select"]
    proc = kstat(kstat_env(tmp_path, KSTAT_SOCKET=kd.socket), *argv)
    assert _requests(kd.socket)["select"] == before + 1  # sent, refused E2BIG
    with kstat_open(kd.socket) as kc:
        code, out, err = _run(kc, argv, select=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (code, out, err)
    assert proc.returncode == 0 and proc.stdout.startswith(b"unix:0:system_misc:ncpus\t")


def test_select_past_the_reply_budget_reads_the_rest(kc):
    # docs/PROTOCOL.md §9.4's budget: entries past it come back [E2BIG, HEADER]; the client
    # reads those with READ_MANY, so the caller still gets every kstat's data.
    handler: IoctlHandler = kc.kc_kd.handler
    handler.max_reply = 1  # every entry after the first is over budget
    raw = kc.kc_kd.ioctl(SELECT, {"selectors": [["case"]]})["results"]
    assert [code for code, _ in raw] == [0, errno.E2BIG, errno.E2BIG, errno.E2BIG]
    assert all(entry["module"] == "case" for _, entry in raw)  # headers on the E2BIG entries
    out = kc.select([["case"]])
    assert [(code, ksp.ks_instance, ksp.ks_data is not None) for code, ksp, _ in out] == [
        (0, 1, True), (0, 0, True), (0, 10, True), (0, 2, True),
    ]  # fmt: skip
    code, text, _ = _run(kc, ["-p", "case:::b"])
    assert (code, text) == (0, b"case:1:tie:b\t2\n")
