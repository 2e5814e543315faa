"""Every number pinned to illumos sys/kstat.h and io/kstat.c (illumos `sys/kstat.h`, `io/kstat.c`)."""

from __future__ import annotations

import kstatpy
from kstatpy import constants as c


def test_types_match_illumos() -> None:
    assert [c.KSTAT_TYPE_RAW, c.KSTAT_TYPE_NAMED, c.KSTAT_TYPE_INTR, c.KSTAT_TYPE_IO, c.KSTAT_TYPE_TIMER] == [0, 1, 2, 3, 4]
    assert c.KSTAT_NUM_TYPES == 5


def test_data_types_match_illumos() -> None:
    assert (c.KSTAT_DATA_CHAR, c.KSTAT_DATA_INT32, c.KSTAT_DATA_UINT32, c.KSTAT_DATA_INT64, c.KSTAT_DATA_UINT64) == (0, 1, 2, 3, 4)
    assert (c.KSTAT_DATA_FLOAT, c.KSTAT_DATA_DOUBLE, c.KSTAT_DATA_LONG, c.KSTAT_DATA_ULONG, c.KSTAT_DATA_STRING) == (5, 6, 7, 8, 9)
    assert c.KSTAT_DATA_LONGLONG is c.KSTAT_DATA_INT64
    assert c.KSTAT_DATA_ULONGLONG is c.KSTAT_DATA_UINT64


def test_flags_match_illumos() -> None:
    flags = (
        c.KSTAT_FLAG_VIRTUAL, c.KSTAT_FLAG_VAR_SIZE, c.KSTAT_FLAG_WRITABLE, c.KSTAT_FLAG_PERSISTENT,
        c.KSTAT_FLAG_DORMANT, c.KSTAT_FLAG_INVALID, c.KSTAT_FLAG_LONGSTRINGS,
    )  # fmt: skip
    assert flags == (0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40)


def test_ioctls_and_misc_match_illumos() -> None:
    assert (c.KSTAT_IOC_CHAIN_ID, c.KSTAT_IOC_READ, c.KSTAT_IOC_WRITE) == ((ord("K") << 8) | 1, 0x4B02, 0x4B03)
    assert (c.KSTATPY_IOC_HELLO, c.KSTATPY_IOC_READ_MANY) == (0x4B10, 0x4B11)
    assert (c.KSTAT_READ, c.KSTAT_WRITE, c.KSTAT_STRLEN) == (0, 1, 31)
    assert (c.ALL_ZONES, c.GLOBAL_ZONEID) == (-1, 0)
    assert c.RECORD_SIZE == {0: 1, 1: 48, 2: 20, 3: 80, 4: 80}
    assert (c.KSTAT_INTR_HARD, c.KSTAT_INTR_MULTSVC, c.KSTAT_NUM_INTRS) == (0, 4, 5)


def test_errnos_are_the_protocol_numbers() -> None:
    expected = {
        "EPERM": 1, "ENOENT": 2, "EINTR": 4, "EIO": 5, "ENXIO": 6, "E2BIG": 7, "EBADF": 9, "EAGAIN": 11,
        "ENOMEM": 12, "EACCES": 13, "EFAULT": 14, "EBUSY": 16, "EEXIST": 17, "EINVAL": 22, "ENOTTY": 25,
        "ENAMETOOLONG": 36, "EPROTO": 71, "EOVERFLOW": 75,
        "ETIMEDOUT": 110,  # docs/PROTOCOL.md §9.4
    }  # fmt: skip
    assert {e.name: e.value for e in c.Errno} == expected


def test_package_reexports_resolve() -> None:
    for name in kstatpy.__all__:
        assert getattr(kstatpy, name) is not None


def test_start_up_copies_of_the_constants_agree():
    # kstatpy.client (and its client_kstat, client_shapes), client_select and protocol copy
    # a few values as plain ints so that the kstat command's start-up never imports enum;
    # they must stay equal.
    from kstatpy import client
    from kstatpy import client_kstat
    from kstatpy import client_select
    from kstatpy import client_shapes
    from kstatpy import protocol

    assert (client._CHAIN_ID, client._READ, client._WRITE, client._HELLO, client._READ_MANY) == (
        c.KstatIoctl.CHAIN_ID, c.KstatIoctl.READ, c.KstatIoctl.WRITE, c.KstatIoctl.HELLO, c.KstatIoctl.READ_MANY,
    )  # fmt: skip
    assert client_select._SELECT == c.KstatIoctl.SELECT
    assert (client._RAW, client_kstat._RAW, client_kstat._NAMED, client_kstat._TIMER) == (
        c.KstatType.RAW, c.KstatType.RAW, c.KstatType.NAMED, c.KstatType.TIMER,
    )  # fmt: skip
    assert client_shapes._NAMED == c.KstatType.NAMED
    assert client_shapes.NAMES == {int(c.KstatIoctl[n]): n for n in ("CHAIN_ID", "READ", "WRITE", "READ_MANY", "SELECT")}
    assert client_select._NAMED == c.KstatType.NAMED
    assert client._RESIZABLE == c.KstatFlag.VAR_SIZE | c.KstatFlag.LONGSTRINGS
    assert client._GLOBAL_ZONEID == c.GLOBAL_ZONEID
    assert protocol.PROTOCOL_VERSION == c.KSTATPY_PROTOCOL_VERSION
    assert protocol.ERRNO_NAMES == {int(e): e.name for e in c.Errno}
    assert protocol.errno_name(5) == "EIO"
