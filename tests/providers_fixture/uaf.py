"""A provider with a use-after-free on demand: ``test:0:uaf`` reads its ``ks_private``.

Ioctl 0x7E5720 frees ``ks_private`` on the debug heap without deleting the kstat (the
pre-14281 mistake); the next read of ``test:0:uaf`` traps (a panic).
"""

from __future__ import annotations

from kstatpy import KSTAT_DATA_UINT64
from kstatpy import KSTAT_TYPE_NAMED
from kstatpy import hookimpl
from kstatpy import kstat_named_init
from kstatpy.kmem import KmemObject

FREE = 0x7E5720


class UafSoftState(KmemObject):
    __slots__ = ("count",)
    kmem_size = 96

    def __init__(self) -> None:
        self.count = 0


def uaf_kstat_update(ksp, rw):
    sc = ksp.ks_private
    sc.count += 1
    ksp.ks_data[0].value = sc.count
    return 0


@hookimpl
def kstatpy_attach(chain):
    ksp = chain.kstat_create("test", 0, "uaf", "misc", KSTAT_TYPE_NAMED, 1, 0)
    kstat_named_init(ksp.ks_data[0], "count", KSTAT_DATA_UINT64)
    ksp.ks_private = chain.kmem.zalloc(UafSoftState)
    ksp.ks_update = uaf_kstat_update
    chain.kstat_install(ksp)


@hookimpl
def kstatpy_ioctl(chain, conn, cmd, arg):
    if cmd == FREE:
        ksp = chain.kstat_lookup_name("test", 0, "uaf")
        chain.kmem.free(ksp.ks_private)
        return 0, {}
    return None
