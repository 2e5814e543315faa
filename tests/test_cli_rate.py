"""``kstat --rate`` through the real command against a real kstatd (tests/providers_fixture/ratetest.py)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kstatpy.cli.kstat_rate import rate_of
from tests.console_scripts import console_script
from tests.console_scripts import missing_script
from tests.kstatd_fixture import running_kstatd

KSTAT = console_script("kstat")
RATETEST = ("tests.providers_fixture.ratetest",)


def kstat(socket: str, *argv: str) -> subprocess.CompletedProcess[str]:
    assert KSTAT, missing_script("kstat")
    env = {k: v for k, v in os.environ.items() if k != "KSTAT_SOCKET"}
    return subprocess.run([KSTAT, "--socket", socket, *argv], env=env, capture_output=True, text=True, timeout=60)


def strict_loads(line: str) -> Any:
    def no_constant(name: str) -> Any:
        raise ValueError(f"non-JSON constant {name}")

    return json.loads(line, parse_constant=no_constant)


def reports(stdout: str) -> list[dict[str, dict[str, Any]]]:
    """NDJSON lines grouped by report (timestamp), each {kstat name: object}."""
    out: list[dict[str, dict[str, Any]]] = []
    last = None
    for line in stdout.splitlines():
        obj = strict_loads(line)
        if obj["timestamp"] != last:
            out.append({})
            last = obj["timestamp"]
        out[-1][obj["name"]] = obj
    return out


def since_crtime(obj: dict[str, Any], value: float) -> float:
    d = obj["data"]
    return value / (d["snaptime"] - d["crtime"])


def close(a: float, b: float) -> bool:
    return a == pytest.approx(b, rel=2e-3, abs=2e-3)


@pytest.fixture(scope="module")
def three_reports(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, dict[str, Any]]], str]:
    tmp = tmp_path_factory.mktemp("rate")
    with running_kstatd(tmp, plugins=RATETEST) as kd:
        r = kstat(kd.socket, "--rate", "--ndjson", "rate:0", "1", "3")
    assert r.returncode == 0, r.stderr
    got = reports(r.stdout)
    assert len(got) == 3, r.stdout
    return got, r.stderr


def test_first_report_is_the_average_since_crtime(three_reports: Any) -> None:
    first = three_reports[0][0]
    steady = first["steady"]
    assert steady["reset"] is False
    assert close(steady["data"]["events"], since_crtime(steady, 1000))
    assert close(first["wrap"]["data"]["events"], since_crtime(first["wrap"], 2**32 - 500))


def test_later_reports_are_over_the_interval(three_reports: Any) -> None:
    got = three_reports[0]
    for prev, cur in itertools.pairwise(got):
        interval = cur["steady"]["data"]["snaptime"] - prev["steady"]["data"]["snaptime"]
        assert 0.4 < interval < 30
        assert close(cur["steady"]["data"]["events"], 1000 / interval)


def test_gauges_text_and_undeclared_statistics_print_as_they_are(three_reports: Any) -> None:
    for n, report in enumerate(three_reports[0], start=1):
        data = report["steady"]["data"]
        assert data["level"] == 42 and data["label"] == "steady"
        assert data["plain"] == 7 * n  # no metadata: not a counter, printed raw


def test_a_32_bit_counter_that_wrapped_is_unwrapped(three_reports: Any) -> None:
    got = three_reports[0]
    wrap = got[1]["wrap"]
    interval = wrap["data"]["snaptime"] - got[0]["wrap"]["data"]["snaptime"]
    assert wrap["reset"] is False
    assert close(wrap["data"]["events"], 1000 / interval)


def test_a_64_bit_counter_that_went_back_is_a_reset(three_reports: Any) -> None:
    got, stderr = three_reports
    back = got[1]["back"]
    assert back["reset"] is True
    assert close(back["data"]["events"], since_crtime(back, 10))
    assert got[2]["back"]["reset"] is False and got[2]["back"]["data"]["events"] == 0
    assert stderr == ""  # JSON formats flag resets in the data, not on stderr


def test_a_recreated_kstat_is_a_reset_with_its_rate_since_the_new_crtime(three_reports: Any) -> None:
    got = three_reports[0]
    old, new, after = got[0]["recreated"], got[1]["recreated"], got[2]["recreated"]
    assert new["data"]["crtime"] > old["data"]["crtime"]
    assert new["reset"] is True and old["reset"] is False and after["reset"] is False
    assert new["data"]["events"] >= 0
    assert close(new["data"]["events"], since_crtime(new, 1000))
    interval = after["data"]["snaptime"] - new["data"]["snaptime"]
    assert close(after["data"]["events"], 1000 / interval)


def test_text_formats_report_resets_on_stderr(tmp_path: Path) -> None:
    with running_kstatd(tmp_path, plugins=RATETEST) as kd:
        r = kstat(kd.socket, "--rate", "-p", "rate:0::events", "1", "2")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert "kstat: reset: rate:0:recreated: re-created" in r.stderr, r.stderr
    assert any(ln.startswith("kstat: reset: rate:0:back: events went backwards") for ln in lines), r.stderr
    assert len(lines) == 2, r.stderr
    values = [float(ln.split("\t")[1]) for ln in r.stdout.splitlines() if ln]
    assert len(values) == 8 and all(v >= 0 for v in values), r.stdout
    # Second report: back 10 since crtime, recreated 1000 since its new crtime (ms ago), the
    # others ~1000/s; nothing near the 2**64 or 2**32 a naive difference would give.
    assert all(v < 1e8 for v in values[4:]), r.stdout


def test_rate_with_json_flags_every_instance(tmp_path: Path) -> None:
    with running_kstatd(tmp_path, plugins=RATETEST) as kd:
        r = kstat(kd.socket, "--rate", "-j", "rate:0:steady")
    assert r.returncode == 0, r.stderr
    (obj,) = strict_loads(r.stdout)
    assert obj["reset"] is False and close(obj["data"]["events"], 1000 / (obj["data"]["snaptime"] - obj["data"]["crtime"]))


@pytest.mark.parametrize(
    ("value", "prev", "width", "expected"),
    [
        (500, 2**32 - 500, 32, (1000.0, False)),  # wrapped
        (-(2**31) + 10, 2**31 - 10, 32, (20.0, False)),  # INT32 past its top reads negative
        (10, 10**9, 64, (10.0, True)),  # went back: since crtime (1 s)
        (3000, 1000, 64, (2000.0, False)),
        (5, None, 64, (5.0, False)),  # first report
    ],
)
def test_rate_of(value: int, prev: int | None, width: int, expected: tuple[float, bool]) -> None:
    assert rate_of(value, prev, width, 1_000_000_000, 1_000_000_000) == expected
    assert rate_of(value, prev, width, 0, 0)[0] == 0.0  # no time passed: 0, never a division by zero
