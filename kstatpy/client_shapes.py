"""The shapes of kstat ioctl replies, checked by the client library's decoders as they take them.

Contract
    :class:`kstatpy.client.KstatUser`, the :class:`kstatpy.client.KstatCtl` methods and
    :mod:`kstatpy.client_select` call these on replies that came off a socket
    (``KstatCtl.wire``; the in-process transport hands over kstatd's own objects,
    unchecked). A result map of the wrong shape for its ioctl (docs/PROTOCOL.md §4,
    §5, §9.2: a field missing or of the wrong type, NAMED data that is not
    ``[name: str, data_type: int, value]`` triples, READ_MANY results not one per kid,
    a READ answered for another kid or type) raises :class:`MalformedReply` saying
    what is wrong; ``KstatCtl.malformed`` makes it ProtocolError (EPROTO), one line
    naming the ioctl and the socket, never a raw TypeError/KeyError/ValueError
    (docs/CLIENTS.md). Every NAMED triple is checked at the read, although
    :class:`kstatpy.named.KstatNamedData` builds records later. Unknown keys are
    ignored (docs/PROTOCOL.md §8); values are not checked beyond their wire type;
    ``bool`` is not an int. A READ_MANY or SELECT reply is decoded entry by entry: on
    EPROTO the entries before the bad one are filled.

Cost
    There is no separate walk of a reply (``kstatpy.reply_shape`` did one before the
    decoders, until issue 21): each field is checked where it is taken. On a
    10,000-kstat READ_MANY reply of 10 statistics each the checks cost about 7% of
    ``msgpack.unpackb`` (BENCHMARKS.md, "Client decode of a big reply").

Imports: operator only (on the kstat command's start-up path).
"""

from __future__ import annotations

from operator import itemgetter

TYPE_CHECKING = False  # not typing's: the kstat command's kstatd path never imports typing
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

__all__ = ["NAMES", "MalformedReply", "check_header", "check_kstat", "enomem_ok", "entries"]

_NAMED = 1  # KstatType.NAMED
#: The ioctls whose replies are decoded here, by name (for the messages).
NAMES = {0x4B01: "CHAIN_ID", 0x4B02: "READ", 0x4B03: "WRITE", 0x4B11: "READ_MANY", 0x4B12: "SELECT"}
# A HEADER's fields (docs/PROTOCOL.md §5), fetched in one C call each.
_HEADER_INTS = itemgetter("kid", "instance", "type", "flags", "ndata", "data_size", "crtime", "snaptime")
_HEADER_STRS = itemgetter("module", "name", "class")


class MalformedReply(ValueError):
    """A result map of the wrong shape, raised by the decoders with what is wrong;
    :class:`KstatCtl` turns it into ProtocolError naming the socket and the ioctl."""


def check_header(h: Any) -> None:
    """Check that ``h`` is a HEADER map (docs/PROTOCOL.md §5): eight ints, three strs.

    :raises MalformedReply: a field missing or of another type.
    """
    try:
        kid, instance, ks_type, flags, ndata, data_size, crtime, snaptime = _HEADER_INTS(h)
        module, name, ks_class = _HEADER_STRS(h)
    except (KeyError, TypeError):
        raise MalformedReply("a kstat is not a HEADER map") from None
    if not (
        type(kid) is int and type(instance) is int and type(ks_type) is int and type(flags) is int
        and type(ndata) is int and type(data_size) is int and type(crtime) is int and type(snaptime) is int
        and type(module) is str and type(name) is str and type(ks_class) is str
    ):  # fmt: skip
        raise MalformedReply("a HEADER field has the wrong type")


def check_kstat(k: Any) -> Any:
    """Check that ``k`` is a KSTAT map (a HEADER plus ``data``); return its ``data``.

    KID 0's data must be HEADERs, a NAMED kstat's ``[name: str, data_type: int, value]``
    lists; other types' data is not looked into. The header's eleven type tests and
    the loop over NAMED triples (plain unpacking: the fastest form measured on
    CPython 3.11, bench/bench_unpack.py) are about equal halves of the cost.

    :raises MalformedReply: anything else.
    """
    check_header(k)
    try:
        data = k["data"]
    except KeyError:
        raise MalformedReply("a kstat has no data") from None
    if k["kid"] == 0:
        if type(data) is not list:
            raise MalformedReply("KID 0's data is not an array of HEADERs")
        for h in data:
            check_header(h)
    elif k["type"] == _NAMED:
        if type(data) is not list:
            raise MalformedReply("NAMED data is not an array")
        try:
            for w in data:
                name, data_type, _ = w
                if type(name) is not str or type(data_type) is not int or type(w) is not list:
                    raise MalformedReply("a NAMED record is not [name, data_type, value]")
        except (TypeError, ValueError):  # not iterable, not three (or the MalformedReply above)
            raise MalformedReply("a NAMED record is not [name, data_type, value]") from None
    return data


def entries(result: dict[str, Any], count: int | None, wire: bool) -> Iterator[tuple[int, Any]]:
    """The ``[errno, KSTAT or HEADER or nil]`` entries of a READ_MANY (``count``: one per
    kid asked) or SELECT (``count`` None) result, each checked as it is taken when ``wire``.

    :raises MalformedReply: ``results`` is not such an array, or an entry not such a pair
        (the KSTAT or HEADER itself is the caller's to check).
    """
    results: Any = result.get("results")
    if not wire:
        yield from results
        return
    if type(results) is not list or (count is not None and len(results) != count):
        raise MalformedReply("results is not an array" + ("" if count is None else " of one entry per kid"))
    for entry in results:
        if type(entry) is not list or len(entry) != 2 or type(entry[0]) is not int:
            raise MalformedReply("a results entry is not [errno, KSTAT, HEADER or nil]")
        yield entry[0], entry[1]


def enomem_ok(extra: dict[str, Any]) -> bool:
    """Whether an ENOMEM reply's size fields (docs/PROTOCOL.md §4) are ints where present."""
    return all(type(extra.get(k, 0)) is int for k in ("data_size", "flags", "ndata", "snaptime"))
