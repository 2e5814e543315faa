"""The kstat data model: ``Kstat`` and its records, default update and snapshot.

Mirrors ``uts/common/sys/kstat.h`` (paraphrased; illumos is CDDL).

Identity
    ``(ks_module, ks_instance, ks_name)`` names a kstat; names keep at most 30
    characters (``KSTAT_STRLEN - 1``). ``ks_kid`` is the chain's cookie for it.

Locking
    The chain serialises readers and writers of one kstat with an exclusive hold
    (``chain.py``). Under the hold, ``ks_lock`` (optional, a :class:`KMutex`)
    guards the provider's data; ``ks_update`` and ``ks_snapshot`` run with it held
    and must not take it.

Update
    ``ks_update(ksp, rw)`` refreshes ``ks_data`` (``KSTAT_READ``) or pushes it into
    the provider (``KSTAT_WRITE``); returns 0, ``EACCES`` or ``EIO``. The default
    does nothing except recompute ``ks_data_size`` of NAMED kstats that are
    VAR_SIZE or have long strings.

Snapshot
    ``ks_snapshot(ksp, buf, rw)`` sets ``ks_snaptime``; READ copies ``ks_data`` into
    ``buf.data`` as plain values (the wire DATA of PROTOCOL.md §5); WRITE copies
    ``buf.data`` into ``ks_data``. The default snapshot closes open IO intervals in
    the copy only, never in the live data.

Data sizes are those of illumos LP64, so the ENOMEM size protocol is reproduced:
48 bytes a named record plus ``strlen + 1`` for each non-NULL STRING.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable
from typing import Any

from kstatpy.constants import FLAG
from kstatpy.constants import KSTAT_READ
from kstatpy.constants import KSTAT_STRLEN
from kstatpy.constants import NAMED_RECORD_SIZE
from kstatpy.constants import KstatDataType
from kstatpy.constants import KstatType
from kstatpy.errors import KstatFatalError
from kstatpy.kmem import KmemObject

__all__ = [
    "IO_FIELDS",
    "INTR_FIELDS",
    "TIMER_FIELDS",
    "KMutex",
    "Kstat",
    "KstatBuffer",
    "KstatIntr",
    "KstatIO",
    "KstatNamed",
    "KstatTimer",
    "default_kstat_snapshot",
    "default_kstat_update",
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
    """kstat_set_string: keep at most 30 bytes (of UTF-8), never half a character."""
    if len(name) <= MAXNAMELEN // 4:
        return name  # cannot exceed 30 bytes: the common, cheap case
    raw = name.encode("utf-8", "surrogatepass")
    if len(raw) <= MAXNAMELEN:
        return name
    return raw[:MAXNAMELEN].decode("utf-8", "ignore")


class KMutex:
    """kmutex_t: a non-recursive lock that knows its owner (``MUTEX_HELD``).

    Use it for ``ks_lock``: ``kstat_delete`` must tell whether its caller holds the
    data lock (a fatal error in illumos).
    """

    __slots__ = ("_lock", "_owner")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: int | None = None

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        got = self._lock.acquire(blocking, timeout)
        if got:
            self._owner = threading.get_ident()
        return got

    def release(self) -> None:
        self._owner = None
        self._lock.release()

    def held(self) -> bool:
        """MUTEX_HELD: true when the calling thread owns it."""
        return self._owner == threading.get_ident()

    def __enter__(self) -> KMutex:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_held_by_caller(lock: Any) -> bool:
    """Best answer to "does this thread hold ``lock``" for the lock kinds we accept."""
    if lock is None:
        return False
    held = getattr(lock, "held", None)
    if held is not None:
        return bool(held())
    is_owned = getattr(lock, "_is_owned", None)  # threading.RLock and Condition
    if is_owned is not None:
        return bool(is_owned())
    return False


class KstatNamed:
    """kstat_named_t: ``name``, ``data_type``, ``value``.

    ``value`` is an int for the integer types, ``bytes`` (at most 16) for CHAR, and
    ``str`` or None for STRING.
    """

    __slots__ = ("data_type", "name", "value")

    def __init__(self, name: str = "", data_type: int = KstatDataType.CHAR, value: Any = None) -> None:
        self.name = name
        self.data_type = int(data_type)
        self.value = _zero(data_type) if value is None and data_type != KstatDataType.STRING else value

    def __repr__(self) -> str:
        return f"KstatNamed({self.name!r}, {KstatDataType(self.data_type).name}, {self.value!r})"


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
    knp.name = truncate_name(name)
    knp.data_type = int(KstatDataType(data_type))  # plain int: enum hashing is slow on the read path
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


class KstatBuffer:
    """The caller's buffer of ``ks_snapshot``: READ fills ``data``; WRITE reads it."""

    __slots__ = ("data",)

    def __init__(self, data: Any = None) -> None:
        self.data = data


