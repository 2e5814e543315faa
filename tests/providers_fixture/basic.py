"""A provider with one kstat of every type and every read/write error a provider can cause.

Environment: ``KSTATPY_TEST_DETACH_FILE`` (path): kstatpy_detach writes "detached" there.

Kstats (module ``test``, instance 0): ``named`` (writable UINT64/INT32/CHAR records),
``strings`` (STRING and INT64), ``raw`` (16 bytes), ``intr``, ``io``, ``timer``,
``invalid`` (created, never installed: EAGAIN), ``upderr`` (ks_update returns EIO's
sibling ENOTTY), ``raises`` (ks_update raises: EIO), ``zoned`` (for zone ``z1`` only),
``conns`` (connections opened through the provider ioctl and closed, as seen by
kstatpy_conn_close, and the number of kstatpy_refresh calls).

Ioctls: 0x7E5701 echo (``{"arg", "uid", "zone", "zoneid", "privileged"}``, and marks
the connection as opened), 0x7E5702 raises (EIO), 0x7E5703 returns garbage (EIO).
"""

from __future__ import annotations

import errno
import os

from kstatpy import KSTAT_DATA_CHAR
from kstatpy import KSTAT_DATA_INT32
from kstatpy import KSTAT_DATA_INT64
from kstatpy import KSTAT_DATA_STRING
from kstatpy import KSTAT_DATA_UINT64
from kstatpy import KSTAT_FLAG_WRITABLE
from kstatpy import KSTAT_TYPE_INTR
from kstatpy import KSTAT_TYPE_IO
from kstatpy import KSTAT_TYPE_NAMED
from kstatpy import KSTAT_TYPE_RAW
from kstatpy import KSTAT_TYPE_TIMER
from kstatpy import hookimpl
from kstatpy import kstat_named_init
from kstatpy.records import kstat_named_setstr
from kstatpy.records import kstat_timer_init

ECHO = 0x7E5701
RAISES = 0x7E5702
GARBAGE = 0x7E5703
NAMES = ("named", "strings", "raw", "intr", "io", "timer", "invalid", "upderr", "raises", "zoned", "conns")


class _State:
    def __init__(self) -> None:
        self.opened = 0
        self.closed = 0
        self.refreshes = 0


_STATE_KEY = "tests.providers_fixture.basic"


def _state(chain):
    return chain.config.setdefault(_STATE_KEY, _State())


@hookimpl
def kstatpy_attach(chain):
    st = _state(chain)
    ksp = chain.kstat_create("test", 0, "named", "misc", KSTAT_TYPE_NAMED, 3, KSTAT_FLAG_WRITABLE)
    kstat_named_init(ksp.ks_data[0], "u64", KSTAT_DATA_UINT64)
    kstat_named_init(ksp.ks_data[1], "i32", KSTAT_DATA_INT32)
    kstat_named_init(ksp.ks_data[2], "ch", KSTAT_DATA_CHAR)
    ksp.ks_data[0].value = 2**64 - 1
    ksp.ks_data[1].value = -5
    ksp.ks_data[2].value = b"abc"
    chain.kstat_install(ksp)

    ksp = chain.kstat_create("test", 0, "strings", "misc", KSTAT_TYPE_NAMED, 2, 0)
    kstat_named_init(ksp.ks_data[0], "s", KSTAT_DATA_STRING)
    kstat_named_init(ksp.ks_data[1], "n", KSTAT_DATA_INT64)
    kstat_named_setstr(ksp.ks_data[0], "h\u00e9llo \u2603")
    ksp.ks_data[1].value = -(2**63)
    chain.kstat_install(ksp)

    ksp = chain.kstat_create("test", 0, "raw", "misc", KSTAT_TYPE_RAW, 16, 0)
    ksp.ks_data[:] = bytes(range(16))
    chain.kstat_install(ksp)

    ksp = chain.kstat_create("test", 0, "intr", "controller", KSTAT_TYPE_INTR, 1, 0)
    ksp.ks_data[0].intrs[:] = [1, 2, 3, 4, 5]
    chain.kstat_install(ksp)

    ksp = chain.kstat_create("test", 0, "io", "disk", KSTAT_TYPE_IO, 1, 0)
    ksp.ks_data[0].nread = 4096
    chain.kstat_install(ksp)

    ksp = chain.kstat_create("test", 0, "timer", "misc", KSTAT_TYPE_TIMER, 2, 0)
    kstat_timer_init(ksp.ks_data[0], "t0")
    kstat_timer_init(ksp.ks_data[1], "t1")
    chain.kstat_install(ksp)

    chain.kstat_create("test", 0, "invalid", "misc", KSTAT_TYPE_NAMED, 0, 0)

    ksp = chain.kstat_create("test", 0, "upderr", "misc", KSTAT_TYPE_NAMED, 0, 0)
    ksp.ks_update = lambda ksp, rw: errno.ENOTTY
    chain.kstat_install(ksp)

    def _raise(ksp, rw):
        raise RuntimeError("provider bug")

    ksp = chain.kstat_create("test", 0, "raises", "misc", KSTAT_TYPE_NAMED, 0, 0)
    ksp.ks_update = _raise
    chain.kstat_install(ksp)

    zones = chain.config.get("zones", {})
    if "z1" in zones:
        ksp = chain.kstat_create_zone("test", 0, "zoned", "misc", KSTAT_TYPE_NAMED, 0, 0, zones["z1"])
        chain.kstat_install(ksp)

    ksp = chain.kstat_create("test", 0, "conns", "misc", KSTAT_TYPE_NAMED, 3, 0)
    kstat_named_init(ksp.ks_data[0], "opened", KSTAT_DATA_UINT64)
    kstat_named_init(ksp.ks_data[1], "closed", KSTAT_DATA_UINT64)
    kstat_named_init(ksp.ks_data[2], "refreshes", KSTAT_DATA_UINT64)

    def _conns(ksp, rw):
        ksp.ks_data[0].value = st.opened
        ksp.ks_data[1].value = st.closed
        ksp.ks_data[2].value = st.refreshes
        return 0

    ksp.ks_update = _conns
    chain.kstat_install(ksp)


@hookimpl
def kstatpy_refresh(chain):
    _state(chain).refreshes += 1


@hookimpl
def kstatpy_detach(chain):
    for name in NAMES:
        chain.kstat_delete_byname("test", 0, name)
    zones = chain.config.get("zones", {})
    if "z1" in zones:
        chain.kstat_delete_byname_zone("test", 0, "zoned", zones["z1"])
    path = os.environ.get("KSTATPY_TEST_DETACH_FILE")
    if path:
        with open(path, "w") as f:
            f.write("detached\n")


@hookimpl
def kstatpy_ioctl(chain, conn, cmd, arg):
    if cmd == ECHO:
        mine = conn.state[_STATE_KEY]
        if not mine:
            mine["open"] = True
            _state(chain).opened += 1
        c = conn.cred
        return 0, {
            "arg": arg,
            "uid": c.uid,
            "zone": c.zone,
            "zoneid": c.zoneid,
            "privileged": c.privileged,
            "vmm_teardown": chain.config.get("vmm_teardown"),
        }
    if cmd == RAISES:
        raise RuntimeError("provider ioctl bug")
    if cmd == GARBAGE:
        return "not a pair"
    return None


@hookimpl
def kstatpy_conn_close(chain, conn):
    if conn.state.get(_STATE_KEY):
        _state(chain).closed += 1
