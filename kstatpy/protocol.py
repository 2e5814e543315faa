"""The kstatd wire protocol (docs/PROTOCOL.md, version 1): framing, message shapes, limits, errnos.

No sockets here: the server and the client own their sockets and call these helpers.
Imports only msgpack, the standard library and :mod:`kstatpy.constants`, so the
``kstat`` command stays light.

Framing (docs/PROTOCOL.md §2)
    Every message is a big-endian uint32 length then one msgpack object of exactly
    that many bytes (``use_bin_type=True``). Requests are 1 to ``max_request`` bytes
    (default 1 MiB); replies have no limit.

Shapes (docs/PROTOCOL.md §3)
    Request ``[cmd, seq, arg]``: cmd an unsigned int, seq in [0, 2**32), arg a map
    with string keys or nil. Reply ``[seq, errno, result]``, result a map; on error
    it holds ``"error"``.

Failures
    :class:`FrameError` carries the errno the daemon answers before closing
    (EPROTO for a zero length, bad msgpack or a wrong shape; E2BIG for an oversized
    length) and the request's seq when it could be read.
"""

from __future__ import annotations

import errno
import os
import struct

import msgpack

from kstatpy.safepath import default_socket_path

TYPE_CHECKING = False  # not typing's: the kstat command's kstatd path never imports typing
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "DEFAULT_MAX_REQUEST",
    "BodyDecoder",
    "ERRNO_NAMES",
    "LENGTH",
    "PROTOCOL_VERSION",
    "FrameDecoder",
    "FrameError",
    "check_reply",
    "default_socket_path",
    "check_request",
    "errno_name",
    "pack_frame",
    "pack_reply",
    "pack_request",
    "unpack_body",
]

PROTOCOL_VERSION = 1  # constants.KSTATPY_PROTOCOL_VERSION (tests/test_constants.py), without enum
#: The length prefix of every frame.
LENGTH = struct.Struct(">I")
#: Largest request body the daemon accepts by default (``kstatd --max-request``).
DEFAULT_MAX_REQUEST = 1 << 20
SEQ_LIMIT = 1 << 32
#: Decoding limits of a request (docs/PROTOCOL.md §9.4): items per array (above READ_MANY's
#: 65,536 kids, which the handler answers E2BIG with the seq), pairs per map, and
#: arrays plus maps per body (what bounds a decode's memory: ~7 MB at most).
MAX_ARRAY_LEN = 1 << 20
MAX_MAP_LEN = 4096
MAX_CONTAINERS = 2 * 65536 + 16
#: errno number -> symbolic name, for every errno docs/PROTOCOL.md §3 lists.

_pack_length = LENGTH.pack


ERRNO_NAMES: dict[int, str]  # errno -> name (EIO ...), made on first use by __getattr__


def errno_name(code: int) -> str:
    """``EIO`` for 5; ``errno 123`` for numbers outside the table."""
    names = globals().get("ERRNO_NAMES") or __getattr__("ERRNO_NAMES")
    return names.get(code) or f"errno {code}"


class FrameError(Exception):
    """A request the daemon refuses and answers by closing the connection.

    :attr errno: EPROTO or E2BIG.
    :attr seq: the request's seq when it was readable, else 0.
    """

    def __init__(self, code: int, message: str, seq: int = 0) -> None:
        self.errno = code
        self.message = message
        self.seq = seq
        super().__init__(message)


def pack_frame(obj: Any, packer: msgpack.Packer | None = None) -> bytes:
    """One frame: length prefix and msgpack body of ``obj``.

    ``packer`` (a ``msgpack.Packer(use_bin_type=True)``) saves a little per call; it is
    not thread-safe, so each thread or connection owns its own.
    """
    body = packer.pack(obj) if packer is not None else msgpack.packb(obj, use_bin_type=True)
    return _pack_length(len(body)) + body


