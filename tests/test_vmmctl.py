"""The ``vmmctl`` command against a real kstatd: operations, messages, exit codes, hold."""

from __future__ import annotations

import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from kstatpy_providers.vmm.vmmctl import main

from tests.bounded import reap
from tests.console_scripts import require_script
from tests.kstatd_fixture import REPO
from tests.kstatd_fixture import kstatd_env
from tests.kstatd_fixture import running_kstatd
from tests.test_vmm_kstatd import VMM
from tests.test_vmm_kstatd import SocketConn
from tests.test_vmm_kstatd import wait_until


def vmmctl(socket: str, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [*args, "--socket", socket])
    return result.exit_code, result.stdout, result.stderr


def test_create_list_destroy(tmp_path: Path) -> None:
    with running_kstatd(tmp_path, plugins=VMM) as kd:
        assert vmmctl(kd.socket, "create", "web0") == (0, "created VM 'web0' (minor 1)\n", "")
        code, out, err = vmmctl(kd.socket, "create", "web0")
        assert (code, err) == (1, "vmmctl: create: VM 'web0' exists (EEXIST)\n"), out
        assert vmmctl(kd.socket, "create", "a/b")[2] == "vmmctl: create: VM name 'a/b' contains '/' (EINVAL)\n"
        assert vmmctl(kd.socket, "create", "x" * 128)[0] == 1
        code, out, _ = vmmctl(kd.socket, "list")
        assert (code, out.splitlines()) == (0, ["MINOR  OPEN  STATE       NAME", "    1     0  active      web0"])
        assert vmmctl(kd.socket, "destroy", "web0") == (0, "destroyed VM 'web0'\n", "")
        assert vmmctl(kd.socket, "destroy", "web0") == (1, "", "vmmctl: destroy: no VM 'web0' (ENOENT)\n")


def test_socket_from_the_environment_and_no_daemon(tmp_path: Path) -> None:
    missing = str(tmp_path / "none.sock")
    result = CliRunner().invoke(main, ["list"], env={"KSTAT_SOCKET": missing})
    assert result.exit_code == 3, result.output
    assert result.stderr.startswith(f"vmmctl: list: cannot connect to kstatd at {missing}")


def test_usage_errors_exit_2() -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["create"]).exit_code == 2
    assert runner.invoke(main, ["frobnicate"]).exit_code == 2
    assert runner.invoke(main, ["run", "x", "--seconds", "-1"]).exit_code == 2


def test_run_moves_the_vcpu_kstats(tmp_path: Path) -> None:
    with running_kstatd(tmp_path, plugins=VMM) as kd:
        assert vmmctl(kd.socket, "create", "vm1")[0] == 0
        code, out, err = vmmctl(kd.socket, "run", "vm1", "--seconds", "0.2", "--vcpus", "2", "--tick", "0.005")
        assert code == 0, err
        assert out.startswith("ran VM 'vm1': 2 vCPUs, ")
        conn = SocketConn(kd.socket)
        headers = conn.ok(0x4B02, {"kid": 0})["kstat"]["data"]
        kids = {h["name"]: h["kid"] for h in headers if h["module"] == "vmm"}
        totals = {n: v for n, _, v in conn.ok(0x4B02, {"kid": kids["vcpu1"]})["kstat"]["data"]}
        assert totals["time_run"] > 0 and totals["time_emu_kern"] > 0 and totals["time_init"] > 0
        idle = {n: v for n, _, v in conn.ok(0x4B02, {"kid": kids["vcpu2"]})["kstat"]["data"]}
        assert idle["time_run"] == 0  # not driven
        assert conn.ok(0x564DF3)["vms"][0]["open"] == 0  # run closed its handle
        conn.close()
        assert vmmctl(kd.socket, "run", "nope", "--seconds", "0")[2] == "vmmctl: run: no VM 'nope' (ENOENT)\n"


def _stderr_line(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], deadline - time.monotonic())
        if ready:
            return proc.stderr.readline().decode()  # bounded: select above
    raise AssertionError("vmmctl printed nothing")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_hold_keeps_the_vm_open_until_interrupted(tmp_path: Path, sig: int) -> None:
    exe = require_script("vmmctl")
    with running_kstatd(tmp_path, plugins=VMM) as kd:
        assert vmmctl(kd.socket, "create", "held")[0] == 0
        env = kstatd_env({"KSTAT_SOCKET": kd.socket})
        cmd = [exe] if sig == signal.SIGINT else [sys.executable, "-m", "kstatpy_providers.vmm.vmmctl"]
        proc = subprocess.Popen([*cmd, "hold", "held"], cwd=REPO, env=env, stderr=subprocess.PIPE)
        try:
            assert _stderr_line(proc) == "holding VM 'held' open (fd 3); interrupt to close\n"
            conn = SocketConn(kd.socket)
            assert conn.ok(0x564DF3)["vms"] == [{"name": "held", "minor": 1, "open": 1, "destroying": False}]
            assert vmmctl(kd.socket, "destroy", "held")[1] == (
                "destroyed VM 'held' (minor 1 stays until its last close)\n"
            )
            proc.send_signal(sig)
            assert proc.wait(timeout=15) == 0
            wait_until(lambda: conn.ok(0x564DF3)["vms"] == [])
            conn.close()
        finally:
            if proc.poll() is None:
                reap(proc)


def test_hold_interrupted_as_soon_as_it_reports_closes_cleanly(tmp_path: Path) -> None:
    # The first line promises that an interrupt now closes the VM: no request may be in
    # flight then (a signal between request and reply once paired VMM_CLOSE with a reply
    # to the keepalive set-up HELLO, and hold exited 1).
    with running_kstatd(tmp_path, plugins=VMM) as kd:
        assert vmmctl(kd.socket, "create", "held")[0] == 0
        env = kstatd_env({"KSTAT_SOCKET": kd.socket})
        conn = SocketConn(kd.socket)
        for _ in range(5):
            cmd = [sys.executable, "-m", "kstatpy_providers.vmm.vmmctl", "hold", "held"]
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE)
            try:
                assert _stderr_line(proc).startswith("holding VM 'held' open")
                proc.send_signal(signal.SIGTERM)
                _, err = proc.communicate(timeout=30)
                assert (proc.returncode, err) == (0, b"closed VM 'held'\n")
            finally:
                if proc.poll() is None:
                    reap(proc)
            assert conn.ok(0x564DF3)["vms"] == [{"name": "held", "minor": 1, "open": 0, "destroying": False}]
        conn.close()
