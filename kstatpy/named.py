"""A reader's NAMED data: ``kstat_named_t`` records as libkstat hands them out.

:class:`KstatNamedRecord` is one record (LONG/ULONG already INT64/UINT64 on the wire,
docs/PROTOCOL.md §5); :class:`KstatNamedData` is a read NAMED kstat's ``ks_data``,
building records lazily from the wire triples. :mod:`kstatpy.client` re-exports both.
No imports at run time: the kstat command's kstatd path stays light.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: the kstat command's kstatd path never imports typing
if TYPE_CHECKING:
    from typing import Any

__all__ = ["KstatNamedData", "KstatNamedRecord", "named_triples"]


class KstatNamedRecord:
    """A ``kstat_named_t`` as a reader sees it (LONG/ULONG already INT64/UINT64)."""

    __slots__ = ("data_type", "name", "value")

    def __init__(self, name: str, data_type: int, value: Any) -> None:
        self.name = name
        self.data_type = data_type
        self.value = value

    def __repr__(self) -> str:
        return f"KstatNamedRecord({self.name!r}, {self.data_type}, {self.value!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KstatNamedRecord):
            return NotImplemented
        return (self.name, self.data_type, self.value) == (other.name, other.data_type, other.value)

    __hash__ = None  # type: ignore[assignment]


class KstatNamedData:
    """``ks_data`` of a NAMED kstat after a read: a sequence of :class:`KstatNamedRecord`.

    Records are built on first access, one index at a time, from the wire's
    ``[name, data_type, value]`` triples (docs/PROTOCOL.md §5), so a batch read whose
    values are not all looked at does not pay an object per value. A record once
    built is the one kept: setting its ``value`` changes what ``kstat_write`` sends.
    Supports ``len``, indexing (ints and slices), iteration and ``==`` with a list.
    """

    __slots__ = ("_recs", "_wire")

    def __init__(self, wire: list[Any]) -> None:
        self._wire = wire
        self._recs: list[KstatNamedRecord | None] = [None] * len(wire)

    def _at(self, i: int) -> KstatNamedRecord:
        rec = self._recs[i]
        if rec is None:
            n, t, v = self._wire[i]
            rec = self._recs[i] = KstatNamedRecord(n, t, v)
        return rec

    def __len__(self) -> int:
        return len(self._wire)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self._at(j) for j in range(*i.indices(len(self._wire)))]
        if i < 0:
            i += len(self._wire)
            if i < 0:
                raise IndexError("record index out of range")
        return self._at(i)

    def __iter__(self) -> Any:
        at = self._at
        return (at(i) for i in range(len(self._wire)))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, tuple, KstatNamedData)):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(list(self))

    def triples(self) -> list[tuple[str, int, Any]]:
        """``(name, data_type, value)`` of every record, without building records."""
        recs = self._recs
        return [(r.name, r.data_type, r.value) if (r := recs[i]) is not None else (w[0], w[1], w[2])
                for i, w in enumerate(self._wire)]  # fmt: skip

    def find(self, name: str) -> KstatNamedRecord | None:
        """The first record called ``name`` (built only that one), or None."""
        recs = self._recs
        for i, w in enumerate(self._wire):
            r = recs[i]
            if (r.name if r is not None else w[0]) == name:
                return self._at(i)
        return None


def named_triples(data: Any) -> list[tuple[str, int, Any]]:
    """``(name, data_type, value)`` of a NAMED ``ks_data`` (a :class:`KstatNamedData`
    or a list of records), for readers that only print values."""
    if isinstance(data, KstatNamedData):
        return data.triples()
    return [(r.name, r.data_type, r.value) for r in data or ()]
