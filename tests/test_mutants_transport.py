"""The transport's caps and deadlines at their edges (issue 23: transport.py's survivors).

A fake kstatd (tests/test_hostile_server.py) sends crafted frames to the real
:class:`SocketTransport`: a reply of exactly the client's cap is read, one byte more is
EPROTO with the size in the message, whole frames or pieces alike; a large length word
costs memory only as its bytes arrive; the documented defaults and bounds hold.
"""

from __future__ import annotations

import errno
import socket
import struct
import threading
import tracemalloc
from pathlib import Path

import msgpack
import pytest
from kstatd_fixture import REPO
from test_hostile_server import fake_kstatd
from test_hostile_server import one_request_server

from kstatpy import transport
from kstatpy.errors import KstatError
from kstatpy.errors import RequestTimeoutError
from kstatpy.errors import ServerUnavailableError
from kstatpy.pieces import MORE
from kstatpy.protocol import LENGTH
from kstatpy.transport import SocketTransport
from kstatpy.transport import request_timeout

CHAIN_ID, READ_MANY = 0x4B01, 0x4B11  # CHAIN_ID never asks for pieces; READ_MANY does
CAP = 1500  # the client's limit, patched: large enough for a two-byte-header padded reply


def body_of(size: int, seq: int) -> bytes:
    """A well-formed reply body ``[seq, 0, {"kcid": 1, "pad": b"..."}]`` of exactly ``size`` bytes."""
    for k in range(size):
        body = msgpack.packb([seq, 0, {"kcid": 1, "pad": b"x" * k}], use_bin_type=True)
        if len(body) == size:
            return body
    raise AssertionError(f"no padding makes a {size}-byte body")


def whole(size: int):
    return lambda seq: LENGTH.pack(size) + body_of(size, seq)


def in_pieces(size: int, cut: int = 400):
    def answer(seq: int) -> bytes:
        body, out = body_of(size, seq), b""
        for off in range(0, size, cut):
            part = body[off : off + cut]
            out += LENGTH.pack(len(part) | (MORE if off + cut < size else 0)) + part
        return out

    return answer


@pytest.mark.parametrize("size", [CAP - 1, CAP])  # odd and even lengths: no stray bit is a piece mark
@pytest.mark.parametrize("cmd", [CHAIN_ID, READ_MANY], ids=["whole-not-asked", "whole-asked"])
def test_a_whole_reply_up_to_the_cap_is_read(tmp_path: Path, monkeypatch, cmd: int, size: int) -> None:
    monkeypatch.setattr(transport, "MAX_REPLY", CAP)
    with fake_kstatd(tmp_path, whole(size)) as path:
        t = SocketTransport(path)
        assert t.ioctl(cmd, {"kids": [1]})["kcid"] == 1
        t.close()


@pytest.mark.parametrize("cmd", [CHAIN_ID, READ_MANY], ids=["whole-not-asked", "whole-asked"])
def test_a_whole_reply_one_byte_over_the_cap_is_eproto_naming_its_size(tmp_path: Path, monkeypatch, cmd: int) -> None:
    monkeypatch.setattr(transport, "MAX_REPLY", CAP)
    with fake_kstatd(tmp_path, whole(CAP + 1)) as path:
        t = SocketTransport(path)
        with pytest.raises(KstatError) as ei:
            t.ioctl(cmd, {"kids": [1]})
        assert ei.value.errno == errno.EPROTO and not isinstance(ei.value, ServerUnavailableError)
        assert ei.value.message == f"reply of {CAP + 1} bytes from kstatd exceeds the client's limit of {CAP}"
        assert t._sock is None  # closed: the rest of the frame would be read as the next reply


