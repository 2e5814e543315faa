"""kstat command line: every usage error with its exact stderr bytes and exit status,
getopt behaviour, operand numbers (C int wrap-around), and the pattern matchers."""

from __future__ import annotations

import pytest
from cli_chain import build_chain
from cli_chain import run_kstat

from kstatpy.chain import Chain
from kstatpy.cli.kstat_args import USAGE
from kstatpy.cli.kstat_args import UsageError
from kstatpy.cli.kstat_args import parse_args
from kstatpy.cli.kstat_args import strtoul
from kstatpy.client import kstat_open_chain
from kstatpy.select import Pattern
from kstatpy.select import RegexError
from kstatpy.select import is_exact

U = USAGE.encode()

USAGE_TEXT = b"""Usage:
kstat [ -Cjlq ] [ -p [ -V ]] [ -T d|u ] [ -c class ]
      [ -m module ] [ -i instance ] [ -n name ] [ -s statistic ]
      [ interval [ count ] ]
kstat [ -Cjlq ] [ -p [ -V ]] [ -T d|u ] [ -c class ]
      [ module[:instance[:name[:statistic]]] ... ]
      [ interval [ count ] ]
"""


@pytest.fixture(scope="module")
def kc():
    return kstat_open_chain(build_chain(Chain()))


def test_usage_text_is_illumos() -> None:
    assert U == USAGE_TEXT


ERRORS = [
    # argv, exit status, exact stderr
    (["-h"], 0, U),
    (["-?"], 0, U),
    (["-p", "-h", "-x"], 0, U),  # options act in order: -h exits before -x is seen
    (["-x"], 2, b"kstat: illegal option -- x\n" + U),
    (["-px"], 2, b"kstat: illegal option -- x\n" + U),
    (["-:"], 2, b"kstat: illegal option -- :\n" + U),
    (["-m"], 2, b"kstat: option requires an argument -- m\n" + U),
    (["-T"], 2, b"kstat: option requires an argument -- T\n" + U),
    # illumos' kstat.c prints only the usage here; kstatpy says why (kstat.pl's words for -T).
    (["-T", "x"], 2, b"kstat: Invalid timestamp specifier x\n" + U),
    (["-T", ""], 2, b"kstat: Invalid timestamp specifier \n" + U),
    (["-q", "-p"], 2, b"-q and -lpj are mutually exclusive\n" + U),
    (["-q", "-j"], 2, b"-q and -lpj are mutually exclusive\n" + U),
    (["-q", "-l"], 2, b"-q and -lpj are mutually exclusive\n" + U),
    (["-q", "-C"], 2, b"-q and -lpj are mutually exclusive\n" + U),
    (["-V"], 2, b"-V can only be used with -p\n" + U),
    (["-V", "-j"], 2, b"-V can only be used with -p\n" + U),
    (["-p", "-V", "-j"], 2, b"-jlCT and -V are mutually exclusive\n" + U),
    (["-p", "-V", "-l"], 2, b"-jlCT and -V are mutually exclusive\n" + U),
    (["-p", "-V", "-C"], 2, b"-jlCT and -V are mutually exclusive\n" + U),
    (["-p", "-V", "-T", "u"], 2, b"-jlCT and -V are mutually exclusive\n" + U),
    (["-p", "-V"], 2, b"-V needs exact module or name, and statistics\n"),
    (["-p", "-V", "unix:0:system_misc"], 2, b"-V needs exact module or name, and statistics\n"),
    (["-p", "-V", "unix:0:system_misc:avenrun*"], 2, b"-V needs exact module or name, and statistics\n"),
    (["-p", "-V", "/unix/::system_misc:/ncpus/"], 2, b"-V needs exact module or name, and statistics\n"),
    (["-p", "-V", "-m", "unix", "-s", "n*"], 2, b"-V needs exact module or name, and statistics\n"),
    (["0"], 2, b"Interval must be an integer >= 1" + U),  # no newline, as illumos
    (["1", "0"], 2, b"Count must be an integer >= 1" + U),
    (["--", "-1"], 2, b"Interval must be an integer >= 1" + U),
    (["4294967296"], 2, b"Interval must be an integer >= 1" + U),  # wraps to 0 in a C int
    (["2147483648"], 2, b"Interval must be an integer >= 1" + U),  # wraps negative
    (["18446744073709551616"], 2, b"Interval is too large\n" + U),
    (["1", "18446744073709551616"], 2, b"Count is too large\n" + U),
    (["99999999999999999999x"], 2, b"Interval is too large\n" + U),  # ERANGE beats junk
    (["1", "1", "1"], 2, b"kstat: 1: a third number (only interval and count)\n" + U),
    (["a:b:c:d:e"], 2, b"kstat: a:b:c:d:e: more than 4 fields (module:instance:name:statistic)\n" + U),
    (["-m", "unix", "unix"], 2, b"[module[:instance[:name[:statistic]]]] and -m -i -n -s are mutually exclusive" + U),
    (["-s", "x", "::"], 2, b"[module[:instance[:name[:statistic]]]] and -m -i -n -s are mutually exclusive" + U),
    (["--bogus"], 2, b"kstat: illegal option -- bogus\n" + U),
    (["--socket"], 2, b"kstat: option requires an argument -- socket\n" + U),
]


