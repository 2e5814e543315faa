"""``python -m bench [--quick] [--runs N] [--no-write]``: every figure of BENCHMARKS.md's table.

Run from the repository root. Builds a wheel and installs it into a temporary venv
with compiled bytecode for the start-up figures (as users get kstatpy; an editable
install adds an import hook to every interpreter start), starts kstatds with
synthetic chains (10^3, 10^4 and 10^5 kstats) and one with the system provider,
runs each figure ``--runs`` times interleaved with its baseline, then writes the
table between the markers in BENCHMARKS.md and the curves to bench/scaling.png.
``--quick``: fewer samples, a 2x10^4 "big" chain and no wheel install (start-up is
then measured on this interpreter's install, and the table says so).
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import sys
import time
from datetime import UTC
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report
import suite
from infra import REPO
from infra import installed_python
from infra import scratch

FIGURES = (
    suite.measure_read,
    suite.measure_one_stat,
    suite.measure_startup,
    suite.measure_read_many,
    suite.measure_dump,
    suite.measure_pcp,
    suite.measure_kid0,
)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a short run (about a minute)")
    ap.add_argument("--runs", type=int, default=None, help="runs per figure (default 3, quick 2)")
    ap.add_argument("--no-write", action="store_true", help="print the table; leave BENCHMARKS.md alone")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the daemons on the way out
    runs = args.runs or (2 if args.quick else 3)
    t0 = time.monotonic()
    load0 = os.getloadavg()
    with scratch() as tmp:
        python, wheel = (sys.executable, False) if args.quick else installed_python(tmp)
        s = suite.Setup(tmp=tmp, quick=args.quick, python=python, wheel=wheel)
        results: list[list[dict]] = []
        try:
            print("bench: starting daemons", file=sys.stderr)
            s.start()
            for i in range(runs):
                rows: list[dict] = []
                for fig in FIGURES:
                    print(f"bench: run {i + 1}/{runs}: {fig.__name__}", file=sys.stderr)
                    rows += fig(s)
                results.append(rows)
        finally:
            s.stop()
        print("bench: memory", file=sys.stderr)
        mem = suite.measure_memory(s, tmp)
        for rows in results:
            rows += mem
    load1 = os.getloadavg()
    header = [
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `python -m bench{' --quick' if args.quick else ''}`: "
        f"{runs} runs per figure, {time.monotonic() - t0:.0f} s in all.",
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.system()} {platform.release()}; "
        f"load average {load0[0]:.1f} at the start, {load1[0]:.1f} at the end"
        + (" (other jobs were running: absolute figures are noisy, ratios are what count)." if max(load0[0], load1[0]) > 1 else "."),
        "Start-up figures: " + ("a wheel install with compiled bytecode in a fresh venv."
                                if wheel else "this interpreter's (editable) install: they include the editable import hook."),
        "The three memory rows are measured once per command run (four fresh daemons), not per run.",
        *s.notes,
    ]  # fmt: skip
    table = report.summarize(results, s.big_n)
    png = REPO / "bench" / "scaling.png"
    drew = report.plot(s.curves, png)
    print("\n".join([*header, "", *table]))
    if not args.no_write:
        report.write_markdown(REPO / "BENCHMARKS.md", header, table, "bench/scaling.png" if drew else "")
        print("bench: wrote BENCHMARKS.md" + (" and bench/scaling.png" if drew else ""), file=sys.stderr)


if __name__ == "__main__":
    main()
