"""The system provider end to end: the real ``kstat`` command, embedded and through kstatd."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from kstatd_fixture import REPO
from kstatd_fixture import running_kstatd
from test_provider_system import HZ
from test_provider_system import add_link
from test_provider_system import build_fake_tree

MISC_LINES = [
    "unix:0:system_misc:avenrun_15min\t512",
    "unix:0:system_misc:avenrun_1min\t128",
    "unix:0:system_misc:avenrun_5min\t320",
    "unix:0:system_misc:boot_time\t1700000000",
    "unix:0:system_misc:class\tmisc",
    f"unix:0:system_misc:clk_intr\t{int(1234.56 * HZ)}",
    "unix:0:system_misc:deficit\t0",  # no source: printed (vmstat reads it), never exported
    f"unix:0:system_misc:lbolt\t{int(1234.56 * HZ)}",
    "unix:0:system_misc:ncpus\t2",
    "unix:0:system_misc:nproc\t3",
    f"unix:0:system_misc:nsec_per_tick\t{1_000_000_000 // HZ}",
    "unix:0:system_misc:vac\t0",
]


def kstat(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kstatpy.cli.kstat", *args],
        cwd=str(REPO), env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def stable(stdout: str) -> list[str]:
    """Output lines without the times that differ from run to run."""
    return [ln for ln in stdout.splitlines() if not ln.split("\t")[0].endswith((":crtime", ":snaptime"))]


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    return build_fake_tree(tmp_path / "root")


@pytest.fixture
def embedded_env(tmp_path: Path, fake: Path) -> dict[str, str]:
    """What a user's shell has: no kstatd anywhere, entry points loaded (only ``system``)."""
    env = dict(os.environ)
    env.pop("KSTAT_SOCKET", None)
    env.pop("KSTATPY_DISABLE_PLUGIN_AUTOLOAD", None)
    others = {ep.name for ep in entry_points(group="kstatpy.providers")} - {"system"}
    env["KSTATPY_DISABLED_PROVIDERS"] = ",".join(sorted(others))
    env["XDG_RUNTIME_DIR"] = str(tmp_path)  # the default socket: nothing listens there
    env["KSTATPY_SYSTEM_ROOT"] = str(fake)
    env["PYTHONPATH"] = str(REPO)
    return env


def test_embedded_kstat_p_system_misc(embedded_env: dict[str, str]) -> None:
    result = kstat(["-p", "unix:0:system_misc"], embedded_env)
    assert result.returncode == 0, result.stderr
    assert stable(result.stdout) == MISC_LINES


def test_embedded_kstat_c_net(embedded_env: dict[str, str]) -> None:
    result = kstat(["-c", "net"], embedded_env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count("class:    net") == 2 and "name:   eth0" in out and "name:   lo" in out
    assert "\trbytes64                        4294967301\n" in out
    assert "\trbytes                          5\n" in out


def test_kstatd_serves_system_kstats_and_hotplug(tmp_path: Path, fake: Path) -> None:
    with running_kstatd(tmp_path, plugins=("kstatpy_providers.system",), env={"KSTATPY_SYSTEM_ROOT": str(fake)}) as kd:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        result = kstat(["--socket", kd.socket, "-p", "unix:0:system_misc"], env)
        assert result.returncode == 0, result.stderr
        assert stable(result.stdout) == MISC_LINES

        result = kstat(["--socket", kd.socket, "-p", "-c", "net", ":::ipackets64"], env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == ["link:0:eth0:ipackets64\t1099511627776", "link:0:lo:ipackets64\t10"]

        shutil.rmtree(fake / "sys/class/net/eth0")
        add_link(fake, "tap0", {"rx_packets": 77})
        result = kstat(["--socket", kd.socket, "-p", "-c", "net", ":::ipackets64"], env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == ["link:0:lo:ipackets64\t10", "link:0:tap0:ipackets64\t77"]
        assert kd.stop() == 0, kd.stderr
