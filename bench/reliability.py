"""The long reliability runs of RELIABILITY.md, against a real kstatd on a temporary socket.

    python bench/reliability.py connections [--n 1000]      # n concurrent connections, cap raised
    python bench/reliability.py flood [--n 100000]          # n pipelined READs on one connection
    python bench/reliability.py restart [--n 20]            # SIGKILL, restart over the stale socket
    python bench/reliability.py sigterm [--clients 16]      # SIGTERM under load (some clients never read)
    python bench/reliability.py fuzz [--n 100000]           # random and mutated frames
    python bench/reliability.py vmcycles [--n 10000] [--tree DIR]  # kstatd RSS over VM create/destroy
    python tests/soak/soak_vmm.py --cycles 10000 --readers 8  # the docs/VMM.md §6 soak (separate script)

Each prints one JSON line with what it pushed, what came back and how long it took,
and exits 1 when kstatd died, answered wrongly or did not exit cleanly.
``tests/test_reliability_runs.py`` runs every one in a short version.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgpack

REPO = Path(__file__).resolve().parent.parent
for _p in (str(REPO), str(REPO / "tests")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from tests.kstatd_fixture import hello  # noqa: E402
from tests.kstatd_fixture import read_reply  # noqa: E402
from tests.kstatd_fixture import rpc  # noqa: E402
from tests.kstatd_fixture import running_kstatd  # noqa: E402

READ, HELLO, READ_MANY = 0x4B02, 0x4B10, 0x4B11
BASIC = ("tests.providers_fixture.basic",)


def frame(cmd: int, seq: int, arg: Any = None) -> bytes:
    body = msgpack.packb([cmd, seq, arg], use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def connect(path: str, timeout: float = 60.0) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    return s


def a_kid(path: str) -> int:
    hdrs = rpc(path, READ, {"kid": 0})[2]["kstat"]["data"]
    return next(h["kid"] for h in hdrs if h["module"] == "test" and h["name"] == "named")


def connections(n: int) -> dict[str, Any]:
    """``n`` connections open at once (cap raised to n + 64), each answered twice."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_kstatd(tmp, plugins=BASIC, args=["--max-connections", str(n + 64)]) as kd,
    ):
        kid = a_kid(kd.socket)
        t0 = time.monotonic()
        socks = [connect(kd.socket) for _ in range(n)]
        codes: Counter[int] = Counter()
        for i, s in enumerate(socks):
            s.sendall(frame(HELLO, i + 1))
        for s in socks:
            codes[read_reply(s)[1]] += 1
        for i, s in enumerate(socks):
            s.sendall(frame(READ, i + 1, {"kid": kid}))
        for s in socks:
            codes[read_reply(s)[1]] += 1
        current = {k: v for k, _t, v in rpc(kd.socket, READ, {"kid": _stat_kid(kd.socket, "connections")})[2]
                   ["kstat"]["data"]}["current"]  # fmt: skip
        elapsed = time.monotonic() - t0
        for s in socks:
            s.close()
        status = kd.stop()
    return {"scenario": "connections", "n": n, "replies": dict(codes), "connections_current": current,
            "seconds": round(elapsed, 2), "kstatd_exit": status,
            "ok": codes == Counter({0: 2 * n}) and current >= n and status == 0}  # fmt: skip


def _stat_kid(path: str, name: str) -> int:
    hdrs = rpc(path, READ, {"kid": 0})[2]["kstat"]["data"]
    return next(h["kid"] for h in hdrs if h["module"] == "kstatpy" and h["name"] == name)


def flood(n: int) -> dict[str, Any]:
    """``n`` READs pipelined on one connection (a writer and a reader thread)."""
    with tempfile.TemporaryDirectory() as tmp, running_kstatd(tmp, plugins=BASIC) as kd:
        kid = a_kid(kd.socket)
        s = connect(kd.socket)
        errors: list[str] = []

        def writer() -> None:
            batch = 1000
            for start in range(0, n, batch):
                s.sendall(
                    b"".join(frame(READ, seq, {"kid": kid}) for seq in range(start + 1, min(start + batch, n) + 1))
                )

        t0 = time.monotonic()
        w = threading.Thread(target=writer)
        w.start()
        codes: Counter[int] = Counter()
        for seq in range(1, n + 1):
            rseq, code, _result = read_reply(s)
            codes[code] += 1
            if rseq != seq and len(errors) < 5:
                errors.append(f"reply seq {rseq} for {seq}")
        w.join()
        elapsed = time.monotonic() - t0
        s.close()
        alive = hello(kd.socket)["protocol"] == 1
        status = kd.stop()
    return {"scenario": "flood", "n": n, "replies": dict(codes), "out_of_order": errors, "seconds": round(elapsed, 2),
            "requests_per_s": round(n / elapsed), "kstatd_exit": status,
            "ok": codes == Counter({0: n}) and not errors and alive and status == 0}  # fmt: skip


