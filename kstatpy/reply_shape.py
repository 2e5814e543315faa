"""The shape check of a kstat ioctl's reply, before the client library decodes it.

Contract
    :func:`check_reply` is called by :class:`kstatpy.transport.SocketTransport` on
    every reply to the ioctls :class:`kstatpy.client.KstatCtl` decodes (CHAIN_ID,
    READ, WRITE, READ_MANY, SELECT, and READ's ENOMEM fields). A result map of the
    wrong shape (docs/PROTOCOL.md §4, §5, §9.2) raises :class:`ProtocolError`
    (EPROTO) naming the socket, in one line, so a broken or hostile server never
    reaches the caller as a raw TypeError/KeyError/ValueError (docs/CLIENTS.md).
    NAMED triples are checked here because :class:`kstatpy.named.KstatNamedData`
    decodes them lazily, after the read has returned. Unknown keys are ignored
    (docs/PROTOCOL.md §8); values are not checked beyond their wire type.

Imports: errno and kstatpy.errors only (it is on the kstat command's start-up path).
"""

from __future__ import annotations

import errno

from kstatpy.errors import error_for_errno

TYPE_CHECKING = False  # not typing's: the kstat command's kstatd path never imports typing
if TYPE_CHECKING:
    from typing import Any

__all__ = ["check_reply"]

# kstatpy.constants' values as plain ints (tests/test_constants.py style: no enums here).
_NAMES = {0x4B01: "CHAIN_ID", 0x4B02: "READ", 0x4B03: "WRITE", 0x4B11: "READ_MANY", 0x4B12: "SELECT"}
_NAMED = 1  # KstatType.NAMED
_HEADER_INTS = ("kid", "instance", "type", "flags", "ndata", "data_size", "crtime", "snaptime")
_HEADER_STRS = ("module", "name", "class")
_ENOMEM_INTS = ("data_size", "flags", "ndata", "snaptime")


def _is_header(h: Any) -> bool:
    return (
        isinstance(h, dict)
        and all(isinstance(h.get(k), int) for k in _HEADER_INTS)
        and all(isinstance(h.get(k), str) for k in _HEADER_STRS)
    )


def _is_kstat(k: Any) -> bool:
    # A HEADER plus "data"; KID 0's data is HEADERs, NAMED data [name, data_type, value].
    if not _is_header(k) or "data" not in k:
        return False
    data = k["data"]
    if k["kid"] == 0:
        return isinstance(data, list) and all(_is_header(h) for h in data)
    if k["type"] == _NAMED:
        return isinstance(data, list) and all(
            isinstance(w, list) and len(w) == 3 and isinstance(w[0], str) and isinstance(w[1], int) for w in data
        )
    return True


def _is_entry(e: Any) -> bool:
    return isinstance(e, list) and len(e) == 2 and isinstance(e[0], int)


def _problem(cmd: int, arg: Any, code: int, result: dict[str, Any]) -> str | None:
    # What is wrong with the reply, or None.
    if code:
        if code == errno.ENOMEM and "data_size" in result:
            if not all(isinstance(result.get(k, 0), int) for k in _ENOMEM_INTS):
                return "ENOMEM fields are not ints"
        return None
    if not isinstance(result.get("kcid"), int):
        return "no int kcid"
    results = result.get("results")
    if cmd == 0x4B02 and not _is_kstat(result.get("kstat")):
        return "kstat is not a KSTAT map"
    if cmd == 0x4B11:
        kids = arg.get("kids") if isinstance(arg, dict) else None
        if not (isinstance(results, list) and isinstance(kids, list) and len(results) == len(kids)):
            return "results is not an array of one entry per kid"
        for e in results:
            if not (_is_entry(e) and (e[0] or _is_kstat(e[1]))):
                return "a results entry is not [errno, KSTAT or nil]"
    if cmd == 0x4B12:
        if not isinstance(results, list):
            return "results is not an array"
        for e in results:
            if not (
                _is_entry(e)
                and (_is_header(e[1]) if e[0] else _is_kstat(e[1]) and isinstance(e[1].get("prev_snaptime"), int))
            ):
                return "a results entry is not [errno, KSTAT or HEADER]"
    return None


def check_reply(cmd: int, arg: Any, code: int, result: dict[str, Any], where: str) -> None:
    """Check the reply ``[seq, code, result]`` to request ``(cmd, arg)``; ``where`` is the socket.

    :raises ProtocolError: EPROTO, ``result`` has the wrong shape for ``cmd`` (only the
        ioctls in ``_NAMES`` are checked; any other reply passes).
    """
    name = _NAMES.get(cmd)
    if name is None:
        return
    problem = _problem(cmd, arg, code, result)
    if problem is not None:
        raise error_for_errno(errno.EPROTO, f"malformed {name} reply from kstatd at {where}: {problem}")
