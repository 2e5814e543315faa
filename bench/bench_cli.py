"""Benchmark the kstat command: a full ``kstat -p`` dump and start-up time.

Run: ``python bench/bench_cli.py [--kstats 10000] [--stats 10] [--repeat 5]``

Figures (each against a baseline measured in the same run):
  * full ``kstat -p`` of a synthetic chain (default 10^4 kstats x 10 = 10^5 statistics),
    embedded (in-process chain) and through a real kstatd, against reading the same
    kstats with one READ_MANY and no formatting (the transport's cost);
  * the ``kstat`` process end to end through kstatd (``kstat --socket S -p > /dev/null``);
  * start-up: ``kstat`` reading one statistic from a small kstatd, and ``kstat -h``,
    against ``python3 -c pass`` and ``python3 -c 'import msgpack'``.

This file is also the kstatd provider of the synthetic chain (``--plugin bench_cli``
with ``bench/`` on PYTHONPATH; sizes from $BENCH_CLI_KSTATS and $BENCH_CLI_STATS).
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kstatpy.hookspecs import hookimpl

REPO = Path(__file__).resolve().parent.parent


def build_synthetic(chain, kstats: int, stats: int) -> None:
    """``kstats`` NAMED kstats ``bench:i:kstat<i>`` of ``stats`` UINT64 statistics each."""
    from kstatpy.constants import KstatDataType
    from kstatpy.constants import KstatType
    from kstatpy.records import kstat_named_init

    for i in range(kstats):
        ksp = chain.kstat_create("bench", i, f"kstat{i}", "misc", KstatType.NAMED, stats)
        for j, knp in enumerate(ksp.ks_data):
            kstat_named_init(knp, f"stat_{j:03d}", KstatDataType.UINT64)
            knp.value = i * 1_000_003 + j
        chain.kstat_install(ksp)


@hookimpl
def kstatpy_attach(chain) -> None:
    build_synthetic(
        chain, int(os.environ.get("BENCH_CLI_KSTATS", "10000")), int(os.environ.get("BENCH_CLI_STATS", "10"))
    )


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _median_proc(cmds: list[list[str]], repeat: int, env: dict[str, str] | None = None) -> list[float]:
    # Interleaved, so a busy neighbour slows every command alike; one warm-up run each.
    times: list[list[float]] = [[] for _ in cmds]
    for cmd in cmds:
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False)
    for _ in range(repeat):
        for i, cmd in enumerate(cmds):
            t = time.perf_counter()
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False)
            times[i].append(time.perf_counter() - t)
    return [statistics.median(t) for t in times]


def _dump(kc) -> int:
    from kstatpy.cli.kstat import run

    out = io.BytesIO()
    code = run(["-p"], out, io.BytesIO(), kc=kc)
    assert code == 0
    return len(out.getvalue())


def _raw_read(kc) -> None:
    # As kstat reads: the cyclic collector off during the read.
    gc.disable()
    try:
        kc.read_many([ksp for ksp in kc.kc_chain if ksp.ks_kid > 1])
    finally:
        gc.enable()


def _kstat_script() -> list[str]:
    # The real console script, run by this interpreter (a pyenv shim would add its own cost).
    path = shutil.which("kstat")
    if path:
        try:
            real = subprocess.run(
                ["pyenv", "which", "kstat"], capture_output=True, text=True, check=True
            ).stdout.strip()
            path = real or path
        except (OSError, subprocess.CalledProcessError):
            pass
        with open(path, "rb") as f:
            if f.read(2) == b"#!" and b"python" in f.readline():
                return [sys.executable, path]
    return [sys.executable, "-m", "kstatpy.cli.kstat"]


def _start_kstatd(sock: str, kstats: int, stats: int) -> subprocess.Popen:
    from kstatpy.client import kstat_open

    env = dict(os.environ)
    env.update(
        KSTATPY_DISABLE_PLUGIN_AUTOLOAD="1",
        PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "bench")]),
        BENCH_CLI_KSTATS=str(kstats),
        BENCH_CLI_STATS=str(stats),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "kstatpy.cli.kstatd", "--socket", sock, "--plugin", "bench_cli"], env=env
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            kstat_open(sock).close()
            return proc
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("kstatd did not start") from None
            time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kstats", type=int, default=10000)
    ap.add_argument("--stats", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    n_stats = args.kstats * args.stats
    os.environ["KSTATPY_DISABLE_PLUGIN_AUTOLOAD"] = "1"

    from kstatpy.chain import Chain
    from kstatpy.client import kstat_open
    from kstatpy.client import kstat_open_chain

    print(f"synthetic chain: {args.kstats} kstats x {args.stats} = {n_stats} statistics")
    chain = Chain()
    build_synthetic(chain, args.kstats, args.stats)
    kc = kstat_open_chain(chain)
    nbytes = _dump(kc)
    raw = _best(lambda: _raw_read(kc), args.repeat)
    full = _best(lambda: _dump(kc), args.repeat)
    print(
        f"embedded: kstat -p {full * 1000:8.1f} ms ({nbytes} bytes)  raw READ_MANY {raw * 1000:8.1f} ms  ratio {full / raw:5.2f}"
    )

    kstat_cmd = _kstat_script()
    with tempfile.TemporaryDirectory() as tmp:
        sock = os.path.join(tmp, "kstat.sock")
        proc = _start_kstatd(sock, args.kstats, args.stats)
        try:
            kc = kstat_open(sock)
            raw = _best(lambda: _raw_read(kc), args.repeat)
            full = _best(lambda: _dump(kc), args.repeat)
            kc.close()
            print(
                f"daemon:   kstat -p {full * 1000:8.1f} ms                  raw READ_MANY {raw * 1000:8.1f} ms  ratio {full / raw:5.2f}"
            )
            (proc_t,) = _median_proc([[*kstat_cmd, "--socket", sock, "-p"]], args.repeat)
            print(f"daemon:   `kstat --socket S -p > /dev/null` process, median {proc_t * 1000:8.1f} ms")
        finally:
            proc.terminate()
            proc.wait()

        sock = os.path.join(tmp, "small.sock")
        proc = _start_kstatd(sock, 10, 10)
        try:
            reps = max(args.repeat * 4, 20)
            # Start-up as installed: with bytecode caches (kept out of the tree), even
            # when the calling environment sets PYTHONDONTWRITEBYTECODE.
            env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
            env["PYTHONPYCACHEPREFIX"] = os.path.join(tmp, "pycache")
            base, base_mp, one, usage = _median_proc(
                [
                    [sys.executable, "-c", "pass"],
                    [sys.executable, "-c", "import msgpack"],
                    [*kstat_cmd, "--socket", sock, "-p", "bench:0:kstat0:stat_000"],
                    [*kstat_cmd, "-h"],
                ],
                reps,
                env,
            )
        finally:
            proc.terminate()
            proc.wait()
    print(f"start-up: python3 -c pass {base * 1000:6.1f} ms; python3 -c 'import msgpack' {base_mp * 1000:6.1f} ms")
    print(
        f"start-up: kstat -p one statistic via kstatd {one * 1000:6.1f} ms  ratio {one / base:4.2f} (vs pass), {one / base_mp:4.2f} (vs msgpack)"
    )
    print(f"start-up: kstat -h {usage * 1000:6.1f} ms  ratio {usage / base:4.2f} (vs pass)")


if __name__ == "__main__":
    main()
