"""Shared pieces of ``python -m bench``: daemons, the echo server, clients, timing, installs.

Every figure is a ratio to a baseline measured in the same run, interleaved with it
so that a busy neighbour slows both alike.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import msgpack

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
READ, READ_MANY = 0x4B02, 0x4B11


# --- daemons -------------------------------------------------------------------------


class Daemon:
    """A kstatd subprocess serving ``kstats`` synthetic NAMED kstats of ``stats`` statistics."""

    def __init__(self, tmp: str, kstats: int, stats: int, python: str = sys.executable, system: bool = False) -> None:
        self.socket = os.path.join(tmp, f"kd-{kstats}-{stats}-{int(system)}.sock")
        env = dict(os.environ)
        env.update(
            KSTATPY_DISABLE_PLUGIN_AUTOLOAD="1",
            PYTHONPATH=os.pathsep.join([str(REPO), str(BENCH)]),
            BENCH_CLI_KSTATS=str(kstats),
            BENCH_CLI_STATS=str(stats),
        )
        plugins = ["--plugin", "bench_cli"] + (["--plugin", "kstatpy_providers.system"] if system else [])
        self.proc = subprocess.Popen(
            [python, "-m", "kstatpy.cli.kstatd", "--socket", self.socket, *plugins],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 600
        while True:
            try:
                RawClient(self.socket).call(0x4B10, None)
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("kstatd did not start") from None
                time.sleep(0.05)

    def rss(self) -> int:
        """Resident set size in bytes (VmRSS)."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def kid_of(self, module: str, instance: int, name: str) -> int:
        _, _, res = RawClient(self.socket).call(READ, {"kid": 0})
        for h in res["kstat"]["data"]:
            if (h["module"], h["instance"], h["name"]) == (module, instance, name):
                return h["kid"]
        raise LookupError(f"{module}:{instance}:{name}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- the echo server: the same reply bytes, in its own process --------------------------------


def _serve_conn(sock: socket.socket, answer) -> None:
    # The minimal server loop (framing, one msgpack decode, one send a request) around
    # answer(cmd, seq, arg, packer) -> the reply frame.
    buf = bytearray()
    packer = msgpack.Packer(use_bin_type=True)
    with sock:
        while True:
            while len(buf) >= 4:
                (n,) = struct.unpack_from(">I", buf)
                if len(buf) < 4 + n:
                    break
                cmd, seq, arg = msgpack.unpackb(bytes(buf[4 : 4 + n]), raw=False)
                del buf[: 4 + n]
                sock.sendall(answer(cmd, seq, arg, packer))
            data = sock.recv(65536)
            if not data:
                return
            buf += data


def _listen(path: str, answer, ready) -> None:
    # Bind ``path``, say ready, and serve each connection with _serve_conn in a thread.
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(128)
    ready.set()
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=_serve_conn, args=(conn, answer), daemon=True).start()


def _frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def echo_server(path: str, result: dict, ready) -> None:
    """A thread-per-connection msgpack echo answering every request with ``result`` (the floor)."""
    _listen(path, lambda cmd, seq, arg, packer: _frame(packer.pack([seq, 0, result])), ready)


