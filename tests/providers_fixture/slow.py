"""A provider whose kstats ``test:N:slow`` (N = 0..9) each take 0.12 s in ks_update, then answer.

For kstatd's read watchdog: a READ_MANY of all ten runs past a 0.3 s ``--read-timeout``
while no single provider call does; it must be answered, never taken for a hang.
"""

from __future__ import annotations

import time

from kstatpy import KSTAT_DATA_UINT64
from kstatpy import KSTAT_TYPE_NAMED
from kstatpy import hookimpl
from kstatpy import kstat_named_init

N = 10
DELAY = 0.12


def slow_update(ksp, rw):
    time.sleep(DELAY)
    ksp.ks_data[0].value += 1
    return 0


@hookimpl
def kstatpy_attach(chain):
    for i in range(N):
        ksp = chain.kstat_create("test", i, "slow", "misc", KSTAT_TYPE_NAMED, 1, 0)
        kstat_named_init(ksp.ks_data[0], "reads", KSTAT_DATA_UINT64)
        ksp.ks_update = slow_update
        chain.kstat_install(ksp)


@hookimpl
def kstatpy_detach(chain):
    for i in range(N):
        chain.kstat_delete_byname("test", i, "slow")
