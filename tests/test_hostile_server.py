"""Clients against a broken or hostile server: a one-line error, never a traceback or 4 GB.

A fake kstatd (a thread on a Unix socket in tmp_path) answers every request with a
crafted frame; the real ``kstat`` and ``vmmctl`` run against it in subprocesses.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
from kstatd_fixture import kstatd_env
from kstatd_fixture import recv_exact

from kstatpy.errors import KstatError
from kstatpy.errors import ServerUnavailableError
from kstatpy.protocol import LENGTH
from kstatpy.protocol import pack_frame
from kstatpy.transport import MAX_REPLY
from kstatpy.transport import SocketTransport

PY = sys.executable
KSTAT = [PY, "-m", "kstatpy.cli.kstat"]
VMMCTL = [PY, "-m", "kstatpy_providers.vmm.vmmctl"]

Answer = Callable[[int], bytes]  # request seq -> the bytes sent back


@contextlib.contextmanager
def fake_kstatd(tmp_path: Path, answer: Answer) -> Iterator[str]:
    """A server on ``tmp_path/fake.sock`` answering each request with ``answer(seq)``."""
    path = str(tmp_path / "fake.sock")
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(path)
    lsock.listen(8)
    conns: list[socket.socket] = []

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                while True:
                    (n,) = LENGTH.unpack(recv_exact(conn, 4))
                    _cmd, seq, _arg = msgpack.unpackb(recv_exact(conn, n), raw=False)
                    conn.sendall(answer(seq))
            except (OSError, EOFError, ConnectionError):
                pass

    def accept() -> None:
        while True:
            try:
                conn, _ = lsock.accept()
            except OSError:
                return
            conns.append(conn)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield path
    finally:
        lsock.shutdown(socket.SHUT_RDWR)
        lsock.close()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        t.join(5)


Paced = Callable[[socket.socket, int, threading.Event], None]  # (connection, request seq, done)


@contextlib.contextmanager
def one_request_server(tmp_path: Path, send: Paced) -> Iterator[str]:
    """A server on ``tmp_path/paced.sock`` for one connection and one request.

    It reads the request and calls ``send(conn, seq, done)``, which writes the answer at
    its own pace, waiting with ``done.wait(gap)``: ``done`` is set when the ``with`` block
    ends, so the serving thread stops at once. The connection has a 10 s socket timeout.
    """
    path = str(tmp_path / "paced.sock")
    lsock = socket.socket(socket.AF_UNIX)
    lsock.bind(path)
    lsock.listen(4)
    done = threading.Event()

    def serve() -> None:
        with contextlib.suppress(OSError, EOFError):
            conn, _ = lsock.accept()
            with conn:
                conn.settimeout(10)
                (n,) = LENGTH.unpack(recv_exact(conn, 4))
                _cmd, seq, _arg = msgpack.unpackb(recv_exact(conn, n), raw=False)
                send(conn, seq, done)

    threading.Thread(target=serve, daemon=True, name="one-request server").start()
    try:
        yield path
    finally:
        done.set()
        lsock.close()


def reply(result: object, code: object = 0) -> Answer:
    return lambda seq: pack_frame([seq, code, result])


def huge_prefix(seq: int) -> bytes:
    return LENGTH.pack(0xFFFFFFF0) + b"\x93"  # claims ~4 GB, sends one byte, keeps the connection


def one_line(err: bytes) -> str:
    text = err.decode("utf-8", "replace")
    assert "Traceback" not in text, text
    assert text.count("\n") == 1, text
    return text


def test_client_refuses_a_reply_over_its_cap_without_allocating_it(tmp_path: Path) -> None:
    with fake_kstatd(tmp_path, huge_prefix) as path:
        t = SocketTransport(path)
        tracemalloc.start()
        try:
            with pytest.raises(KstatError) as ei:
                t.ioctl(0x4B01)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert ei.value.errno == 71 and not isinstance(ei.value, ServerUnavailableError)  # EPROTO
        assert str(MAX_REPLY) in ei.value.message
        assert peak < 16 << 20, peak
        assert t._sock is None  # connection closed


def test_a_large_reply_under_the_cap_is_read_whole(tmp_path: Path) -> None:
    blob = bytes(range(256)) * (12 << 12)  # 3 MiB: several chunks
    with fake_kstatd(tmp_path, reply({"kcid": 1, "data": blob})) as path:
        t = SocketTransport(path)
        assert t.ioctl(0x4B01)["data"] == blob
        t.close()


@pytest.mark.parametrize(
    "answer",
    [
        reply({"results": [[0, {"kid": "a"}]]}),
        reply({}),
        reply("notamap", 99999),
        reply({"error": 5, 1: 2}, 5),
        reply({}, "EIO"),
        huge_prefix,
    ],
    ids=["results-without-keys", "empty-map", "errno-with-a-string", "odd-error-map", "errno-not-int", "4GB-prefix"],
)
@pytest.mark.parametrize(
    ("prog", "args", "status"),
    [
        ("kstat", ["-p"], 3),
        ("kstat", ["-p", "cpu_info"], 3),
        ("kstat", ["--describe"], 3),
        # A reply vmmctl cannot understand is a failure to talk to kstatd: 3, as no answer.
        ("vmmctl", ["list"], 3),
        ("vmmctl", ["create", "vm0"], 3),
    ],
    ids=["kstat-p", "kstat-module", "kstat-describe", "vmmctl-list", "vmmctl-create"],
)
def test_console_scripts_report_a_malformed_reply_in_one_line(
    tmp_path: Path, answer: Answer, prog: str, args: list[str], status: int
) -> None:
    with fake_kstatd(tmp_path, answer) as path:
        cmd = [*KSTAT, "--socket", path, *args] if prog == "kstat" else [*VMMCTL, "--socket", path, *args]
        r = subprocess.run(cmd, capture_output=True, env=kstatd_env(), timeout=60)
    text = one_line(r.stderr)
    assert r.returncode == status, text
    assert text.startswith(prog), text
