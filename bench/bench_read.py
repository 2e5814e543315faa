"""Read path through kstatd against a bare msgpack echo over the same kind of Unix socket.

    python bench/bench_read.py [--seconds 2] [--rtt 10000]

Both servers run in their own process; the echo uses the same framing and answers
every request with a reply of the same shape and size as kstatd's, so the ratio is
kstatd's own cost (dispatch, hold, ks_update, snapshot) on top of the transport.
Reports a markdown table: single READ round trip (kstatd vs echo, ratio), then
reads/s with 1, 4 and 16 client processes, single READ and READ_MANY (batches of
100 kids). Also importable as a kstatd provider (``--plugin bench_read``): 1,000
NAMED kstats of 10 UINT64 records, ``bench:N:stats``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgpack
from infra import RawClient
from infra import echo_server
from infra import wait_ready

REPO = Path(__file__).resolve().parent.parent
NKSTATS = 1000
NRECORDS = 10
READ, HELLO, READ_MANY = 0x4B02, 0x4B10, 0x4B11
BATCH = 100

try:  # the provider half: only when kstatd imports this module
    from kstatpy import hookimpl

    @hookimpl
    def kstatpy_attach(chain):
        from kstatpy import KSTAT_DATA_UINT64
        from kstatpy import KSTAT_TYPE_NAMED
        from kstatpy import kstat_named_init

        for i in range(NKSTATS):
            ksp = chain.kstat_create("bench", i, "stats", "misc", KSTAT_TYPE_NAMED, NRECORDS, 0)
            for j, knp in enumerate(ksp.ks_data):
                kstat_named_init(knp, f"counter{j}", KSTAT_DATA_UINT64)
                knp.value = i * j
            chain.kstat_install(ksp)

except ImportError:  # pragma: no cover
    pass


# --- the echo server ----------------------------------------------------------------------


# --- clients --------------------------------------------------------------------------------


def rtt_interleaved(paths: list[str], n: int, kid: int, block: int = 250) -> list[list[float]]:
    """Round trips to each server, alternating blocks of ``block`` so drift hits both alike."""
    clients = [RawClient(p) for p in paths]
    for c in clients:
        for _ in range(200):  # warm up
            c.call(READ, {"kid": kid})
    out: list[list[float]] = [[] for _ in paths]
    clock = time.perf_counter
    arg = {"kid": kid}
    while len(out[0]) < n:
        for c, xs in zip(clients, out, strict=True):
            call = c.call
            for _ in range(block):
                t0 = clock()
                call(READ, arg)
                xs.append(clock() - t0)
    return out


def _load(path: str, kids: list[int], many: bool, seconds: float, barrier, results) -> None:
    from kstatpy.client import kstat_open

    kc = kstat_open(path)
    ksps = [k for k in kc.kc_chain if k.ks_kid in set(kids)]
    barrier.wait()
    end = time.monotonic() + seconds
    n = 0
    i = 0
    while time.monotonic() < end:
        if many:
            kc.read_many(ksps[i % 10 * BATCH : i % 10 * BATCH + BATCH])
            n += BATCH
        else:
            kc.read(ksps[i % len(ksps)])
            n += 1
        i += 1
    results.put(n)
    kc.close()


def throughput(path: str, kids: list[int], nproc: int, many: bool, seconds: float) -> float:
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(nproc)
    results = ctx.Queue()
    procs = [ctx.Process(target=_load, args=(path, kids, many, seconds, barrier, results)) for _ in range(nproc)]
    for p in procs:
        p.start()
    total = sum(results.get(timeout=seconds + 60) for _ in procs)
    for p in procs:
        p.join()
    return total / seconds


def _pin(pids: list[int], cpus: set[int]) -> None:
    # Affinity is per thread: set it on every thread of each process (0 = this one).
    for pid in pids:
        for tid in os.listdir(f"/proc/{pid or os.getpid()}/task"):
            try:
                os.sched_setaffinity(int(tid), cpus)
            except ProcessLookupError:  # a connection thread that just ended
                pass


# --- main -------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rtt", type=int, default=10000)
    opts = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-read-")
    kpath = os.path.join(tmp, "kstat.sock")
    env = dict(os.environ, KSTATPY_DISABLE_PLUGIN_AUTOLOAD="1", PYTHONPATH=f"{REPO}:{REPO / 'bench'}")
    kstatd = subprocess.Popen(
        [sys.executable, "-m", "kstatpy.cli.kstatd", "--socket", kpath, "--plugin", "bench_read"], env=env, cwd=REPO
    )
    try:
        wait_ready(kpath)
        headers = RawClient(kpath).call(READ, {"kid": 0})[2]["kstat"]["data"]
        kids = [h["kid"] for h in headers if h["module"] == "bench"]
        kid = kids[0]
        sample = RawClient(kpath).call(READ, {"kid": kid})[2]
        epath = os.path.join(tmp, "echo.sock")
        ready = mp.get_context("fork").Event()
        echo = mp.get_context("fork").Process(target=echo_server, args=(epath, sample, ready), daemon=True)
        echo.start()
        ready.wait(10)

        reply_bytes = len(msgpack.packb([1, 0, sample], use_bin_type=True))
        print(f"## Single READ round trip ({opts.rtt} requests each, NAMED kstat of {NRECORDS} records, ", end="")
        print(f"{reply_bytes} B reply; blocks of 250 alternating between the servers)\n")
        print("| placement | server | median µs | mean µs | p99 µs |")
        print("|---|---|---:|---:|---:|")
        ratios = []
        everyone = [0, kstatd.pid, echo.pid]
        saved = os.sched_getaffinity(0)
        placements = ["free (scheduler's choice)", "all pinned to CPU 0"]
        if len(saved) > 1:
            placements.append("client on one CPU, servers on another")
        for placement in placements:
            if placement.startswith("all"):
                _pin(everyone, {min(saved)})
            elif placement.startswith("client"):
                _pin([kstatd.pid, echo.pid], {max(saved)})
                _pin([0], {min(saved)})
            k, e = rtt_interleaved([kpath, epath], opts.rtt, kid)
            for name, xs in (("kstatd", k), ("msgpack echo", e)):
                xs = sorted(xs)
                med, mean, p99 = statistics.median(xs), statistics.fmean(xs), xs[int(len(xs) * 0.99)]
                print(f"| {placement} | {name} | {med * 1e6:.1f} | {mean * 1e6:.1f} | {p99 * 1e6:.1f} |")
            ratios.append((placement, statistics.median(k) / statistics.median(e)))
        _pin(everyone, saved)
        print()
        for placement, ratio in ratios:
            print(f"ratio kstatd / echo (median), {placement}: **{ratio:.2f}x**")
        print()

        print(f"## Reads per second, {opts.seconds:g} s per cell, {os.cpu_count()} CPUs\n")
        print(f"| client processes | READ (kstats/s) | READ_MANY x{BATCH} (kstats/s) |")
        print("|---:|---:|---:|")
        for nproc in (1, 4, 16):
            single = throughput(kpath, kids, nproc, False, opts.seconds)
            many = throughput(kpath, kids, nproc, True, opts.seconds)
            print(f"| {nproc} | {single:,.0f} | {many:,.0f} |")
        echo.terminate()
    finally:
        kstatd.send_signal(signal.SIGTERM)
        kstatd.wait(30)


if __name__ == "__main__":
    main()
