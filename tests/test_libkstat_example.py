"""examples/libkstat/cpustat.c, an illumos-style libkstat consumer, built with its Makefile
(pkg-config libkstat) and run against a real kstatd with the system provider; its report
is checked against ``kstat -p``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.kstatd_fixture import REPO
from tests.kstatd_fixture import running_kstatd
from tests.libkstat_helpers import installed
from tests.libkstat_helpers import pkg_env
from tests.libkstat_helpers import run_env
from tests.test_libkstat import kstat_p

PLUGINS = ("kstatpy_providers.system",)


@pytest.fixture(scope="module")
def cpustat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    build = tmp_path_factory.mktemp("cpustat")
    env = pkg_env(installed())
    done = subprocess.run(
        ["make", "-C", str(REPO / "examples" / "libkstat"), f"BUILD={build}", "CFLAGS=-O2 -Wall -Wextra -Werror"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return build / "cpustat"


def rows(out: str) -> list[list[int]]:
    lines = out.splitlines()
    return [[int(x) for x in line.split()] for line in lines if not line.startswith("CPU")]


def test_since_boot_report_equals_kstat_p(tmp_path: Path, cpustat: Path) -> None:
    with running_kstatd(tmp_path, plugins=PLUGINS) as kd:
        before = kstat_p(kd.socket, "cpu:::intr", "cpu_stat:::")
        done = subprocess.run([str(cpustat)], env=run_env(kd.socket), capture_output=True, text=True, timeout=120)
        after = kstat_p(kd.socket, "cpu:::intr", "cpu_stat:::")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].split() == ["CPU", "usr", "sys", "wt", "idl", "intr", "xcalls"]
    got = rows(done.stdout)
    cpus = sorted({int(k.split(":")[1]) for k in after if k.startswith("cpu_stat:")})
    assert [r[0] for r in got] == cpus
    for cpu, usr, sys_, wt, idl, intr, _xcalls in got:
        ticks = {s: int(after[f"cpu_stat:{cpu}:cpu_stat{cpu}:{s}"]) for s in ("user", "kernel", "wait", "idle")}
        total = sum(ticks.values())
        for shown, stat in ((usr, "user"), (sys_, "kernel"), (wt, "wait"), (idl, "idle")):
            assert abs(shown - 100 * ticks[stat] / total) <= 1, (cpu, stat, shown, ticks)
        key = f"cpu:{cpu}:sys:intr"
        assert int(before[key]) <= intr <= int(after[key])


def test_interval_reports(tmp_path: Path, cpustat: Path) -> None:
    with running_kstatd(tmp_path, plugins=PLUGINS) as kd:
        done = subprocess.run(
            [str(cpustat), "1", "2"], env=run_env(kd.socket), capture_output=True, text=True, timeout=120
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("CPU   usr") == 2
    got = rows(done.stdout)
    assert len(got) % 2 == 0 and got
    for _cpu, usr, sys_, wt, idl, _intr, _x in got:
        assert 96 <= usr + sys_ + wt + idl <= 104  # each rounded to the nearest percent


def test_without_kstatd_it_says_why(tmp_path: Path, cpustat: Path) -> None:
    done = subprocess.run(
        [str(cpustat)], env=run_env(str(tmp_path / "none.sock")), capture_output=True, text=True, timeout=120
    )
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "cpustat: kstat_open: No such file or directory\n"
