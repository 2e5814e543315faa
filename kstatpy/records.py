"""The typed records of kstat data and the kstat(9F) functions that maintain them.

``kstat_named_t`` (:class:`KstatNamed`), ``kstat_intr_t`` (:class:`KstatIntr`),
``kstat_io_t`` (:class:`KstatIO`), ``kstat_timer_t`` (:class:`KstatTimer`), as
``uts/common/sys/kstat.h`` lays them out (paraphrased; illumos is CDDL), and
``kstat_named_init``, ``kstat_named_setstr``, the IO queue functions
(``kstat_waitq_enter(9F)`` ...) and the event timer functions
(``kstat_timer_start(9F)`` ...). Names keep at most 30 bytes
(``kstat_set_string``). Sizes are illumos LP64's: 48 bytes a named record plus
``strlen + 1`` for each non-NULL STRING.

Locking: none here. A record belongs to its kstat's data; whoever updates it
serialises (``ks_lock``, or the driver's own lock for the IO queue functions).
"""

from __future__ import annotations

import sys
import time

from kstatpy.constants import KSTAT_STRLEN
from kstatpy.constants import NAMED_RECORD_SIZE
from kstatpy.constants import KstatDataType
from kstatpy.errors import KstatFatalError

TYPE_CHECKING = False  # not typing's: the embedded kstat's start-up never imports typing
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "CHAR_VALUE_SIZE",
    "INTR_FIELDS",
    "INT_RANGES",
    "IO_FIELDS",
    "MAXNAMELEN",
    "READER_TYPE",
    "TIMER_FIELDS",
    "KstatIntr",
    "KstatIO",
    "KstatNamed",
    "KstatTimer",
    "kstat_named_init",
    "kstat_named_setstr",
    "kstat_runq_back_to_waitq",
    "kstat_runq_enter",
    "kstat_runq_exit",
    "kstat_timer_init",
    "kstat_timer_start",
    "kstat_timer_stop",
    "kstat_waitq_enter",
    "kstat_waitq_exit",
    "kstat_waitq_to_runq",
    "named_data_size",
    "truncate_name",
]

MAXNAMELEN = KSTAT_STRLEN - 1  # 30 characters survive kstat_set_string
CHAR_VALUE_SIZE = 16

INTR_FIELDS = ("hard", "soft", "watchdog", "spurious", "multiple_service")
IO_FIELDS = (
    "nread", "nwritten", "reads", "writes", "wtime", "wlentime", "wlastupdate",
    "rtime", "rlentime", "rlastupdate", "wcnt", "rcnt",
)  # fmt: skip
TIMER_FIELDS = (
    "name", "num_events", "elapsed_time", "min_time", "max_time", "start_time", "stop_time",
)  # fmt: skip

# Range of each integer data type, for write checks.
INT_RANGES: dict[int, tuple[int, int]] = {
    KstatDataType.INT32: (-(2**31), 2**31 - 1),
    KstatDataType.UINT32: (0, 2**32 - 1),
    KstatDataType.INT64: (-(2**63), 2**63 - 1),
    KstatDataType.UINT64: (0, 2**64 - 1),
    KstatDataType.LONG: (-(2**63), 2**63 - 1),
    KstatDataType.ULONG: (0, 2**64 - 1),
}
# LONG/ULONG are kernel-only on LP64: readers see INT64/UINT64 (io/kstat.c).
READER_TYPE = {int(KstatDataType.LONG): int(KstatDataType.INT64), int(KstatDataType.ULONG): int(KstatDataType.UINT64)}


def truncate_name(name: str) -> str:
    """kstat_set_string: keep at most 30 bytes (of UTF-8), never half a character.

    The result is interned (``sys.intern``): the same module, class or statistic
    name in 10^5 kstats is one string object, not 10^5.
    """
    if type(name) is not str:
        name = name[:]  # a str subclass (a str enum): its characters, as a plain str
    if len(name) <= MAXNAMELEN // 4:
        return sys.intern(name)  # cannot exceed 30 bytes: the common, cheap case
    raw = name.encode("utf-8", "surrogatepass")
    if len(raw) <= MAXNAMELEN:
        return sys.intern(name)
    return sys.intern(raw[:MAXNAMELEN].decode("utf-8", "ignore"))


