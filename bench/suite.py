"""The figures of issue 10's table, each with its baseline from the same run.

Each ``measure_*`` function takes the run's :class:`Setup` and returns rows
``{"key": ..., "value": float, "baseline": float}`` (one run); ``python -m bench``
repeats them and reports medians and spreads (bench/report.py).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from dataclasses import field

from bench_pcp import pcp_status
from bench_pcp import pcp_values
from infra import READ
from infra import READ_MANY
from infra import Daemon
from infra import Echo
from infra import EchoDispatch
from infra import RawClient
from infra import proc_times
from infra import rtt

FLOOR = """
import socket, struct, sys
import msgpack
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
body = msgpack.packb([0x4B02, 1, {"kid": int(sys.argv[2])}], use_bin_type=True)
s.sendall(struct.pack(">I", len(body)) + body)
buf = b""
while len(buf) < 4:
    buf += s.recv(4 - len(buf))
(n,) = struct.unpack(">I", buf)
buf = b""
while len(buf) < n:
    buf += s.recv(n - len(buf))
_, _, res = msgpack.unpackb(buf, raw=False)
rec = next(r for r in res["kstat"]["data"] if r[0] == "ncpus")
print(f"unix:0:system_misc:ncpus\\t{rec[2]}")
"""


@dataclass
class Setup:
    """What one ``python -m bench`` run shares between figures."""

    tmp: str
    quick: bool
    python: str  # the interpreter with kstatpy installed as users get it
    wheel: bool  # True: ``python`` is a wheel install with compiled bytecode
    small: Daemon | None = None  # 10^3 kstats x 10 statistics
    mid: Daemon | None = None  # 10^4 kstats x 10
    big: Daemon | None = None  # 10^5 kstats x 2
    system: Daemon | None = None  # the system provider, served by ``python``
    curves: dict[str, list] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # lines for the table's header

    @property
    def big_n(self) -> int:
        return 20_000 if self.quick else 100_000

    def start(self) -> None:
        self.small = Daemon(self.tmp, 1000, 10)
        self.mid = Daemon(self.tmp, 10_000, 10)
        self.big = Daemon(self.tmp, self.big_n, 2)
        self.system = Daemon(self.tmp, 0, 0, python=self.python, system=True)

    def stop(self) -> None:
        for d in (self.small, self.mid, self.big, self.system):
            if d is not None:
                d.stop()


def _kstat(python: str) -> list[str]:
    script = os.path.join(os.path.dirname(python), "kstat")
    return [python, script] if os.path.exists(script) else [python, "-m", "kstatpy.cli.kstat"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KSTAT_SOCKET", "PYTHONPATH")}
    env.update(extra)
    return env


def measure_read(s: Setup) -> list[dict]:
    """KSTAT_IOC_READ of unix:0:kstat_types (kid 1) against an echo of the same reply.

    A second baseline, interleaved in the same blocks, is the echo's loop around kstatd's
    own request handler and chain (:class:`infra.EchoDispatch`): kstatd against it is
    the session machinery's share, it against the echo the data model's.
    """
    assert s.small is not None
    _, _, result = RawClient(s.small.socket).call(READ, {"kid": 1})
    echo = Echo(os.path.join(s.tmp, "echo-read.sock"), result)
    handler = EchoDispatch(os.path.join(s.tmp, "echo-handler.sock"), 1000, 10)
    try:
        n = 1000 if s.quick else 3000
        pids = [s.small.proc.pid, handler.proc.pid, echo.proc.pid]
        kd, hd, base, kd_cpu, hd_cpu, base_cpu = rtt(
            [s.small.socket, handler.socket, echo.socket], n, READ, {"kid": 1}, pids=pids
        )
    finally:
        echo.stop()
        handler.stop()
    return [
        {"key": "read", "value": kd * 1e6, "baseline": base * 1e6},
        {"key": "read_handler", "value": kd * 1e6, "baseline": hd * 1e6},
        {"key": "read_model", "value": hd * 1e6, "baseline": base * 1e6},
        {"key": "read_cpu", "value": kd_cpu * 1e6, "baseline": base_cpu * 1e6},
        {"key": "read_cpu_handler", "value": hd_cpu * 1e6, "baseline": base_cpu * 1e6},
    ]


def measure_one_stat(s: Setup) -> list[dict]:
    """``kstat -p M:I:N:S`` of one statistic through kstatd: big chain against 10^3."""
    assert s.small is not None and s.big is not None
    cmd = [*_kstat(sys.executable), "-p", "bench:5:kstat5:stat_001"]
    small, big = proc_times(
        [(cmd, _env(KSTAT_SOCKET=s.small.socket)), (cmd, _env(KSTAT_SOCKET=s.big.socket))], 3 if s.quick else 5
    )
    s.curves.setdefault("one_stat", []).append({1000: small, s.big_n: big})
    return [{"key": "one_stat", "value": big * 1e3, "baseline": small * 1e3}]


def measure_startup(s: Setup) -> list[dict]:
    """kstat through kstatd against the floor program; embedded against kstatd; ``-c pass``."""
    assert s.system is not None
    kid = s.system.kid_of("unix", 0, "system_misc")
    kstat = [*_kstat(s.python), "-p", "unix:0:system_misc:ncpus"]
    via_kd = (kstat, _env(KSTAT_SOCKET=s.system.socket))
    embedded = (
        kstat,
        _env(XDG_RUNTIME_DIR=os.path.join(s.tmp, "nodaemon"), KSTATPY_CACHE_DIR=os.path.join(s.tmp, "cache")),
    )
    floor = ([s.python, "-c", FLOOR, s.system.socket, str(kid)], _env())
    bare = ([s.python, "-c", "pass"], _env())
    t_kd, t_emb, t_floor, t_pass = proc_times([via_kd, embedded, floor, bare], 5 if s.quick else 15)
    return [
        {"key": "startup_kstatd", "value": t_kd * 1e3, "baseline": t_floor * 1e3},
        {"key": "startup_embedded", "value": t_emb * 1e3, "baseline": t_kd * 1e3},
        {"key": "startup_pass", "value": t_pass * 1e3, "baseline": t_pass * 1e3},
    ]


def _many_load(path: str, kids: list[int], seconds: float, barrier, results) -> None:
    from kstatpy.client import KstatCtl
    from kstatpy.client import KstatUser
    from kstatpy.transport import SocketTransport

    kc = KstatCtl(SocketTransport(path))  # the same client against kstatd and the echo
    ksps = [KstatUser({"kid": k, "module": "bench", "instance": 0, "name": "k", "class": "misc", "type": 1,
                       "flags": 0, "ndata": 10, "data_size": 480, "crtime": 0, "snaptime": 0}) for k in kids]  # fmt: skip
    barrier.wait()
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        kc.read_many(ksps)
        n += len(ksps) * 10
    results.put(n)
    kc.close()


def _values_per_s(path: str, kids: list[int], nproc: int, seconds: float) -> float:
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(nproc)
    results = ctx.Queue()
    procs = [ctx.Process(target=_many_load, args=(path, kids, seconds, barrier, results)) for _ in range(nproc)]
    for p in procs:
        p.start()
    total = sum(results.get(timeout=seconds + 120) for _ in procs)
    for p in procs:
        p.join()
    return total / seconds


def measure_read_many(s: Setup) -> list[dict]:
    """READ_MANY of 100 kstats x 10 named values, 1/4/16 client processes, against an echo.

    With 1 and 4 clients, also kstatd's own request handler in the echo's loop
    (:class:`infra.EchoDispatch`), as for the READ row.
    """
    assert s.small is not None
    kids = [s.small.kid_of("bench", i, f"kstat{i}") for i in range(100)]
    _, _, result = RawClient(s.small.socket).call(READ_MANY, {"kids": kids})
    echo = Echo(os.path.join(s.tmp, "echo-many.sock"), result)
    handler = EchoDispatch(os.path.join(s.tmp, "echo-many-handler.sock"), 1000, 10)
    _, _, hres = RawClient(handler.socket).call(READ_MANY, {"kids": kids})
    if [(e[1]["module"], e[1]["name"]) for e in hres["results"]] != [
        (e[1]["module"], e[1]["name"]) for e in result["results"]
    ]:
        raise RuntimeError("the echo+handler server's kids name other kstats than kstatd's")
    rows = []
    seconds = 0.5 if s.quick else 1.0
    curve = {}
    try:
        for nproc in (1, 4, 16):
            kd = _values_per_s(s.small.socket, kids, nproc, seconds)
            base = _values_per_s(echo.socket, kids, nproc, seconds)
            rows.append({"key": f"read_many_{nproc}", "value": kd, "baseline": base})
            curve[nproc] = (kd, base)
            if nproc < 16:
                hd = _values_per_s(handler.socket, kids, nproc, seconds)
                rows.append({"key": f"read_many_handler_{nproc}", "value": kd, "baseline": hd})
                rows.append({"key": f"read_many_model_{nproc}", "value": hd, "baseline": base})
    finally:
        echo.stop()
        handler.stop()
    s.curves.setdefault("read_many", []).append(curve)
    return rows


def measure_dump(s: Setup) -> list[dict]:
    """Full ``kstat -p`` of 10^4 x 10 through kstatd per value, against a raw READ_MANY of it."""
    assert s.mid is not None
    values = 10_000 * 10
    raw = (
        [sys.executable, "-c",
         "import sys; from kstatpy.client import kstat_open; kc = kstat_open(sys.argv[1]); "
         "kc.read_many([k for k in kc.kc_chain if k.ks_kid > 1])", s.mid.socket],
        _env(),
    )  # fmt: skip
    dump = ([*_kstat(sys.executable), "-p"], _env(KSTAT_SOCKET=s.mid.socket))
    pid = s.mid.proc.pid
    t_dump, t_raw, c_dump, c_kstatd, _, _ = proc_times([dump, raw], 2 if s.quick else 3, cpu_of=[pid, pid])
    per = 1e6 / values
    return [
        {"key": "dump_per_value", "value": t_dump * per, "baseline": t_raw * per},
        {"key": "dump_cpu", "value": c_dump * per, "baseline": t_dump * per},
        {"key": "dump_cpu_kstatd", "value": c_kstatd * per, "baseline": t_dump * per},
    ]


def measure_pcp(s: Setup) -> list[dict]:
    """Full ``kstat -p`` of 10^4 x 10 through kstatd per value, against ``pminfo -f`` per value.

    Both commands interleaved in the same run; kstat as installed (``s.python``), PCP's
    values counted with ``pmprobe`` before and after the timed runs (bench_pcp.py).
    No row, and a note in the output, when PCP is not installed or pmcd does not answer.
    """
    assert s.mid is not None
    why = pcp_status()
    if why:
        note = f"PCP row not measured: {why} (BENCHMARKS.md, 'Against PCP', says how to start pmcd)."
        if note not in s.notes:
            s.notes.append(note)
            print(f"bench: {note}", file=sys.stderr)
        return []
    v0, _ = pcp_values()
    dump = ([*_kstat(s.python), "-p"], _env(KSTAT_SOCKET=s.mid.socket))
    t_dump, t_pcp = proc_times([dump, (["pminfo", "-f"], None)], 2 if s.quick else 3)
    why = pcp_status()  # a pmcd that stopped answering would make pminfo's times those of a failure
    if why:
        s.notes.append(f"PCP row: one run dropped: {why} after its timed runs.")
        print(f"bench: {s.notes[-1]}", file=sys.stderr)
        return []
    v1, _ = pcp_values()
    values = (v0 + v1) / 2
    note = f"PCP row: `pminfo -f` of every metric of this machine's pmcd, about {values:,.0f} values (pmprobe)."
    if not any(n.startswith("PCP row:") for n in s.notes):
        s.notes.append(note)
    return [{"key": "pcp", "value": t_dump / 100_000 * 1e6, "baseline": t_pcp / max(values, 1) * 1e6}]


def measure_kid0(s: Setup) -> list[dict]:
    """KID 0 (every header) per header: the big chain against 10^3 kstats."""
    assert s.small is not None and s.big is not None
    rows = []
    n_small, n_big = 1000 + 30, s.big_n + 30  # plus unix:0:* and kstatpy:0:*
    small, big = rtt([s.small.socket, s.big.socket], 3 if s.quick else 5, READ, {"kid": 0}, block=1, warmup=1)
    rows.append({"key": "kid0", "value": big / n_big * 1e6, "baseline": small / n_small * 1e6})
    s.curves.setdefault("kid0", []).append({1000: small / n_small * 1e6, s.big_n: big / n_big * 1e6})
    return rows


def measure_memory(s: Setup, tmp: str) -> list[dict]:
    """Daemon RSS per kstat and per named statistic, fitted from three daemons; RSS a
    fresh daemon (10^4 x 10) retains after its first full dump."""
    n = 5000 if s.quick else 10_000
    sizes = [(n, 1), (2 * n, 1), (n, 10)]
    rss = []
    for kstats, stats in sizes:
        d = Daemon(tmp, kstats, stats)
        try:
            rss.append(d.rss())
        finally:
            d.stop()
    d = Daemon(tmp, 10_000, 10)
    try:
        rss0 = d.rss()
        subprocess.run([*_kstat(sys.executable), "-p"], env=_env(KSTAT_SOCKET=d.socket), stdout=subprocess.DEVNULL,
                       check=True)  # fmt: skip
        rss1 = d.rss()
    finally:
        d.stop()
    per_stat = (rss[2] - rss[0]) / (n * 9)
    per_kstat = (rss[1] - rss[0]) / n - per_stat
    return [
        {"key": "mem_kstat", "value": per_kstat, "baseline": 184.0},
        {"key": "mem_stat", "value": per_stat, "baseline": 48.0},
        {"key": "rss_retained", "value": (rss1 - rss0) / 2**20, "baseline": rss0 / 2**20},
    ]
