"""The vmm provider through a real kstatd: ioctls, dropped connections, docs/VMM.md §6, panics."""

from __future__ import annotations

import errno
import time
from pathlib import Path
from typing import Any

import kstatpy_providers.vmm.ioctl as ioc

from kstatpy.client import SocketTransport
from kstatpy.constants import KstatIoctl
from tests.kstatd_fixture import running_kstatd
from tests.test_vmm_stress import churn

READ = int(KstatIoctl.READ)
VMM = ("kstatpy_providers.vmm.provider",)


class SocketConn:
    """One client connection to kstatd answering ``(errno, result)``."""

    def __init__(self, path: str) -> None:
        self.transport = SocketTransport(path, timeout=30)

    def ioctl(self, cmd: int, arg: Any) -> tuple[int, dict[str, Any]]:
        return self.transport.round_trip(cmd, arg)

    def ok(self, cmd: int, arg: Any = None) -> dict[str, Any]:
        code, result = self.ioctl(cmd, arg)
        assert code == 0, result
        return result

    def close(self) -> None:
        self.transport.close()


def headers(conn: SocketConn) -> set[tuple[str, int, str]]:
    data = conn.ok(READ, {"kid": 0})["kstat"]["data"]
    return {(h["module"], h["instance"], h["name"]) for h in data}


def wait_until(pred: Any, timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"{what or getattr(pred, '__name__', 'the condition')} not reached within {timeout} s"
        time.sleep(0.005)  # polling with a deadline


def test_a_dropped_connection_completes_the_deferred_destroy(tmp_path: Path) -> None:
    with running_kstatd(tmp_path, plugins=VMM) as kd:
        admin, guest = SocketConn(kd.socket), SocketConn(kd.socket)
        start = headers(admin)
        minor = admin.ok(ioc.VMM_CREATE_VM, {"name": "web"})["minor"]
        assert len(headers(admin) - start) == 33
        fd = guest.ok(ioc.VMM_OPEN, {"name": "web"})["fd"]
        guest.ok(ioc.VMM_VCPU_USTATE, {"fd": fd, "vcpu": 1, "state": 1})
        admin.ok(ioc.VMM_DESTROY_VM, {"name": "web"})
        assert admin.ok(ioc.VMM_LIST)["vms"] == [{"name": "web", "minor": minor, "open": 1, "destroying": True}]
        assert ("vmm", minor, "vcpu1") in headers(admin)  # lingering, and readable
        guest.close()  # no VMM_CLOSE: the daemon's connection close does the last close
        wait_until(lambda: admin.ok(ioc.VMM_LIST)["vms"] == [])
        assert headers(admin) == start
        admin.close()
        assert kd.stop() == 0, kd.stderr


def test_create_errors_through_kstatd(tmp_path: Path) -> None:
    with running_kstatd(tmp_path, plugins=VMM) as kd:
        conn = SocketConn(kd.socket)
        conn.ok(ioc.VMM_CREATE_VM, {"name": "a"})
        code, result = conn.ioctl(ioc.VMM_CREATE_VM, {"name": "a"})
        assert (code, result["error"]) == (errno.EEXIST, "VM 'a' exists")
        assert conn.ioctl(ioc.VMM_CREATE_VM, {"name": "x" * 128})[0] == errno.ENAMETOOLONG
        assert conn.ioctl(ioc.VMM_CREATE_VM, {"name": ""})[0] == errno.EINVAL
        assert conn.ioctl(ioc.VMM_DESTROY_VM, {"name": "b"})[0] == errno.ENOENT
        assert conn.ioctl(ioc.VMM_CLOSE, {"fd": 3})[0] == errno.EBADF
        conn.close()


def test_vmm_churn_through_kstatd_never_panics(tmp_path: Path) -> None:
    with running_kstatd(tmp_path, plugins=VMM) as kd:
        probe = SocketConn(kd.socket)
        start = headers(probe)
        res = churn(lambda: SocketConn(kd.socket), cycles=2000, seconds=60.0)
        assert res.failures == [] and res.panics == []
        assert set(res.reads) <= {0, errno.ENXIO, errno.EAGAIN}, res.reads
        assert res.cycles >= 1000, res.cycles
        assert res.vcpu_reads_ok > 100, res.reads
        wait_until(lambda: probe.ok(ioc.VMM_LIST)["vms"] == [])
        assert headers(probe) == start
        probe.close()
        assert kd.stop() == 0, kd.stderr
    assert not list(tmp_path.glob("kstatd.crash.*"))


def test_vmm_churn_through_kstatd_pre_14281_panics(tmp_path: Path) -> None:
    args = ("--vmm-teardown=pre-14281", "--on-panic=continue")
    with running_kstatd(tmp_path, plugins=VMM, args=args) as kd:
        res = churn(lambda: SocketConn(kd.socket), cycles=1000, seconds=60.0, stop_on_panic=True)
        assert res.reads[errno.EFAULT] >= 1, res.reads
        assert "kstatd continues" in res.panics[0]["error"]
        assert SocketConn(kd.socket).ok(0x4B10, {"protocol": 1})["protocol"] == 1  # still serving
        assert kd.stop() == 0, kd.stderr
    (crash, *_) = sorted(tmp_path.glob("kstatd.crash.*"))
    report = crash.read_text()
    assert "BAD TRAP: type=e (#pf Page fault)" in report
    assert "vmm:vmm_kstat_update_vcpu+0x" in report
    assert 'ks_module = [ "vmm" ]' in report and "ks_update = vmm_kstat_update_vcpu" in report
    assert "::whatis" in report and "freed from" in report
    assert "vmm:vmm_kstat_update_vcpu" in kd.stderr


def test_pre_14281_lingering_kstat_halts_kstatd(tmp_path: Path) -> None:
    with running_kstatd(tmp_path, plugins=VMM, args=("--vmm-teardown=pre-14281",)) as kd:
        admin, guest = SocketConn(kd.socket), SocketConn(kd.socket)
        minor = admin.ok(ioc.VMM_CREATE_VM, {"name": "web"})["minor"]
        guest.ok(ioc.VMM_OPEN, {"name": "web"})
        admin.ok(ioc.VMM_DESTROY_VM, {"name": "web"})
        guest.close()
        wait_until(lambda: admin.ok(ioc.VMM_LIST)["vms"] == [])
        lingering = [h for h in admin.ok(READ, {"kid": 0})["kstat"]["data"] if h["module"] == "vmm"]
        assert len(lingering) == 33 and {h["instance"] for h in lingering} == {minor}
        vcpu0 = next(h["kid"] for h in lingering if h["name"] == "vcpu0")
        try:
            admin.ioctl(READ, {"kid": vcpu0})
        except Exception:  # the halted daemon does not answer the reader
            pass
        assert kd.wait(timeout=20) == 70
        assert "vmm:vmm_kstat_update_vcpu" in kd.stderr
