"""kstat(8) selection: which kstats are read, their instance records, and their order.

Contract (illumos kstat(8): ``cmd/stat/kstat/kstat.c``, selection, order and values)
    :func:`read_instances` walks ``kc.kc_chain`` in KID order, drops ``kstat_*`` names
    and the RAW kstats kstat(8) has no decoder for (``kstat_raw``), keeps a kstat when some selector's
    module AND name patterns match, and reads only the kept ones (batched
    ``kc.read_many``; EAGAIN retried through ``kc.read`` as libkstat does). Each kept
    kstat becomes an :class:`Instance` with pseudo-statistics ``crtime`` (always),
    ``class`` (only with -p/-C/-l) and ``snaptime`` (only after a successful read);
    a failed read leaves the instance in the list without data.

Ordering
    Instances sort by strcasecmp(module), instance, strcasecmp(name); statistics by
    strcasecmp(name). illumos inserts each new element before the first one >= it,
    so ties come out in reverse discovery order: that is a stable sort of the
    reversed discovery order. strcasecmp folds ASCII only and compares bytes; for
    str that is code-point order after folding A-Z.

Values
    Each statistic is ``(name, text, is_string)``: ``text`` is the default/-p
    rendering (integers in decimal; HRTIME ``0`` or seconds with 9 decimals; CHAR up
    to its first NUL, undecodable bytes kept as surrogate escapes; a NULL STRING as
    ""). JSON quotes ``text`` when ``is_string``.
"""

from __future__ import annotations

from kstatpy.select import SelectorPatterns

TYPE_CHECKING = False  # not typing's: kept off the command's start-up path
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "Instance",
    "SelectorPatterns",
    "ci_key",
    "hrtime_text",
    "read_instances",
    "select_instances",
    "sort_instances",
    "unread_lines",
]
_EAGAIN = 11
#: kstat(8) never shows names starting ``kstat_`` (RAW kstats only with a decoder:
#: kstat_raw.decodable, checked here, after the selection).
SKIP_NAME = "kstat_*"

_RAW, _NAMED, _INTR, _IO, _TIMER = 0, 1, 2, 3, 4
_CHAR, _STRING = 0, 9
#: (low, high, modulus offset) of the integer named types, for C's wrap-around.
_INT_RANGE = {
    1: (-(2**31), 2**31 - 1, 32),
    2: (0, 2**32 - 1, 32),
    3: (-(2**63), 2**63 - 1, 64),
    4: (0, 2**64 - 1, 64),
}
_INTR_FIELDS = ("hard", "soft", "watchdog", "spurious", "multiple_service")
_IO_FIELDS = (
    "nread", "nwritten", "reads", "writes", "wtime", "wlentime", "wlastupdate",
    "rtime", "rlentime", "rlastupdate", "wcnt", "rcnt",
)  # fmt: skip
_TIMER_INTS = ("num_events", "elapsed_time", "min_time", "max_time", "start_time", "stop_time")
_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}

Stat = tuple[str, str, bool]


def _raw() -> Any:
    # kstatpy.cli.kstat_raw, imported on the first RAW kstat: its layouts pull in typing
    # and the constants' enums, which a request for named statistics does not need.
    from kstatpy.cli import kstat_raw

    return kstat_raw


def ci_key(s: str) -> str:
    """strcasecmp's sort key: ASCII letters folded, everything else as is."""
    return s.lower() if s.isascii() else s.translate(_ASCII_LOWER)


def _stat_key(stat: Stat) -> str:
    # ci_key of the statistic's name, inlined: this runs once per statistic.
    name = stat[0]
    return name.lower() if name.isascii() else name.translate(_ASCII_LOWER)


def hrtime_text(ns: int) -> str:
    """KSTAT_DATA_HRTIME as kstat(8) prints it: ``0`` or ``%.9f`` of seconds."""
    return "0" if ns == 0 else f"{ns / 1000000000.0:.9f}"


def _wrap(data_type: int, value: Any) -> str:
    lo, hi, bits = _INT_RANGE[data_type]
    if type(value) is not int:
        value = int(value)
    if lo <= value <= hi:
        return str(value)
    value &= (1 << bits) - 1
    if lo < 0 and value > hi:
        value -= 1 << bits
    return str(value)


def _char_text(value: Any) -> str:
    raw = bytes(value or b"")[:16]
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


