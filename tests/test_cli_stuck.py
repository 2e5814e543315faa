"""kstat against a provider stuck in ks_update: the same report and status every run.

kstatd (``--read-timeout 1``) answers the first SELECT that meets the stuck kstat with
EAGAIN as a whole, and every later one with EAGAIN in that kstat's entry
(docs/PROTOCOL.md §9.1). Either way kstat prints the other kstats, names the stuck one
on stderr as module:instance:name and exits 3 (docs/READING.md), never a silent
partial report with exit 0.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from kstatd_fixture import kstatd_env
from kstatd_fixture import rpc
from kstatd_fixture import running_kstatd

KSTAT = [sys.executable, "-m", "kstatpy.cli.kstat"]
RELEASE = 0x7E5710  # tests/providers_fixture/hang.py
STUCK_LINE = (
    "kstat: test:0:hang: not read: its ks_update has not returned (kstatd --read-timeout); statistics left out\n"
)


@pytest.mark.parametrize("operand", ["test:0:", "test:0:/hang|ok/"], ids=["select", "regex-read-many"])
def test_a_stuck_kstat_is_named_and_fails_the_run_every_time(tmp_path: Path, operand: str) -> None:
    with running_kstatd(tmp_path, plugins=["tests.providers_fixture.hang"], args=["--read-timeout", "1"]) as kd:
        runs = [
            subprocess.run([*KSTAT, "--socket", kd.socket, "-p", operand], capture_output=True, text=True,
                           env=kstatd_env(), timeout=120)
            for _ in range(2)
        ]  # fmt: skip
        assert rpc(kd.socket, RELEASE)[1] == 0
    for r in runs:
        assert r.stderr == STUCK_LINE, r.stderr
        assert r.returncode == 3
        assert "test:0:ok:value\t42\n" in r.stdout
        assert "test:0:hang:crtime\t" in r.stdout  # as kstat.c: the header of a failed read stays
        assert "test:0:hang:snaptime" not in r.stdout


def test_a_kstat_the_selection_leaves_out_is_not_reported(tmp_path: Path) -> None:
    with running_kstatd(tmp_path, plugins=["tests.providers_fixture.hang"], args=["--read-timeout", "1"]) as kd:
        r = subprocess.run([*KSTAT, "--socket", kd.socket, "-p", "test:0:ok"], capture_output=True, text=True,
                           env=kstatd_env(), timeout=120)  # fmt: skip
        assert rpc(kd.socket, RELEASE)[1] == 0
    assert (r.returncode, r.stderr) == (0, "")
    assert "test:0:ok:value\t42\n" in r.stdout
