"""The kstat data model: ``Kstat`` (kstat_t), ``ks_lock``, the default update and snapshot.

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
    ``buf.data`` as plain values (the wire DATA of docs/PROTOCOL.md §5); WRITE copies
    ``buf.data`` into ``ks_data``. The default snapshot closes open IO intervals in
    the copy only, never in the live data.

The typed records (named, intr, io, timer) are in ``records.py``. Data sizes are those of illumos LP64, so the ENOMEM size protocol is reproduced:
48 bytes a named record plus ``strlen + 1`` for each non-NULL STRING.
"""

from __future__ import annotations

import errno
import sys
import threading
import time

from kstatpy.constants import FLAG
from kstatpy.constants import KSTAT_READ
from kstatpy.constants import KstatDataType
from kstatpy.constants import KstatType
from kstatpy.kmem import KmemObject
from kstatpy.lockorder import curthread
from kstatpy.lockorder import mutex_enter
from kstatpy.lockorder import mutex_exit

# The records are re-exported: providers written against 0.1 import them from here.
from kstatpy.records import CHAR_VALUE_SIZE
from kstatpy.records import INTR_FIELDS
from kstatpy.records import IO_FIELDS
from kstatpy.records import READER_TYPE
from kstatpy.records import TIMER_FIELDS
from kstatpy.records import KstatIntr
from kstatpy.records import KstatIO
from kstatpy.records import KstatNamed
from kstatpy.records import KstatTimer
from kstatpy.records import kstat_named_init
from kstatpy.records import kstat_named_setstr
from kstatpy.records import kstat_runq_back_to_waitq
from kstatpy.records import kstat_runq_enter
from kstatpy.records import kstat_runq_exit
from kstatpy.records import kstat_timer_init
from kstatpy.records import kstat_timer_start
from kstatpy.records import kstat_timer_stop
from kstatpy.records import kstat_waitq_enter
from kstatpy.records import kstat_waitq_exit
from kstatpy.records import kstat_waitq_to_runq
from kstatpy.records import named_data_size
from kstatpy.records import truncate_name

TYPE_CHECKING = False  # not typing's: the embedded kstat's start-up never imports typing
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

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
    "lock_held_by_caller",
    "named_data_size",
    "snapshot_data",
    "truncate_name",
]


class KMutex:
    """kmutex_t: a non-recursive lock that knows its owner (``MUTEX_HELD``).

    Use it for ``ks_lock`` and for the provider's own locks: ``kstat_delete`` must
    tell whether its caller holds the data lock (a fatal error in illumos), and the
    lock-order checker (:mod:`kstatpy.lockorder`) sees every KMutex. ``name`` names
    its lock class in reports; without one, the class is the site that built it.
    """

    __slots__ = ("_lclass", "_lock", "_owner", "_site", "_witness", "name")

    def __init__(self, name: str | None = None) -> None:
        self._lock = threading.Lock()
        self._owner: int | None = None
        self.name = name
        self._witness: Any = None  # the checker that knows this mutex (kstatpy.lockorder)
        self._lclass: Any = None  # (checker, its lock class of this mutex), cached
        f = sys._getframe(1)  # the lock class, as lockdep keys a lock by its init site
        self._site = (f.f_globals.get("__name__", "?"), f.f_code.co_qualname, f.f_lineno)

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self._witness is not None or curthread.st is not None:
            return mutex_enter(self, blocking, timeout)
        got = self._lock.acquire(blocking, timeout)
        if got:
            self._owner = threading.get_ident()
        return got

    def release(self) -> None:
        if self._witness is not None or curthread.st is not None:
            mutex_exit(self)
            return
        self._owner = None
        self._lock.release()

    def held(self) -> bool:
        """MUTEX_HELD: true when the calling thread owns it."""
        return self._owner == threading.get_ident()

    def owner(self) -> int | None:
        """The thread id holding it (None: free); for reports."""
        return self._owner

    def __enter__(self) -> KMutex:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<KMutex {self.name or ':'.join(map(str, self._site))}>"


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


class KstatBuffer:
    """The caller's buffer of ``ks_snapshot``: READ fills ``data``; WRITE reads it."""

    __slots__ = ("data",)

    def __init__(self, data: Any = None) -> None:
        self.data = data


if TYPE_CHECKING:
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
        "ks_meta",
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
    kmem_audit_refs = ("ks_private", "ks_lock", "ks_data")  # Kmem(audit=True) checks these at every free
    kmem_extent = ()  # nothing the audit counts as inside a kstat: ks_private, ks_lock are the provider's

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
        self.ks_meta: dict[str, Any] | None = None  # statistic -> StatMeta (kstatpy.metadata)
        self.e_owner: int | None = None  # thread holding the kstat; chain lock guards it
        self.e_waiters = 0  # threads waiting for the hold; chain lock guards it
        self.e_cv: threading.Condition | None = None  # on the chain lock
        self.e_zones: list[int] = []  # head is the primary zone

    def __repr__(self) -> str:
        return f"<Kstat {self.ks_module}:{self.ks_instance}:{self.ks_name} kid={self.ks_kid}>"

    def header(self) -> dict[str, Any]:
        """The HEADER map of docs/PROTOCOL.md §5 (plain values, safe to send)."""
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


_PLAIN_TYPES = frozenset(map(int, (KstatDataType.INT32, KstatDataType.UINT32, KstatDataType.INT64,
                                   KstatDataType.UINT64, KstatDataType.STRING)))  # fmt: skip
_CHAR = int(KstatDataType.CHAR)
_SIZED_BY_DATA = int(FLAG.VAR_SIZE | FLAG.LONGSTRINGS)
_NAMED = int(KstatType.NAMED)


def default_kstat_update(ksp: Kstat, rw: int) -> int:
    """The default ``ks_update``: keeps ``ks_data_size`` right for NAMED strings."""
    if ksp.ks_flags & _SIZED_BY_DATA and ksp.ks_data is not None and ksp.ks_type == _NAMED:
        ksp.ks_data_size = named_data_size(ksp.ks_data, ksp.ks_ndata)
    return 0


def _named_copy(records: list[KstatNamed], ndata: int) -> list[list[Any]]:
    # The hot path of every read: one comprehension, then a fix-up pass for the rare
    # CHAR (truncated bytes) and LONG/ULONG (reader's type) records.
    out = [[*k.nt, k.value] for k in (records if len(records) == ndata else records[:ndata])]
    for row in out:
        t = row[1]
        if t not in _PLAIN_TYPES:
            if t == _CHAR:
                row[2] = bytes(row[2] or b"")[:CHAR_VALUE_SIZE]
            else:
                row[1] = int(READER_TYPE.get(t, t))
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
    """The plain copy of ``ks_data`` that a READ snapshot hands out (docs/PROTOCOL.md §5)."""
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
        if ksp.ks_type == _NAMED:  # the common case, without snapshot_data's dispatch
            buf.data = _named_copy(ksp.ks_data or [], ksp.ks_ndata)
        else:
            buf.data = snapshot_data(ksp, now)
        return 0
    if not ksp.ks_flags & FLAG.WRITABLE:
        return errno.EACCES
    _write_into(ksp, buf.data)
    return 0
