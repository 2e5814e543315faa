"""Statistics with no source on this host: published as 0 for illumos' tools, marked, never exported.

The mark is DESCRIBE's ``no_source`` (docs/PROTOCOL.md §9.3). Tested through the real
kstat command and a real kstatd with ``--metrics``, on the fake host of
test_provider_system (cpu:N:sys's syscall, system_misc's deficit, sderr's Soft Errors,
disks' wtime).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from kstatd_fixture import REPO
from kstatd_fixture import running_kstatd
from test_provider_system import build_fake_tree

from kstatpy.metadata import StatMeta
from kstatpy.metadata import counter
from kstatpy.metadata import no_source


def kstat(sock: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "kstatpy.cli.kstat", "--socket", sock, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_mark_is_an_addition_to_the_stat_map() -> None:
    plain = counter("count", "events")
    assert "no_source" not in plain.wire("x")  # unmarked statistics: the STAT map as before
    marked = no_source(plain)
    assert marked.wire("x") == {**plain.wire("x"), "no_source": True}
    assert no_source(None, "what").wire("y")["kind"] == "counter"
    assert StatMeta("gauge", "", "old-style positional").no_source is False


def test_describe_rate_and_metrics_leave_no_source_statistics_out(tmp_path: Path) -> None:
    fake = build_fake_tree(tmp_path / "root")
    port = free_port()
    args = ("--metrics", f"127.0.0.1:{port}")
    env = {"KSTATPY_SYSTEM_ROOT": str(fake)}
    with running_kstatd(tmp_path, plugins=("kstatpy_providers.system",), args=args, env=env) as kd:
        # kstat --describe says "no source"; -j carries the mark
        r = kstat(kd.socket, "--describe", "unix:0:system_misc:deficit", "cpu:1:sys:syscall", "cpu:1:sys:intr")
        assert r.returncode == 0, r.stderr
        lines = {ln.split()[0]: ln for ln in r.stdout.splitlines() if ln.startswith("\t")}
        assert "no source" in lines["deficit"] and "no source" in lines["syscall"]
        assert "no source" not in lines["intr"]
        r = kstat(kd.socket, "--describe", "-j", "sderr:0:sd0,err")
        stats = {s["name"]: s for s in json.loads(r.stdout)[0]["stats"]}
        assert stats["Soft Errors"]["no_source"] is True and "no_source" not in stats["Hard Errors"]

        # a plain read prints them (illumos' tools read them), --rate leaves them out
        r = kstat(kd.socket, "-p", "unix:0:system_misc:deficit")
        assert r.stdout == "unix:0:system_misc:deficit\t0\n", r.stderr
        r = kstat(kd.socket, "--rate", "-p", "unix:0:system_misc", "1", "2")
        assert r.returncode == 0, r.stderr
        names = {ln.split("\t")[0].split(":")[3] for ln in r.stdout.splitlines() if ln}
        assert "lbolt" in names and "clk_intr" in names
        assert not names & {"deficit", "vac"}, names
        r = kstat(kd.socket, "--rate", "-p", "sd:0:sd0", "1", "2")
        names = {ln.split("\t")[0].split(":")[3] for ln in r.stdout.splitlines() if ln}
        assert "nread" in names and "wlastupdate" in names and not names & {"wtime", "wlentime", "wcnt"}

        # kstatd --metrics never exports an invented zero
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as resp:
            text = resp.read().decode()
        assert 'kstat_cpu_intr_total{' in text and "kstat_unix_lbolt_seconds_total{" in text
        for gone in ("kstat_cpu_syscall", "kstat_cpu_inv_swtch", "kstat_unix_deficit", "kstat_unix_vac",
                     "kstat_sderr_soft_errors", "kstat_sd_wtime", "kstat_sd_wcnt", "kstat_cpu_hat_fault"):  # fmt: skip
            assert gone not in text, gone
        assert "kstat_sderr_hard_errors_total{" in text and "kstat_sd_wlastupdate" in text
        assert kd.stop() == 0, kd.stderr
