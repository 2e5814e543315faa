"""``kstat --ndjson``: every line valid JSON on its own, flushed per report, in interval mode."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.bounded import reap
from tests.bounded import within
from tests.console_scripts import console_script
from tests.console_scripts import missing_script
from tests.kstatd_fixture import running_kstatd

KSTAT = console_script("kstat")
PLUGINS = ("tests.providers_fixture.basic", "tests.providers_fixture.ratetest")
KEYS = ["timestamp", "module", "instance", "name", "class", "type", "snaptime", "data"]


def strict(line: str) -> dict[str, Any]:
    """json.loads that refuses NaN/Infinity and duplicate keys; the line must be one object."""

    def no_constant(name: str) -> Any:
        raise ValueError(f"non-JSON constant {name!r}")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        assert len(keys) == len(set(keys)), f"duplicate keys in {line!r}"
        return dict(pairs)

    assert line.endswith("\n") and "\n" not in line[:-1]
    obj = json.loads(line, parse_constant=no_constant, object_pairs_hook=no_duplicates)
    assert isinstance(obj, dict), line
    return obj


def test_ndjson_interval_mode_line_by_line(tmp_path: Path) -> None:
    assert KSTAT, missing_script("kstat")
    env = {k: v for k, v in os.environ.items() if k != "KSTAT_SOCKET"}
    with running_kstatd(tmp_path, plugins=PLUGINS) as kd:
        t0 = time.time()
        proc = subprocess.Popen(
            [KSTAT, "--socket", kd.socket, "--ndjson", "test:0", "rate:0", "kstatpy:0", "1", "3"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            first = within(60, "kstat's first report", proc.stdout.readline)
            # The first report reached us while kstat still waits for its next one: flushed.
            assert proc.poll() is None, "kstat ended before its first report was readable"
            rest = within(60, "kstat's last two reports and exit", proc.stdout.read)  # the buffer readline used
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                reap(proc)
    t1 = time.time()
    assert proc.returncode == 0, err
    lines = [first, *rest.splitlines(keepends=True)]
    objs = [strict(line) for line in lines]
    stamps = sorted({o["timestamp"] for o in objs})
    assert len(stamps) == 3, "one timestamp per report"
    assert t0 - 1 <= stamps[0] < stamps[1] < stamps[2] <= t1 + 1
    assert stamps[1] - stamps[0] > 0.4
    for o in objs:
        assert list(o) == KEYS  # no "reset" without --rate
        assert isinstance(o["snaptime"], float) and isinstance(o["data"], dict)
        # A failed read (test:0:upderr) keeps only crtime, as in the other formats.
        assert o["data"].get("snaptime", o["snaptime"]) == o["snaptime"]
    by_name = {(o["module"], o["name"]): o for o in objs if o["timestamp"] == stamps[0]}
    named = by_name[("test", "named")]["data"]
    assert named["u64"] == 2**64 - 1 and named["i32"] == -5 and named["ch"] == "abc"
    strings = by_name[("test", "strings")]["data"]
    assert strings["s"] == "h\u00e9llo \u2603" and strings["n"] == -(2**63)
    assert by_name[("test", "io")]["data"]["nread"] == 4096
    assert by_name[("test", "intr")]["data"]["hard"] == 1
    assert ("test", "raw") not in by_name  # RAW kstats are never shown
    assert ("kstatpy", "requests") in by_name


def test_ndjson_refuses_other_formats(tmp_path: Path) -> None:
    assert KSTAT
    for flag in ("-j", "-p", "-q", "-Td", "-l"):
        r = subprocess.run([KSTAT, "--ndjson", flag], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, (flag, r.stderr)
        assert r.stderr == "kstat: --ndjson and -jlpCVqT are mutually exclusive\n"
