"""A provider whose ``test:0:hang`` kstat blocks in ks_update until released.

Ioctl 0x7E5710 releases every blocked update (and later ones pass at once);
kstatpy_detach releases them too before deleting. ``test:0:ok`` always answers.
"""

from __future__ import annotations

import threading

from kstatpy import KSTAT_DATA_UINT64
from kstatpy import KSTAT_TYPE_NAMED
from kstatpy import hookimpl
from kstatpy import kstat_named_init

RELEASE = 0x7E5710
_KEY = "tests.providers_fixture.hang"


@hookimpl
def kstatpy_attach(chain):
    release = chain.config.setdefault(_KEY, threading.Event())

    def hang(ksp, rw):
        release.wait(60)
        return 0

    ksp = chain.kstat_create("test", 0, "hang", "misc", KSTAT_TYPE_NAMED, 0, 0)
    ksp.ks_update = hang
    chain.kstat_install(ksp)
    ksp = chain.kstat_create("test", 0, "ok", "misc", KSTAT_TYPE_NAMED, 1, 0)
    kstat_named_init(ksp.ks_data[0], "value", KSTAT_DATA_UINT64)
    ksp.ks_data[0].value = 42
    chain.kstat_install(ksp)


@hookimpl
def kstatpy_detach(chain):
    chain.config[_KEY].set()
    chain.kstat_delete_byname("test", 0, "hang")
    chain.kstat_delete_byname("test", 0, "ok")


@hookimpl
def kstatpy_ioctl(chain, conn, cmd, arg):
    if cmd == RELEASE:
        chain.config[_KEY].set()
        return 0, {}
    return None
