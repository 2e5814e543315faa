"""A user copy of a kstat (``kstat_t`` in libkstat's chain): :class:`KstatUser`.

:mod:`kstatpy.client` re-exports it: ``kc.kc_chain`` holds these, in kid order, and
``kc.read(ksp)`` fills one through :meth:`KstatUser._fill`, which checks a reply
that came off a socket whole before it sets anything (:mod:`kstatpy.client_shapes`).

Imports: errno and kstatpy's errors, named and client_shapes only (the kstat
command's start-up path).
"""

from __future__ import annotations

import errno

from kstatpy.client_shapes import MalformedReply
from kstatpy.client_shapes import check_kstat
from kstatpy.errors import error_for_errno
from kstatpy.named import KstatNamedData
from kstatpy.named import named_triples

TYPE_CHECKING = False  # not typing's: the kstat command's kstatd path never imports typing
if TYPE_CHECKING:
    from typing import Any

__all__ = ["KstatUser"]

# kstatpy.constants' values as plain ints (tests/test_constants.py checks they agree).
_RAW = 0  # KstatType.RAW
_NAMED = 1  # KstatType.NAMED
_TIMER = 4  # KstatType.TIMER


class KstatUser:
    """A user copy of a kstat header (``kstat_t`` in libkstat's chain) and its data."""

    __slots__ = (
        "ks_class",
        "ks_crtime",
        "ks_data",
        "ks_data_size",
        "ks_flags",
        "ks_instance",
        "ks_kid",
        "ks_module",
        "ks_name",
        "ks_ndata",
        "ks_snaptime",
        "ks_type",
    )

    def __init__(self, header: dict[str, Any]) -> None:
        # From a HEADER map (docs/PROTOCOL.md §5); a decoder of a reply checked it.
        self.ks_kid: int = header["kid"]
        self.ks_module: str = header["module"]
        self.ks_instance: int = header["instance"]
        self.ks_name: str = header["name"]
        self.ks_class: str = header["class"]
        self.ks_type: int = header["type"]
        self.ks_flags: int = header["flags"]
        self.ks_ndata: int = header["ndata"]
        self.ks_data_size: int = header["data_size"]
        self.ks_crtime: int = header["crtime"]
        self.ks_snaptime: int = header["snaptime"]
        self.ks_data: Any = None

    def __repr__(self) -> str:
        return f"<kstat {self.ks_module}:{self.ks_instance}:{self.ks_name} kid={self.ks_kid}>"

    def _fill(self, kstat: dict[str, Any], wire: bool = True) -> None:
        # A READ's result: the fields the driver copies back, then the data. ``wire``: it
        # came off a socket, so it is checked whole first (MalformedReply, nothing set);
        # an in-process reply (ChainTransport) is kstatd's own objects, not checked.
        if wire:
            check_kstat(kstat)
            if kstat["kid"] != self.ks_kid or kstat["type"] != self.ks_type:
                raise MalformedReply(f"the reply is for kid {kstat['kid']} of type {kstat['type']}, not this kstat")
        self.ks_ndata = kstat["ndata"]
        self.ks_data_size = kstat["data_size"]
        self.ks_flags = kstat["flags"]
        self.ks_snaptime = kstat["snaptime"]
        data = kstat["data"]
        if self.ks_type == _NAMED and self.ks_kid != 0:
            data = KstatNamedData(data)
        self.ks_data = data

    def wire_data(self) -> Any:
        """``ks_data`` in the DATA shape of docs/PROTOCOL.md §5 (what a WRITE sends)."""
        data = self.ks_data
        if self.ks_type == _NAMED and data is not None:
            return [[n, t, v] for n, t, v in named_triples(data)]
        return data

    def raw_fields(self) -> dict[str, int] | None:
        """A decodable RAW kstat's data as {statistic: int}, named and ordered as kstat(8)
        prints it (``kstatpy.raw``: cpu_stat, unix:sysinfo, unix:vminfo, unix:var);
        None for any other kstat or before a read."""
        if self.ks_type != _RAW:
            return None
        from kstatpy.raw import decode

        return decode(self.ks_module, self.ks_name, self.ks_data)

    def data_lookup(self, name: str) -> Any:
        """kstat_data_lookup(3KSTAT): the NAMED or TIMER record called ``name``.

        :raises KstatError: EINVAL for other types; KstatNotFoundError (ENOENT) when
            no record has that name or the kstat was never read.
        """
        if self.ks_type == _NAMED:
            data = self.ks_data
            if isinstance(data, KstatNamedData):
                found = data.find(name)
                if found is not None:
                    return found
            else:
                for rec in data or ():
                    if rec.name == name:
                        return rec
        elif self.ks_type == _TIMER:
            for rec in self.ks_data or ():
                if rec["name"] == name:
                    return rec
        else:
            raise error_for_errno(errno.EINVAL, f"kstat_data_lookup: {self!r} is neither NAMED nor TIMER")
        raise error_for_errno(errno.ENOENT, f"kstat_data_lookup: {self!r} has no record {name!r}")
