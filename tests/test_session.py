"""kstatpy.session: the connection socket's receive timeout and bounded sends (real socketpairs)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from kstatpy.session import send_reply
from kstatpy.session import set_recv_timeout


@pytest.mark.parametrize("seconds", [0.2, 1e-9])
def test_recv_fails_with_blockingioerror_after_the_timeout(seconds: float) -> None:
    a, b = socket.socketpair()
    with a, b:
        set_recv_timeout(a, seconds)
        t0 = time.monotonic()
        with pytest.raises(BlockingIOError):
            a.recv(10)  # nothing sent: a zero timeval would block here forever
        assert time.monotonic() - t0 < 5
        assert a.gettimeout() is None  # blocking: no poll before each call


def test_recv_returns_data_sent_before_the_timeout() -> None:
    a, b = socket.socketpair()
    with a, b:
        set_recv_timeout(a, 5)
        threading.Timer(0.05, b.sendall, (b"hello",)).start()
        assert a.recv(10) == b"hello"


def test_a_reply_that_fits_goes_whole_and_the_socket_stays_blocking() -> None:
    a, b = socket.socketpair()
    with a, b:
        set_recv_timeout(a, 5)
        send_reply(a, b"x" * 1000, 1.0)
        assert b.recv(2000) == b"x" * 1000
        assert a.gettimeout() is None


def test_a_reply_bigger_than_the_buffer_completes_for_a_reader() -> None:
    a, b = socket.socketpair()
    data = bytes(range(256)) * 40_000  # 10 MB: far beyond the socket buffer
    got = bytearray()

    def reader() -> None:
        while len(got) < len(data):
            chunk = b.recv(1 << 20)
            if not chunk:
                return
            got.extend(chunk)

    with a, b:
        set_recv_timeout(a, 5)
        b.settimeout(60)  # the reader fails (socket.timeout) instead of blocking forever
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        send_reply(a, data, 30.0)
        t.join(60)
        assert not t.is_alive(), "the reader did not receive the 10 MB reply within 60 s"
        assert bytes(got) == data
        assert a.gettimeout() is None  # the timed fallback restored blocking mode


def test_a_peer_that_does_not_read_costs_at_most_the_timeout() -> None:
    a, b = socket.socketpair()
    with a, b:
        set_recv_timeout(a, 5)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            send_reply(a, b"y" * (16 << 20), 0.3)
        assert 0.25 <= time.monotonic() - t0 < 5
        assert a.gettimeout() is None
