"""Replies produced and sent in pieces (docs/PROTOCOL.md §9.8, issue 21).

A client that puts ``"pieces": true`` in the ``arg`` of a ``KSTATPY_IOC_READ_MANY``,
``KSTATPY_IOC_SELECT`` or ``KSTATPY_IOC_DESCRIBE`` request accepts its reply as a
sequence of frames: each length word with :data:`MORE` set carries a piece of
``length & ~MORE`` bytes (1 to :data:`PIECE_SIZE`) with more to follow; a plain
length word carries the last piece. The pieces' bodies, concatenated, are exactly the
msgpack reply a whole frame would have carried. kstatd (a socket session,
``Conn.packed``) then answers such a request with :class:`LazyEntries` in place of
``results``: the entries' count is fixed from what was asked, and each entry is read
(or described) and packed only when the reply reaches it, so the next piece is made
only after the previous one went to the socket. A connection's reply holds at most
one piece of bytes, or one entry when an entry is larger (plus its request's kids as
an ``array``, 4 or 8 bytes each), whatever its reader does.

Ownership: a :class:`LazyEntries` is made by :mod:`kstatpy.ioctl`'s handler and
consumed by the one thread that serves the connection (``kstatpy.server``);
:class:`Stream` is that thread's reply in progress, guarded by ``Session.lock`` for
the hand-over to the watchdog (which may finish it with ``[EAGAIN, nil]`` entries).
Imports the standard library and msgpack only.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from collections.abc import Iterator

import msgpack

TYPE_CHECKING = False  # not typing's: kept off the embedded kstat's start-up path
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "MORE",
    "PIECE_SIZE",
    "LazyEntries",
    "Stream",
    "compact_kids",
    "entry_bytes",
    "head_and_tail",
    "wants_pieces",
]

#: The length word's top bit: a piece with more to follow (docs/PROTOCOL.md §9.8).
MORE = 0x8000_0000
#: The largest piece kstatd sends (bytes of body, without the 4-byte length word).
PIECE_SIZE = 256 << 10

_ENTRY_HEAD = b"\x92"  # msgpack fixarray of 2
_NIL = b"\xc0"
_INT64 = (-(1 << 63), 1 << 63)


def wants_pieces(conn: Any, arg: Any) -> bool:
    """Whether this request's reply may be sent in pieces: a kstatd socket session's
    request whose ``arg`` holds ``"pieces": true`` (in-process callers never)."""
    return conn.packed and type(arg) is dict and arg.get("pieces") is True


def entry_bytes(code: int, packed_obj: bytes = _NIL) -> bytes:
    """The msgpack of one ``[errno, OBJ]`` entry, ``OBJ`` given packed (nil by default)."""
    return _ENTRY_HEAD + msgpack.packb(code) + packed_obj


def compact_kids(kids: list[Any]) -> tuple[array[int], frozenset[int]]:
    """``kids`` as an ``array`` (4 or 8 bytes a kid, not ~36 as Python ints) and the
    indexes of the entries that are not integers (EINVAL). An integer outside int64
    is stored as -1, which names no kstat (ENXIO, as it would have)."""
    if all(type(k) is int for k in kids):
        for code in ("I", "q"):  # uint32 (any kid of a real chain), else int64
            try:
                return array(code, kids), frozenset()
            except OverflowError:
                pass
    out = array("q")
    bad = []
    lo, hi = _INT64
    for i, k in enumerate(kids):
        if type(k) is not int:
            bad.append(i)
            out.append(-1)
        else:
            out.append(k if lo <= k < hi else -1)
    return out, frozenset(bad)


class LazyEntries:
    """The ``results`` of a reply sent in pieces: ``n`` entries, packed as produced.

    Iterating yields each entry's msgpack bytes in order (the provider reads happen
    then); ``errnos`` collects the failed entries' errnos (kstatd counts them);
    ``fail(i, errno)`` is the bytes of entry ``i`` answered ``errno`` without being read
    (the watchdog's ``[EAGAIN, ...]`` for the rest of a reply it takes over).
    """

    __slots__ = ("_it", "errnos", "fail", "n")

    def __init__(self, n: int, produce: Callable[[LazyEntries], Iterator[bytes]],
                 fail: Callable[[int, int], bytes] | None = None) -> None:  # fmt: skip
        self.n = n
        self.errnos: list[int] = []
        self.fail = fail if fail is not None else (lambda i, code: entry_bytes(code))
        self._it = produce(self)

    def __iter__(self) -> Iterator[bytes]:
        return self._it

    def __len__(self) -> int:
        return self.n


class Stream:
    """A reply in pieces in progress: ``buf`` (its bytes not yet sent), ``done`` entries
    packed so far, and ``tail`` (the bytes after ``results``). Guarded by the session's
    lock (module docstring)."""

    __slots__ = ("buf", "done", "entries", "tail")

    def __init__(self, head: bytes, entries: LazyEntries, tail: bytes) -> None:
        self.buf = bytearray(head)
        self.done = 0
        self.entries = entries
        self.tail = tail

    def take_full(self) -> bytearray | None:
        """The frames of the whole pieces ``buf`` holds beyond one piece, taken out of it
        (at least one byte stays, for the last piece), or None when it holds no more than
        a piece."""
        buf = self.buf
        n = len(buf)
        if n <= PIECE_SIZE:
            return None
        k = (n - 1) // PIECE_SIZE * PIECE_SIZE
        frames = piece_frames(memoryview(buf)[:k], last=False)
        del buf[:k]
        return frames

    def last_frames(self) -> bytearray:
        """The frames of the rest of the reply, all entries having been packed."""
        self.buf += self.tail
        return piece_frames(self.buf, last=True)

    def rest_failed(self, code: int) -> bytearray:
        """The frames of the rest of this reply with every entry not yet packed answered
        ``code`` (the watchdog's take-over, a panic); the stream is finished after it."""
        entries = self.entries
        fail = entries.fail
        buf = self.buf
        for i in range(self.done, entries.n):
            buf += fail(i, code)
        self.done = entries.n
        return self.last_frames()


def piece_frames(data: bytes | bytearray | memoryview, last: bool) -> bytearray:
    """``data`` (not empty) as frames of at most :data:`PIECE_SIZE` bytes, each with
    :data:`MORE` but the last one when ``last``."""
    view = memoryview(data)
    n = len(view)
    out = bytearray()
    for off in range(0, n, PIECE_SIZE):
        size = min(PIECE_SIZE, n - off)
        word = size if last and off + size == n else size | MORE
        out += word.to_bytes(4, "big")
        out += view[off : off + size]
    return out


def head_and_tail(seq: int, result: dict[str, Any], packer: msgpack.Packer) -> tuple[bytes, LazyEntries, bytes]:
    """The bytes of ``[seq, 0, result]`` before and after its ``results`` entries."""
    pack = packer.pack
    parts = [packer.pack_array_header(3), pack(seq), pack(0), packer.pack_map_header(len(result))]
    entries: LazyEntries | None = None
    head = b""
    for key, value in result.items():
        parts.append(pack(key))
        if type(value) is LazyEntries:
            parts.append(packer.pack_array_header(value.n))
            head, entries, parts = b"".join(parts), value, []
        else:
            parts.append(pack(value))
    assert entries is not None
    return head, entries, b"".join(parts)
