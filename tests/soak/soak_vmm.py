"""The docs/VMM.md §6 soak through a real kstatd, with the daemon's RSS (RELIABILITY.md).

    python tests/soak/soak_vmm.py [--cycles 10000] [--readers 8] [--seconds 3600] [-- kstatd options]

8 readers walk KID 0 and read every ``vmm:*`` kid while mutators create, open,
destroy (open and closed), drive vCPUs, close, drop connections and re-create VMs
(``tests/test_vmm_stress.churn``). Reports, as one JSON line: cycles done, reads by
errno, panics, failures, kstats left over once every VM is gone (``leaked``), and
kstatd's RSS after the first 100 cycles and at the end (MB) with their ratio. Exit
status 0 when there was no panic, no failure, no leak, and the end RSS is within 10%
of the RSS after 100 cycles. ``tests/test_memory.py`` runs a short version.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent.parent
for p in (str(TESTS.parent), str(TESTS)):
    if p not in sys.path:
        sys.path.insert(0, p)

import kstatpy_providers.vmm.ioctl as ioc  # noqa: E402

from tests.kstatd_fixture import running_kstatd  # noqa: E402
from tests.test_vmm_kstatd import SocketConn  # noqa: E402
from tests.test_vmm_kstatd import headers  # noqa: E402
from tests.test_vmm_stress import churn  # noqa: E402

VMM = ("kstatpy_providers.vmm.provider",)
WARMUP = 100


def rss_mb(pid: int) -> float:
    """VmRSS of ``pid`` in MB (from /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def soak(cycles: int, readers: int = 8, seconds: float = 3600.0, args: list[str] | None = None) -> dict[str, Any]:
    """Run the soak; the report (see the module docstring)."""
    with tempfile.TemporaryDirectory() as tmp, running_kstatd(tmp, plugins=VMM, args=args or ()) as kd:
        probe = SocketConn(kd.socket)
        start = headers(probe)
        t0 = time.monotonic()
        first = churn(lambda: SocketConn(kd.socket), readers=readers, cycles=WARMUP, seconds=seconds)
        rss_warm = rss_mb(kd.proc.pid)
        trajectory = {WARMUP: round(rss_warm, 1)}
        rest = None
        done = WARMUP
        while done < cycles:  # in chunks of 1,000 cycles, the RSS after each
            n = min(1000, cycles - done)
            part = churn(lambda: SocketConn(kd.socket), readers=readers, cycles=n, seconds=seconds, seed=done)
            done += part.cycles
            trajectory[done] = round(rss_mb(kd.proc.pid), 1)
            if rest is None:
                rest = part
            else:
                rest.cycles += part.cycles
                rest.reads += part.reads
                rest.vcpu_reads_ok += part.vcpu_reads_ok
                rest.panics += part.panics
                rest.failures += part.failures
            if part.cycles == 0:
                break
        if rest is None:
            rest = churn(lambda: SocketConn(kd.socket), readers=readers, cycles=0, seconds=seconds)
        deadline = time.monotonic() + 30
        while probe.ok(ioc.VMM_LIST)["vms"] and time.monotonic() < deadline:
            time.sleep(0.01)  # the last deferred destroys complete as connections close
        leaked = sorted(map(list, headers(probe) - start))
        rss_end = rss_mb(kd.proc.pid)
        probe.close()
        status = kd.stop()
        reads = first.reads + rest.reads
        return {
            "cycles": first.cycles + rest.cycles,
            "readers": readers,
            "seconds": round(time.monotonic() - t0, 1),
            "reads": {str(k): v for k, v in sorted(reads.items())},
            "vcpu_reads_ok": first.vcpu_reads_ok + rest.vcpu_reads_ok,
            "panics": len(first.panics) + len(rest.panics),
            "failures": (first.failures + rest.failures)[:10],
            "leaked": leaked,
            "rss_after_100_mb": round(rss_warm, 1),
            "rss_end_mb": round(rss_end, 1),
            "rss_ratio": round(rss_end / rss_warm, 3),
            "rss_mb_by_cycle": trajectory,
            "kstatd_exit": status,
        }


def ok(report: dict[str, Any]) -> bool:
    """The soak's pass criteria."""
    return (
        report["panics"] == 0
        and not report["failures"]
        and not report["leaked"]
        and report["rss_ratio"] <= 1.10
        and report["kstatd_exit"] == 0
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=10_000)
    ap.add_argument("--readers", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=3600.0, help="upper bound of each churn phase")
    ap.add_argument("kstatd_args", nargs="*")
    a = ap.parse_args()
    report = soak(a.cycles, a.readers, a.seconds, a.kstatd_args)
    print(json.dumps(report))
    sys.exit(0 if ok(report) else 1)


if __name__ == "__main__":
    main()
