"""Issue 13, fault 3: memory after VM churn comes back; the freed-buffer history is
bounded by bytes (``Kmem.history_bytes``, ``kstatd --kmem-history``)."""

from __future__ import annotations

import subprocess
import sys

from kstatd_fixture import REPO
from kstatd_fixture import rpc
from kstatd_fixture import running_kstatd
from soak.soak_vmm import ok
from soak.soak_vmm import rss_mb
from soak.soak_vmm import soak

from kstatpy.kmem import FREED_HISTORY_BYTES
from kstatpy.kmem import Kmem
from kstatpy.kmem import KmemObject

CREATE, DESTROY = 0x564D01, 0x564D02
VMM = ("kstatpy_providers.vmm.provider",)


class Buf(KmemObject):
    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n


def test_freed_history_is_bounded_by_bytes():
    kmem = Kmem(history_bytes=64 * 1024)
    objs = [kmem.zalloc(Buf, i) for i in range(2000)]
    addrs = [o.kmem_addr for o in objs]
    for o in objs:
        kmem.free(o)
    assert kmem._freed_bytes <= 64 * 1024
    kept = len(kmem._freed)
    assert 10 < kept < 2000
    assert "freed from" in kmem.whatis(addrs[-1])  # the newest are remembered
    assert "is not in the kmem heap" in kmem.whatis(addrs[0])  # the oldest aged out
    assert kmem.is_freed(objs[0])  # ... and still trap


def test_zero_history_keeps_no_freed_buffer():
    kmem = Kmem(history_bytes=0)
    o = kmem.zalloc(Buf, 1)
    addr = o.kmem_addr
    kmem.free(o)
    assert len(kmem._freed) == 0 and "is not in the kmem heap" in kmem.whatis(addr)


def test_default_history_is_documented():
    readme = (REPO / "docs" / "KSTATD.md").read_text()
    assert FREED_HISTORY_BYTES == 1 << 20 and "--kmem-history" in readme


def vm_cycles(path: str, n: int) -> None:
    for _ in range(n):
        assert rpc(path, CREATE, {"name": "churn"})[1] == 0
        assert rpc(path, DESTROY, {"name": "churn"})[1] == 0


def test_kstatd_rss_after_vm_churn_stays_within_10_percent(tmp_path):
    # The short version of the 10^4-cycle run (tests/soak/soak_vmm.py; RELIABILITY.md).
    with running_kstatd(tmp_path, plugins=VMM) as kd:
        vm_cycles(kd.socket, 100)
        warm = rss_mb(kd.proc.pid)
        vm_cycles(kd.socket, 1500)
        end = rss_mb(kd.proc.pid)
    assert end <= warm * 1.10, f"RSS {warm:.1f} MB after 100 cycles, {end:.1f} MB after 1,600"


def test_kmem_history_option(tmp_path):
    with running_kstatd(tmp_path, plugins=VMM, args=["--kmem-history", "0"]) as kd:
        vm_cycles(kd.socket, 10)
    bad = subprocess.run([sys.executable, "-m", "kstatpy.cli.kstatd", "--socket", str(tmp_path / "x.sock"),
                          "--kmem-history", "lots"], capture_output=True, timeout=60)  # fmt: skip
    assert bad.returncode == 2 and b"--kmem-history" in bad.stderr and b"Traceback" not in bad.stderr


def test_vmm_soak_short():
    report = soak(cycles=400, readers=8, seconds=120.0)
    assert report["panics"] == 0 and report["failures"] == [] and report["leaked"] == [], report
    assert report["cycles"] >= 300, report
    assert ok(report) or report["rss_ratio"] > 1.10, report  # the RSS bound is the long run's
