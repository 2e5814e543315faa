"""The numbers of illumos ``sys/kstat.h`` and ``io/kstat.c``, with their illumos spellings.

Every value here is pinned by ``tests/test_constants.py`` against illumos ``sys/kstat.h``
and ``io/kstat.c``.
The enums give readable reprs; the ``KSTAT_*`` aliases are what providers write.
"""

from __future__ import annotations

import errno as _errno
from enum import IntEnum
from enum import IntFlag
from types import SimpleNamespace

__all__ = [
    "ALL_ZONES",
    "GLOBAL_ZONEID",
    "KSTAT_DATA_CHAR",
    "KSTAT_DATA_DOUBLE",
    "KSTAT_DATA_FLOAT",
    "KSTAT_DATA_INT32",
    "KSTAT_DATA_INT64",
    "KSTAT_DATA_LONG",
    "KSTAT_DATA_LONGLONG",
    "KSTAT_DATA_STRING",
    "KSTAT_DATA_UINT32",
    "KSTAT_DATA_UINT64",
    "KSTAT_DATA_ULONG",
    "KSTAT_DATA_ULONGLONG",
    "KSTAT_FLAG_DORMANT",
    "KSTAT_FLAG_INVALID",
    "KSTAT_FLAG_LONGSTRINGS",
    "KSTAT_FLAG_PERSISTENT",
    "KSTAT_FLAG_VAR_SIZE",
    "KSTAT_FLAG_VIRTUAL",
    "KSTAT_FLAG_WRITABLE",
    "KSTAT_INTR_HARD",
    "KSTAT_INTR_MULTSVC",
    "KSTAT_INTR_SOFT",
    "KSTAT_INTR_SPURIOUS",
    "KSTAT_INTR_WATCHDOG",
    "KSTAT_IOC_CHAIN_ID",
    "KSTAT_IOC_READ",
    "KSTAT_IOC_WRITE",
    "KSTAT_NUM_INTRS",
    "KSTAT_NUM_TYPES",
    "KSTAT_READ",
    "KSTAT_STRLEN",
    "KSTAT_TYPE_INTR",
    "KSTAT_TYPE_IO",
    "KSTAT_TYPE_NAMED",
    "KSTAT_TYPE_RAW",
    "KSTAT_TYPE_TIMER",
    "KSTAT_WRITE",
    "KSTATPY_IOC_HELLO",
    "KSTATPY_IOC_READ_MANY",
    "KSTATPY_IOC_DESCRIBE",
    "KSTATPY_IOC_SELECT",
    "KSTATPY_PROTOCOL_VERSION",
    "KstatDataType",
    "KstatFlag",
    "KstatIoctl",
    "KstatType",
    "NAMED_RECORD_SIZE",
    "RECORD_SIZE",
    "Errno",
    "FLAG",
]

#: Size of the name fields, NUL included; names keep at most 29+1 = 30 characters.
KSTAT_STRLEN = 31

#: ``ks_zone`` values: every zone, and the global zone.
ALL_ZONES = -1
GLOBAL_ZONEID = 0

#: The ``rw`` argument of ``ks_update`` and ``ks_snapshot``.
KSTAT_READ = 0
KSTAT_WRITE = 1


class KstatType(IntEnum):
    """``ks_type``: the kind of records in ``ks_data``."""

    RAW = 0
    NAMED = 1
    INTR = 2
    IO = 3
    TIMER = 4


KSTAT_TYPE_RAW = KstatType.RAW
KSTAT_TYPE_NAMED = KstatType.NAMED
KSTAT_TYPE_INTR = KstatType.INTR
KSTAT_TYPE_IO = KstatType.IO
KSTAT_TYPE_TIMER = KstatType.TIMER
KSTAT_NUM_TYPES = 5


class KstatDataType(IntEnum):
    """``data_type`` of a named record."""

    CHAR = 0
    INT32 = 1
    UINT32 = 2
    INT64 = 3
    UINT64 = 4
    FLOAT = 5
    DOUBLE = 6
    LONG = 7
    ULONG = 8
    STRING = 9


