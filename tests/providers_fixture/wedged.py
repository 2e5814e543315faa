"""A provider whose ``test:0:wedged`` kstat blocks in ks_update for good, detach included.

A model of a provider that never returns: kstatd must still answer other readers
and still exit when asked (``--detach-timeout``).
"""

from __future__ import annotations

import threading

from kstatpy import KSTAT_TYPE_NAMED
from kstatpy import hookimpl

_NEVER = threading.Event()  # never set; waits are bounded so a leaked process ends


def _wedged(ksp, rw):
    _NEVER.wait(300)
    return 0


@hookimpl
def kstatpy_attach(chain):
    ksp = chain.kstat_create("test", 0, "wedged", "misc", KSTAT_TYPE_NAMED, 0, 0)
    ksp.ks_update = _wedged
    chain.kstat_install(ksp)


@hookimpl
def kstatpy_detach(chain):
    chain.kstat_delete_byname("test", 0, "wedged")
