"""The pytest plugin of kstatpy (entry point ``pytest11``: ``kstatpy``): fixtures for provider tests.

Fixtures
    ``kstat_chain``
        a fresh :class:`~kstatpy.chain.Chain` whose debug heap audits every free
        (``Kmem(audit=True)``): a free that a live kstat points into traps at once,
        and a lock order that closes a cycle too (the lock-order checker, on with it).
    ``kstatd``
        a factory: ``kd = kstatd("vmm", "my_provider_module", args=[...])`` starts a
        real ``kstatd`` subprocess with exactly those providers (entry-point names,
        or import names of modules) on a socket in the test's temporary directory,
        with ``--kmem-audit`` (``audit=False`` to leave it off) and
        ``--on-panic=continue``; waits until it answers; stops every one it started
        (SIGTERM) at the end of the test. See :class:`KstatdProcess`.
    ``kstat_cli``
        runs the ``kstat`` command in a subprocess: ``kstat_cli("-p", "vmm:1:vm",
        socket=kd.socket)`` (the socket defaults to the last kstatd the test
        started) -> ``subprocess.CompletedProcess`` (text).
    ``lifetime_race``
        :func:`kstatpy.testing.race.lifetime_race` with the seed of
        ``--kstatpy-seed`` (default 14281) unless a test passes one.

Option ``--kstatpy-seed N`` replays a failed race's operations. The test's rootdir
is put on the subprocesses' PYTHONPATH, so test-local provider modules load.
"""

from __future__ import annotations

import os
import signal
import socket as socketlib
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["KstatdProcess"]

HELLO = 0x4B10
DEFAULT_SEED = 14281


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kstatpy", "kstatpy provider testing")
    group.addoption(
        "--kstatpy-seed", type=int, default=DEFAULT_SEED, help="seed of the lifetime race harness (default 14281)"
    )


class KstatdProcess:
    """A ``kstatd`` subprocess started by the ``kstatd`` fixture.

    :attr socket: its socket path; :attr proc: the ``subprocess.Popen``;
        :attr stderr: what it wrote to stderr (after :meth:`stop` or :meth:`wait`).
    """

    def __init__(self, proc: subprocess.Popen[bytes], socket: str, crash_dir: Path) -> None:
        self.proc = proc
        self.socket = socket
        self.crash_dir = crash_dir
        self.stderr = ""
        self.returncode: int | None = None

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; the exit status (0: clean). Idempotent."""
        if self.returncode is None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            self.wait(timeout)
        assert self.returncode is not None
        return self.returncode

    def wait(self, timeout: float = 15.0) -> int:
        """Wait for kstatd to exit by itself (e.g. a halting panic); the exit status."""
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        self.stderr = err.decode(errors="replace")
        self.returncode = self.proc.returncode
        return self.returncode

    def crash_files(self) -> list[Path]:
        """The panic reports and crash dumps written so far."""
        return sorted([*self.crash_dir.glob("kstatd.crash.*"), *self.crash_dir.glob("kstatd.vmcore.*")])

    def hello(self) -> dict[str, Any]:
        """KSTATPY_IOC_HELLO's result (raises OSError when kstatd does not answer)."""
        with socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(self.socket)
            import msgpack

            body = msgpack.packb([HELLO, 1, {"protocol": 1}], use_bin_type=True)
            s.sendall(struct.pack(">I", len(body)) + body)
            head = _recv(s, 4)
            (length,) = struct.unpack(">I", head)
            _, code, result = msgpack.unpackb(_recv(s, length), raw=False)
        if code:
            raise OSError(code, result.get("error"))
        return dict(result)


def _recv(s: socketlib.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise OSError("kstatd closed the connection")
        buf += chunk
    return buf


def _entry_point_names() -> set[str]:
    from importlib.metadata import entry_points

    return {ep.name for ep in entry_points(group="kstatpy.providers")}


def _env(rootdir: Path, extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(rootdir), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


@pytest.fixture
def kstat_chain() -> Any:
    """A fresh chain whose debug heap audits every free (``Kmem(audit=True)``)."""
    from kstatpy.chain import Chain
    from kstatpy.kmem import Kmem

    return Chain(kmem=Kmem(audit=True))


@pytest.fixture
def kstatd(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., KstatdProcess]]:
    """Factory: ``kstatd(*providers, args=(), env=None, audit=True)`` -> a running :class:`KstatdProcess`."""
    started: list[KstatdProcess] = []
    rootdir = Path(request.config.rootpath)

    def start(
        *providers: str,
        args: list[str] | tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        audit: bool = True,
        timeout: float = 20.0,
    ) -> KstatdProcess:
        n = len(started)
        path = str(tmp_path / f"kstatd{n}.sock")
        installed = _entry_point_names()
        named = [p for p in providers if p in installed]
        modules = [p for p in providers if p not in installed]
        extra = dict(env or {})
        if named:  # autoload just these: every other entry point is blocked
            extra["KSTATPY_DISABLE_PLUGIN_AUTOLOAD"] = ""
            extra["KSTATPY_DISABLED_PROVIDERS"] = ",".join(sorted(installed - set(named)))
        else:
            extra["KSTATPY_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        cmd = [sys.executable, "-m", "kstatpy.cli.kstatd", "--socket", path, "--on-panic=continue"]
        cmd += ["--kmem-audit"] if audit else []
        for m in modules:
            cmd += ["--plugin", m]
        cmd += list(args)
        proc = subprocess.Popen(cmd, env=_env(rootdir, extra), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        kd = KstatdProcess(proc, path, tmp_path)
        started.append(kd)
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                kd.wait()
                raise RuntimeError(f"kstatd exited with {proc.returncode}: {kd.stderr.strip()}")
            try:
                kd.hello()
                return kd
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"kstatd did not answer on {path} within {timeout} s") from None
                time.sleep(0.02)  # polling for readiness against a deadline

    start.started = started  # type: ignore[attr-defined]
    try:
        yield start
    finally:
        for kd in started:
            kd.stop()


@pytest.fixture
def kstat_cli(request: pytest.FixtureRequest) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``kstat_cli(*args, socket=None, env=None)``: run ``kstat`` in a subprocess (text output)."""
    rootdir = Path(request.config.rootpath)

    def run(*args: str, socket: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        if socket is None and "kstatd" in request.fixturenames:
            started = request.getfixturevalue("kstatd").started
            socket = started[-1].socket if started else None
        extra = dict(env or {})
        if socket is not None:
            extra["KSTAT_SOCKET"] = socket
        cmd = [sys.executable, "-m", "kstatpy.cli.kstat", *args]
        return subprocess.run(cmd, env=_env(rootdir, extra), capture_output=True, text=True, timeout=120)

    return run


@pytest.fixture
def lifetime_race(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """:func:`kstatpy.testing.race.lifetime_race`, seeded by ``--kstatpy-seed`` unless given ``seed=``."""
    from kstatpy.testing.race import lifetime_race as race

    seed = request.config.getoption("--kstatpy-seed")

    def run(provider: object, operations: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("seed", seed)
        return race(provider, operations, **kwargs)

    return run