def pack_request(cmd: int, seq: int, arg: dict[str, Any] | None) -> bytes:
    """The frame of request ``[cmd, seq, arg]``."""
    return pack_frame([cmd, seq, arg])


def pack_reply(seq: int, code: int, result: dict[str, Any]) -> bytes:
    """The frame of reply ``[seq, errno, result]``."""
    return pack_frame([seq, code, result])


class _ContainerBudget:
    # list_hook/object_hook of one decode: counts arrays and maps, E2BIG past the limit.
    __slots__ = ("left",)

    def __init__(self, limit: int) -> None:
        self.left = limit

    def _spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise FrameError(errno.E2BIG, f"request holds more than {MAX_CONTAINERS} arrays and maps")

    def array(self, obj: list[Any]) -> list[Any]:
        self._spend()
        return obj

    def map(self, obj: dict[Any, Any]) -> dict[Any, Any]:
        self._spend()
        return obj


def unpack_body(body: bytes | bytearray | memoryview) -> Any:
    """Decode one request body; :class:`FrameError` if it is not exactly one object.

    Decoding memory is bounded (docs/PROTOCOL.md §9.4): an array holds at most
    ``MAX_ARRAY_LEN`` items, a map ``MAX_MAP_LEN`` pairs, no ext types, and the whole
    body at most ``MAX_CONTAINERS`` arrays and maps (E2BIG beyond; EPROTO otherwise).
    """
    try:
        # Non-string map keys decode, so check_request can name the seq in its EPROTO.
        if len(body) <= MAX_CONTAINERS:
            # Every array or map takes at least one byte: this body cannot pass the
            # container budget, so skip its per-container Python calls (the hot path).
            return msgpack.unpackb(
                body, raw=False, strict_map_key=False, max_array_len=MAX_ARRAY_LEN, max_map_len=MAX_MAP_LEN,
                max_ext_len=0,
            )  # fmt: skip
        budget = _ContainerBudget(MAX_CONTAINERS)
        return msgpack.unpackb(
            body, raw=False, strict_map_key=False, max_array_len=MAX_ARRAY_LEN, max_map_len=MAX_MAP_LEN,
            max_ext_len=0, list_hook=budget.array, object_hook=budget.map,
        )  # fmt: skip
    except FrameError:
        raise
    except Exception as exc:  # ExtraData, FormatError, StackError, ValueError, ...
        raise FrameError(errno.EPROTO, f"body is not one msgpack object: {exc}") from None


class BodyDecoder:
    """:func:`unpack_body` for one connection, its limits bound once.

    ``msgpack.unpackb``'s keyword arguments cost more than decoding a small request
    does, so a connection keeps one configured ``msgpack.Unpacker`` and feeds it each
    body. Same results and errors as :func:`unpack_body` (bodies too long to skip the
    container budget go to it); after any error the unpacker is replaced, so no byte of
    a bad body reaches the next. Not thread-safe: one per connection.
    """

    __slots__ = ("_fed", "_unpacker")

    def __init__(self) -> None:
        self._unpacker, self._fed = self._new(), 0

    @staticmethod
    def _new() -> msgpack.Unpacker:
        return msgpack.Unpacker(
            raw=False, strict_map_key=False, max_array_len=MAX_ARRAY_LEN, max_map_len=MAX_MAP_LEN, max_ext_len=0
        )

    def decode(self, body: bytes | bytearray | memoryview) -> Any:
        """One request body's object; :class:`FrameError` as :func:`unpack_body`."""
        n = len(body)
        if n > MAX_CONTAINERS:
            return unpack_body(body)
        unpacker = self._unpacker
        try:
            unpacker.feed(body)
            obj = unpacker.unpack()
        except Exception as exc:  # OutOfData (truncated), FormatError, StackError, ValueError, ...
            self._unpacker, self._fed = self._new(), 0
            raise FrameError(errno.EPROTO, f"body is not one msgpack object: {exc}") from None
        self._fed += n
        if unpacker.tell() != self._fed:
            self._unpacker, self._fed = self._new(), 0
            raise FrameError(errno.EPROTO, "body is not one msgpack object: extra data after the object")
        return obj


