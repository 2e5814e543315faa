"""The reference audit's cost: kstat create, kstat delete and kmem free, audit on against off.

For each chain size N (live kstats already present, each pointing at a heap object
through ``ks_private``, as the vmm kstats do) it measures the mean cost of
``kstat_create`` + ``kstat_install``, of a read (``read_kstat_data``), of ``kstat_delete`` (whose kstat free is
audited) and of ``kmem.free`` of a VM-like object nothing points at, on a chain
whose heap audits (``Kmem(audit=True)``) and on one that does not, alternating the
two in blocks so that machine noise hits both alike. The ratio on/off is the cost
of the audit.

    python bench/bench_kmem_audit.py [--sizes 100,1000,10000] [--ops 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

from kstatpy.chain import Chain
from kstatpy.constants import KSTAT_DATA_UINT64
from kstatpy.constants import KSTAT_TYPE_NAMED
from kstatpy.driver import read_kstat_data
from kstatpy.kmem import Kmem
from kstatpy.kmem import KmemObject
from kstatpy.kstat import kstat_named_init


class Vcpu:
    __slots__ = ("total",)

    def __init__(self) -> None:
        self.total = [0] * 6


class Private(KmemObject):
    """A VM-like buffer: an embedded array of 32 small structs."""

    __slots__ = ("vcpu",)
    kmem_size = 0x7000

    def __init__(self) -> None:
        self.vcpu = [Vcpu() for _ in range(32)]


def new_kstat(chain: Chain, module: str, i: int, private: object) -> object:
    ksp = chain.kstat_create(module, i, "k", "misc", KSTAT_TYPE_NAMED, 7)
    for j, knp in enumerate(ksp.ks_data):
        kstat_named_init(knp, f"v{j}", KSTAT_DATA_UINT64)
    ksp.ks_private = private
    chain.kstat_install(ksp)
    return ksp


def one_block(audit: bool, n: int, ops: int) -> dict[str, float]:
    chain = Chain(kmem=Kmem(audit=audit))
    for i in range(n):
        new_kstat(chain, "fill", i, chain.kmem.zalloc(Private))
    privates = [chain.kmem.zalloc(Private) for _ in range(ops)]
    spare = [chain.kmem.zalloc(Private) for _ in range(ops)]
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter_ns()
        made = [new_kstat(chain, "probe", i, privates[i]) for i in range(ops)]
        t1 = time.perf_counter_ns()
        for ksp in made:
            read_kstat_data(chain, ksp.ks_kid, 0, None)
        t2 = time.perf_counter_ns()
        for ksp in made:
            chain.kstat_delete(ksp)
        t3 = time.perf_counter_ns()
        for obj in spare:
            chain.kmem.free(obj)
        t4 = time.perf_counter_ns()
    finally:
        gc.enable()
    return {"create": (t1 - t0) / ops, "read": (t2 - t1) / ops, "delete": (t3 - t2) / ops, "free": (t4 - t3) / ops}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--ops", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    print("| live kstats | operation | audit off ns/op | audit on ns/op | ratio on/off |")
    print("|---:|---|---:|---:|---:|")
    for n in (int(s) for s in args.sizes.split(",")):
        samples: dict[tuple[bool, str], list[float]] = {}
        for _ in range(args.rounds):
            for audit in (False, True):
                for op, ns in one_block(audit, n, args.ops).items():
                    samples.setdefault((audit, op), []).append(ns)
        for op in ("create", "read", "delete", "free"):
            off = statistics.median(samples[(False, op)])
            on = statistics.median(samples[(True, op)])
            print(f"| {n:,} | {op} | {off:,.0f} | {on:,.0f} | {on / off:.2f} |")


if __name__ == "__main__":
    main()