@pytest.mark.parametrize(("argv", "status", "stderr"), ERRORS, ids=[" ".join(e[0]) or "none" for e in ERRORS])
def test_usage_errors(kc, argv: list[str], status: int, stderr: bytes) -> None:
    code, out, err = run_kstat(kc, *argv)
    assert (code, err) == (status, stderr), err
    assert out == b""


def test_bad_regex_only_when_evaluated(kc) -> None:
    # The statistic regex is never compiled: no instance of module "nosuch".
    assert run_kstat(kc, "-p", "nosuch:::/(/") == (1, b"", b"")
    code, out, err = run_kstat(kc, "-p", "unix:::/(/")
    assert (code, err) == (2, b"kstat: parentheses not balanced\n" + U)
    code, _, err = run_kstat(kc, "-p", "/[a/")
    assert (code, err) == (2, b"kstat: brackets ([ ]) not balanced\n" + U)
    code, _, err = run_kstat(kc, "-c", "/*x/")
    assert (code, err) == (2, b"kstat: repetition-operator operand invalid\n" + U)
    # Output printed before the failing pass is kept (stdout is flushed at exit).
    code, out, err = run_kstat(kc, "-p", "unix:0:system_misc:ncpus", "unix:::/a{2/")
    assert code == 2 and err.startswith(b"kstat: ")
    assert out == b"unix:0:system_misc:ncpus\t4\n"


def test_help_long_option_mentions_valid_json(kc) -> None:
    code, out, err = run_kstat(kc, "--help")
    assert (code, err) == (0, b"")
    assert out.startswith(USAGE_TEXT)
    assert b"valid JSON" in out and b"--socket" in out


def test_getopt_stops_at_first_operand() -> None:
    opts = parse_args(["unix", "-p"])  # "-p" is an operand (a selector), not an option
    assert not opts.p
    assert [s.fields() for s in opts.selectors] == [("unix", "*", "*", "*"), ("-p", "*", "*", "*")]
    opts = parse_args(["-pmunix", "-i", "0", "-nsystem_misc", "-s", "ncpus"])
    assert opts.p and [s.fields() for s in opts.selectors] == [("unix", "0", "system_misc", "ncpus")]


def test_last_option_wins_and_flags_imply_p() -> None:
    opts = parse_args(["-m", "a", "-m", "b", "-c", "x", "-c", "y", "-T", "date", "-C"])
    assert opts.selectors[0].module == "b" and opts.ks_class == "y" and opts.timestamp == "d"
    assert opts.p and opts.C
    assert parse_args(["-l"]).p


def test_interval_count_interleaved_with_selectors() -> None:
    opts = parse_args(["5", "unix", " +3", "::x"])
    assert (opts.interval, opts.count) == (5, 3)
    assert [s.module for s in opts.selectors] == ["unix", "*"]
    opts = parse_args(["7"])
    assert (opts.interval, opts.count) == (7, -1)
    assert (parse_args([]).interval, parse_args([]).count) == (0, 1)
    assert parse_args(["4294967297"]).interval == 1  # C int wrap-around
    assert parse_args(["5x"]).selectors[0].module == "5x"  # trailing junk: a selector