class Instance:
    """ks_instance_t: one selected kstat of one report, with its statistics sorted."""

    __slots__ = ("instance", "ks_class", "ks_type", "module", "name", "reset", "snaptime", "stats", "unread")

    def __init__(self, ksp: Any, pflag: bool, snaptime: int | None = None) -> None:
        self.module: str = ksp.ks_module
        self.instance: int = ksp.ks_instance
        self.name: str = ksp.ks_name
        self.ks_class: str = ksp.ks_class
        self.ks_type: int = ksp.ks_type
        # The chain header's, before this read (SELECT answers it as prev_snaptime).
        self.snaptime: int = ksp.ks_snaptime if snaptime is None else snaptime
        self.reset: bool | None = None  # --rate: re-created or a counter went back (kstat_rate)
        self.unread = False  # EAGAIN past kc.read's retry (a stuck provider): kstat names it, exits 3
        self.stats: list[Stat] = [("crtime", hrtime_text(ksp.ks_crtime), False)]
        if pflag:
            self.stats.append(("class", ksp.ks_class, True))

    def add_data(self, ksp: Any) -> None:
        """Add ``snaptime`` and the decoded data of a successful read, then sort."""
        stats = self.stats
        stats.append(("snaptime", hrtime_text(ksp.ks_snaptime), False))
        t = self.ks_type
        data = ksp.ks_data
        if t == _NAMED:
            ranges = _INT_RANGE
            # KstatNamedData.triples(): the values without building a record object each.
            if hasattr(data, "triples"):
                triples = data.triples()
            else:
                triples = [(r.name, r.data_type, r.value) for r in data or ()]
            for name, dt, v in triples:
                if not name:
                    continue  # an uninitialised record (illumos skips it)
                if dt in ranges:
                    lo, hi, _ = ranges[dt]
                    stats.append((name, str(v) if type(v) is int and lo <= v <= hi else _wrap(dt, v), False))
                elif dt == _STRING:
                    stats.append((name, "" if v is None else v, True))
                elif dt == _CHAR:
                    stats.append((name, _char_text(v), True))
                # FLOAT/DOUBLE: illumos asserts; kstatpy leaves them out.
        elif t == _IO and data:
            stats.extend((f, str(data[f]), False) for f in _IO_FIELDS)
        elif t == _INTR and data:
            stats.extend((f, str(data[f]), False) for f in _INTR_FIELDS)
        elif t == _RAW:
            stats.extend(_raw().raw_stats(self.module, self.name, data))
        elif t == _TIMER and data:
            first = data[0]  # illumos decodes only the first timer
            stats.append(("name", first["name"] or "", True))
            stats.extend((f, str(first[f]), False) for f in _TIMER_INTS)

    def sort(self) -> None:
        """Order the statistics (reverse insertion, stable sort: illumos's tie rule)."""
        stats = self.stats
        stats.reverse()
        stats.sort(key=_stat_key)

    def __repr__(self) -> str:
        return f"<Instance {self.module}:{self.instance}:{self.name}>"


def sort_instances(instances: list[Instance]) -> list[Instance]:
    """Discovery order in, illumos order out (see the module docstring)."""
    instances.reverse()
    instances.sort(key=lambda i: (ci_key(i.module), i.instance, ci_key(i.name)))
    return instances


def _prefilter(selectors: list[SelectorPatterns]) -> Any:
    if any(s.module.matches_all and s.name.matches_all for s in selectors):
        return None
    pairs = [(s.module.match, s.name.match) for s in selectors]

    def keep(module: str, name: str) -> bool:
        return any(m(module) and n(name) for m, n in pairs)

    return keep


def read_instances(kc: Any, selectors: list[SelectorPatterns], pflag: bool) -> list[Instance]:
    """One report's instances, read and sorted (as kstat.c: match, read, sort).

    :raises RegexError: a module or name regex did not compile.
    :raises KstatError: the transport failed as a whole (not a single read).
    """

    keep = _prefilter(selectors)
    instances: list[Instance] = []
    ksps: list[Any] = []
    for ksp in kc.kc_chain:
        name = ksp.ks_name
        if name.startswith("kstat_") or (ksp.ks_type == _RAW and not _raw().decodable(ksp.ks_module, name)):
            continue
        if keep is not None and not keep(ksp.ks_module, name):
            continue
        instances.append(Instance(ksp, pflag))
        ksps.append(ksp)
    if ksps:
        for inst, (code, ksp) in zip(instances, kc.read_many(ksps), strict=True):
            _add_read(kc, inst, code, ksp)
    for inst in instances:
        inst.sort()
    return sort_instances(instances)


def _add_read(kc: Any, inst: Instance, code: int, ksp: Any) -> None:
    # One kstat's read into its instance: EAGAIN is retried with kc.read (libkstat's
    # retry); still EAGAIN (a provider stuck past kstatd's --read-timeout) sets
    # inst.unread; any other errno leaves the instance without data, as kstat.c does.
    from kstatpy.errors import KstatError

    if code == _EAGAIN:
        try:
            kc.read(ksp)
        except KstatError as exc:
            inst.unread = exc.errno == _EAGAIN
            return
    elif code:
        return
    inst.add_data(ksp)


def unread_lines(instances: list[Instance], selectors: list[SelectorPatterns], class_match: Any) -> list[str]:
    """``kstat: MODULE:INSTANCE:NAME: ...`` for each instance the report selects whose
    provider is stuck (docs/READING.md: the report goes on without its statistics,
    kstat exits 3)."""
    lines = []
    for inst in instances:
        if not inst.unread or (class_match is not None and not class_match(inst.ks_class)):
            continue
        if not any(s.module.match(inst.module) and s.name.match(inst.name) and s.instance.match(str(inst.instance))
                   for s in selectors):  # fmt: skip
            continue
        lines.append(
            f"kstat: {inst.module}:{inst.instance}:{inst.name}: not read: its ks_update has not returned"
            " (kstatd --read-timeout); statistics left out\n"
        )
    return lines


def select_instances(kc: Any, selectors: list[SelectorPatterns], class_text: str, pflag: bool) -> list[Instance]:
    """What :func:`read_instances` answers, through one KSTATPY_IOC_SELECT (``kc.select``).

    The server keeps only kstats some selector fully matches (module, name, instance,
    class) and only matching NAMED records; :func:`format_report` drops exactly those
    itself, so the report is the same. EAGAIN is retried with ``kc.read`` as there.

    :raises RegexError: a pattern the selection evaluated did not compile; the caller
        reruns the report through :func:`read_instances` for kstat(8)'s exact output.
    :raises KstatError: the transport failed as a whole.
    """

    instances: list[Instance] = []
    for code, ksp, prev_snaptime in kc.select([s.fields() for s in selectors], class_text, SKIP_NAME):
        if ksp.ks_type == _RAW and not _raw().decodable(ksp.ks_module, ksp.ks_name):
            continue
        inst = Instance(ksp, pflag, prev_snaptime)
        instances.append(inst)
        _add_read(kc, inst, code, ksp)
    for inst in instances:
        inst.sort()
    return sort_instances(instances)
