"""Kstats whose data size changes from read to read (libkstat's buffer handling, issue 18).

``test:0:grow`` (RAW, VIRTUAL | VAR_SIZE): read number k (from 1) is ``k`` as 8 bytes
little-endian, then ``size(k) - 8`` bytes ``(i * 7 + k) % 256``; ``size(k)`` is
``((k % 8) + 1) * 100``, so sizes grow, shrink and grow again.
``test:0:text`` (NAMED): ``s`` (STRING) is ``"x" * ((k % 8) * 60) + str(k)``, ``k`` (UINT64)
is k: the data size follows the string.
"""

from __future__ import annotations

from kstatpy import KSTAT_DATA_STRING
from kstatpy import KSTAT_DATA_UINT64
from kstatpy import KSTAT_FLAG_VAR_SIZE
from kstatpy import KSTAT_FLAG_VIRTUAL
from kstatpy import KSTAT_TYPE_NAMED
from kstatpy import KSTAT_TYPE_RAW
from kstatpy import hookimpl
from kstatpy import kstat_named_init
from kstatpy.kstat import KMutex
from kstatpy.records import kstat_named_setstr


def grow_bytes(k: int) -> bytes:
    size = ((k % 8) + 1) * 100
    return k.to_bytes(8, "little") + bytes((i * 7 + k) % 256 for i in range(size - 8))


def text_of(k: int) -> str:
    return "x" * ((k % 8) * 60) + str(k)


@hookimpl
def kstatpy_attach(chain):
    reads = {"grow": 0, "text": 0}

    def grow(ksp, rw):
        reads["grow"] += 1
        ksp.ks_data = grow_bytes(reads["grow"])
        ksp.ks_data_size = len(ksp.ks_data)
        return 0

    ksp = chain.kstat_create("test", 0, "grow", "misc", KSTAT_TYPE_RAW, 1, KSTAT_FLAG_VIRTUAL | KSTAT_FLAG_VAR_SIZE)
    ksp.ks_lock = KMutex()
    ksp.ks_data = grow_bytes(0)
    ksp.ks_data_size = len(ksp.ks_data)
    ksp.ks_update = grow
    chain.kstat_install(ksp)

    def text(ksp, rw):
        reads["text"] += 1
        kstat_named_setstr(ksp.ks_data[0], text_of(reads["text"]))
        ksp.ks_data[1].value = reads["text"]
        return 0

    ksp = chain.kstat_create("test", 0, "text", "misc", KSTAT_TYPE_NAMED, 2, 0)
    kstat_named_init(ksp.ks_data[0], "s", KSTAT_DATA_STRING)
    kstat_named_init(ksp.ks_data[1], "k", KSTAT_DATA_UINT64)
    kstat_named_setstr(ksp.ks_data[0], text_of(0))
    ksp.ks_update = text
    chain.kstat_install(ksp)


@hookimpl
def kstatpy_detach(chain):
    for name in ("grow", "text"):
        chain.kstat_delete_byname("test", 0, name)
