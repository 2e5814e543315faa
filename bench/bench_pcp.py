"""kstat against PCP on the same machine, the same run: per value, per dump, one metric.

Needs PCP's ``pmcd`` answering (BENCHMARKS.md, "Against PCP", says how to start it
on a machine without systemd). This module owns the PCP side of ``python -m bench``
(``pcp_status``, ``pcp_values``; ``suite.measure_pcp`` uses them) and, run as a
script, prints the longer comparison, every figure from interleaved runs:

* ``pminfo -f`` of every PCP metric, per value, against a full ``kstat -p`` through
  kstatd of a synthetic chain of 10^4 kstats x 10 statistics, per value (issue 10's
  row), and against a chain holding as many values as PCP reported;
* ``pminfo -f kernel.all.load`` against ``kstat -p 'unix:0:system_misc:avenrun*'``;
* ``--profile``: where the kstat dump's time goes (daemon CPU and client CPU per
  value from the kernel's accounting, and the client's top functions under cProfile).

PCP's values are counted with ``pmprobe`` (one fetch of every metric; it prints each
metric's number of values, negative for an error), not from ``pminfo``'s lines: a
string value such as ``proc.psinfo.maps`` spans many lines, and a metric with no
value prints a line too.

    python bench/bench_pcp.py [--repeat 7] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import os
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from infra import Daemon
from infra import proc_times

STATS_PER_KSTAT = 10
PMINFO = ["pminfo", "-f"]


def pcp_status() -> str | None:
    """None when ``pminfo`` and ``pmprobe`` are installed and pmcd answers; else why not (one line)."""
    for tool in ("pminfo", "pmprobe"):
        if shutil.which(tool) is None:
            return f"{tool} not found (PCP is not installed)"
    try:
        got = subprocess.run(["pminfo", "-f", "pmcd.version"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "pmcd did not answer within 30 s"
    if got.returncode or "value" not in got.stdout:
        return "pmcd does not answer: " + (got.stderr.strip().splitlines() or ["no value for pmcd.version"])[-1]
    return None


def pcp_values() -> tuple[int, int]:
    """(values, metrics) that one fetch of every metric returns, from ``pmprobe``.

    ``pmprobe`` prints ``metric count`` per metric; a negative count is an error code
    (no value), so it adds nothing.
    """
    out = subprocess.run(["pmprobe"], capture_output=True, text=True, timeout=120, check=True).stdout
    values = metrics = 0
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].lstrip("-").isdigit():
            metrics += 1
            values += max(int(parts[1]), 0)
    return values, metrics


def _kstat(python: str, sock: str) -> list[str]:
    script = os.path.join(os.path.dirname(python), "kstat")
    base = [python, script] if os.path.exists(script) else [python, "-m", "kstatpy.cli.kstat"]
    return [*base, "--socket", sock]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("KSTAT_SOCKET", "PYTHONPATH")}


def _cpu_ticks(pid: int) -> int:
    # utime + stime of a process, in clock ticks (proc(5): fields 14 and 15).
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def profile_dump(d: Daemon, python: str, values: int, runs: int = 5) -> list[str]:
    """Where a full ``kstat -p`` through kstatd spends its time, per value (lines of Markdown)."""
    cmd = [*_kstat(python, d.socket), "-p"]
    hz = os.sysconf("SC_CLK_TCK")
    subprocess.run(cmd, stdout=subprocess.DEVNULL, env=_env(), check=True)
    walls, server, client = [], [], []
    for _ in range(runs):
        s0, c0 = _cpu_ticks(d.proc.pid), resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, env=_env(), check=True)
        walls.append(time.perf_counter() - t)
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        server.append((_cpu_ticks(d.proc.pid) - s0) / hz)
        client.append(c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime)
    one = [*_kstat(python, d.socket), "-p", "bench:5:kstat5:stat_001"]
    (t_one,) = proc_times([(one, _env())], runs)
    us = 1e6 / values
    lines = [
        f"{runs} dumps of {values:,} values; CPU from the kernel's accounting (daemon: /proc/PID/stat; "
        "client: the children's rusage), in clock ticks of 10 ms, so the medians are coarse.",
        "",
        "| part | median per dump | per value |",
        "|---|---:|---:|",
        f"| wall time of `kstat -p` | {statistics.median(walls) * 1e3:.0f} ms | {statistics.median(walls) * us:.2f} µs |",
        f"| kstatd CPU (read, snapshot, pack, send) | {statistics.median(server) * 1e3:.0f} ms "
        f"| {statistics.median(server) * us:.2f} µs |",
        f"| `kstat` process CPU (start-up, receive, unpack, format, write) | {statistics.median(client) * 1e3:.0f} ms "
        f"| {statistics.median(client) * us:.2f} µs |",
        f"| of which start-up and one statistic (`kstat -p` of one value, wall) | {t_one * 1e3:.0f} ms "
        f"| {t_one * us:.2f} µs |",
    ]
    prof = cProfile.Profile()
    code = (
        "import sys, io\n"
        "from kstatpy.cli import kstat as k\n"
        "sys.argv = ['kstat', '--socket', SOCK, '-p']\n"
        "out, sys.stdout = sys.stdout, io.TextIOWrapper(io.BytesIO())\n"
        "try:\n    k.main()\nexcept SystemExit:\n    pass\n"
        "finally:\n    sys.stdout = out\n"
    )
    if python == sys.executable:
        prof.runctx(code, {"SOCK": d.socket}, {})
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(8)
        body = [
            ln.replace(f"{Path(__file__).resolve().parent.parent}/", "")
            for ln in buf.getvalue().splitlines()
            if ln.strip()
        ]
        start = next((i for i, ln in enumerate(body) if ln.lstrip().startswith("ncalls")), 0)
        lines += ["", "The client's own time under cProfile (in process, output to a buffer), top 8 by tottime:", "",
                  "```", *body[start : start + 9], "```"]  # fmt: skip
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--profile", action="store_true", help="also profile the kstat dump")
    opts = ap.parse_args()
    why = pcp_status()
    if why:
        sys.exit(f"bench_pcp: {why}; see BENCHMARKS.md, 'Against PCP', for starting pmcd")
    values0, metrics = pcp_values()
    same_n = math.ceil(values0 / STATS_PER_KSTAT)
    tmp = tempfile.mkdtemp(prefix="kbp", dir="/tmp")
    big = same = None
    try:
        big = Daemon(tmp, 10_000, STATS_PER_KSTAT)
        same = Daemon(tmp, same_n, STATS_PER_KSTAT)
        py = sys.executable
        t_pcp, t_big, t_same = proc_times(
            [(PMINFO, None), ([*_kstat(py, big.socket), "-p"], _env()),
             ([*_kstat(py, same.socket), "-p", "bench:::"], _env())],
            opts.repeat,
        )  # fmt: skip
        values1, _ = pcp_values()
        t_load, t_avenrun = proc_times(
            [(["pminfo", "-f", "kernel.all.load"], None),
             ([*_kstat(py, big.socket), "-p", "unix:0:system_misc:avenrun*"], _env())],
            opts.repeat,
        )  # fmt: skip
        prof = profile_dump(big, py, 10_000 * STATS_PER_KSTAT) if opts.profile else []
    finally:
        for d in (big, same):
            if d is not None:
                d.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    values = (values0 + values1) / 2
    pcp_us = t_pcp / values * 1e6
    big_us = t_big / (10_000 * STATS_PER_KSTAT) * 1e6
    same_us = t_same / (same_n * STATS_PER_KSTAT) * 1e6
    print(f"PCP: {metrics} metrics, {values0} values before the timed runs and {values1} after (pmprobe)")
    print(f"medians of {opts.repeat} interleaved runs; kstat through kstatd, NAMED kstats of 10 UINT64 statistics\n")
    print("| command | median ms | µs per value | ratio to pminfo -f per value |")
    print("|---|---:|---:|---:|")
    print(f"| `pminfo -f` (every metric, {values:,.0f} values) | {t_pcp * 1e3:.0f} | {pcp_us:.1f} | 1 |")
    print(f"| `kstat -p` of 10^4 x 10 (100,000 values) | {t_big * 1e3:.0f} | {big_us:.2f} | {big_us / pcp_us:.2f} |")
    print(f"| `kstat -p` of {same_n:,} x 10 ({same_n * 10:,} values, as many as PCP's) | {t_same * 1e3:.0f} "
          f"| {same_us:.2f} | {same_us / pcp_us:.2f} |")  # fmt: skip
    print(f"| `pminfo -f kernel.all.load` (3 values) | {t_load * 1e3:.1f} | | |")
    print(f"| `kstat -p 'unix:0:system_misc:avenrun*'` (3 values) | {t_avenrun * 1e3:.1f} | | "
          f"{t_avenrun / t_load:.2f} (per command) |")  # fmt: skip
    if prof:
        print("\nWhere the 10^4 x 10 dump's time goes:\n")
        print("\n".join(prof))


if __name__ == "__main__":
    main()