class KstatNamed:
    """kstat_named_t: ``name``, ``data_type``, ``value``.

    ``value`` is an int for the integer types, ``bytes`` (at most 16) for CHAR, and
    ``str`` or None for STRING.

    Compact (10^5 of them in a big chain): ``name`` and ``data_type`` live in one
    shared ``(name, data_type)`` tuple, ``nt``, so a record is two pointers (48
    bytes with the object header, not 64). Readers on the hot path read ``nt``.
    """

    __slots__ = ("nt", "value")

    def __init__(self, name: str = "", data_type: int = KstatDataType.CHAR, value: Any = None) -> None:
        self.nt = _name_type(name, int(data_type))
        self.value = _zero(data_type) if value is None and data_type != KstatDataType.STRING else value

    @property
    def name(self) -> str:
        return self.nt[0]

    @name.setter
    def name(self, name: str) -> None:
        self.nt = _name_type(name, self.nt[1])

    @property
    def data_type(self) -> int:
        return self.nt[1]

    @data_type.setter
    def data_type(self, data_type: int) -> None:
        self.nt = _name_type(self.nt[0], int(data_type))

    def __repr__(self) -> str:
        return f"KstatNamed({self.name!r}, {KstatDataType(self.data_type).name}, {self.value!r})"


# Every (name, data_type) pair once; dict.setdefault is atomic under the GIL.
_name_types: dict[tuple[str, int], tuple[str, int]] = {}


def _name_type(name: str, data_type: int) -> tuple[str, int]:
    nt = (name, data_type)
    return _name_types.setdefault(nt, nt)


def _zero(data_type: int) -> Any:
    if data_type == KstatDataType.CHAR:
        return b""
    if data_type == KstatDataType.STRING:
        return None
    if data_type in (KstatDataType.FLOAT, KstatDataType.DOUBLE):
        return 0.0
    return 0


def kstat_named_init(knp: KstatNamed, name: str, data_type: int) -> None:
    """kstat_named_init(9F): name (truncated to 30) and type; a STRING starts NULL."""
    knp.nt = _name_type(truncate_name(name), int(KstatDataType(data_type)))  # plain int: enums hash slowly
    knp.value = _zero(data_type)


def kstat_named_setstr(knp: KstatNamed, value: str | None) -> None:
    """kstat_named_setstr(9F): set a STRING record; fatal on any other type."""
    if knp.data_type != KstatDataType.STRING:
        raise KstatFatalError(f"kstat_named_setstr('{knp.name}'): named kstat is not of type KSTAT_DATA_STRING")
    knp.value = value


def _string_len(value: str | None) -> int:
    # KSTAT_NAMED_STR_BUFLEN: strlen + 1, or 0 for NULL.
    return 0 if value is None else len(value.encode("utf-8", "surrogatepass")) + 1


def named_data_size(records: list[KstatNamed], ndata: int) -> int:
    """ks_data_size of a NAMED kstat: 48 a record plus every STRING's buffer length."""
    size = ndata * NAMED_RECORD_SIZE
    for knp in records[:ndata]:
        if knp.data_type == KstatDataType.STRING:
            size += _string_len(knp.value)
    return size


class KstatIntr:
    """kstat_intr_t: ``intrs[5]`` indexed by KSTAT_INTR_HARD .. KSTAT_INTR_MULTSVC."""

    __slots__ = ("intrs",)

    def __init__(self) -> None:
        self.intrs = [0, 0, 0, 0, 0]


class KstatIO:
    """kstat_io_t: byte and op counts, queue times and Riemann sums, all in ns."""

    __slots__ = IO_FIELDS

    def __init__(self) -> None:
        self.nread = 0  # bytes read
        self.nwritten = 0  # bytes written
        self.reads = 0  # read operations
        self.writes = 0  # write operations
        self.wtime = 0  # time the wait queue was non-empty
        self.wlentime = 0  # sum of wait queue length x time
        self.wlastupdate = 0  # last change of the wait queue
        self.rtime = 0  # time the run queue was non-empty
        self.rlentime = 0  # sum of run queue length x time
        self.rlastupdate = 0  # last change of the run queue
        self.wcnt = 0  # requests waiting
        self.rcnt = 0  # requests being serviced


