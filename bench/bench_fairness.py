"""A small READ's latency while another connection sends the issue-13 "big request".

    python bench/bench_fairness.py [--vms 100] [--loaders 1] [--samples 2000] [--tree DIR]
                                   [-- kstatd options ...]

Starts kstatd (the vmm provider, ``--vms`` VMs created: 33 kstats each) on a temporary
socket; measures the round trip of a small READ (``kstatpy:0:daemon``, 4 records) on
its own connection, first alone (the baseline of this run), then while ``--loaders``
other connections repeat ``READ_MANY {"kids": [0] * 65536}`` as fast as kstatd answers.
Prints p50/p99 of both and their ratio, the loader's seconds per request, its reply
bytes and kstatd's peak RSS (VmHWM). ``--tree DIR`` runs the kstatd of another
checkout (e.g. the commit before a fix) for a before/after pair.
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import msgpack

REPO = Path(__file__).resolve().parent.parent
READ, HELLO, READ_MANY, CREATE = 0x4B02, 0x4B10, 0x4B11, 0x564D01


class Conn:
    def __init__(self, path: str) -> None:
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(120)
        self.s.connect(path)
        self.seq = 0

    def recv(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.s.recv(min(n - len(buf), 1 << 20))
            if not chunk:
                raise EOFError("kstatd closed the connection")
            buf += chunk
        return bytes(buf)

    def call(self, cmd: int, arg: object = None) -> tuple[int, dict, int]:
        self.seq += 1
        body = msgpack.packb([cmd, self.seq, arg], use_bin_type=True)
        self.s.sendall(struct.pack(">I", len(body)) + body)
        (n,) = struct.unpack(">I", self.recv(4))
        data = self.recv(n)
        _seq, code, result = msgpack.unpackb(data, raw=False)
        return code, result, n


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def sample(conn: Conn, kid: int, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        code, _r, _n = conn.call(READ, {"kid": kid})
        out.append(time.perf_counter() - t0)
        assert code == 0
    return out


def hwm_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vms", type=int, default=100)
    ap.add_argument("--loaders", type=int, default=1)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--tree", default=str(REPO))
    ap.add_argument("kstatd_args", nargs="*")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "kstat.sock")
    # The tree's providers/ imports as kstatpy_providers (as pyproject maps it).
    os.symlink(os.path.join(a.tree, "providers"), os.path.join(tmp, "kstatpy_providers"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([a.tree, tmp]), KSTATPY_DISABLE_PLUGIN_AUTOLOAD="1")
    cmd = [sys.executable, "-m", "kstatpy.cli.kstatd", "--socket", path,
           "--plugin", "kstatpy_providers.vmm.provider", *a.kstatd_args]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=a.tree, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                Conn(path).call(HELLO)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        admin = Conn(path)
        for i in range(a.vms):
            assert admin.call(CREATE, {"name": f"vm{i}"})[0] == 0
        headers = admin.call(READ, {"kid": 0})[1]["kstat"]["data"]
        kid = next(h["kid"] for h in headers if h["module"] == "kstatpy" and h["name"] == "daemon")
        small = Conn(path)
        sample(small, kid, 200)  # warm up
        base = sample(small, kid, a.samples)
        stop = threading.Event()
        load: list[tuple[float, int, int]] = []

        def loader() -> None:
            c = Conn(path)
            while not stop.is_set():
                t0 = time.perf_counter()
                _code, result, n = c.call(READ_MANY, {"kids": [0] * 65536})
                read = sum(1 for e in result.get("results", ()) if e[0] == 0)
                load.append((time.perf_counter() - t0, n, read))

        threads = [threading.Thread(target=loader, daemon=True) for _ in range(a.loaders)]
        for t in threads:
            t.start()
        while not load:  # the first big request has been answered: the load is on
            time.sleep(0.01)
        loaded = sample(small, kid, a.samples)
        stop.set()
        for t in threads:
            t.join(300)
        ms = 1e3
        print(f"kstatd from {a.tree}; {a.vms} VMs, {len(headers)} kstats; {a.loaders} loader(s)")
        print("| small READ | p50 ms | p99 ms |")
        print("|---|---|---|")
        print(f"| alone | {pct(base, 0.5) * ms:.3f} | {pct(base, 0.99) * ms:.3f} |")
        print(f"| under load | {pct(loaded, 0.5) * ms:.3f} | {pct(loaded, 0.99) * ms:.3f} |")
        print(f"| ratio | {pct(loaded, 0.5) / pct(base, 0.5):.1f}x | {pct(loaded, 0.99) / pct(base, 0.99):.1f}x |")
        secs = [t for t, _n, _r in load]
        print(f"big request: {len(load)} answered, median {pct(secs, .5):.3f} s, reply {load[0][1] / 2**20:.1f} MiB, "
              f"KID 0 copies read {load[0][2]}; kstatd peak RSS {hwm_mb(proc.pid):.0f} MB")  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