KSTAT_DATA_CHAR = KstatDataType.CHAR
KSTAT_DATA_INT32 = KstatDataType.INT32
KSTAT_DATA_UINT32 = KstatDataType.UINT32
KSTAT_DATA_INT64 = KstatDataType.INT64
KSTAT_DATA_LONGLONG = KstatDataType.INT64
KSTAT_DATA_UINT64 = KstatDataType.UINT64
KSTAT_DATA_ULONGLONG = KstatDataType.UINT64
KSTAT_DATA_FLOAT = KstatDataType.FLOAT
KSTAT_DATA_DOUBLE = KstatDataType.DOUBLE
KSTAT_DATA_LONG = KstatDataType.LONG
KSTAT_DATA_ULONG = KstatDataType.ULONG
KSTAT_DATA_STRING = KstatDataType.STRING


class KstatFlag(IntFlag):
    """``ks_flags`` bits. The creator sets the first four; the framework the rest."""

    VIRTUAL = 0x01
    VAR_SIZE = 0x02
    WRITABLE = 0x04
    PERSISTENT = 0x08
    DORMANT = 0x10
    INVALID = 0x20
    LONGSTRINGS = 0x40


#: The same bits as plain ints, for hot paths: IntFlag arithmetic costs a microsecond.
FLAG = SimpleNamespace(**{str(f.name): int(f) for f in KstatFlag})

KSTAT_FLAG_VIRTUAL = KstatFlag.VIRTUAL
KSTAT_FLAG_VAR_SIZE = KstatFlag.VAR_SIZE
KSTAT_FLAG_WRITABLE = KstatFlag.WRITABLE
KSTAT_FLAG_PERSISTENT = KstatFlag.PERSISTENT
KSTAT_FLAG_DORMANT = KstatFlag.DORMANT
KSTAT_FLAG_INVALID = KstatFlag.INVALID
KSTAT_FLAG_LONGSTRINGS = KstatFlag.LONGSTRINGS

#: Indexes of ``kstat_intr_t.intrs``.
KSTAT_INTR_HARD = 0
KSTAT_INTR_SOFT = 1
KSTAT_INTR_WATCHDOG = 2
KSTAT_INTR_SPURIOUS = 3
KSTAT_INTR_MULTSVC = 4
KSTAT_NUM_INTRS = 5

#: LP64 record sizes by type; ``ks_data_size`` = size x ``ks_ndata`` (plus string bytes).
NAMED_RECORD_SIZE = 48
RECORD_SIZE = {
    KstatType.RAW: 1,
    KstatType.NAMED: NAMED_RECORD_SIZE,
    KstatType.INTR: 20,
    KstatType.IO: 80,
    KstatType.TIMER: 80,
}


class KstatIoctl(IntEnum):
    """The /dev/kstat ioctls (``('K' << 8) | n``) and the kstatpy additions (docs/PROTOCOL.md §4)."""

    CHAIN_ID = 0x4B01
    READ = 0x4B02
    WRITE = 0x4B03
    HELLO = 0x4B10
    READ_MANY = 0x4B11
    DESCRIBE = 0x4B13
    SELECT = 0x4B12


KSTAT_IOC_CHAIN_ID = KstatIoctl.CHAIN_ID
KSTAT_IOC_READ = KstatIoctl.READ
KSTAT_IOC_WRITE = KstatIoctl.WRITE
KSTATPY_IOC_HELLO = KstatIoctl.HELLO
KSTATPY_IOC_READ_MANY = KstatIoctl.READ_MANY
KSTATPY_IOC_DESCRIBE = KstatIoctl.DESCRIBE
KSTATPY_IOC_SELECT = KstatIoctl.SELECT
KSTATPY_PROTOCOL_VERSION = 1


class Errno(IntEnum):
    """The errno numbers docs/PROTOCOL.md §3 puts on the wire (Linux's; illumos agrees)."""

    EPERM = _errno.EPERM
    ENOENT = _errno.ENOENT
    EINTR = _errno.EINTR
    EIO = _errno.EIO
    ENXIO = _errno.ENXIO
    E2BIG = _errno.E2BIG
    EBADF = _errno.EBADF
    EAGAIN = _errno.EAGAIN
    ENOMEM = _errno.ENOMEM
    EACCES = _errno.EACCES
    EFAULT = _errno.EFAULT
    EBUSY = _errno.EBUSY
    EEXIST = _errno.EEXIST
    EINVAL = _errno.EINVAL
    ENOTTY = _errno.ENOTTY
    ENAMETOOLONG = _errno.ENAMETOOLONG
    EPROTO = _errno.EPROTO
    EOVERFLOW = _errno.EOVERFLOW
    ETIMEDOUT = _errno.ETIMEDOUT  # docs/PROTOCOL.md §9.4: idle or partial-frame timeout
