"""``kstatd --kmem-audit``: the 14281 bugs panic at the free, with no reader; the fixed order never does."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import kstatpy_providers.vmm.ioctl as ioc

from tests.kstatd_fixture import REPO
from tests.kstatd_fixture import kstatd_env
from tests.kstatd_fixture import running_kstatd
from tests.test_vmm_kstatd import VMM
from tests.test_vmm_kstatd import SocketConn
from tests.test_vmm_kstatd import headers
from tests.test_vmm_kstatd import wait_until
from tests.test_vmm_stress import churn

AUDIT_PRE = ("--kmem-audit", "--vmm-teardown=pre-14281")


def vmmctl(socket: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "kstatpy_providers.vmm.vmmctl", *args, "--socket", socket]
    return subprocess.run(cmd, cwd=str(REPO), env=kstatd_env(), capture_output=True, text=True, timeout=60)


def test_destroy_of_a_closed_vm_halts_kstatd_at_the_free(tmp_path: Path) -> None:
    with running_kstatd(tmp_path, plugins=VMM, args=AUDIT_PRE) as kd:
        assert vmmctl(kd.socket, "create", "web0").returncode == 0
        destroyed = vmmctl(kd.socket, "destroy", "web0")  # no reader anywhere
        assert destroyed.returncode == 3, destroyed.stderr
        assert kd.wait(timeout=20) == 70
    assert "kernel memory allocator: buffer freed while referenced" in kd.stderr
    assert "vmm:vm_destroy+0x" in kd.stderr and "vmm:_destroy+0x" in kd.stderr  # the free's stack
    assert "vmm:vmm_kstat_alloc+0x" in kd.stderr  # the kstats' creation stack
    (crash,) = tmp_path.glob("kstatd.crash.*")
    report = crash.read_text()
    for n in range(32):
        assert f" vcpu{n} " in report
    assert "created (kstat_create) at, 32 kstat(s):" in report
    (vmcore,) = tmp_path.glob("kstatd.vmcore.*.json")
    dump = json.loads(vmcore.read_text())
    assert dump["panic"]["trap"]["kind"] == "kmem audit"
    assert len(dump["audit"]["refs"]) == 33 and {r["field"] for r in dump["audit"]["refs"]} == {"ks_private"}
    vm = next(b for b in dump["kmem"]["buffers"] if b["addr"] == dump["audit"]["buffer"])
    assert (vm["type"], vm["state"]) == ("VM", "allocated")  # the refused free
    mdb = subprocess.run(
        [sys.executable, "-m", "kstatpy.cli.mdb", str(vmcore), "-e", f"::status; {vm['addr']:x}::whatis"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "panic message: kernel memory allocator: buffer freed while referenced" in mdb.stdout, mdb.stderr
    assert f"{vm['addr']:x} is {vm['addr']:x}+0, allocated from kmem_alloc_32768 (VM):" in mdb.stdout


def test_last_close_of_a_destroyed_vm_panics_at_the_free(tmp_path: Path) -> None:
    with running_kstatd(tmp_path, plugins=VMM, args=(*AUDIT_PRE, "--on-panic=continue")) as kd:
        admin, guest = SocketConn(kd.socket), SocketConn(kd.socket)
        for i in range(3):
            name = f"web{i}"
            admin.ok(ioc.VMM_CREATE_VM, {"name": name})
            fd = guest.ok(ioc.VMM_OPEN, {"name": name})["fd"]
            admin.ok(ioc.VMM_DESTROY_VM, {"name": name})
            code, result = guest.ioctl(ioc.VMM_CLOSE, {"fd": fd})
            assert code == errno.EFAULT and "kmem_free while 33 kstat(s) point into it" in result["error"], result
        # The same through a dropped connection (kstatd's close path), no VMM_CLOSE.
        admin.ok(ioc.VMM_CREATE_VM, {"name": "dropped"})
        guest.ok(ioc.VMM_OPEN, {"name": "dropped"})
        admin.ok(ioc.VMM_DESTROY_VM, {"name": "dropped"})
        guest.close()
        panics = lambda: admin.ok(0x4B02, {"kid": daemon_kid(admin)})["kstat"]["data"]  # noqa: E731
        wait_until(lambda: dict((r[0], r[2]) for r in panics())["panics"] == 4)
        admin.close()
        assert kd.stop() == 0, kd.stderr
    assert kd.stderr.count("kernel memory allocator: buffer freed while referenced") == 4


def daemon_kid(conn: SocketConn) -> int:
    data = conn.ok(0x4B02, {"kid": 0})["kstat"]["data"]
    return next(h["kid"] for h in data if (h["module"], h["name"]) == ("kstatpy", "daemon"))


def test_vmm_stress_through_kstatd_with_the_audit_never_panics(tmp_path: Path) -> None:
    with running_kstatd(tmp_path, plugins=VMM, args=("--kmem-audit",)) as kd:
        probe = SocketConn(kd.socket)
        start = headers(probe)
        res = churn(lambda: SocketConn(kd.socket), cycles=800, seconds=90.0)
        assert res.failures == [] and res.panics == [], (res.failures[:3], res.panics[:1])
        assert set(res.reads) <= {0, errno.ENXIO, errno.EAGAIN}, res.reads
        assert res.cycles >= 500 and res.vcpu_reads_ok > 50, (res.cycles, res.reads)
        wait_until(lambda: probe.ok(ioc.VMM_LIST)["vms"] == [])
        assert headers(probe) == start
        probe.close()
        assert kd.stop() == 0, kd.stderr
    assert not list(tmp_path.glob("kstatd.crash.*")) and not list(tmp_path.glob("kstatd.vmcore.*"))
