"""A third-party provider written against the provider contract of kstatpy's README."""

from __future__ import annotations

from kstatpy import KSTAT_DATA_UINT64
from kstatpy import KSTAT_TYPE_NAMED
from kstatpy import hookimpl
from kstatpy import kstat_named_init


def _count_reads(ksp, rw):
    ksp.ks_data[0].value += 1
    return 0


@hookimpl
def kstatpy_attach(chain):
    ksp = chain.kstat_create("example", 0, "counters", "misc", KSTAT_TYPE_NAMED, 1, 0)
    kstat_named_init(ksp.ks_data[0], "hits", KSTAT_DATA_UINT64)
    ksp.ks_update = _count_reads
    chain.kstat_install(ksp)


@hookimpl
def kstatpy_detach(chain):
    chain.kstat_delete_byname("example", 0, "counters")
