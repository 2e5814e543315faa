"""Statistic metadata: what a statistic is (kind), what its number counts (unit), and why.

In the spirit of Solaris 11.4's kstat2 metadata (``kstat2_named_t`` carries a type
and a flag for rate-able counters); illumos kstat(8) has none. Part of the data
model, next to the named record: a provider declares metadata when it creates a
kstat, the chain stores it in ``ksp.ks_meta``, readers ask for it with
``KSTATPY_IOC_DESCRIBE`` (docs/PROTOCOL.md §9.3).

Kinds
    ``counter``     only grows while the kstat lives (until it wraps at its data
                    type's width); a rate is meaningful
    ``gauge``       a level that goes up and down (a queue length, free pages, a
                    timestamp, a configured limit)
    ``text``        a CHAR or STRING value
    ``identifier``  a number that names something (a CPU id, a chip id), not a
                    quantity

Units
    A short string for the unit of the value *as stored*: ``ns``, ``us``, ``ms``,
    ``seconds``, ``ticks``, ``pages``, ``bytes``, ``Hz``, ``MHz``, ``bits/s``,
    ``1/256`` (fixed point, illumos FSCALE), ``count`` (events or things), or ``""``
    (none). Units whose size depends on the host carry ``scale``: the size of one
    unit in the base unit (bytes per page, seconds per tick). :func:`base_unit`
    converts to the base units Prometheus names (seconds, bytes, hertz).

Declaring (provider side)
    ``ksp.ks_meta`` maps a statistic name to its :class:`StatMeta`; set it between
    ``kstat_create`` and ``kstat_install`` (it is then read-only), e.g.::

        kstat_named_init(ksp.ks_data[0], "time_run", KSTAT_DATA_UINT64)
        kstat_set_meta(ksp, {"time_run": counter("ns", "time in guest context")})

    The framework declares the fields of INTR, IO and TIMER kstats itself
    (:data:`IO_META`, :data:`INTR_META`, :data:`TIMER_META`), and the pseudo
    statistics ``crtime`` and ``snaptime`` of every kstat. A provider may override
    a framework field by declaring it.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Mapping

from kstatpy.constants import KstatDataType
from kstatpy.constants import KstatType

TYPE_CHECKING = False  # not typing's: kept off the embedded kstat's start-up path
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "COUNTER",
    "GAUGE",
    "IDENTIFIER",
    "INTR_META",
    "IO_META",
    "KINDS",
    "PSEUDO_META",
    "TEXT",
    "TIMER_META",
    "StatMeta",
    "base_unit",
    "counter",
    "data_width",
    "framework_meta",
    "gauge",
    "identifier",
    "kstat_meta",
    "kstat_set_meta",
    "no_source",
    "text",
]

COUNTER = "counter"
GAUGE = "gauge"
TEXT = "text"
IDENTIFIER = "identifier"
KINDS = (COUNTER, GAUGE, TEXT, IDENTIFIER)


# collections.namedtuple, not typing.NamedTuple: the same class without importing typing.
class StatMeta(
    namedtuple("StatMeta", ("kind", "unit", "description", "scale", "data_type", "no_source"),
               defaults=(None, None, False))
):  # fmt: skip
    """One statistic's metadata: ``kind``, ``unit``, ``description``, ``scale``.

    ``data_type`` is set by the framework for its own fields (INTR, IO, TIMER:
    the C type illumos declares, e.g. ``uint_t reads``), None for named records
    (their record carries it). ``no_source``: the statistic is published (readers
    written for illumos look it up) but this host has nothing to feed it; its value
    is a constant 0 that means "unknown", not "none happened" (:func:`no_source`).
    """

    __slots__ = ()
    kind: str
    unit: str
    description: str
    scale: float | None
    data_type: int | None
    no_source: bool

    def wire(self, name: str, data_type: int | None = None) -> dict[str, Any]:
        """The STAT map of docs/PROTOCOL.md §9.3 (``no_source`` only when true)."""
        dt = self.data_type if data_type is None else data_type
        stat = {
            "name": name,
            "kind": self.kind,
            "unit": self.unit,
            "scale": self.scale,
            "description": self.description,
            "data_type": dt,
        }
        if self.no_source:
            stat["no_source"] = True
        return stat


def _check(kind: str, unit: str, description: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"statistic kind {kind!r}: expected one of {', '.join(KINDS)}")
    if not isinstance(unit, str) or not isinstance(description, str):
        raise TypeError("unit and description are strings")


def counter(unit: str, description: str, scale: float | None = None) -> StatMeta:
    """A counter's metadata (see the module docstring for units and ``scale``)."""
    _check(COUNTER, unit, description)
    return StatMeta(COUNTER, unit, description, scale)


