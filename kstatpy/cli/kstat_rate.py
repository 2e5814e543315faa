"""``kstat --rate``: counters as per-second values, with resets and 32-bit wraps handled.

Contract
    A statistic is a counter when its metadata says so (``KSTATPY_IOC_DESCRIBE``,
    fetched once per kstat: per kid and crtime). Gauges, text, identifiers,
    undeclared statistics and the pseudo statistics print as they are.

    For each kstat (``module:instance:name``) the previous report's kid, crtime,
    snaptime and counter values are kept. A counter's rate is

    - first report of the kstat: value / (snaptime - crtime), the average since
      the kstat was created;
    - later reports: (value - previous) / (snaptime - previous snaptime), both
      snaptimes the kstat's own (ns, monotonic);
    - a 32-bit counter (INT32/UINT32 record, or a ``uint_t`` field of kstat_io_t or
      kstat_intr_t) that went down wrapped: it is unwrapped modulo 2**32;
    - a kstat with a new kid or crtime (deleted and re-created between reports),
      or a 64-bit counter that went down, is a *reset*: value / (snaptime -
      crtime), the rate since the new crtime, and the instance is flagged
      (``reset``). Nothing is ever negative.

    A statistic whose metadata says it has no source on this host (``no_source``,
    docs/PROTOCOL.md §9.3) is left out of the report: its 0 is not a rate of 0.

    Rates print with 3 decimals (text) or as JSON numbers.
"""

from __future__ import annotations

from typing import Any

from kstatpy.cli.kstat_select import Instance
from kstatpy.describe import kstat_describe
from kstatpy.metadata import COUNTER
from kstatpy.metadata import data_width

__all__ = ["RateState", "format_rate", "rate_of"]

_NAMED, _INTR, _IO, _TIMER = 1, 2, 3, 4
_NS = 1e9


def format_rate(rate: float) -> str:
    """A rate as kstat prints it: fixed point, 3 decimals."""
    return f"{rate:.3f}"


def rate_of(value: int, prev: int | None, width: int, elapsed_ns: int, since_crtime_ns: int) -> tuple[float, bool]:
    """``(per-second rate, reset)`` of one counter (see the module docstring).

    ``prev`` is None on a first report or after the kstat was re-created.
    """
    mask = (1 << width) - 1
    value &= mask  # an INT32 counter past 2**31 reads negative
    if prev is not None:
        delta = value - (prev & mask)
        if delta < 0 and width == 32:
            delta += 1 << 32
        if delta >= 0:
            return (delta * _NS / elapsed_ns if elapsed_ns > 0 else 0.0), False
        reset = True
    else:
        reset = False
    return (value * _NS / since_crtime_ns if since_crtime_ns > 0 else 0.0), reset


def _raw_values(ksp: Any) -> dict[str, tuple[Any, int | None]]:
    # {statistic: (value, data type or None)} of a KstatUser just read.
    t, data = ksp.ks_type, ksp.ks_data
    if t == _NAMED:
        return {r.name: (r.value, r.data_type) for r in data or ()}
    if t in (_IO, _INTR) and data:
        return {k: (v, None) for k, v in data.items()}
    if t == _TIMER and data:
        return {k: (v, None) for k, v in data[0].items()}
    return {}


class RateState:
    """What ``--rate`` remembers between reports, and the metadata cache."""

    def __init__(self) -> None:
        self.prev: dict[tuple[str, int, str], tuple[int, int, int, dict[str, int]]] = {}
        self.meta: dict[tuple[int, int], dict[str, tuple[str | None, int | None]]] = {}
        self.no_source: dict[tuple[int, int], frozenset[str]] = {}

    def _describe(self, kc: Any, ksps: list[Any]) -> None:
        need = [k for k in ksps if (k.ks_kid, k.ks_crtime) not in self.meta]
        if not need:
            return
        for ksp, (code, desc) in zip(need, kstat_describe(kc, [k.ks_kid for k in need]), strict=True):
            kinds: dict[str, tuple[str | None, int | None]] = {}
            none: frozenset[str] = frozenset()
            if code == 0 and desc is not None:
                kinds = {s["name"]: (s["kind"], s["data_type"]) for s in desc["stats"]}
                none = frozenset(s["name"] for s in desc["stats"] if s.get("no_source"))
            self.meta[(ksp.ks_kid, ksp.ks_crtime)] = kinds
            self.no_source[(ksp.ks_kid, ksp.ks_crtime)] = none

    def apply(self, kc: Any, instances: list[Instance]) -> list[str]:
        """Turn the counters of this report's ``instances`` into rates, in place.

        Sets ``inst.reset`` on every instance read; returns one line per reset
        (``module:instance:name: why``) for the text formats' stderr.

        :raises KstatError: DESCRIBE failed as a whole (EINVAL: kstatd lacks it).
        """
        by_name = {(k.ks_module, k.ks_instance, k.ks_name): k for k in kc.kc_chain}
        read = []
        for inst in instances:
            ksp = by_name.get((inst.module, inst.instance, inst.name))
            if ksp is not None and any(s[0] == "snaptime" for s in inst.stats):
                read.append((inst, ksp))
        self._describe(kc, [k for _, k in read])
        notes = []
        for inst, ksp in read:
            notes.extend(self._one(inst, ksp))
        # Forget kstats that left the chain, and metadata of kids no longer read.
        self.prev = {k: v for k, v in self.prev.items() if k in by_name}
        live = {(k.ks_kid, k.ks_crtime) for _, k in read}
        self.meta = {k: v for k, v in self.meta.items() if k in live}
        self.no_source = {k: v for k, v in self.no_source.items() if k in live}
        return notes

    def _one(self, inst: Instance, ksp: Any) -> list[str]:
        key = (inst.module, inst.instance, inst.name)
        kid, crtime, snaptime = ksp.ks_kid, ksp.ks_crtime, ksp.ks_snaptime
        kinds = self.meta.get((kid, crtime), {})
        raw = _raw_values(ksp)
        prev = self.prev.get(key)
        notes = []
        recreated = prev is not None and (prev[0] != kid or prev[1] != crtime)
        if recreated:
            assert prev is not None
            notes.append(f"{inst.module}:{inst.instance}:{inst.name}: re-created (kid {prev[0]} -> {kid}); "
                         "rates since its new crtime")  # fmt: skip
        old = None if prev is None or recreated else prev[3]
        elapsed = 0 if prev is None else snaptime - prev[2]
        values: dict[str, int] = {}
        went_back = []
        none = self.no_source.get((kid, crtime))
        if none:
            inst.stats[:] = [s for s in inst.stats if s[0] not in none]
        stats = inst.stats
        for i, (name, _text, is_str) in enumerate(stats):
            kind, dt = kinds.get(name, (None, None))
            if kind != COUNTER or is_str or name not in raw:
                continue
            value, record_type = raw[name]
            if type(value) is not int:
                continue
            values[name] = value
            rate, reset = rate_of(
                value, None if old is None else old.get(name), data_width(record_type if record_type is not None else dt),
                elapsed, snaptime - crtime,
            )  # fmt: skip
            if reset:
                went_back.append(name)
            stats[i] = (name, format_rate(rate), False)
        if went_back:
            notes.append(f"{inst.module}:{inst.instance}:{inst.name}: {', '.join(went_back)} went backwards; "
                         "rates since crtime")  # fmt: skip
        inst.reset = recreated or bool(went_back)
        self.prev[key] = (kid, crtime, snaptime, values)
        return notes