class KstatTimer:
    """kstat_timer_t: an event timer."""

    __slots__ = TIMER_FIELDS

    def __init__(self) -> None:
        self.name = ""
        self.num_events = 0
        self.elapsed_time = 0  # sum of event durations
        self.min_time = 0
        self.max_time = 0
        self.start_time = 0  # of the last event
        self.stop_time = 0  # of the last event


# --- IO queue accounting (kstat_waitq_enter(9F) and friends) ----------------
# The caller serialises these (illumos: the driver's own lock).


def _queue_update(kiop: KstatIO, q: str, now: int, delta_cnt: int) -> None:
    last = getattr(kiop, q + "lastupdate")
    cnt = getattr(kiop, q + "cnt")
    delta = now - last
    setattr(kiop, q + "lastupdate", now)
    if delta_cnt > 0:
        setattr(kiop, q + "cnt", cnt + 1)
        if cnt == 0:
            return
    else:
        if cnt <= 0:
            raise KstatFatalError(f"kstat_{q}q exit with an empty {q}ait queue" if q == "w" else "kstat_runq_exit with an empty run queue")
        setattr(kiop, q + "cnt", cnt - 1)
    setattr(kiop, q + "time", getattr(kiop, q + "time") + delta)
    setattr(kiop, q + "lentime", getattr(kiop, q + "lentime") + delta * cnt)


def kstat_waitq_enter(kiop: KstatIO, now: int | None = None) -> None:
    """kstat_waitq_enter(9F): a request joins the wait queue."""
    _queue_update(kiop, "w", time.monotonic_ns() if now is None else now, +1)


def kstat_waitq_exit(kiop: KstatIO, now: int | None = None) -> None:
    """kstat_waitq_exit(9F): a request leaves the wait queue."""
    _queue_update(kiop, "w", time.monotonic_ns() if now is None else now, -1)


def kstat_runq_enter(kiop: KstatIO, now: int | None = None) -> None:
    """kstat_runq_enter(9F): a request starts being serviced."""
    _queue_update(kiop, "r", time.monotonic_ns() if now is None else now, +1)


def kstat_runq_exit(kiop: KstatIO, now: int | None = None) -> None:
    """kstat_runq_exit(9F): a request finished service."""
    _queue_update(kiop, "r", time.monotonic_ns() if now is None else now, -1)


def kstat_waitq_to_runq(kiop: KstatIO, now: int | None = None) -> None:
    """kstat_waitq_to_runq(9F): wait exit and run enter at one timestamp."""
    now = time.monotonic_ns() if now is None else now
    _queue_update(kiop, "w", now, -1)
    _queue_update(kiop, "r", now, +1)


def kstat_runq_back_to_waitq(kiop: KstatIO, now: int | None = None) -> None:
    """kstat_runq_back_to_waitq(9F): run exit and wait enter at one timestamp."""
    now = time.monotonic_ns() if now is None else now
    _queue_update(kiop, "r", now, -1)
    _queue_update(kiop, "w", now, +1)


def kstat_timer_init(ktp: KstatTimer, name: str) -> None:
    """kstat_timer_init(9F): only sets the name."""
    ktp.name = truncate_name(name)


def kstat_timer_start(ktp: KstatTimer, now: int | None = None) -> None:
    """kstat_timer_start(9F)."""
    ktp.start_time = time.monotonic_ns() if now is None else now


def kstat_timer_stop(ktp: KstatTimer, now: int | None = None) -> None:
    """kstat_timer_stop(9F): account one event."""
    now = time.monotonic_ns() if now is None else now
    ktp.stop_time = now
    elapsed = now - ktp.start_time
    if elapsed < ktp.min_time or ktp.num_events == 0:
        ktp.min_time = elapsed
    if elapsed > ktp.max_time:
        ktp.max_time = elapsed
    ktp.elapsed_time += elapsed
    ktp.num_events += 1