UpdateFn = Callable[["Kstat", int], "int | None"]
SnapshotFn = Callable[["Kstat", KstatBuffer, int], "int | None"]


class Kstat(KmemObject):
    """kstat_t. Built only by ``chain.kstat_create``; lives on the chain's debug heap.

    Fields a reader sees: ``ks_crtime``, ``ks_kid``, ``ks_module``, ``ks_instance``,
    ``ks_name``, ``ks_type``, ``ks_class``, ``ks_flags``, ``ks_data``, ``ks_ndata``,
    ``ks_data_size``, ``ks_snaptime``. Provider-only: ``ks_update``, ``ks_private``,
    ``ks_snapshot``, ``ks_lock``. The ``e_*`` fields are the chain's (``ekstat_t``).
    """

    __slots__ = (
        "e_cv",
        "e_owner",
        "e_waiters",
        "e_zones",
        "ks_class",
        "ks_crtime",
        "ks_data",
        "ks_data_size",
        "ks_flags",
        "ks_instance",
        "ks_kid",
        "ks_lock",
        "ks_module",
        "ks_name",
        "ks_ndata",
        "ks_private",
        "ks_snapshot",
        "ks_snaptime",
        "ks_type",
        "ks_update",
    )  # fmt: skip
    kmem_size = 184  # sizeof (kstat_t) on LP64

    def __init__(self) -> None:
        self._kmem_buf = None
        self.ks_crtime = 0
        self.ks_kid = -1
        self.ks_module = ""
        self.ks_instance = 0
        self.ks_name = ""
        self.ks_type = KstatType.RAW
        self.ks_class = ""
        self.ks_flags = 0
        self.ks_data: Any = None
        self.ks_ndata = 0
        self.ks_data_size = 0
        self.ks_snaptime = 0
        self.ks_update: UpdateFn = default_kstat_update
        self.ks_private: Any = None
        self.ks_snapshot: SnapshotFn = default_kstat_snapshot
        self.ks_lock: Any = None
        self.e_owner: int | None = None  # thread holding the kstat; chain lock guards it
        self.e_waiters = 0  # threads waiting for the hold; chain lock guards it
        self.e_cv: threading.Condition | None = None  # on the chain lock
        self.e_zones: list[int] = []  # head is the primary zone

    def __repr__(self) -> str:
        return f"<Kstat {self.ks_module}:{self.ks_instance}:{self.ks_name} kid={self.ks_kid}>"

    def header(self) -> dict[str, Any]:
        """The HEADER map of PROTOCOL.md §5 (plain values, safe to send)."""
        return {
            "kid": self.ks_kid,
            "module": self.ks_module,
            "instance": self.ks_instance,
            "name": self.ks_name,
            "class": self.ks_class,
            "type": int(self.ks_type),
            "flags": int(self.ks_flags),
            "ndata": self.ks_ndata,
            "data_size": self.ks_data_size,
            "crtime": self.ks_crtime,
            "snaptime": self.ks_snaptime,
        }


