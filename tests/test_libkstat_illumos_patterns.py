"""The ways illumos' own kstat(8), mpstat and vmstat use libkstat, in a C program of our own.

illumos' tools themselves were built outside the repository against the installed
libkstat and run against kstatd (docs/CLIENTS.md, "Checked against illumos' own
tools"); no illumos code is kept here. tests/libkstat/ilt_patterns.c repeats what they
rely on: structs read through kstat_read's buffer (dnlcstats as struct nc_stats),
system_misc's UINT32 read as value.l, per-CPU copies summed by position, RAW sizes.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.kstatd_fixture import running_kstatd
from tests.libkstat_helpers import SRC
from tests.libkstat_helpers import compile_c
from tests.libkstat_helpers import run_env

PLUGINS = ("kstatpy_providers.system",)


@pytest.fixture(scope="module")
def patterns(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_c([SRC / "ilt_patterns.c"], tmp_path_factory.mktemp("ilt") / "ilt_patterns")


def test_illumos_tools_access_patterns_hold(tmp_path: Path, patterns: Path) -> None:
    with running_kstatd(tmp_path, plugins=PLUGINS) as kd:
        done = subprocess.run([str(patterns)], env=run_env(kd.socket), capture_output=True, text=True, timeout=120)
    failed = [line for line in done.stdout.splitlines() if not line.startswith("ok ")]
    assert (done.returncode, failed, done.stderr) == (0, [], "")
    checked = {line.split()[1] for line in done.stdout.splitlines()}
    assert {"dnlcstats", "sysinfo", "vminfo", "clk_intr", "deficit", "unix:0:var"} <= checked
    assert "cpu:N:sys:cpu_ticks_user" in checked and "cpu:N:vm:as_fault" in checked


def test_illumos_tools_access_patterns_are_clean_under_address_and_leak_sanitizer(tmp_path: Path) -> None:
    # The same program and library built with -fsanitize=address: no error, no leak.
    from tests.libkstat_helpers import installed
    from tests.test_libkstat_asan import ASAN

    prefix = installed(asan=True)
    exe = compile_c([SRC / "ilt_patterns.c"], tmp_path / "ilt_patterns_asan", prefix,
                    ("-fsanitize=address", "-fno-omit-frame-pointer", "-g"))  # fmt: skip
    with running_kstatd(tmp_path, plugins=PLUGINS) as kd:
        done = subprocess.run([str(exe)], env=run_env(kd.socket, prefix, **ASAN), capture_output=True, text=True,
                              timeout=300)  # fmt: skip
    failed = [line for line in done.stdout.splitlines() if not line.startswith("ok ")]
    assert (done.returncode, failed, done.stderr) == (0, [], ""), done.stderr[-2000:]