class Echo:
    """:func:`echo_server` in its own process."""

    target = staticmethod(echo_server)
    start_timeout = 30

    def __init__(self, path: str, *args: object) -> None:
        self.socket = path
        ctx = mp.get_context("fork")
        ready = ctx.Event()
        self.proc = ctx.Process(target=self.target, args=(path, *args, ready), daemon=True)
        self.proc.start()
        if not ready.wait(self.start_timeout):
            self.stop()
            raise RuntimeError(f"{type(self).__name__} server did not start on {path}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.join()
        try:
            os.unlink(self.socket)
        except OSError:
            pass


def _dispatch_main(path: str, kstats: int, stats: int, system: bool, ready) -> None:
    os.environ.update(BENCH_CLI_KSTATS=str(kstats), BENCH_CLI_STATS=str(stats), KSTATPY_DISABLE_PLUGIN_AUTOLOAD="1")
    import bench_cli

    from kstatpy.cli.kstatd import _tune_gc
    from kstatpy.embed import serve
    from kstatpy.ioctl import Conn
    from kstatpy.ioctl import Cred
    from kstatpy.session import pack_packed_reply

    served = serve(path + ".kstatd", plugins=[("bench_cli", bench_cli)], providers=["system"] if system else ())
    handler = served.daemon.handler
    _tune_gc()  # kstatd's own collector settings
    conn = Conn(Cred(os.getuid(), os.getgid(), os.getpid(), "global", 0, True), id=1, packed=True)

    def answer(cmd: int, seq: int, arg, packer) -> bytes:
        code, result = handler.dispatch(conn, cmd, arg)
        if not code and cmd == READ_MANY:
            return pack_packed_reply(seq, result, packer)
        return _frame(packer.pack([seq, code, result]))

    _listen(path, answer, ready)


class EchoDispatch(Echo):
    """The echo's loop around kstatd's own request handler, chain and provider, in its own process.

    What a request costs with the data model's work (hold, ``ks_update``, snapshot,
    header, pack) and none of kstatd's session machinery (deadlines, quotas, counters,
    the watchdog hand-over): kstatd against it is that machinery's cost; it against the
    echo is the data model's (and the providers'). The chain is ``bench_cli``'s, plus the
    ``system`` provider's when ``system``, as :class:`Daemon`'s.
    """

    target = staticmethod(_dispatch_main)
    start_timeout = 120

    def __init__(self, path: str, kstats: int, stats: int, system: bool = False) -> None:
        super().__init__(path, kstats, stats, system)


# --- clients and timing ---------------------------------------------------------------------


class RawClient:
    """One connection, one request at a time, no kstatpy code (the transport's floor)."""

    def __init__(self, path: str) -> None:
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.seq = 0
        self.hdr = bytearray(4)

    def call(self, cmd: int, arg: dict | None) -> list:
        self.seq += 1
        body = msgpack.packb([cmd, self.seq, arg], use_bin_type=True)
        self.s.sendall(struct.pack(">I", len(body)) + body)
        view = memoryview(self.hdr)
        got = 0
        while got < 4:
            got += self.s.recv_into(view[got:])
        (n,) = struct.unpack(">I", self.hdr)
        out = bytearray(n)
        view = memoryview(out)
        got = 0
        while got < n:
            got += self.s.recv_into(view[got:])
        return msgpack.unpackb(out, raw=False)


def wait_ready(path: str, timeout: float = 30.0) -> None:
    """Poll kstatd at ``path`` with HELLO until it answers; OSError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            RawClient(path).call(0x4B10, None)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def cpu_ns(pid: int) -> int:
    """CPU time (ns) the live threads of ``pid`` have used so far (``/proc/PID/task/*/schedstat``).

    Nanosecond resolution, but a thread that has ended no longer counts: use it over spans
    in which the threads that work stay alive (a connection's thread while it is open).
    """
    total = 0
    base = f"/proc/{pid}/task"
    for tid in os.listdir(base):
        try:
            with open(f"{base}/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that ended meanwhile
    return total


def process_cpu_s(pid: int) -> float:
    """CPU time (s) of the process ``pid`` so far, its ended threads included (``/proc/PID/stat``,
    clock ticks: use it over spans of many ticks)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rtt(
    paths: list[str], n: int, cmd: int, arg: dict, block: int = 250, warmup: int = 100, pids: list[int] | None = None
) -> list[float]:
    """Median round trip (s) to each server; blocks of ``block`` alternate between them.

    With ``pids`` (each server's process), the result has a second half: each server's
    CPU time (s) per request over its blocks (the server's side of the round trip).
    """
    clients = [RawClient(p) for p in paths]
    for c in clients:
        for _ in range(warmup):
            c.call(cmd, arg)
    out: list[list[float]] = [[] for _ in paths]
    cpu = [0] * len(paths)
    clock = time.perf_counter
    while len(out[0]) < n:
        for i, (c, xs) in enumerate(zip(clients, out, strict=True)):
            call = c.call
            c0 = cpu_ns(pids[i]) if pids else 0
            for _ in range(block):
                t0 = clock()
                call(cmd, arg)
                xs.append(clock() - t0)
            if pids:
                cpu[i] += cpu_ns(pids[i]) - c0
    medians = [statistics.median(xs) for xs in out]
    if pids:
        medians += [c / 1e9 / len(xs) for c, xs in zip(cpu, out, strict=True)]
    return medians


def proc_times(
    cmds: list[tuple[list[str], dict[str, str] | None]], repeat: int, cpu_of: list[int | None] | None = None
) -> list[float]:
    """Median wall time (s) of each command, interleaved, after one warm-up run each.

    With ``cpu_of`` (a server pid or None per command), the result has a second half per
    command: the median CPU time (s) of the command's process, then of that server
    while the command ran (0 where None; its connection thread ends with the command, so
    this is the process-wide, tick-resolution count).
    """
    times: list[list[float]] = [[] for _ in cmds]
    own: list[list[float]] = [[] for _ in cmds]
    served: list[list[float]] = [[] for _ in cmds]
    for cmd, env in cmds:
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False)
    for _ in range(repeat):
        for i, (cmd, env) in enumerate(cmds):
            pid = cpu_of[i] if cpu_of else None
            c0 = process_cpu_s(pid) if pid else 0.0
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False)
            times[i].append(time.perf_counter() - t)
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            own[i].append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
            served[i].append(process_cpu_s(pid) - c0 if pid else 0.0)
    out = [statistics.median(t) for t in times]
    if cpu_of:
        for i in range(len(cmds)):
            out += [statistics.median(own[i]), statistics.median(served[i])]
    return out


# --- an install as users get it ------------------------------------------------------------


def installed_python(tmp: str) -> tuple[str, bool]:
    """A Python with kstatpy installed from a wheel (not editable) and its bytecode compiled.

    Returns ``(python, True)``; ``(sys.executable, False)`` when the build fails (offline
    without the build backend): the caller says the figure is from the editable install.
    """
    venv = os.path.join(tmp, "venv")
    wheels = os.path.join(tmp, "wheels")
    try:
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        py = os.path.join(venv, "bin", "python")
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, str(REPO)],
                       check=True, capture_output=True)  # fmt: skip
        wheel = next(Path(wheels).glob("kstatpy-*.whl"))
        subprocess.run([py, "-m", "pip", "install", "-q", str(wheel)], check=True, capture_output=True)
        site = subprocess.run([py, "-c", "import kstatpy, os; print(os.path.dirname(kstatpy.__file__))"],
                              check=True, capture_output=True, text=True, cwd=tmp).stdout.strip()  # fmt: skip
        if "site-packages" not in site or str(REPO) in site:
            raise RuntimeError(f"kstatpy resolves to {site}")
        subprocess.run([py, "-m", "compileall", "-q", os.path.dirname(site)], check=False, capture_output=True)
        return py, True
    except (subprocess.CalledProcessError, StopIteration, RuntimeError, OSError) as exc:
        print(f"bench: no wheel install ({exc}); start-up figures use this interpreter", file=sys.stderr)
        return sys.executable, False


def scratch() -> tempfile.TemporaryDirectory:
    """A short temporary directory (Unix socket paths are limited to 107 bytes)."""
    return tempfile.TemporaryDirectory(prefix="kb", dir="/tmp")
