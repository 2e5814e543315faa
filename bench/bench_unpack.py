"""``python bench/bench_unpack.py [--kstats N] [--reps R]``: the client's decode of one big reply.

A kstatd serving ``N`` synthetic NAMED kstats of 10 statistics (bench/bench_cli.py) is
asked once for all of them with READ_MANY; its reply bytes are kept. Then, interleaved
``R`` times, two things are timed on those same bytes in this process:

- the baseline, a plain ``msgpack.unpackb(body, raw=False)``;
- the client's decode: ``KstatCtl.read_many`` over a transport whose ``round_trip``
  unpacks the kept bytes (so everything the client does with a reply after reading it
  off the socket runs: the unpack, the ``ioctl``'s checks, the decoders filling
  ``KstatUser`` objects; no socket time in either);
- the same with the decoders' shape checks off (``kc.wire = False``, as for the
  in-process transport): the floor, so the checks' own cost is the difference;
- the checks alone: ``check_kstat`` over the unpacked entries (the part of the
  decode the shape checks add, without the noise of the rest).

Each is timed in this thread's CPU time (``time.thread_time``), not wall time, so a
neighbour's load stretches none of them, and with the garbage collector off (collected
before): with 10^5 containers alive, a generation-2 collection falling inside one
timing and not the next swung single runs 3x.

Prints the medians and the ratio (BENCHMARKS.md, "Client decode of a big reply").
"""

from __future__ import annotations

import argparse
import gc
import socket
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent))

from infra import READ_MANY
from infra import Daemon

from kstatpy.client import KstatCtl
from kstatpy.client import kstat_open
from kstatpy.client_shapes import check_kstat
from kstatpy.transport import SocketTransport


def reply_bytes(path: str, kids: list[int]) -> bytes:
    """The body of kstatd's reply to one READ_MANY of ``kids``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        body = msgpack.packb([READ_MANY, 1, {"kids": kids}], use_bin_type=True)
        s.sendall(struct.pack(">I", len(body)) + body)
        f = s.makefile("rb")
        (n,) = struct.unpack(">I", f.read(4))
        out = f.read(n)
    if len(out) != n:
        raise RuntimeError("short reply")
    return out


class Replay(SocketTransport):
    """A SocketTransport whose every round trip unpacks the same kept reply body."""

    def __init__(self, body: bytes) -> None:  # no connection: nothing to set up
        self.path = "replay"
        self.body = body

    def round_trip(self, cmd: int, arg: dict | None) -> tuple[int, dict]:
        _seq, code, result = msgpack.unpackb(self.body, raw=False)
        return code, result

    def close(self) -> None:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kstats", type=int, default=10_000)
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Daemon(tmp, args.kstats, 10)
        try:
            with kstat_open(d.socket) as kc:
                ksps = [k for k in kc.kc_chain if k.ks_module == "bench"]
                body = reply_bytes(d.socket, [k.ks_kid for k in ksps])
        finally:
            d.stop()
    replay = KstatCtl(Replay(body))
    unchecked = KstatCtl(Replay(body))
    unchecked.wire = False
    times: dict[str, list[float]] = {"unpackb": [], "client": [], "unchecked": [], "checks": []}
    entries = msgpack.unpackb(body, raw=False)[2]["results"]

    def checks_alone() -> None:
        for _code, kstat in entries:
            check_kstat(kstat)

    runs: dict[str, Callable[[], object]] = {
        "unpackb": lambda: msgpack.unpackb(body, raw=False),
        "client": lambda: replay.read_many(ksps),
        "unchecked": lambda: unchecked.read_many(ksps),
        "checks": checks_alone,
    }
    for _ in range(args.reps):
        for key, run in runs.items():
            gc.collect()
            gc.disable()
            t0 = time.thread_time()
            run()
            times[key].append(time.thread_time() - t0)
            gc.enable()
    codes = replay.read_many(ksps)
    assert all(c == 0 for c, _ in codes) and len(codes) == len(ksps)
    med = {k: statistics.median(v) for k, v in times.items()}
    low = {k: min(v) for k, v in times.items()}
    print(f"{len(ksps)} kstats x 10 statistics, reply {len(body)} bytes, {args.reps} interleaved reps (CPU time)")
    for key, label in (("unpackb", "msgpack.unpackb"), ("client", "client read_many decode"),
                       ("unchecked", "the same, checks off"), ("checks", "the checks alone (check_kstat)")):  # fmt: skip
        print(f"{label}: {med[key] * 1e3:.1f} ms median, {low[key] * 1e3:.1f} min")
    for key in ("client", "unchecked", "checks"):
        print(f"ratio {key}/unpackb: {med[key] / med['unpackb']:.3f} median, {low[key] / low['unpackb']:.3f} min/min")


if __name__ == "__main__":
    main()
