"""libkstat (C) against kstatpy's Python client and against a C msgpack echo (issue 18).

    python bench/bench_libkstat.py [--rounds 7] [--reads 2000] [--dumps 7]

Installs libkstat into a temporary prefix with ``kstatpy-libkstat install``, builds
bench/libkstat/{client,echo}.c with ``pkg-config libkstat``, and starts kstatds from
bench/infra.py (:class:`infra.Daemon`: 1,000 NAMED kstats of 10 UINT64 records; and one
with only the system provider). All figures come from this one run.

1. ``kstat_read`` round trip of one NAMED kstat (10 records): libkstat against kstatd,
   the Python client (``KstatCtl.read``) against the same kstatd, and libkstat against
   ``echo.c``, a C server (msgpack-c) answering every request with kstatd's recorded
   reply bytes (the floor: the transport and the client's decoding, no server work).
   Rounds of ``--reads`` reads alternate between the three; medians of the rounds'
   medians.
2. Every kstat of the system provider read and printed kstat -p style, as whole
   processes (start-up included): ``client dump`` (C), the Python client doing the same
   (``kstat_open``, ``read`` of each, print), and ``kstat -p``. Runs alternate; medians.

Prints markdown (pasted into BENCHMARKS.md, "libkstat").
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import msgpack
from infra import Daemon
from infra import RawClient
from infra import scratch

REPO = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent / "libkstat"
READ, CHAIN_ID = 0x4B02, 0x4B01
PY_DUMP = """
from kstatpy.client import kstat_open, named_triples
out = []
kc = kstat_open()
for ksp in kc.kc_chain[1:]:
    try:
        kc.read(ksp)
    except Exception:
        continue
    p = f"{ksp.ks_module}:{ksp.ks_instance}:{ksp.ks_name}:"
    out.append(f"{p}class\\t{ksp.ks_class}")
    out.append(f"{p}crtime\\t{ksp.ks_crtime}")
    out.append(f"{p}snaptime\\t{ksp.ks_snaptime}")
    if ksp.ks_type == 1:
        out.extend(f"{p}{n}\\t{v}" for n, _, v in named_triples(ksp.ks_data))
    elif ksp.ks_type == 0:
        out.append(f"{p}raw_bytes\\t{len(ksp.ks_data)}")
