"""The lock-order checker's cost: the reference audit with the checker against the audit without it.

For each chain size N (live kstats already present, each with a KMutex ``ks_lock``)
it measures the mean cost of a read (``read_kstat_data``) of a kstat whose
``ks_lock`` is a KMutex and whose ``ks_update`` takes the provider's KMutex (two
locks under the hold: the http_service and 8149 shapes), of ``kstat_create`` +
``kstat_install`` + ``kstat_delete`` of such a kstat, and of a provider's own
KMutex enter/exit pair, on ``Kmem(audit=True, lockorder=False)`` and on
``Kmem(audit=True)`` (the checker on), alternating the two in blocks so that machine
noise hits both alike. The ratio on/off is the checker's cost.

    python bench/bench_lockorder.py [--sizes 100,10000] [--ops 2000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import threading
import time
from typing import Any

from kstatpy.chain import Chain
from kstatpy.constants import KSTAT_DATA_UINT64
from kstatpy.constants import KSTAT_TYPE_NAMED
from kstatpy.driver import read_kstat_data
from kstatpy.kmem import Kmem
from kstatpy.kstat import KMutex
from kstatpy.kstat import kstat_named_init


def new_kstat(chain: Chain, module: str, i: int, ks_lock: KMutex, update: Any = None) -> Any:
    ksp = chain.kstat_create(module, i, "k", "misc", KSTAT_TYPE_NAMED, 7)
    for j, knp in enumerate(ksp.ks_data):
        kstat_named_init(knp, f"v{j}", KSTAT_DATA_UINT64)
    ksp.ks_lock = ks_lock
    if update is not None:
        ksp.ks_update = update
    chain.kstat_install(ksp)
    return ksp


def one_block(checker: bool, n: int, ops: int) -> dict[str, float]:
    # In a fresh thread: a thread the checker has seen keeps its lock state (curthread's).
    out: dict[str, float] = {}
    t = threading.Thread(target=lambda: out.update(_block(checker, n, ops)))
    t.start()
    t.join()
    return out


def _block(checker: bool, n: int, ops: int) -> dict[str, float]:
    chain = Chain(kmem=Kmem(audit=True, lockorder=checker))
    stats_lock, prov_lock = KMutex("bench_stats"), KMutex("bench_provider")
    for i in range(n):
        new_kstat(chain, "fill", i, KMutex())

    def update(ksp: Any, rw: int) -> int:
        with prov_lock:
            ksp.ks_data[0].value += 1
        return 0

    ksp = new_kstat(chain, "bench", 0, stats_lock, update)
    kid = ksp.ks_kid
    read_kstat_data(chain, kid, 0, None)  # the edges exist from here on: the steady state
    out: dict[str, float] = {}
    gc.collect()
    t0 = time.perf_counter_ns()
    for _ in range(ops):
        read_kstat_data(chain, kid, 0, None)
    out["read"] = (time.perf_counter_ns() - t0) / ops
    t0 = time.perf_counter_ns()
    for i in range(ops):
        chain.kstat_delete(new_kstat(chain, "cycle", i, stats_lock))
    out["create+delete"] = (time.perf_counter_ns() - t0) / ops
    t0 = time.perf_counter_ns()
    for _ in range(ops):
        with prov_lock:
            pass
    out["KMutex pair"] = (time.perf_counter_ns() - t0) / ops
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--sizes", default="100,10000")
    ap.add_argument("--ops", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    print("| live kstats | operation | checker off ns/op | checker on ns/op | ratio on/off |")
    print("|---:|---|---:|---:|---:|")
    for n in (int(s) for s in args.sizes.split(",")):
        runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
        for r in range(args.rounds):
            for checker in (False, True) if r % 2 == 0 else (True, False):
                runs[checker].append(one_block(checker, n, args.ops))
        for op in runs[False][0]:
            off = statistics.median(b[op] for b in runs[False])
            on = statistics.median(b[op] for b in runs[True])
            print(f"| {n:,} | {op} | {off:,.0f} | {on:,.0f} | {on / off:.2f} |")


if __name__ == "__main__":
    main()
