"""READ_MANY and SELECT results made entry by entry as their reply is sent in pieces.

:mod:`kstatpy.ioctl` answers a request that asked for pieces (docs/PROTOCOL.md §9.8,
:func:`kstatpy.pieces.wants_pieces`) with these :class:`kstatpy.pieces.LazyEntries`
in place of ``results``. Each entry is read, and packed, only when kstatd's serving
thread reaches it (after the previous piece went to the socket); the entries, their
errnos and the byte budget (docs/PROTOCOL.md §9.4) are those of the whole-frame
reply, entry for entry. A kstat gone meanwhile is that entry's errno (ENXIO), as in a
whole reply. ``read_one(kid, zoneid)`` is the handler's read (the watchdog's
``reading`` mark included); a :class:`kstatpy.kmem.BadTrap` propagates to kstatd.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from collections.abc import Iterator

import msgpack

from kstatpy.errors import KstatError
from kstatpy.kmem import BadTrap
from kstatpy.pieces import LazyEntries
from kstatpy.pieces import compact_kids
from kstatpy.pieces import entry_bytes

TYPE_CHECKING = False  # not typing's: kept off the embedded kstat's start-up path
if TYPE_CHECKING:
    from typing import Any

__all__ = ["lazy_read_many", "lazy_select"]

_OK_HEAD = b"\x92\x00"  # [0, ...
_E2BIG = entry_bytes(errno.E2BIG)
_EINVAL = entry_bytes(errno.EINVAL)


def lazy_read_many(
    kids: list[Any], zoneid: int, read_one: Callable[[int, int], dict[str, Any]], budget: int | None, charge: int
) -> LazyEntries:
    """READ_MANY's ``results`` for ``kids``: ``[errno, KSTAT or nil]`` each, in order.

    ``budget``/``charge``: kstatd's ``--max-reply`` and each read entry's charge
    beyond its ``data_size`` (past the budget: ``[E2BIG, nil]``, the first entry is
    always read). KID 0 is read once per request and packed once.
    """
    arr, bad = compact_kids(kids)

    def produce(lazy: LazyEntries) -> Iterator[bytes]:
        pack = msgpack.Packer(use_bin_type=True).pack
        errnos = lazy.errnos
        spent = 0
        kid0: tuple[bytes, int] | None = None  # KID 0's packed KSTAT and data_size, this request
        limit = budget if budget is not None else -1
        for i, kid in enumerate(arr):
            if spent >= limit >= 0:
                errnos.append(errno.E2BIG)
                yield _E2BIG
                continue
            if bad and i in bad:
                errnos.append(errno.EINVAL)
                yield _EINVAL
                continue
            try:
                if kid:
                    kstat = read_one(kid, zoneid)
                    spent += kstat["data_size"] + charge
                    yield pack((0, kstat))  # the entry [0, KSTAT] in one pack
                    continue
                if kid0 is None:
                    kstat = read_one(0, zoneid)
                    kid0 = (_OK_HEAD + pack(kstat), kstat["data_size"])
                    del kstat
            except BadTrap:
                raise
            except KstatError as exc:
                errnos.append(exc.errno)
                yield entry_bytes(exc.errno)
                continue
            spent += kid0[1] + charge
            yield kid0[0]

    return LazyEntries(len(arr), produce)


def lazy_select(
    picked: list[Any],
    zoneid: int,
    read_one: Callable[[int, int], dict[str, Any]],
    budget: int | None,
    charge: int,
    filter_named: Callable[[Any, Any], Any],
    named: int,
) -> LazyEntries:
    """SELECT's ``results`` over ``picked`` (``(HEADER, stats)`` of KID 0's view, the
    snapshot taken when the request was dispatched): ``[errno, KSTAT or HEADER]`` each."""

    def fail(i: int, code: int) -> bytes:
        return entry_bytes(code, msgpack.packb(picked[i][0], use_bin_type=True))

    def produce(lazy: LazyEntries) -> Iterator[bytes]:
        pack = msgpack.Packer(use_bin_type=True).pack
        spent = 0
        limit = budget if budget is not None else -1
        for i, (header, stats) in enumerate(picked):
            if spent >= limit >= 0:
                yield entry_bytes(errno.E2BIG, pack(header))
                continue
            try:
                kstat = read_one(header["kid"], zoneid)
            except BadTrap:
                raise
            except KstatError as exc:
                yield entry_bytes(exc.errno, pack(header))
                continue
            if stats and kstat["type"] == named:
                kstat["data"] = filter_named(kstat["data"], stats)
            kstat["prev_snaptime"] = header["snaptime"]
            spent += kstat["data_size"] + charge
            picked[i] = (header, None)  # its stats filter is no longer needed
            yield pack((0, kstat))

    return LazyEntries(len(picked), produce, fail)