print("\\n".join(out))
kc.close()
"""


def build(tmp: str) -> tuple[Path, dict[str, str]]:
    prefix = Path(tmp) / "prefix"
    script = Path(sys.executable).parent / "kstatpy-libkstat"
    subprocess.run([str(script), "install", "--prefix", str(prefix)], check=True, stdout=subprocess.DEVNULL)
    env = dict(os.environ, PKG_CONFIG_PATH=str(prefix / "lib" / "pkgconfig"), LD_LIBRARY_PATH=str(prefix / "lib"))
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libkstat"], env=env, capture_output=True, text=True)
    mp = subprocess.run(["pkg-config", "--cflags", "--libs", "msgpack"], capture_output=True, text=True)
    for name, libs in (("client", flags.stdout.split()), ("echo", mp.stdout.split())):
        cmd = ["cc", "-O2", "-std=gnu11", str(HERE / f"{name}.c"), "-o", f"{tmp}/{name}", *libs]
        subprocess.run(cmd, check=True, env=env)
    return Path(tmp), env


def tail(result: dict) -> bytes:
    # A reply body without [ and seq: "errno, result".
    return msgpack.packb(0, use_bin_type=True) + msgpack.packb(result, use_bin_type=True)


def start_echo(tmp: Path, kd: Daemon, module: str, instance: int, name: str) -> subprocess.Popen[str]:
    client = RawClient(kd.socket)
    chain = client.call(CHAIN_ID, None)[2]
    kid0 = client.call(READ, {"kid": 0})[2]
    kid = kd.kid_of(module, instance, name)
    read = client.call(READ, {"kid": kid})[2]
    kid0["kstat"]["data"] = [h for h in kid0["kstat"]["data"] if h["kid"] in (0, kid)]
    kid0["kstat"]["ndata"] = 2
    files = []
    for label, result in (("chain", chain), ("kid0", kid0), ("read", read)):
        f = tmp / f"{label}.tail"
        f.write_bytes(tail(result))
        files.append(str(f))
    path = str(tmp / "echo.sock")
    proc = subprocess.Popen([str(tmp / "echo"), path, *files], stdout=subprocess.PIPE, text=True)
    assert proc.stdout and proc.stdout.readline().strip() == "ready"
    return proc


def c_rtt(tmp: Path, env: dict[str, str], socket: str, target: tuple[str, int, str], reads: int) -> float:
    out = subprocess.run(
        [str(tmp / "client"), "rtt", target[0], str(target[1]), target[2], str(reads)],
        env=dict(env, KSTAT_SOCKET=socket),
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout) / 1000.0


def py_rtt(socket: str, target: tuple[str, int, str], reads: int) -> float:
    from kstatpy.client import kstat_open

    with kstat_open(socket) as kc:
        ksp = kc.lookup(*target)
        kc.read(ksp)
        times = []
        for _ in range(reads):
            t0 = time.perf_counter_ns()
            kc.read(ksp)
            times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1000.0


def wall(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - t0, len(out.stdout.splitlines())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--reads", type=int, default=2000)
    ap.add_argument("--dumps", type=int, default=7)
    opts = ap.parse_args()
    with scratch() as tmpdir:
        tmp, env = build(tmpdir)
        kd = Daemon(tmpdir, 1000, 10)
        sysd = Daemon(tmpdir, 0, 10, system=True)
        target = ("bench", 0, "kstat0")
        echo = start_echo(tmp, kd, *target)
        try:
            rows: dict[str, list[float]] = {"libkstat, kstatd": [], "Python client, kstatd": [], "libkstat, C echo": []}
            for _ in range(opts.rounds):
                rows["libkstat, kstatd"].append(c_rtt(tmp, env, kd.socket, target, opts.reads))
                rows["Python client, kstatd"].append(py_rtt(kd.socket, target, opts.reads))
                rows["libkstat, C echo"].append(c_rtt(tmp, env, str(tmp / "echo.sock"), target, opts.reads))
            med = {k: statistics.median(v) for k, v in rows.items()}
            reply = len(tail(RawClient(kd.socket).call(READ, {"kid": kd.kid_of(*target)})[2])) + 2
            print(
                f"### kstat_read round trip (NAMED, 10 records, ~{reply} B reply; {opts.rounds} rounds of {opts.reads})\n"
            )
            print("| client, server | median µs | min-max of the rounds' medians |")
            print("|---|---:|---|")
            for k, v in rows.items():
                print(f"| {k} | {med[k]:.1f} | {min(v):.1f}-{max(v):.1f} |")
            print()
            print(
                f"- libkstat / Python client (same kstatd): **{med['libkstat, kstatd'] / med['Python client, kstatd']:.2f}x**"
            )
            print(
                f"- libkstat on kstatd / libkstat on the C echo: **{med['libkstat, kstatd'] / med['libkstat, C echo']:.2f}x**"
            )
            print()

            denv = dict(env, KSTAT_SOCKET=sysd.socket)
            cmds = {
                "C (`client dump`)": [str(tmp / "client"), "dump"],
                "Python client (kstat_open, read each, print)": [sys.executable, "-c", PY_DUMP],
                "`kstat -p`": [sys.executable, "-m", "kstatpy.cli.kstat", "-p"],
            }
            times: dict[str, list[float]] = {k: [] for k in cmds}
            lines: dict[str, int] = {}
            for _ in range(opts.dumps):
                for k, cmd in cmds.items():
                    t, n = wall(cmd, denv)
                    times[k].append(t)
                    lines[k] = n
            nks = len(RawClient(sysd.socket).call(READ, {"kid": 0})[2]["kstat"]["data"])
            print(f"### Every kstat of the system provider ({nks} kstats), whole process, {opts.dumps} runs each\n")
            print("| program | median ms | lines printed | / C |")
            print("|---|---:|---:|---:|")
            c = statistics.median(times["C (`client dump`)"])
            for k, v in times.items():
                print(f"| {k} | {statistics.median(v) * 1000:.1f} | {lines[k]} | {statistics.median(v) / c:.1f}x |")
            print(f"\nload average at the end: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
        finally:
            echo.terminate()
            echo.wait()
            kd.stop()
            sysd.stop()


if __name__ == "__main__":
    main()
