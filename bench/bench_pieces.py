"""Large replies in pieces (docs/PROTOCOL.md §9.8) against whole frames, same kstatd, same run.

    python bench/bench_pieces.py [--kstats 10000] [--stats 10] [--rounds 15]

A kstatd serves the synthetic chain of bench_cli.py (10^4 NAMED kstats x 10 UINT64);
kstatpy's socket client reads it whole, in alternating rounds with and without asking
for pieces (the transport's ``_PIECES`` emptied: the request carries no
``"pieces": true``, so kstatd answers one frame): a full READ_MANY of every kid
(``kstat -p``'s data), a SELECT of everything, a DESCRIBE of every kid, and
bench_cli.py's full ``kstat -p`` dump through kstatd (formatting included). Reports the
median time of each and the ratio pieces / whole (below 1: pieces are faster), with the
range over rounds, and kstatd's CPU time per reply (user + system, all threads, from
/proc/PID/stat) for each. One markdown table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cli import _dump
from bench_cli import _start_kstatd

from kstatpy import transport
from kstatpy.client import kstat_open
from kstatpy.transport import SocketTransport

READ, READ_MANY, SELECT, DESCRIBE = 0x4B02, 0x4B11, 0x4B12, 0x4B13


def timed(t: SocketTransport, cmd: int, arg: dict) -> tuple[float, int]:
    t0 = time.perf_counter()
    code, result = t.round_trip(cmd, arg)
    dt = time.perf_counter() - t0
    assert code == 0, result
    return dt, len(result["results"])


def cpu_ticks(pid: int) -> int:
    """kstatd's user + system CPU time so far, every thread (clock ticks, proc(5))."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def timed_dump(kc) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = _dump(kc)
    return time.perf_counter() - t0, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kstats", type=int, default=10000)
    ap.add_argument("--stats", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=15)
    a = ap.parse_args()
    os.environ["KSTATPY_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    tmp = tempfile.mkdtemp(prefix="bench-pieces-")
    sock = os.path.join(tmp, "kstat.sock")
    proc = _start_kstatd(sock, a.kstats, a.stats)
    pieces = transport._PIECES
    try:
        t = SocketTransport(sock)
        kids = [h["kid"] for h in t.round_trip(READ, {"kid": 0})[1]["kstat"]["data"]]
        kc = kstat_open(sock)
        cases = {
            "READ_MANY of every kid": (READ_MANY, {"kids": kids}),
            "SELECT of everything": (SELECT, {"selectors": [["*"]]}),
            "DESCRIBE of every kid": (DESCRIBE, {"kids": kids}),
            "full `kstat -p` (bytes out)": (0, {}),  # bench_cli.py's dump through kstatd, formatting included
        }
        times: dict[tuple[str, bool], list[float]] = {(name, p): [] for name in cases for p in (True, False)}
        ticks: dict[tuple[str, bool], int] = dict.fromkeys(times, 0)
        sizes: dict[str, int] = {}
        for _ in range(2):  # warm both paths
            for cmd, arg in cases.values():
                for p in (True, False):
                    transport._PIECES = pieces if p else frozenset()
                    timed(t, cmd, arg) if cmd else timed_dump(kc)
        for r in range(a.rounds):
            for name, (cmd, arg) in cases.items():
                for p in (r % 2 == 0, r % 2 == 1):  # alternate which goes first
                    transport._PIECES = pieces if p else frozenset()
                    c0 = cpu_ticks(proc.pid)
                    dt, n = timed(t, cmd, arg) if cmd else timed_dump(kc)
                    ticks[(name, p)] += cpu_ticks(proc.pid) - c0
                    times[(name, p)].append(dt)
                    sizes[name] = n
        t.close()
        kc.close()
    finally:
        transport._PIECES = pieces
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"synthetic chain: {a.kstats} kstats x {a.stats}; {a.rounds} alternating rounds, medians")
    print()
    hz = os.sysconf("SC_CLK_TCK")
    print("| reply | entries | whole frame | in pieces | pieces / whole (range) | kstatd CPU per reply, whole / pieces (ratio) |")
    print("|---|---|---|---|---|---|")
    for name in cases:
        whole, piece = times[(name, False)], times[(name, True)]
        ratios = sorted(p / w for p, w in zip(piece, whole, strict=True))
        print(
            f"| {name} | {sizes[name]} | {statistics.median(whole) * 1000:.1f} ms | "
            f"{statistics.median(piece) * 1000:.1f} ms | {statistics.median(piece) / statistics.median(whole):.3f} "
            f"({ratios[len(ratios) // 10]:.2f}-{ratios[-1 - len(ratios) // 10]:.2f}) | "
            f"{ticks[(name, False)] * 1000 / hz / a.rounds:.0f} / {ticks[(name, True)] * 1000 / hz / a.rounds:.0f} ms "
            f"({ticks[(name, True)] / max(ticks[(name, False)], 1):.3f}) |"
        )


if __name__ == "__main__":
    main()
