"""Checks of a KSTAT_IOC_WRITE's data against the kstat's current data.

``write_kstat_data`` (io/kstat.c) refuses with EINVAL any record whose name or type
differs from the current one, a STRING replaced by another type, and data that does
not fit the kstat's size. Here the data arrives as the wire DATA of docs/PROTOCOL.md §5,
so the same checks also cover its shape and the range of every value.
"""

from __future__ import annotations

import errno

from kstatpy.constants import NAMED_RECORD_SIZE
from kstatpy.constants import KstatDataType
from kstatpy.constants import KstatType
from kstatpy.errors import KstatError
from kstatpy.errors import error_for_errno
from kstatpy.kstat import Kstat
from kstatpy.records import CHAR_VALUE_SIZE
from kstatpy.records import INT_RANGES
from kstatpy.records import INTR_FIELDS
from kstatpy.records import IO_FIELDS
from kstatpy.records import TIMER_FIELDS

TYPE_CHECKING = False  # not typing's: kept off the embedded kstat's start-up path
if TYPE_CHECKING:
    from typing import Any

__all__ = ["check_write_data"]

_U64 = (0, 2**64 - 1)


def _einval(why: str) -> KstatError:
    return error_for_errno(errno.EINVAL, why)


def _check_int(value: Any, lo_hi: tuple[int, int], what: str) -> int:
    if type(value) is not int or not lo_hi[0] <= value <= lo_hi[1]:
        raise _einval(f"{what}: {value!r} is not an integer in [{lo_hi[0]}, {lo_hi[1]}]")
    return value


def _check_named(ksp: Kstat, data: Any, current: list[list[Any]]) -> list[list[Any]]:
    if not isinstance(data, list | tuple) or len(data) != ksp.ks_ndata:
        raise _einval("NAMED data must be a list of ndata records")
    out = []
    string_bytes = 0
    for i, (rec, (cur_name, cur_type, _)) in enumerate(zip(data, current, strict=True)):
        if not isinstance(rec, list | tuple) or len(rec) != 3:
            raise _einval(f"record {i}: must be [name, data_type, value]")
        name, data_type, value = rec
        if name != cur_name:
            raise _einval(f"record {i}: name {name!r} != {cur_name!r}")
        if data_type != cur_type:
            raise _einval(f"record {i} ({cur_name}): type {data_type!r} != {cur_type}")
        if cur_type == KstatDataType.STRING:
            if value is not None and not isinstance(value, str):
                raise _einval(f"record {i} ({cur_name}): a STRING takes a str or nil")
            if value is not None:
                string_bytes += len(value.encode("utf-8", "surrogatepass")) + 1
        elif cur_type == KstatDataType.CHAR:
            if not isinstance(value, bytes) or len(value) > CHAR_VALUE_SIZE:
                raise _einval(f"record {i} ({cur_name}): a CHAR takes bin of at most 16 bytes")
        elif cur_type in INT_RANGES:
            _check_int(value, INT_RANGES[cur_type], f"record {i} ({cur_name})")
        else:
            raise _einval(f"record {i} ({cur_name}): type {cur_type} cannot be written")
        out.append([name, data_type, value])
    if ksp.ks_ndata * NAMED_RECORD_SIZE + string_bytes > ksp.ks_data_size:
        raise _einval("strings run past ks_data_size")
    return out


def _check_map(data: Any, fields: tuple[str, ...], what: str) -> dict[str, int]:
    if not isinstance(data, dict):
        raise _einval(f"{what} data must be a map")
    return {f: _check_int(data.get(f), _U64, f"{what}.{f}") for f in fields}


def check_write_data(ksp: Kstat, data: Any, current: Any) -> Any:
    """The value to hand ``ks_snapshot(KSTAT_WRITE)``, or raise EINVAL.

    ``current`` is the READ snapshot taken just before (NAMED only).
    """
    t = ksp.ks_type
    if t == KstatType.NAMED:
        return _check_named(ksp, data, current or [])
    if t == KstatType.RAW:
        if not isinstance(data, bytes) or len(data) != ksp.ks_data_size:
            raise _einval(f"RAW data must be bin of exactly {ksp.ks_data_size} bytes")
        return data
    if t == KstatType.INTR:
        return _check_map(data, INTR_FIELDS, "INTR")
    if t == KstatType.IO:
        return _check_map(data, IO_FIELDS, "IO")
    if not isinstance(data, list | tuple) or len(data) != ksp.ks_ndata:
        raise _einval("TIMER data must be a list of ndata maps")
    out = []
    for rec in data:
        if not isinstance(rec, dict) or not isinstance(rec.get("name"), str):
            raise _einval("TIMER record must be a map with a str name")
        checked: dict[str, Any] = _check_map(rec, TIMER_FIELDS[1:], "TIMER")
        checked["name"] = rec["name"][:30]
        out.append(checked)
    return out