def test_pieces_up_to_the_cap_are_read_and_one_byte_more_is_eproto(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(transport, "MAX_REPLY", CAP)
    with fake_kstatd(tmp_path, in_pieces(CAP)) as path:
        t = SocketTransport(path)
        assert t.ioctl(READ_MANY, {"kids": [1]})["kcid"] == 1
        t.close()
    (tmp_path / "over").mkdir()  # a second fake server: its own socket path
    with fake_kstatd(tmp_path / "over", in_pieces(CAP + 1)) as path:
        t = SocketTransport(path)
        with pytest.raises(KstatError) as ei:
            t.ioctl(READ_MANY, {"kids": [1]})
        assert ei.value.errno == errno.EPROTO and not isinstance(ei.value, ServerUnavailableError)
        assert ei.value.message == (
            f"reply of over {CAP + 1} bytes in pieces from kstatd exceeds the client's limit of {CAP}"
        )
        assert t._sock is None


@pytest.mark.parametrize("mark", [0, MORE], ids=["whole", "piece"])
def test_a_large_length_word_costs_memory_only_as_bytes_arrive(tmp_path: Path, mark: int) -> None:
    # 512 MiB claimed (under the 1 GiB cap), 3 bytes sent, then the server closes: the
    # client read it a chunk at a time (1 MiB), never allocating the claimed size.
    def answer(seq: int) -> bytes:
        return LENGTH.pack((512 << 20) | mark) + b"\x93\x01\x00"

    with fake_kstatd(tmp_path, answer) as path:
        t = SocketTransport(path, timeout=30)
        tracemalloc.start()
        try:
            with pytest.raises(ServerUnavailableError):
                t._timeout = 2.0  # the fake server keeps the connection: the deadline ends the read
                t.ioctl(READ_MANY, {"kids": [1]})
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 16 << 20, peak


def test_the_documented_caps_and_defaults(monkeypatch) -> None:
    # docs/PROTOCOL.md §2 and §9.7: 1 GiB of reply, 10 s a request by default, at most a day.
    assert transport.MAX_REPLY == 1 << 30
    assert "exceeds 1 GiB (`kstatpy.transport.MAX_REPLY`)" in (REPO / "docs" / "PROTOCOL.md").read_text()
    monkeypatch.delenv("KSTAT_TIMEOUT", raising=False)
    assert request_timeout() == 10.0
    assert request_timeout("86400") == 86400.0 and request_timeout(86400) == 86400.0  # the bound is inclusive
    assert request_timeout("0.001") == 0.001
    for bad in (86400.001, "86400.001", -0.0, "0.0"):
        with pytest.raises(KstatError) as ei:
            request_timeout(bad)
        assert ei.value.errno == errno.EINVAL and "<= 86400" in ei.value.message


@pytest.mark.parametrize(("timeout", "timeval"), [(2.5, (2, 500000)), (0.5, (0, 500000)), (7, (7, 0))])
def test_connect_is_bounded_by_the_request_timeout_in_so_sndtimeo(tmp_path: Path, timeout, timeval) -> None:
    # (The kernel keeps the timeout in ticks: values that are whole ticks at HZ 100, 250, 1000.)
    with fake_kstatd(tmp_path, whole(64)) as path:
        t = SocketTransport(path, timeout=timeout)
        assert t._sock is not None
        raw = t._sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.calcsize("@ll"))
        assert struct.unpack("@ll", raw) == timeval
        t.close()


def test_the_deadline_shrinks_within_one_frame_not_only_between_frames(tmp_path: Path) -> None:
    # The length word at once, then the body a byte every 0.25 s (10 s in all): each recv
    # waits less than the gap only if the deadline is re-armed inside the frame's read.
    def send(conn: socket.socket, seq: int, done: threading.Event) -> None:
        body = body_of(40, seq)
        conn.sendall(LENGTH.pack(len(body)))
        for b in body:
            if done.wait(0.25):
                return
            conn.sendall(bytes([b]))

    with one_request_server(tmp_path, send) as path:
        t = SocketTransport(path, timeout=1)
        try:
            with pytest.raises(RequestTimeoutError):
                t.ioctl(CHAIN_ID)
        finally:
            t.close()


def test_a_frame_that_arrives_in_parts_is_put_together(tmp_path: Path) -> None:
    # A 63-byte body (all one bits) whose first byte comes alone, the rest 0.3 s later:
    # the read resumes where it stopped, asking for no more than the frame's remainder.
    def send(conn: socket.socket, seq: int, done: threading.Event) -> None:
        body = body_of(63, seq)
        conn.sendall(LENGTH.pack(len(body)) + body[:1])
        if not done.wait(0.3):
            conn.sendall(body[1:])
        done.wait(10)  # keep the connection until the client is done

    with one_request_server(tmp_path, send) as path:
        t = SocketTransport(path, timeout=10)
        try:
            assert t.ioctl(CHAIN_ID)["kcid"] == 1
        finally:
            t.close()


def test_an_empty_piece_is_eproto_even_when_the_rest_is_a_good_reply(tmp_path: Path) -> None:
    # docs/PROTOCOL.md §9.8: a piece is never empty. Here the rest would make a valid reply.
    def answer(seq: int) -> bytes:
        body = body_of(64, seq)
        return LENGTH.pack(MORE | 10) + body[:10] + LENGTH.pack(MORE) + LENGTH.pack(54) + body[10:]

    with fake_kstatd(tmp_path, answer) as path:
        t = SocketTransport(path)
        with pytest.raises(KstatError) as ei:
            t.ioctl(READ_MANY, {"kids": [1]})
        assert ei.value.errno == errno.EPROTO and ei.value.message == "malformed reply from kstatd: an empty piece"
        assert t._sock is None


@pytest.mark.parametrize(("late", "in_time"), [(10 - 0.25, True), (10.0, False), (10 + 0.25, False)])
def test_the_deadline_to_the_last_fraction_of_a_second(tmp_path: Path, monkeypatch, late: float, in_time: bool) -> None:
    # The transport's clock is faked: the server moves it on by ``late`` before it answers,
    # so the client finds the length word with a quarter second of its 10 s left (the body is
    # read: its recv is armed with that quarter second), exactly none left, or a quarter
    # second past it (ETIMEDOUT, the connection closed). No real time passes.
    now = [1000.0]
    monkeypatch.setattr(transport, "monotonic", lambda: now[0])

    def answer(seq: int) -> bytes:
        now[0] += late
        return whole(200)(seq)

    with fake_kstatd(tmp_path, answer) as path:
        t = SocketTransport(path, timeout=10)
        if in_time:
            assert t.ioctl(CHAIN_ID)["kcid"] == 1
            t.close()
            return
        with pytest.raises(RequestTimeoutError):
            t.ioctl(CHAIN_ID)
        assert t._sock is None
