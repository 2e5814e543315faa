"""kstat against PCP: a full dump and one metric, the same machine, the same run.

Needs a PCP ``pmcd`` answering on localhost (the README's Development section says
how; on Debian: the ``pcp`` package). Compares, as medians of interleaved runs:

* ``pminfo -h localhost -f`` of every PCP metric against ``kstat -p`` through kstatd
  of a synthetic chain with the same number of values (10 a kstat), per value too;
* ``pminfo -h localhost -f kernel.all.load`` against ``kstat -p
  'unix:0:system_misc:avenrun*'`` (the same three load averages) through kstatd.

    python bench/bench_pcp.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STATS_PER_KSTAT = 10


def run(cmd: list[str], env: dict[str, str] | None = None) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout


def medians(cmds: list[list[str]], repeat: int, env: dict[str, str]) -> list[float]:
    # Interleaved, one warm-up each, so a busy neighbour slows every command alike.
    times: list[list[float]] = [[] for _ in cmds]
    for cmd in cmds:
        run(cmd, env)
    for _ in range(repeat):
        for i, cmd in enumerate(cmds):
            t = time.perf_counter()
            run(cmd, env)
            times[i].append(time.perf_counter() - t)
    return [statistics.median(t) for t in times]


def pcp_values(text: str) -> int:
    # pminfo -f prints "value X" for a singular metric, "inst [...] value X" per instance.
    return sum(1 for line in text.splitlines() if line.lstrip().startswith(("value ", "inst [")) and " value " in f" {line.strip()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=15)
    opts = ap.parse_args()
    if shutil.which("pminfo") is None:
        sys.exit("bench_pcp: pminfo not found: install PCP (Debian package pcp) and start pmcd")
    try:
        full = run(["pminfo", "-h", "localhost", "-f"])
    except subprocess.CalledProcessError as exc:
        sys.exit(f"bench_pcp: pmcd does not answer on localhost: {exc.stderr.strip()}")
    nvalues = pcp_values(full)
    nkstats = math.ceil(nvalues / STATS_PER_KSTAT)

    tmp = tempfile.mkdtemp(prefix="bench-pcp-")
    sock = os.path.join(tmp, "kstat.sock")
    env = dict(
        os.environ,
        KSTATPY_DISABLE_PLUGIN_AUTOLOAD="1",
        PYTHONPATH=f"{REPO}:{REPO / 'bench'}",
        BENCH_CLI_KSTATS=str(nkstats),
        BENCH_CLI_STATS=str(STATS_PER_KSTAT),
    )
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # measure as installed: bytecode cached
    daemon = subprocess.Popen(
        [sys.executable, "-m", "kstatpy.cli.kstatd", "--socket", sock, "--plugin", "bench_cli", "--plugin", "kstatpy_providers.system"],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    kstat_base = [sys.executable, "-m", "kstatpy.cli.kstat", "--socket", sock]
    kstat = [*kstat_base, "-p"]
    try:
        deadline = time.monotonic() + 30
        ready = [*kstat_base, "-q", "unix:0:system_misc"]
        while subprocess.run(ready, env=env, check=False, stderr=subprocess.DEVNULL).returncode != 0:
            if time.monotonic() > deadline:
                sys.exit("bench_pcp: kstatd did not start")
            time.sleep(0.1)
        dump = run([*kstat, "bench:::"], env)
        klines = dump.count("\n")
        pm_full, k_full = medians([["pminfo", "-h", "localhost", "-f"], [*kstat, "bench:::"]], opts.repeat, env)
        pm_one, k_one = medians(
            [["pminfo", "-h", "localhost", "-f", "kernel.all.load"], [*kstat, "unix:0:system_misc:avenrun*"]],
            opts.repeat,
            env,
        )
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"PCP: {full.count(chr(10))} lines of pminfo -f output, {nvalues} values")
    print(f"kstat: {nkstats} kstats x {STATS_PER_KSTAT} statistics = {nkstats * STATS_PER_KSTAT} values "
          f"({klines} lines with crtime, snaptime and class)\n")  # fmt: skip
    print("| command | median ms | µs per value | ratio kstat / PCP |")
    print("|---|---:|---:|---:|")
    print(f"| `pminfo -h localhost -f` (all metrics) | {pm_full * 1e3:.1f} | {pm_full * 1e6 / nvalues:.1f} | |")
    print(f"| `kstat -p` via kstatd, same number of values | {k_full * 1e3:.1f} | "
          f"{k_full * 1e6 / (nkstats * STATS_PER_KSTAT):.1f} | {k_full / pm_full:.2f} |")  # fmt: skip
    print(f"| `pminfo -f kernel.all.load` | {pm_one * 1e3:.1f} | | |")
    print(f"| `kstat -p 'unix:0:system_misc:avenrun*'` via kstatd | {k_one * 1e3:.1f} | | {k_one / pm_one:.2f} |")


if __name__ == "__main__":
    main()
