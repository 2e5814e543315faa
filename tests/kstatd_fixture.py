"""Start a real kstatd subprocess on a temporary socket (for every helper's tests).

Signature::

    with running_kstatd(tmp_path, plugins=("tests.providers_fixture.basic",),
                        args=("--read-timeout", "0.5"), env={"X": "1"}) as kd:
        kd.socket        # str: the global zone's socket path (tmp_path / "kstat.sock")
        kd.proc          # subprocess.Popen (stdout/stderr are pipes)
        kd.stop()        # SIGTERM and wait; returns the exit status (idempotent)
        kd.stderr        # after stop(): everything kstatd wrote to stderr

``running_kstatd`` runs ``python -m kstatpy.cli.kstatd --socket P --plugin M ...`` with
``KSTATPY_DISABLE_PLUGIN_AUTOLOAD=1`` and PYTHONPATH = the repository root, waits until
the daemon answers KSTATPY_IOC_HELLO (deadline ``start_timeout``), and always stops
it with SIGTERM in ``finally`` (SIGKILL if it does not exit within 10 s).
``socket`` overrides the path; ``zones`` is a list of (name, path) for ``--zone``.
``wait_ready=False`` returns at once (for tests of start-up failures).

``hello(path)`` answers one HELLO (raises OSError when nothing answers) and ``rpc``
sends one raw request and returns the decoded reply.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack

REPO = Path(__file__).resolve().parent.parent
HELLO = 0x4B10


def rpc(path: str, cmd: int, arg: Any = None, seq: int = 1, timeout: float = 10.0) -> list[Any]:
    """One request on a fresh connection: the decoded reply ``[seq, errno, result]``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        body = msgpack.packb([cmd, seq, arg], use_bin_type=True)
        s.sendall(struct.pack(">I", len(body)) + body)
        return read_reply(s)


def recv_exact(s: socket.socket, n: int) -> bytes:
    """Exactly n bytes from s; EOFError if the peer closed first."""
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"peer closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def read_reply(s: socket.socket) -> list[Any]:
    """One framed reply from s, decoded."""
    (length,) = struct.unpack(">I", recv_exact(s, 4))
    return msgpack.unpackb(recv_exact(s, length), raw=False)


def hello(path: str, timeout: float = 2.0) -> dict[str, Any]:
    """KSTATPY_IOC_HELLO's result; raises OSError/EOFError when no kstatd answers."""
    _seq, code, result = rpc(path, HELLO, {"protocol": 1}, timeout=timeout)
    if code:
        raise OSError(code, result.get("error"))
    return result


class KstatdProcess:
    """A kstatd subprocess and its socket."""

    def __init__(self, proc: subprocess.Popen[bytes], socket_path: str) -> None:
        self.proc = proc
        self.socket = socket_path
        self.stderr = ""
        self.stdout = ""
        self.returncode: int | None = None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Signal kstatd, wait for it, collect its output; the exit status."""
        if self.returncode is None:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
            try:
                out, err = self.proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                try:
                    out, err = self.proc.communicate(timeout=timeout)
                except subprocess.TimeoutExpired:
                    raise AssertionError(f"kstatd (pid {self.proc.pid}) did not exit within {timeout} s of SIGKILL") from None
            self.stdout = out.decode(errors="replace")
            self.stderr = err.decode(errors="replace")
            self.returncode = self.proc.returncode
        return self.returncode

    def wait(self, timeout: float = 10.0) -> int:
        """Wait for kstatd to exit by itself (e.g. after a panic); the exit status."""
        out, err = self.proc.communicate(timeout=timeout)
        self.stdout = out.decode(errors="replace")
        self.stderr = err.decode(errors="replace")
        self.returncode = self.proc.returncode
        return self.returncode


def kstatd_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment kstatd runs with: autoload off, the repository importable."""
    env = dict(os.environ)
    env["KSTATPY_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env


@contextlib.contextmanager
def running_kstatd(
    tmp_path: Path | str,
    plugins: tuple[str, ...] | list[str] = (),
    args: tuple[str, ...] | list[str] = (),
    env: dict[str, str] | None = None,
    socket: str | None = None,
    zones: list[tuple[str, str]] | tuple[()] = (),
    start_timeout: float = 15.0,
    wait_ready: bool = True,
) -> Iterator[KstatdProcess]:
    """A kstatd subprocess serving ``tmp_path/kstat.sock`` (see the module docstring)."""
    path = socket or str(Path(tmp_path) / "kstat.sock")
    cmd = [sys.executable, "-m", "kstatpy.cli.kstatd", "--socket", path]
    for p in plugins:
        cmd += ["--plugin", p]
    for name, zpath in zones:
        cmd += ["--zone", f"{name}={zpath}"]
    cmd += list(args)
    proc = subprocess.Popen(cmd, cwd=str(REPO), env=kstatd_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    kd = KstatdProcess(proc, path)
    try:
        if wait_ready:
            deadline = time.monotonic() + start_timeout
            while True:
                if proc.poll() is not None:
                    kd.stop()
                    raise RuntimeError(f"kstatd exited with {proc.returncode}: {kd.stderr}")
                try:
                    hello(path)
                    break
                except (OSError, EOFError):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"kstatd did not answer on {path} within {start_timeout} s") from None
                    time.sleep(0.02)  # polling for readiness with a deadline, not synchronisation
        yield kd
    finally:
        kd.stop()
