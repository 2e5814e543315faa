"""Benchmark what issue 11 adds on the read path: the exporter's scrape, --rate, --ndjson, DESCRIBE.

Run: ``python bench/bench_metrics.py [--kstats 2000] [--stats 10] [--repeat 5]``

All in one process over one synthetic chain (``--kstats`` NAMED kstats of ``--stats``
UINT64 counters each, metadata declared), read through kstatd's ioctl handler
(the exporter's own path). Each figure is a ratio to the baseline measured in the
same run: a full ``kstat -p`` report of the same chain (read every kstat with
READ_MANY, format every statistic). Rows run round robin, ``--repeat`` rounds; each
figure is a row's best round.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def build(chain, kstats: int, stats: int) -> None:
    from kstatpy.constants import KstatDataType
    from kstatpy.constants import KstatType
    from kstatpy.metadata import counter
    from kstatpy.metadata import kstat_set_meta
    from kstatpy.records import kstat_named_init

    meta = {f"stat_{j:03d}": counter("ns", f"synthetic counter {j}") for j in range(stats)}
    for i in range(kstats):
        ksp = chain.kstat_create("bench", i, f"kstat{i}", "misc", KstatType.NAMED, stats)
        for j, knp in enumerate(ksp.ks_data):
            kstat_named_init(knp, f"stat_{j:03d}", KstatDataType.UINT64)
            knp.value = i * 1_000_003 + j
        kstat_set_meta(ksp, meta)
        chain.kstat_install(ksp)


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kstats", type=int, default=2000)
    ap.add_argument("--stats", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    from prometheus_client.exposition import generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

    from kstatpy.chain import Chain
    from kstatpy.cli.kstat import run
    from kstatpy.client import kstat_open_chain
    from kstatpy.describe import kstat_describe
    from kstatpy.exporter import Exporter
    from kstatpy.ioctl import IoctlHandler

    chain = Chain()
    build(chain, args.kstats, args.stats)
    kc = kstat_open_chain(chain)
    handler = IoctlHandler(chain)
    exp = Exporter(handler, "127.0.0.1", 0)
    generate_latest(exp.registry)  # metadata cached, as in steady state

    def kstat(*argv: str) -> None:
        out = io.BytesIO()
        assert run([*argv, "bench:::"], out, io.BytesIO(), kc=kc) == 0

    kids = [k.ks_kid for k in kc.kc_chain if k.ks_module == "bench"]
    rows = [
        ("baseline: kstat -p (read + format)", lambda: kstat("-p")),
        ("kstat --ndjson", lambda: kstat("--ndjson")),
        ("kstat -j", lambda: kstat("-j")),
        ("kstat --rate -p (one report, DESCRIBE included)", lambda: kstat("--rate", "-p")),
        ("DESCRIBE of every kstat", lambda: kstat_describe(kc, kids)),
        ("exporter: families only (read, convert; no exposition)", lambda: list(exp.collector.collect())),
        ("exporter scrape, text format", lambda: generate_latest(exp.registry)),
        ("exporter scrape, OpenMetrics", lambda: generate_openmetrics(exp.registry)),
    ]
    # Round robin, best of each: a noisy neighbour slows every row alike.
    times: dict[str, list[float]] = {name: [] for name, _ in rows}
    for _ in range(args.repeat):
        for name, fn in rows:
            times[name].append(best(fn, 1))
    results = [(name, min(times[name])) for name, _ in rows]
    base = results[0][1]
    n = args.kstats * args.stats
    print(f"{args.kstats} kstats x {args.stats} statistics = {n} statistics; best of {args.repeat}")
    print("| operation | ms | ns per statistic | ratio to kstat -p |")
    print("|---|---:|---:|---:|")
    for name, t in results:
        print(f"| {name} | {t * 1e3:,.1f} | {t * 1e9 / n:,.0f} | {t / base:.2f} |")
    exp.stop()
    kc.close()


if __name__ == "__main__":
    main()