def restart(n: int) -> dict[str, Any]:
    """SIGKILL kstatd ``n`` times and start it again over the stale socket."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kstat.sock")
        stale = started = 0
        t0 = time.monotonic()
        for _ in range(n):
            stale += os.path.exists(path)
            with running_kstatd(tmp, plugins=BASIC, socket=path) as kd:
                started += hello(path)["protocol"] == 1
                kd.stop(signal.SIGKILL)
        with running_kstatd(tmp, plugins=BASIC, socket=path) as kd:
            final = kd.stop()
        left = sorted(os.listdir(tmp))
    return {"scenario": "restart", "n": n, "started": started, "stale_socket_found": stale,
            "seconds": round(time.monotonic() - t0, 2), "final_exit": final, "files_left": left,
            "ok": started == n and stale >= n - 1 and final == 0 and left == []}  # fmt: skip


def sigterm(clients: int, seconds: float = 2.0) -> dict[str, Any]:
    """SIGTERM while ``clients`` connections read hard and a quarter never read replies."""
    with tempfile.TemporaryDirectory() as tmp, running_kstatd(tmp, plugins=BASIC) as kd:
        kid = a_kid(kd.socket)
        stop = threading.Event()
        served: Counter[str] = Counter()

        def reader(i: int) -> None:
            try:
                s = connect(kd.socket, timeout=30)
                seq = 0
                while not stop.is_set():
                    seq += 1
                    s.sendall(
                        frame(READ_MANY if seq % 2 else READ, seq, {"kids": [kid] * 50} if seq % 2 else {"kid": kid})
                    )
                    read_reply(s)
                    served["replies"] += 1
            except (OSError, EOFError):
                served["closed_by_kstatd"] += 1

        socks = []
        for _ in range(max(1, clients // 4)):  # never read: their replies fill the socket
            s = connect(kd.socket)
            s.setblocking(False)
            try:
                while True:
                    s.send(frame(READ, 1, {"kid": 0}) * 64)
            except BlockingIOError:
                pass
            socks.append(s)
        threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(clients)]
        for t in threads:
            t.start()
        time.sleep(seconds)  # load for a while: the scenario's duration
        t0 = time.monotonic()
        status = kd.stop()
        exit_s = time.monotonic() - t0
        stop.set()
        for t in threads:
            t.join(30)
        for s in socks:
            s.close()
        left = sorted(os.listdir(tmp))
    return {"scenario": "sigterm", "clients": clients, "non_readers": len(socks), "load_seconds": seconds,
            "replies_before": served["replies"], "exit_seconds": round(exit_s, 2), "kstatd_exit": status,
            "files_left": left, "ok": status == 0 and exit_s < 3.0 and left == []}  # fmt: skip


def _fuzz_frame(rng: random.Random, valid: list[bytes]) -> bytes:
    kind = rng.randrange(5)
    if kind == 0:  # random bytes
        return rng.randbytes(rng.randrange(1, 64))
    if kind == 1:  # a random body with a correct length
        body = rng.randbytes(rng.randrange(1, 64))
        return struct.pack(">I", len(body)) + body
    if kind == 2:  # a valid request with bytes flipped
        data = bytearray(rng.choice(valid))
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if kind == 3:  # random msgpack of the right shape, random values
        value = rng.choice([None, 1, -1, 2**64 - 1, "x", b"y", [1, 2], {"kid": "0"}, {"kids": [0, "a", 2**40]}, 1.5])
        cmd = rng.choice([0x4B01, 0x4B02, 0x4B03, 0x4B10, 0x4B11, 0x4B7F, 0x564DF0, 0x7E5701, 0x7E5702])
        arg = rng.choice([None, {}, {"kid": value}, {"kids": value}, {"kid": 0, "data_size": value}, value])
        try:
            return frame(cmd, rng.randrange(2**32), arg)
        except (TypeError, ValueError):
            return frame(cmd, 1, None)
    return rng.choice(valid)  # a valid request


def fuzz(n: int, seed: int = 13) -> dict[str, Any]:
    """``n`` frames, random and mutated; kstatd must answer each well-formed or close."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp, running_kstatd(tmp, plugins=BASIC, args=["--frame-timeout", "1"]) as kd:
        kid = a_kid(kd.socket)
        valid = [frame(READ, 1, {"kid": kid}), frame(READ_MANY, 2, {"kids": [0, kid, 99]}), frame(HELLO, 3),
                 frame(0x4B01, 4), frame(0x4B03, 5, {"kid": kid, "ndata": 3, "data": []})]  # fmt: skip
        codes: Counter[int] = Counter()
        malformed = [0]
        examples: list[dict[str, str]] = []
        lock = threading.Lock()
        frames = [_fuzz_frame(rng, valid) for _ in range(n)]
        t0 = time.monotonic()

        def worker(part: list[bytes]) -> None:
            # One frame per connection, then EOF: every frame is decoded by kstatd.
            for f in part:
                s = connect(kd.socket, timeout=30)
                try:
                    s.sendall(f)
                except OSError:
                    pass  # closed early after a bad frame: its reply is still readable
                s.shutdown(socket.SHUT_WR)
                data = b""
                while chunk := s.recv(1 << 16):
                    data += chunk
                s.close()
                while len(data) >= 4:
                    (length,) = struct.unpack(">I", data[:4])
                    try:
                        seq, code, result = msgpack.unpackb(data[4 : 4 + length], raw=False, strict_map_key=False)
                        assert type(seq) is int and type(code) is int and isinstance(result, dict)
                        with lock:
                            codes[code] += 1
                    except Exception as exc:
                        with lock:
                            malformed[0] += 1
                            if len(examples) < 5:
                                examples.append({"frame": f[:64].hex(), "reply": data[:80].hex(), "error": repr(exc)})
                    data = data[4 + length :]

        workers = [threading.Thread(target=worker, args=(frames[i::4],)) for i in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        alive = kd.proc.poll() is None and hello(kd.socket)["protocol"] == 1
        elapsed = time.monotonic() - t0
        status = kd.stop()
    return {"scenario": "fuzz", "frames": n, "connections": n, "replies_by_errno": dict(sorted(codes.items())),
            "malformed_replies": malformed[0], "malformed_examples": examples, "seconds": round(elapsed, 1), "kstatd_alive": alive, "kstatd_exit": status,
            "ok": alive and malformed[0] == 0 and status == 0}  # fmt: skip


def vmcycles(n: int, tree: str = str(REPO)) -> dict[str, Any]:
    """``n`` VM create/destroy cycles; kstatd's RSS after 100 and after ``n`` (any checkout)."""
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kstat.sock")
        os.symlink(os.path.join(tree, "providers"), os.path.join(tmp, "kstatpy_providers"))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([tree, tmp]), KSTATPY_DISABLE_PLUGIN_AUTOLOAD="1")
        proc = subprocess.Popen([sys.executable, "-m", "kstatpy.cli.kstatd", "--socket", path, "--plugin",
                                 "kstatpy_providers.vmm.provider"], cwd=tree, env=env)  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    hello(path)
                    break
                except (OSError, EOFError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            s = connect(path)
            t0 = time.monotonic()
            rss = {}
            for i in range(1, n + 1):
                for cmd in (0x564D01, 0x564D02):
                    s.sendall(frame(cmd, i, {"name": "churn"}))
                    assert read_reply(s)[1] == 0
                if i in (100, n) or i % 1000 == 0:
                    with open(f"/proc/{proc.pid}/status") as f:
                        rss[i] = next(int(x.split()[1]) for x in f if x.startswith("VmRSS:")) // 1024
            elapsed = time.monotonic() - t0
            s.close()
        finally:
            proc.terminate()
            status = proc.wait(30)
    return {"scenario": "vmcycles", "tree": tree, "cycles": n, "rss_mb_by_cycle": rss, "seconds": round(elapsed, 1),
            "ratio_end_to_100": round(rss[n] / rss[100], 3), "kstatd_exit": status,
            "ok": rss[n] <= rss[100] * 1.10}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    for name, default in (("connections", 1000), ("flood", 100_000), ("restart", 20), ("fuzz", 100_000)):
        sub.add_parser(name).add_argument("--n", type=int, default=default)
    p = sub.add_parser("vmcycles")
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--tree", default=str(REPO), help="the checkout whose kstatd runs (before/after)")
    p = sub.add_parser("sigterm")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=2.0)
    a = ap.parse_args()
    if a.what == "sigterm":
        report = sigterm(a.clients, a.seconds)
    elif a.what == "vmcycles":
        report = vmcycles(a.n, a.tree)
    else:
        report = {"connections": connections, "flood": flood, "restart": restart, "fuzz": fuzz}[a.what](a.n)
    print(json.dumps(report))
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
