"""``PackedResults``: the entries of a READ_MANY or SELECT reply, packed as they are read.

kstatd's handler, for a socket session (``Conn.packed``), appends each ``[errno, KSTAT]``
entry here right after its read; the server splices the bytes into the reply frame
(docs/PROTOCOL.md §4, §9.2: the wire is unchanged). Why: a full dump built 10^5
record lists before packing, and the kstats' new ``ks_snaptime`` ints, allocated
among them, kept most of the reply's allocator arenas resident after it was freed.
"""

from __future__ import annotations

import msgpack

TYPE_CHECKING = False  # not typing's: kept off the embedded kstat's start-up path
if TYPE_CHECKING:
    from typing import Any

__all__ = ["PackedResults"]


class PackedResults:
    """The ``results`` of a READ_MANY or SELECT reply, packed entry by entry as read.

    kstatd (a socket session's ``Conn.packed``) packs each ``[errno, KSTAT]`` entry into
    ``buf`` (msgpack, docs/PROTOCOL.md §4) right after its read, so a full dump never
    holds 10^5 record objects at once: those, freed around the kstats' new
    ``ks_snaptime`` ints, kept the reply's allocator arenas resident after it.
    ``n`` counts the entries, ``errnos`` holds each failed entry's errno. The
    server splices ``buf`` into the frame; in-process callers never see this type.
    """

    __slots__ = ("_pack", "_packed", "buf", "errnos", "n")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.n = 0
        self.errnos: list[int] = []
        self._pack = msgpack.Packer(use_bin_type=True).pack
        self._packed: dict[int, tuple[Any, bytes]] = {}  # id -> (KID 0's map, bytes): packed once a batch

    def append(self, entry: list[Any]) -> None:
        code, kstat = entry
        self.n += 1
        buf = self.buf
        if code:
            self.errnos.append(code)
            buf += _ENTRY_HEAD
            buf += self._pack(code)
        else:
            buf += _OK_HEAD
        if kstat is not None and kstat.get("kid") == 0:  # held: its id is not reused
            hit = self._packed.get(id(kstat))
            if hit is None or hit[0] is not kstat:
                hit = self._packed[id(kstat)] = (kstat, self._pack(kstat))
            buf += hit[1]
        else:
            buf += self._pack(kstat)


_ENTRY_HEAD = b"\x92"  # msgpack fixarray of 2
_OK_HEAD = b"\x92\x00"  # ... and errno 0
