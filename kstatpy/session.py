"""One kstatd connection's state, its socket's send and receive, and its replies' encoding.

:class:`Session` is what :mod:`kstatpy.server`'s connection thread, watchdog and shutdown
share about a connection (the hand-over protocol is described there). The socket is
blocking with SO_RCVTIMEO (:func:`set_recv_timeout`), and replies go by
:func:`send_reply`; READ_MANY and SELECT replies are framed entry by entry
(:func:`pack_packed_reply`, :func:`pack_read_many_reply`; docs/PROTOCOL.md §9.4).
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

import msgpack

from kstatpy.ioctl import Conn
from kstatpy.packed import PackedResults
from kstatpy.pieces import Stream
from kstatpy.protocol import LENGTH
from kstatpy.protocol import BodyDecoder
from kstatpy.protocol import FrameDecoder

__all__ = [
    "DISPATCHING",
    "READING",
    "SENDING",
    "Session",
    "pack_packed_reply",
    "pack_read_many_reply",
    "send_reply",
    "set_recv_timeout",
]

#: Session.phase values (shutdown waits for DISPATCHING requests).
READING, DISPATCHING, SENDING = 0, 1, 2


def _frame_head() -> bytearray:
    # A reply frame is built in place: its length word first (filled in by _frame_done),
    # then each part appended. No C call copies the whole multi-megabyte reply while
    # holding the GIL (b"".join, then length + body, did it twice), so root's request
    # waits at most for one part (issue 21).
    return bytearray(LENGTH.size)


def _frame_done(out: bytearray) -> bytearray:
    LENGTH.pack_into(out, 0, len(out) - LENGTH.size)
    return out


def pack_packed_reply(seq: int, result: dict[str, Any], packer: msgpack.Packer) -> bytearray:
    """The frame of a READ_MANY or SELECT reply whose results the handler packed as it read them."""
    pack = packer.pack
    out = _frame_head()
    out += packer.pack_array_header(3)
    out += pack(seq)
    out += pack(0)
    out += packer.pack_map_header(len(result))
    for key, value in result.items():
        out += pack(key)
        if isinstance(value, PackedResults):
            out += packer.pack_array_header(value.n)
            out += value.buf  # the one copy of the results (no join, then no length + body)
        else:
            out += pack(value)
    return _frame_done(out)


def pack_read_many_reply(
    seq: int, result: dict[str, Any], packer: msgpack.Packer, pause: Callable[[], None] | None = None
) -> bytearray:
    """The frame of a READ_MANY reply of plain results, packed entry by entry.

    No single C call holds the GIL for a whole multi-megabyte reply (other connections'
    small reads go on between), and an entry object repeated in one batch (KID 0) is
    packed once. ``pause`` is called between entries (a safe point: nothing is held;
    kstatpy.fairness.PrivFirst).
    """
    pack = packer.pack
    out = _frame_head()
    out += packer.pack_array_header(3)
    out += pack(seq)
    out += pack(0)
    out += packer.pack_map_header(len(result))
    packed: dict[int, bytes] = {}
    for key, value in result.items():
        out += pack(key)
        if key != "results":
            out += pack(value)
            continue
        out += packer.pack_array_header(len(value))
        entry_head = packer.pack_array_header(2)
        for code, kstat in value:
            if pause is not None:
                pause()
            out += entry_head
            out += pack(code)
            if kstat is None:
                out += pack(None)
                continue
            body = packed.get(id(kstat))
            if body is None:
                body = packed[id(kstat)] = pack(kstat)
            out += body
    return _frame_done(out)


def set_recv_timeout(sock: socket.socket, seconds: float) -> None:
    """Make ``sock`` blocking, its recv() failing with BlockingIOError after ``seconds``.

    SO_RCVTIMEO (socket(7)) in place of Python's socket timeout, which polls before
    every recv and send: one system call a request saved on each side.
    """
    sock.settimeout(None)
    sec = int(seconds)
    usec = max(int((seconds - sec) * 1e6), 0 if sec else 1)  # a zero timeval would mean "never"
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("@ll", sec, usec))


def send_reply(sock: socket.socket, data: bytes | memoryview, timeout: float) -> None:
    """Send all of ``data`` within ``timeout`` s (TimeoutError otherwise) on a blocking ``sock``.

    One non-blocking send() first: a reply that fits the socket buffer (nearly all) costs
    one system call; the rest, if any, goes by a timed sendall.
    """
    try:
        n = sock.send(data, socket.MSG_DONTWAIT)
    except BlockingIOError:
        n = 0
    if n < len(data):
        sock.settimeout(timeout)
        try:
            sock.sendall(memoryview(data)[n:])
        finally:
            sock.settimeout(None)


class Session:
    """One connection: its socket, credentials, counters, frame decoder and hand-over state."""

    __slots__ = (
        "body_decoder", "busy", "conn", "counters", "decoder", "gen", "lock", "phase", "priv", "seq", "sock",
        "stream", "stuck_kid", "t0", "tid",
    )  # fmt: skip

    def __init__(self, sock: socket.socket, conn: Conn, counters: Any, max_request: int) -> None:
        self.sock = sock
        self.conn = conn
        self.counters = counters
        self.decoder = FrameDecoder(max_request)
        self.body_decoder = BodyDecoder()
        self.lock = threading.Lock()  # guards gen, t0, stream (watchdog vs serving thread)
        self.gen = 0  # bumped when the watchdog takes the session from a stuck thread
        self.t0: float | None = None  # start of the timed request in flight
        self.seq = 0
        self.tid = 0
        self.stuck_kid: int | None = None
        self.stream: Stream | None = None  # a reply in pieces being produced (kstatpy.pieces)
        self.phase = READING  # written by the serving thread; read by shutdown
        self.priv = False  # accepted on a privileged listener (kstatd's priv/ socket)
        self.busy = False  # priv only: counted in Kstatd.first (PrivFirst): accepted, or a request in flight
