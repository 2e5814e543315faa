"""``KSTATPY_IOC_DESCRIBE`` (0x4B13): statistic metadata over the socket, both ends.

Driver side (:func:`describe_kstat`, called by :mod:`kstatpy.ioctl`)
    Hold by kid in the caller's zone (ENXIO), INVALID (EAGAIN), then, with the hold
    and ``ks_lock`` (NAMED only) held, list the kstat's statistics with what is
    declared for them (:func:`kstatpy.metadata.kstat_meta`). No provider code runs:
    metadata is fixed at install, and record names are read as they are. The
    copy is plain values, made before the hold is released.

Client side (:func:`kstat_describe`)
    ``kstat_describe(kc, kids)`` -> ``[(errno, DESC or None), ...]`` through any
    :class:`kstatpy.client.KstatCtl` (socket or in-process).

DESC (docs/PROTOCOL.md §9.3) is the HEADER's identity fields (kid, module, instance,
name, class, type, crtime) plus ``"stats"``: one STAT map per statistic in data
order (NAMED: record order, skipping unnamed records; IO/INTR/TIMER: the fields),
then the pseudo statistics ``crtime`` and ``snaptime``. A statistic nobody declared
has ``kind`` nil.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from collections.abc import Container
from collections.abc import Iterable
from collections.abc import Iterator

import msgpack

from kstatpy.constants import FLAG
from kstatpy.constants import KstatIoctl
from kstatpy.constants import KstatType
from kstatpy.errors import KstatError
from kstatpy.errors import error_for_errno
from kstatpy.metadata import PSEUDO_META
from kstatpy.metadata import kstat_meta
from kstatpy.pieces import LazyEntries
from kstatpy.pieces import compact_kids
from kstatpy.pieces import entry_bytes
from kstatpy.records import INTR_FIELDS
from kstatpy.records import IO_FIELDS
from kstatpy.records import READER_TYPE
from kstatpy.records import TIMER_FIELDS

TYPE_CHECKING = False  # not typing's: kept off the embedded kstat's start-up path
if TYPE_CHECKING:
    from typing import Any

    from kstatpy.chain import Chain
    from kstatpy.kstat import Kstat

__all__ = ["MAX_DESCRIBE", "describe_kstat", "describe_many", "kstat_describe"]

#: At most this many kids per request (E2BIG beyond), as READ_MANY.
MAX_DESCRIBE = 65536
#: A DESC is charged ENTRY_CHARGE plus, per STAT, STAT_CHARGE and the length of its
#: strings (about its msgpack size) against kstatd's ``--max-reply`` (docs/PROTOCOL.md §9.3).
ENTRY_CHARGE = 256
STAT_CHARGE = 64
_DESCRIBE = int(KstatIoctl.DESCRIBE)
#: Bytes of packed DESCs a lazy DESCRIBE keeps for kids asked again (a quarter of a piece).
_LAZY_CACHE = 64 << 10
_E2BIG, _EINVAL, _EAGAIN = (entry_bytes(e) for e in (errno.E2BIG, errno.EINVAL, errno.EAGAIN))
_FIELDS = {int(KstatType.IO): IO_FIELDS, int(KstatType.INTR): INTR_FIELDS, int(KstatType.TIMER): TIMER_FIELDS}


def _stat_names(ksp: Kstat) -> list[tuple[str, int | None]]:
    # (name, reader data type) of each statistic, in data order; caller holds the kstat.
    t = int(ksp.ks_type)
    if t == KstatType.NAMED:
        data = ksp.ks_data
        if data is None:  # VIRTUAL and not yet filled: what was declared
            return [(n, None) for n in (ksp.ks_meta or {})]
        return [(k.name, READER_TYPE.get(k.data_type, k.data_type)) for k in data[: ksp.ks_ndata] if k.name]
    return [(f, None) for f in _FIELDS.get(t, ())]


def _describe_held(ksp: Kstat) -> dict[str, Any]:
    meta = kstat_meta(ksp)
    stats = []
    for name, data_type in _stat_names(ksp):
        m = meta.get(name)
        if m is None:
            stats.append({"name": name, "kind": None, "unit": None, "scale": None, "description": None,
                          "data_type": data_type})  # fmt: skip
        else:
            stats.append(m.wire(name, data_type))
    stats.extend(m.wire(name) for name, m in PSEUDO_META.items())
    return {
        "kid": ksp.ks_kid,
        "module": ksp.ks_module,
        "instance": ksp.ks_instance,
        "name": ksp.ks_name,
        "class": ksp.ks_class,
        "type": int(ksp.ks_type),
        "crtime": ksp.ks_crtime,
        "stats": stats,
    }


def describe_kstat(chain: Chain, kid: int, zoneid: int) -> dict[str, Any]:
    """DESC of ``kid`` as seen from ``zoneid`` (see the module docstring).

    :raises KstatError: ENXIO (no such kstat in the zone), EAGAIN (not installed).
    """
    ksp = chain.kstat_hold_bykid(kid, zoneid)
    if ksp is None:
        raise error_for_errno(errno.ENXIO, f"kid {kid}: no such kstat")
    try:
        if ksp.ks_flags & FLAG.INVALID:
            raise error_for_errno(errno.EAGAIN, f"kid {kid}: kstat not yet installed")
        lock = ksp.ks_lock if ksp.ks_type == KstatType.NAMED else None
        if lock is None:
            return _describe_held(ksp)
        with lock:
            return _describe_held(ksp)
    finally:
        chain.kstat_rele(ksp)


def _charge(desc: dict[str, Any]) -> int:
    return ENTRY_CHARGE + sum(
        STAT_CHARGE + len(st["name"]) + len(st["unit"] or "") + len(st["description"] or "") for st in desc["stats"]
    )


def describe_many(
    chain: Chain,
    arg: Any,
    zoneid: int,
    stuck: Container[int] = (),
    budget: int | None = None,
    lazy: bool = False,
    pause: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """The KSTATPY_IOC_DESCRIBE handler: ``{"kcid", "results": [[errno, DESC or nil], ...]}``.

    A kid in ``stuck`` (its reader is stuck in ``ks_update``, kstatd's deadline) is
    EAGAIN at once: its hold would not come. Bounded work (kstatd's ``--max-reply``,
    ``budget`` bytes; None: unlimited): each DESC is charged about its encoded size
    (:func:`_charge`); once the charge reaches ``budget`` every later entry is
    ``[E2BIG, nil]`` (the first is always answered). A kid asked for again in one
    request is described once (the same DESC, charged again). ``pause`` is called
    between kids, where no hold or lock is held (kstatd's kstatpy.fairness.PrivFirst).

    ``lazy`` (a reply sent in pieces, docs/PROTOCOL.md §9.8): ``results`` is a
    :class:`kstatpy.pieces.LazyEntries` that describes each kid when the reply reaches
    it; a repeated kid reuses its packed DESC while those kept total under 64 KiB,
    and is described again beyond (the same entries, memory bounded by a piece).

    :raises KstatError: EINVAL (``kids`` is not an array), E2BIG (too many kids).
    """
    kids = None if arg is None else arg.get("kids")
    if not isinstance(kids, list):
        raise KstatError(errno.EINVAL, "argument 'kids' must be an array of integers")
    if len(kids) > MAX_DESCRIBE:
        raise KstatError(errno.E2BIG, f"{len(kids)} kids in one DESCRIBE; at most {MAX_DESCRIBE}")
    if lazy:
        return {"kcid": chain.chain_id, "results": _describe_lazy(chain, kids, zoneid, stuck, budget)}
    results: list[list[Any]] = []
    seen: dict[int, tuple[dict[str, Any], int]] = {}  # kid -> (DESC, charge) of this request
    spent = 0
    for kid in kids:
        if pause is not None:
            pause()
        if budget is not None and spent >= budget:
            results.append([errno.E2BIG, None])
            continue
        if type(kid) is not int:
            results.append([errno.EINVAL, None])
            continue
        if kid in stuck:
            results.append([errno.EAGAIN, None])
            continue
        done = seen.get(kid)
        if done is None:
            try:
                desc = describe_kstat(chain, kid, zoneid)
            except KstatError as exc:
                results.append([exc.errno, None])
                continue
            done = seen[kid] = (desc, _charge(desc))
        spent += done[1]
        results.append([0, done[0]])
    return {"kcid": chain.chain_id, "results": results}


def _describe_lazy(
    chain: Chain, kids: list[Any], zoneid: int, stuck: Container[int], budget: int | None
) -> LazyEntries:
    arr, bad = compact_kids(kids)

    def produce(lazy: LazyEntries) -> Iterator[bytes]:
        pack = msgpack.Packer(use_bin_type=True).pack
        seen: dict[int, tuple[bytes, int]] = {}  # kid -> (packed DESC, charge), at most a piece of bytes
        kept = 0
        spent = 0
        for i, kid in enumerate(arr):
            if budget is not None and spent >= budget:
                yield _E2BIG
                continue
            if bad and i in bad:
                yield _EINVAL
                continue
            if kid in stuck:
                yield _EAGAIN
                continue
            done = seen.get(kid)
            if done is None:
                try:
                    desc = describe_kstat(chain, kid, zoneid)
                except KstatError as exc:
                    yield entry_bytes(exc.errno)
                    continue
                done = (pack(desc), _charge(desc))
                del desc
                if kept + len(done[0]) <= _LAZY_CACHE:
                    seen[kid] = done
                    kept += len(done[0])
            spent += done[1]
            yield b"\x92\x00" + done[0]

    return LazyEntries(len(arr), produce)


def kstat_describe(kc: Any, kids: Iterable[int]) -> list[tuple[int, dict[str, Any] | None]]:
    """KSTATPY_IOC_DESCRIBE through ``kc`` (a KstatCtl): ``(errno, DESC or None)`` per kid.

    Kids kstatd left undescribed past its reply budget (E2BIG after at least one
    answered entry, docs/PROTOCOL.md §9.3) are asked for again in the next batch;
    every batch answers at least one, so this ends.

    :raises KstatError: the request as a whole failed (EINVAL from a kstatd that
        predates the ioctl, or a transport error).
    """
    kids = list(kids)
    out: list[tuple[int, dict[str, Any] | None]] = [(0, None)] * len(kids)
    pending = list(range(len(kids)))
    while pending:
        batch = pending[:MAX_DESCRIBE]
        result = kc.ioctl(_DESCRIBE, {"kids": [kids[i] for i in batch]})
        again: list[int] = []
        progress = False
        for i, (code, desc) in zip(batch, result["results"], strict=True):
            if code == errno.E2BIG and progress:
                again.append(i)
                continue
            progress = True
            out[i] = (code, desc)
        pending = again + pending[len(batch) :]
    return out
