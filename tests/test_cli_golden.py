"""Golden files for every kstat output format, on the known chain of tests/cli_chain.py.

The chain's clock is fixed (``time.monotonic_ns`` patched to a constant), so crtime
and snaptime are deterministic. Regenerate deliberately with ``KSTATPY_REGOLD=1``
and review the diff.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from cli_chain import FIXED_NS
from cli_chain import build_chain
from cli_chain import run_kstat
from cli_chain import zero_crtime

from kstatpy.chain import Chain
from kstatpy.client import kstat_open_chain

GOLDEN = Path(__file__).parent / "golden"

CASES = [
    # (golden file, exit status, argv)
    ("default.txt", 0, []),
    ("p.txt", 0, ["-p"]),
    ("C.txt", 0, ["-C"]),
    ("l.txt", 0, ["-l"]),
    ("pV.txt", 0, ["-p", "-V", "unix:0:system_misc:ncpus", "strs::strings:utf8"]),
    ("j.txt", 0, ["-j"]),
    ("jp.txt", 0, ["-j", "-p", "strs", "timers"]),
    ("dup.txt", 0, ["-p", ":::avenrun*", "unix:::/^avenrun_1/", "unix:0:system_misc:avenrun_1min"]),
    ("class.txt", 0, ["-p", "-c", "disk"]),
    ("class_regex.txt", 0, ["-c", "/^contr/"]),
    ("instance_glob.txt", 0, ["-p", "-i", "1*"]),
    ("named_opts.txt", 0, ["-m", "case", "-n", "tie", "-s", "[a-c]"]),
    ("no_match_j.txt", 1, ["-j", "nosuchmodule"]),
    ("no_match.txt", 1, ["-p", "nosuchmodule"]),
    ("long_names.txt", 0, ["longnames"]),
    ("ties.txt", 0, ["-p", "case"]),
]


@pytest.fixture
def kc(monkeypatch: pytest.MonkeyPatch):
    # Patching the clock, not our code: every timestamp reads FIXED_NS.
    monkeypatch.setattr(time, "monotonic_ns", lambda: FIXED_NS)
    chain = build_chain(Chain())
    zero_crtime(chain, "neg", "negative")
    return kstat_open_chain(chain)


@pytest.mark.parametrize(("golden", "status", "argv"), CASES, ids=[c[0] for c in CASES])
def test_golden(kc, golden: str, status: int, argv: list[str]) -> None:
    code, out, err = run_kstat(kc, *argv)
    assert (code, err) == (status, b""), out
    path = GOLDEN / golden
    if os.environ.get("KSTATPY_REGOLD") == "1":
        path.write_bytes(out)
    assert out == path.read_bytes(), f"{golden} differs; KSTATPY_REGOLD=1 regenerates it"


def _strict(text: str):
    def refuse(name: str):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("golden", ["j.txt", "jp.txt", "no_match_j.txt"])
def test_golden_json_is_strict_json(golden: str) -> None:
    raw = (GOLDEN / golden).read_bytes()
    assert raw.endswith(b"]\n")
    doc = _strict(raw.decode("utf-8", "strict"))
    assert isinstance(doc, list)
    for obj in doc:
        assert list(obj) == ["module", "instance", "name", "class", "type", "snaptime", "data"]


def test_json_values_exact(kc) -> None:
    code, out, _ = run_kstat(kc, "-j", "unix:0:system_misc", "strs")
    assert code == 0
    doc = _strict(out.decode())
    misc = next(o for o in doc if o["name"] == "system_misc")["data"]
    assert misc["big"] == 2**64 - 1 and misc["lbolt"] == -(2**63)
    assert isinstance(misc["big"], int)
    strs = next(o for o in doc if o["name"] == "strings")["data"]
    assert strs["question"] == "what?"
    assert strs["quotes"] == 'say "hi"'
    assert strs["backslash"] == "a\\b"
    assert strs["utf8"] == "h\u00e9llo \u2603"
    assert strs["tab"] == "a\tb\nc"
    assert strs["ctrl"] == "bell\x07"
    assert strs["null"] == ""
    assert strs["chars"] == "abc"
    assert strs["charbin"] == "\u00ff\u00feok"  # bytes that are not UTF-8: one \u00XX each
    assert "\\?" not in out.decode()
    assert "h\u00e9llo \u2603".encode() in out  # UTF-8 as UTF-8
    assert "snaptime" in strs and "crtime" in strs and "class" not in strs  # class only with -p


def test_raw_and_kstat_prefixed_are_invisible(kc) -> None:
    code, out, _ = run_kstat(kc, "-l")
    assert code == 0
    assert b"rawmod" not in out
    assert b"kstat_" not in out
    assert run_kstat(kc, "-p", "rawmod")[0] == 1
    assert run_kstat(kc, "-p", "::kstat_secret")[0] == 1