def default_kstat_update(ksp: Kstat, rw: int) -> int:
    """The default ``ks_update``: keeps ``ks_data_size`` right for NAMED strings."""
    if (
        ksp.ks_data is not None
        and ksp.ks_type == KstatType.NAMED
        and ksp.ks_flags & (FLAG.VAR_SIZE | FLAG.LONGSTRINGS)
    ):
        ksp.ks_data_size = named_data_size(ksp.ks_data, ksp.ks_ndata)
    return 0


_PLAIN_TYPES = frozenset(map(int, (KstatDataType.INT32, KstatDataType.UINT32, KstatDataType.INT64,
                                   KstatDataType.UINT64, KstatDataType.STRING)))  # fmt: skip
_CHAR = int(KstatDataType.CHAR)


def _named_copy(records: list[KstatNamed], ndata: int) -> list[list[Any]]:
    # The hot path of every read: data types are plain ints (kstat_named_init).
    out: list[list[Any]] = []
    append = out.append
    for knp in records if len(records) == ndata else records[:ndata]:
        t = knp.data_type
        if t in _PLAIN_TYPES:
            append([knp.name, t, knp.value])
        elif t == _CHAR:
            append([knp.name, t, bytes(knp.value or b"")[:CHAR_VALUE_SIZE]])
        else:
            append([knp.name, int(READER_TYPE.get(t, t)), knp.value])
    return out


def _io_copy(kiop: KstatIO, now: int) -> dict[str, int]:
    io = {f: getattr(kiop, f) for f in IO_FIELDS}
    # Close the intervals still open, in the copy only (default_kstat_snapshot).
    for q in ("w", "r"):
        cnt = io[q + "cnt"]
        if cnt:
            delta = now - io[q + "lastupdate"]
            io[q + "time"] += delta
            io[q + "lentime"] += delta * cnt
            io[q + "lastupdate"] = now
    return io


def snapshot_data(ksp: Kstat, now: int) -> Any:
    """The plain copy of ``ks_data`` that a READ snapshot hands out (PROTOCOL.md §5)."""
    data = ksp.ks_data
    t = ksp.ks_type
    if t == KstatType.NAMED:
        return _named_copy(data or [], ksp.ks_ndata)
    if t == KstatType.RAW:
        return bytes(data or b"")[: ksp.ks_data_size]
    if t == KstatType.INTR:
        rec = data[0] if isinstance(data, list) else data
        return dict(zip(INTR_FIELDS, rec.intrs, strict=True))
    if t == KstatType.IO:
        rec = data[0] if isinstance(data, list) else data
        return _io_copy(rec, now)
    if t == KstatType.TIMER:
        return [{f: getattr(ktp, f) for f in TIMER_FIELDS} for ktp in (data or [])[: ksp.ks_ndata]]
    raise ValueError(f"kstat type {t}")


def _write_into(ksp: Kstat, new: Any) -> None:
    # The chain has checked the shape and types (write path); copy values in.
    t = ksp.ks_type
    data = ksp.ks_data
    if t == KstatType.NAMED:
        for knp, (_, _, value) in zip(data, new, strict=False):
            knp.value = value
    elif t == KstatType.RAW:
        data[: len(new)] = new
    elif t == KstatType.INTR:
        rec = data[0] if isinstance(data, list) else data
        rec.intrs[:] = [new[f] for f in INTR_FIELDS]
    elif t == KstatType.IO:
        rec = data[0] if isinstance(data, list) else data
        for f in IO_FIELDS:
            setattr(rec, f, new[f])
    elif t == KstatType.TIMER:
        for ktp, rec in zip(data, new, strict=False):
            for f in TIMER_FIELDS:
                setattr(ktp, f, rec[f])


def default_kstat_snapshot(ksp: Kstat, buf: KstatBuffer, rw: int) -> int:
    """The default ``ks_snapshot``: stamp ``ks_snaptime``, then copy out or in."""
    now = time.monotonic_ns()
    ksp.ks_snaptime = now
    if rw == KSTAT_READ:
        buf.data = snapshot_data(ksp, now)
        return 0
    if not ksp.ks_flags & FLAG.WRITABLE:
        return errno.EACCES
    _write_into(ksp, buf.data)
    return 0