def gauge(unit: str, description: str, scale: float | None = None) -> StatMeta:
    """A gauge's metadata."""
    _check(GAUGE, unit, description)
    return StatMeta(GAUGE, unit, description, scale)


def text(description: str) -> StatMeta:
    """A text (CHAR or STRING) statistic's metadata."""
    return StatMeta(TEXT, "", description)


def identifier(description: str) -> StatMeta:
    """An identifier's metadata: a number that names something."""
    return StatMeta(IDENTIFIER, "", description)


def no_source(meta: StatMeta | None = None, description: str = "") -> StatMeta:
    """``meta`` (default: a count described by ``description``) marked as having no source.

    A statistic so marked is published as 0 because consumers look it up by name, but
    nothing on this host counts it: ``kstat --describe`` says "no source", ``kstat
    --rate`` and ``kstatd --metrics`` leave it out (docs/PROTOCOL.md §9.3).
    """
    if meta is None:
        meta = StatMeta(COUNTER, "count", description)
    return meta._replace(no_source=True)


def kstat_set_meta(ksp: Any, meta: Mapping[str, StatMeta]) -> None:
    """Declare the metadata of ``ksp``'s statistics (before ``kstat_install``).

    Merges into what was declared before. :raises TypeError: a value is not a StatMeta.
    """
    for name, m in meta.items():
        if not isinstance(m, StatMeta):
            raise TypeError(f"metadata of {name!r} is {type(m).__name__}, not StatMeta")
    current = ksp.ks_meta
    ksp.ks_meta = {**current, **meta} if current else dict(meta)


_U32 = int(KstatDataType.UINT32)
_U64 = int(KstatDataType.UINT64)
_I64 = int(KstatDataType.INT64)
_STR = int(KstatDataType.STRING)

#: kstat_io_t (sys/kstat.h): byte counts are u_longlong_t, op and queue counts uint_t,
#: times hrtime_t (ns).
IO_META: dict[str, StatMeta] = {
    "nread": StatMeta(COUNTER, "bytes", "bytes read", None, _U64),
    "nwritten": StatMeta(COUNTER, "bytes", "bytes written", None, _U64),
    "reads": StatMeta(COUNTER, "count", "read operations", None, _U32),
    "writes": StatMeta(COUNTER, "count", "write operations", None, _U32),
    "wtime": StatMeta(COUNTER, "ns", "time the wait queue was non-empty", None, _I64),
    "wlentime": StatMeta(COUNTER, "ns", "wait queue length x time (Riemann sum)", None, _I64),
    "wlastupdate": StatMeta(GAUGE, "ns", "last change of the wait queue (monotonic)", None, _I64),
    "rtime": StatMeta(COUNTER, "ns", "time the run queue was non-empty (busy time)", None, _I64),
    "rlentime": StatMeta(COUNTER, "ns", "run queue length x time (Riemann sum)", None, _I64),
    "rlastupdate": StatMeta(GAUGE, "ns", "last change of the run queue (monotonic)", None, _I64),
    "wcnt": StatMeta(GAUGE, "count", "requests waiting", None, _U32),
    "rcnt": StatMeta(GAUGE, "count", "requests being serviced", None, _U32),
}
#: kstat_intr_t: ``uint_t intrs[KSTAT_NUM_INTRS]``.
INTR_META: dict[str, StatMeta] = {
    "hard": StatMeta(COUNTER, "count", "hardware interrupts", None, _U32),
    "soft": StatMeta(COUNTER, "count", "soft interrupts", None, _U32),
    "watchdog": StatMeta(COUNTER, "count", "watchdog interrupts", None, _U32),
    "spurious": StatMeta(COUNTER, "count", "spurious interrupts", None, _U32),
    "multiple_service": StatMeta(COUNTER, "count", "interrupts serviced more than once", None, _U32),
}
#: kstat_timer_t: counts u_longlong_t, times hrtime_t (ns).
TIMER_META: dict[str, StatMeta] = {
    "name": StatMeta(TEXT, "", "event name", None, _STR),
    "num_events": StatMeta(COUNTER, "count", "events timed", None, _U64),
    "elapsed_time": StatMeta(COUNTER, "ns", "sum of event durations", None, _I64),
    "min_time": StatMeta(GAUGE, "ns", "shortest event", None, _I64),
    "max_time": StatMeta(GAUGE, "ns", "longest event", None, _I64),
    "start_time": StatMeta(GAUGE, "ns", "start of the last event (monotonic)", None, _I64),
    "stop_time": StatMeta(GAUGE, "ns", "end of the last event (monotonic)", None, _I64),
}
#: The pseudo statistics kstat(8) prints for every kstat.
PSEUDO_META: dict[str, StatMeta] = {
    "crtime": StatMeta(GAUGE, "ns", "creation time of the kstat (monotonic)", None, _I64),
    "snaptime": StatMeta(GAUGE, "ns", "time of the last data snapshot (monotonic)", None, _I64),
}
# Statistics of the chain's own NAMED kstats (chain.py kstat_init), by (module, name).
_WELL_KNOWN: dict[tuple[str, str], dict[str, StatMeta]] = {
    ("unix", "kstat_types"): {
        t: identifier(f"KSTAT_TYPE_* value of the {t} kstat type")
        for t in ("raw", "name=value", "interrupt", "i/o", "event_timer")
    },
}
_FRAMEWORK = {int(KstatType.IO): IO_META, int(KstatType.INTR): INTR_META, int(KstatType.TIMER): TIMER_META}