def check_request(obj: Any) -> tuple[int, int, dict[str, Any] | None]:
    """Validate a decoded request against docs/PROTOCOL.md §3: ``(cmd, seq, arg)``.

    :raises FrameError: EPROTO, with the seq when it was valid.
    """
    if type(obj) is not list or len(obj) != 3:
        raise FrameError(errno.EPROTO, "a request is an array [cmd, seq, arg]")
    cmd, seq, arg = obj
    # type() is int: a bool (False == 0) is not a seq; it would be echoed as a bool.
    if type(seq) is not int or not 0 <= seq < SEQ_LIMIT:
        raise FrameError(errno.EPROTO, "seq must be an unsigned integer below 2**32")
    good_seq = seq
    if type(cmd) is not int or cmd < 0:
        raise FrameError(errno.EPROTO, "cmd must be an unsigned integer", good_seq)
    if arg is not None:
        if type(arg) is not dict:
            raise FrameError(errno.EPROTO, "arg must be a map or nil", good_seq)
        for key in arg:
            if type(key) is not str:
                raise FrameError(errno.EPROTO, "arg keys must be strings", good_seq)
    return cmd, seq, arg


def check_reply(obj: Any) -> tuple[int, int, dict[str, Any]]:
    """Validate a decoded reply: ``(seq, errno, result)``; :class:`FrameError` otherwise."""
    if type(obj) is not list or len(obj) != 3:
        raise FrameError(errno.EPROTO, f"a reply is an array [seq, errno, result], got {type(obj).__name__}")
    seq, code, result = obj
    if type(seq) is not int or type(code) is not int or type(result) is not dict:
        raise FrameError(errno.EPROTO, "a reply is [int, int, map]")
    return seq, code, result


class FrameDecoder:
    """Splits a byte stream into request bodies, enforcing the length limits.

    Owned by one connection; not thread-safe. Memory is bounded by ``max_body`` + 4
    plus one read's worth of bytes.
    """

    __slots__ = ("_buf", "max_body")

    def __init__(self, max_body: int | None = DEFAULT_MAX_REQUEST) -> None:
        self.max_body = max_body
        self._buf = bytearray()

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes read from the socket."""
        self._buf += data

    def pending(self) -> int:
        """Bytes buffered but not yet returned as a body."""
        return len(self._buf)

    def next_body(self) -> bytearray | None:
        """The next complete body, or None when more bytes are needed.

        :raises FrameError: a zero length (EPROTO) or one above ``max_body`` (E2BIG);
            the stream cannot be resynchronised after either.
        """
        buf = self._buf
        if len(buf) < 4:
            return None
        (length,) = LENGTH.unpack_from(buf)
        if length == 0:
            raise FrameError(errno.EPROTO, "zero-length frame")
        if self.max_body is not None and length > self.max_body:
            raise FrameError(errno.E2BIG, f"request of {length} bytes; the limit is {self.max_body}")
        end = 4 + length
        n = len(buf)
        if n < end:
            return None
        body = buf[4:end]  # a copy: the buffer moves on
        if n == end:
            buf.clear()  # the common case: the buffer held exactly this request
        else:
            del buf[:end]
        return body


def error_result(code: int, message: str | None = None) -> dict[str, Any]:
    """The result map of an error reply."""
    return {"error": message if message is not None else os.strerror(code)}


def __getattr__(name: str) -> Any:
    # ERRNO_NAMES is built on first use: it needs constants.Errno, an enum, which
    # the kstat command's start-up does not load (PEP 562).
    if name == "ERRNO_NAMES":
        from kstatpy.constants import Errno

        names = {int(e): e.name for e in Errno}
        globals()["ERRNO_NAMES"] = names
        return names
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
