"""Controlled schedules: how many it takes to find the 8149 deadlock and the pre-14281 order.

For each bug, ``--bases`` independent explorations (seed bases 0, 100000, 200000, ...)
each run schedules from their base until the first failure (at most ``--budget``):
the 8149 shape (``tests/providers_fixture/datalink.py``) with the lock-order checker
off (a deadlock: every thread blocked), its cycle through a ``ks_lock`` two kstats
share (two readers and depth 3: three threads make that cycle), and the vmm provider with the pre-14281
teardown and the audit off (a BAD TRAP in a reader, or a lingering kstat). Prints the distribution of
schedules-to-find and the time a schedule takes.

    python bench/bench_schedule.py [--bases 50] [--budget 2000] [--depth 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import kstatpy_providers.vmm.provider as vmm

from kstatpy.testing.schedule import explore
from tests.providers_fixture import datalink
from tests.test_vmm_race import vmm_cleanup
from tests.test_vmm_race import vmm_operations


def dls_ops() -> dict[str, Any]:
    def create(ctx: Any) -> None:
        ctx.ioctl(datalink.LINK_CREATE, {"name": "e0"})

    def delete(ctx: Any) -> None:
        ctx.ioctl(datalink.LINK_DELETE, {"name": "e0"})

    return {"create": create, "delete": delete}


def dls_cleanup(ctx: Any) -> None:
    ctx.ioctl(datalink.LINK_DELETE, {"name": "e0"})


CASES = {
    "8149, checker off": lambda d: (datalink, dls_ops(), {"name": "dls", "cleanup": dls_cleanup, "steps": 4, "depth": d,
                                                         "config": {"dls_order": "8149"}}),
    "cycle through a shared ks_lock (3 threads, depth 3), checker off": lambda d: (
        datalink, dls_ops(), {"name": "dls", "cleanup": dls_cleanup, "steps": 4, "depth": 3, "readers": 2,
                              "config": {"dls_order": "kslock"}}),
    "pre-14281, audit off": lambda d: (vmm, vmm_operations(), {"name": "vmm", "cleanup": vmm_cleanup, "steps": 6,
                                                              "depth": d, "config": {"vmm_teardown": "pre-14281"}}),
}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--bases", type=int, default=50)
    ap.add_argument("--budget", type=int, default=2000)
    ap.add_argument("--depth", type=int, default=2)
    args = ap.parse_args()
    print("| bug | explorations | found | schedules to find: min / median / mean / 90th pct / max | ms a schedule |")
    print("|---|---:|---:|---|---:|")
    for name, make in CASES.items():
        provider, ops, kw = make(args.depth)
        counts, total, spent = [], 0, 0.0
        for b in range(args.bases):
            t0 = time.perf_counter()
            r = explore(provider, ops, budget=args.budget, seed=b * 100000, **kw)
            spent += time.perf_counter() - t0
            total += r.schedules
            if r.failed_seed is not None:
                counts.append(r.schedules)
        counts.sort()
        dist = "-"
        if counts:
            p90 = counts[min(len(counts) - 1, int(0.9 * len(counts)))]
            dist = f"{counts[0]} / {statistics.median(counts):g} / {statistics.mean(counts):.1f} / {p90} / {counts[-1]}"
        print(f"| {name} | {args.bases} | {len(counts)} | {dist} | {1000 * spent / total:.1f} |", flush=True)


if __name__ == "__main__":
    main()