def framework_meta(ks_type: int) -> dict[str, StatMeta]:
    """The framework's declarations for a kstat type's fields (empty for RAW, NAMED)."""
    return _FRAMEWORK.get(int(ks_type), {})


def kstat_meta(ksp: Any) -> dict[str, StatMeta]:
    """Everything declared for ``ksp``'s statistics: framework fields, then the provider's.

    ``ksp`` is a :class:`kstatpy.kstat.Kstat`; pseudo statistics are not included.
    """
    base = _FRAMEWORK.get(int(ksp.ks_type)) or _WELL_KNOWN.get((ksp.ks_module, ksp.ks_name))
    own = getattr(ksp, "ks_meta", None)
    if not own:
        return base or {}
    return {**base, **own} if base else own


_WIDTHS = {int(KstatDataType.INT32): 32, int(KstatDataType.UINT32): 32}


def data_width(data_type: int | None) -> int:
    """Bits of an integer data type (32 for INT32/UINT32, else 64): where a counter wraps."""
    return _WIDTHS.get(-1 if data_type is None else int(data_type), 64)


# unit -> (base unit, factor); a factor of None takes the statistic's scale.
_BASE: dict[str, tuple[str, float | None]] = {
    "ns": ("seconds", 1e-9),
    "us": ("seconds", 1e-6),
    "ms": ("seconds", 1e-3),
    "seconds": ("seconds", 1.0),
    "ticks": ("seconds", None),
    "bytes": ("bytes", 1.0),
    "pages": ("bytes", None),
    "Hz": ("hertz", 1.0),
    "MHz": ("hertz", 1e6),
    "bits/s": ("bytes_per_second", 0.125),
    "1/256": ("", 1 / 256),
}


def base_unit(meta: StatMeta) -> tuple[str, float]:
    """``(base unit, factor)``: value x factor is in the base unit (``""``: no unit).

    ns/us/ms/ticks -> seconds, pages -> bytes, MHz -> hertz, 1/256 -> a plain
    number. A host-sized unit (ticks, pages) without ``scale`` stays as it is.
    """
    base = _BASE.get(meta.unit)
    if base is None:
        return ("" if meta.unit in ("", "count") else meta.unit), 1.0
    unit, factor = base
    if factor is None:
        if not meta.scale:
            return meta.unit, 1.0
        factor = float(meta.scale)
    elif meta.scale:
        factor *= float(meta.scale)
    return unit, factor