def test_selector_operand_fields() -> None:
    sels = parse_args(["::", "a", "a:1", ":::s", ""]).selectors
    assert [s.fields() for s in sels] == [
        ("*", "*", "*", "*"),
        ("a", "*", "*", "*"),
        ("a", "1", "*", "*"),
        ("*", "*", "*", "s"),
        ("*", "*", "*", "*"),
    ]


def test_v_exactness_rule() -> None:
    assert parse_args(["-p", "-V", "unix::ncpus:x"])  # module exact + statistic exact
    assert parse_args(["-p", "-V", ":0:system_misc:ncpus"])  # name exact suffices
    assert parse_args(["-p", "-V", "un?x:::nc[p]us"])  # ? and [] are "exact"
    assert parse_args(["-p", "-V", "-n", "system_misc", "-s", "ncpus"])
    with pytest.raises(UsageError):
        parse_args(["-p", "-V", ":0::ncpus"])
    assert is_exact("a?[b]") and not is_exact("a*") and not is_exact("/a/")


def test_strtoul() -> None:
    assert strtoul("12") == (12, False)
    assert strtoul("  +12") == (12, False)
    assert strtoul("-1") == (2**64 - 1, False)
    assert strtoul("12 ") == (None, False)
    assert strtoul("") == (None, False)
    assert strtoul("x") == (None, False)
    assert strtoul("18446744073709551615") == (2**64 - 1, False)
    assert strtoul("18446744073709551616") == (None, True)


GLOBS = [
    ("*", "", True),
    ("*", "anything", True),
    ("unix", "unix", True),
    ("unix", "unixx", False),  # anchored
    ("u*x", "unix", True),
    ("u?ix", "unix", True),
    ("u?ix", "uix", False),
    ("[a-c]pu", "bpu", True),
    ("[a-c]pu", "dpu", False),
    ("[!a-c]pu", "dpu", True),
    ("[!a-c]pu", "apu", False),
    ("[]x]", "]", True),  # ']' first in a bracket is literal
    ("[a-]", "-", True),
    ("\\*", "*", True),
    ("\\*", "x", False),
    ("a\\?", "a?", True),
    ("[ab", "a", False),  # unterminated bracket matches nothing
    ("a.c", "abc", False),  # '.' is literal in globs
    ("a(b)", "a(b)", True),
    ("cpu_stat*", "cpu_stat12", True),
    ("*stat", "cpu_stat", True),
    ("*stat", "cpu_stats", False),
    ("^a$", "^a$", True),
]


@pytest.mark.parametrize(("pattern", "text", "expected"), GLOBS)
def test_glob(pattern: str, text: str, expected: bool) -> None:
    assert Pattern(pattern).match(text) is expected


REGEXES = [
    ("/intr/", "xintr", True),  # unanchored search
    ("/intr/", "intrblk", True),
    ("/^intr$/", "intrblk", False),
    ("/^avenrun_[0-9]+min$/", "avenrun_15min", True),
    ("/^avenrun_[0-9]+min$/", "avenrun_min", False),
    ("/a|b/", "b", True),
    ("/[[:digit:]]{2}/", "x12", True),
    ("/[[:digit:]]{2}/", "x1", False),
    ("/a.c/", "a\nc", True),  # '.' matches newline without REG_NEWLINE
    ("/[\\d]/", "\\", True),  # backslash is literal inside brackets
    ("/[\\d]/", "5", False),
    ("/(?:x)/", "x", None),  # not ERE: repetition-operator operand invalid
    ("//", "x", None),  # empty regex: REG_EMPTY
    ("/a||b/", "x", None),
    ("/a{3,1}/", "x", None),
    ("/[z-a]/", "x", None),
    ("/[[:nope:]]/", "x", None),
    ("/a\\/", "x", None),
    ("/x/y/", "x/y", True),  # between the first and the last '/'
]


@pytest.mark.parametrize(("pattern", "text", "expected"), REGEXES)
def test_regex(pattern: str, text: str, expected: bool | None) -> None:
    pat = Pattern(pattern)  # never fails: compiled lazily
    if expected is None:
        with pytest.raises(RegexError):
            pat.match(text)
    else:
        assert pat.match(text) is expected
