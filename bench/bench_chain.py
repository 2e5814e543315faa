"""Registry costs as the chain grows: create, install, delete, lookup by kid and by name.

For each chain size N (10^3, 10^4, 10^5 kstats already present) it measures the
mean cost of each operation on a chain of that size, and reports each cost as a
ratio to the cost at the smallest size, measured in the same run. A flat registry
shows ratios near 1.0; a linear one would show about 10 and 100.

    python bench/bench_chain.py [--sizes 1000,10000,100000] [--ops 2000]
"""

from __future__ import annotations

import argparse
import gc
import time

from kstatpy.chain import Chain
from kstatpy.constants import KSTAT_DATA_UINT64
from kstatpy.constants import KSTAT_TYPE_NAMED
from kstatpy.driver import read_kstat_data
from kstatpy.records import kstat_named_init

LOOKUP_PASSES = 50  # lookups are tens of ns: repeat them so timer noise does not dominate


def populate(chain: Chain, n: int) -> list:
    out = []
    for i in range(n):
        ksp = chain.kstat_create("bench", i, "fill", "misc", KSTAT_TYPE_NAMED, 1)
        kstat_named_init(ksp.ks_data[0], "v", KSTAT_DATA_UINT64)
        chain.kstat_install(ksp)
        out.append(ksp)
    return out


def measure(n: int, ops: int) -> dict[str, float]:
    chain = Chain()
    filled = populate(chain, n)
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter_ns()
        created = [chain.kstat_create("probe", i, "p", "misc", KSTAT_TYPE_NAMED, 1) for i in range(ops)]
        t1 = time.perf_counter_ns()
        for ksp in created:
            chain.kstat_install(ksp)
        t2 = time.perf_counter_ns()
        kids = [k.ks_kid for k in filled[:: max(1, n // ops)]][:ops]
        for kid in kids:
            read_kstat_data(chain, kid, 0, None)
        t3 = time.perf_counter_ns()
        names = [("bench", i * max(1, n // ops), "fill") for i in range(len(kids))]
        for _ in range(LOOKUP_PASSES):
            for module, instance, name in names:
                chain.kstat_lookup_name(module, instance, name)
        t4 = time.perf_counter_ns()
        for _ in range(LOOKUP_PASSES):
            for kid in kids:
                chain.kstat_lookup_kid(kid)
        t5 = time.perf_counter_ns()
        for ksp in created:
            chain.kstat_delete(ksp)
        t6 = time.perf_counter_ns()
        # Baseline: a bare dict of the same size, looked up the same way, shows what
        # the memory hierarchy alone adds as a table grows.
        bare = {k.ks_kid: k for k in filled}
        for _ in range(LOOKUP_PASSES):
            for kid in kids:
                bare.get(kid)
        t7 = time.perf_counter_ns()
    finally:
        gc.enable()
    k = len(kids)
    return {
        "create": (t1 - t0) / ops,
        "install": (t2 - t1) / ops,
        "read by kid": (t3 - t2) / k,
        "lookup by name": (t4 - t3) / k / LOOKUP_PASSES,
        "lookup by kid": (t5 - t4) / k / LOOKUP_PASSES,
        "delete": (t6 - t5) / ops,
        "baseline: bare dict.get": (t7 - t6) / k / LOOKUP_PASSES,
    }


def memory(n: int = 10_000, stats: int = 10) -> tuple[float, float]:
    """Bytes a kstat and a named statistic cost in the chain (tracemalloc), for ``n`` kstats."""
    import tracemalloc

    def cost(nstats: int) -> int:
        chain = Chain()
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            ksp = chain.kstat_create("mem", i, "k", "misc", KSTAT_TYPE_NAMED, nstats)
            for j, knp in enumerate(ksp.ks_data):
                kstat_named_init(knp, f"stat_{j:03d}", KSTAT_DATA_UINT64)
            chain.kstat_install(ksp)
        used = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        return used

    bare, full = cost(0), cost(stats)
    return bare / n, (full - bare) / (n * stats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--ops", type=int, default=2000)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = {n: measure(n, args.ops) for n in sizes}
    base = results[sizes[0]]
    print(f"| operation | ns/op at {sizes[0]:,} | " + " | ".join(f"ratio at {n:,}" for n in sizes[1:]) + " |")
    print("|---|---:|" + "---:|" * (len(sizes) - 1))
    for op in base:
        ratios = " | ".join(f"{results[n][op] / base[op]:.2f}" for n in sizes[1:])
        print(f"| {op} | {base[op]:,.0f} | {ratios} |")
    per_kstat, per_stat = memory()
    print()
    print("| memory (10,000 kstats of 10 statistics) | bytes | ratio to illumos LP64 |")
    print("|---|---:|---:|")
    print(f"| a kstat (kstat_t, 184 B in illumos) | {per_kstat:,.0f} | {per_kstat / 184:.1f} |")
    print(f"| a named statistic (kstat_named_t, 48 B) | {per_stat:,.0f} | {per_stat / 48:.1f} |")


if __name__ == "__main__":
    main()
