"""libkstat when the chain or kstatd changes under it: VMs created and destroyed, a
deleted kstat, kstatd killed mid-read or stopped (KSTAT_TIMEOUT), no kstatd at all."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from pathlib import Path

from click.testing import CliRunner
from kstatpy_providers.vmm.vmmctl import main as vmmctl_main

from tests.bounded import within
from tests.kstatd_fixture import running_kstatd
from tests.libkstat_helpers import Driver
from tests.libkstat_helpers import run_env

VMM = ("kstatpy_providers.vmm.provider", "tests.providers_fixture.basic")


def vmmctl(sock: str, *args: str) -> None:
    result = CliRunner().invoke(vmmctl_main, [*args, "--socket", sock])
    assert result.exit_code == 0, result.output


def test_chain_update_sees_vmmctl_create_and_destroy(tmp_path: Path) -> None:
    with running_kstatd(tmp_path, plugins=VMM) as kd, Driver(run_env(kd.socket)) as d:
        assert d.one("open 0").startswith("ok kcid ")
        assert d.one("update 0") == "kcid 0"  # nothing changed
        assert d.one("lookup 0 vmm -1 vm") == "err ENOENT"
        vmmctl(kd.socket, "create", "lk0")
        kcid = d.one("update 0")
        assert kcid != "kcid 0" and kcid.startswith("kcid ")
        assert d.one("update 0") == "kcid 0"
        assert d.one("lookup 0 vmm -1 vm").startswith("found ")
        assert d.one("read 0").startswith("kcid ")
        vcpus = [line for line in d.cmd("chain 0") if line.split("\t")[1] == "vmm"]
        assert len(vcpus) > 1  # vm and its vCPUs
        vmmctl(kd.socket, "destroy", "lk0")
        # the kstat in hand is gone: ENXIO, as /dev/kstat answers for a deleted kid
        assert d.one("read 0") == "err ENXIO"
        after = d.one("update 0")
        assert after.startswith("kcid ") and after not in ("kcid 0", kcid)
        assert d.one("lookup 0 vmm -1 vm") == "err ENOENT"
        assert not [line for line in d.cmd("chain 0") if line.split("\t")[1] == "vmm"]
        assert d.one("close 0") == "ok 0"
        assert d.close() == (0, "")


def test_kstatd_killed_mid_read_gives_an_errno(tmp_path: Path) -> None:
    with running_kstatd(tmp_path, plugins=VMM) as kd, Driver(run_env(kd.socket)) as d:
        assert d.one("open 0").startswith("ok kcid ")
        assert d.one("lookup 0 test 0 named").startswith("found ")
        assert d.proc.stdin is not None
        d.proc.stdin.write("readloop 0 100000000\n")  # reads back to back until one fails
        d.proc.stdin.flush()
        time.sleep(1)  # let it be in the middle of the loop (any moment will do)
        kd.proc.send_signal(signal.SIGKILL)
        assert d.proc.stdout is not None
        answer = within(120, "the read loop's end", d.proc.stdout.readline).strip()
        assert within(60, "the answer's end", d.proc.stdout.readline).strip() == "."
        assert re.fullmatch(r"after \d+ reads: err E[A-Z]+", answer), answer
        assert answer.split()[-1] in ("ECONNRESET", "EPIPE", "ECONNREFUSED", "ENOENT"), answer
        # still alive: the next read connects again and says why it cannot (while the
        # dying kstatd's listener is not closed yet, a connection may be reset)
        assert d.one("read 0") in ("err ECONNREFUSED", "err ENOENT", "err ECONNRESET")
        assert d.one("close 0") == "ok 0"
        assert d.close() == (0, "")


def test_stopped_kstatd_times_out(tmp_path: Path) -> None:
    with running_kstatd(tmp_path, plugins=VMM) as kd:
        env = run_env(kd.socket, KSTAT_TIMEOUT="0.5")
        with Driver(env) as d:
            assert d.one("open 0").startswith("ok kcid ")
            assert d.one("lookup 0 test 0 named").startswith("found ")
            os.kill(kd.proc.pid, signal.SIGSTOP)
            try:
                wait_stopped(kd.proc.pid)
                t0 = time.monotonic()
                assert d.one("read 0") == "err ETIMEDOUT"
                assert time.monotonic() - t0 < 30
                assert d.one("open 1") == "err ETIMEDOUT"  # connect works (backlog), no reply
            finally:
                os.kill(kd.proc.pid, signal.SIGCONT)
            # kstatd is back: the next request connects again
            assert d.one("read 0").startswith("kcid ")
            code, err = d.close()
        line = f"{kd.socket}: no reply from kstatd within 0.5 s (KSTAT_TIMEOUT)"  # kstatpy.transport's words
        assert code == 0 and err.splitlines() == [line, line], err


def wait_stopped(pid: int, timeout: float = 30.0) -> None:
    """Until every thread of ``pid`` is stopped (SIGSTOP's group stop is asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        states = []
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
            except FileNotFoundError:  # a thread that just ended
                pass
        if states and all(st in ("T", "t") for st in states):
            return
        assert time.monotonic() < deadline, f"kstatd {pid} not stopped within {timeout} s: {states}"
        time.sleep(0.01)  # polling the process state with a deadline


def test_no_kstatd(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.sock")
    with Driver(run_env(missing)) as d:
        assert d.one("open 0") == "err ENOENT"
        assert d.close() == (0, "")
    stale = str(tmp_path / "stale.sock")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(stale)  # a socket file nobody listens on
    with Driver(run_env(stale)) as d:
        assert d.one("open 0") == "err ECONNREFUSED"
        assert d.close() == (0, "")


def test_idle_connection_closed_by_kstatd_is_reopened(tmp_path: Path) -> None:
    # kstatd says goodbye ([0, ETIMEDOUT, ...]) to an idle connection (docs/PROTOCOL.md
    # §9.4); a kstat ioctl is then sent again on a new connection, as kstatpy's
    # transport does: an illumos tool sampling every few minutes keeps working.
    with running_kstatd(tmp_path, plugins=VMM, args=("--idle-timeout", "1")) as kd, Driver(run_env(kd.socket)) as d:
        assert d.one("open 0").startswith("ok kcid ")
        assert d.one("lookup 0 test 0 named").startswith("found ")
        for _ in range(2):
            time.sleep(2.5)  # longer than the idle timeout: kstatd has closed the connection
            assert d.one("read 0").startswith("kcid ")
        time.sleep(2.5)
        assert d.one("update 0") == "kcid 0"
        assert d.close() == (0, "")
