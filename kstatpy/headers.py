"""KID 0 and KID 1: the chain's own kstats (illumos ``kstat_init`` in ``kstat_fr.c``).

KID 0 is ``unix:0:kstat_headers``, a VIRTUAL VAR_SIZE RAW kstat whose data is the
HEADER map (docs/PROTOCOL.md §5) of every installed kstat visible in the reader's zone,
in KID order, itself included. Its ``ks_lock`` is the chain lock, so its update
and snapshot run with that lock held and the list is consistent; they read the
reader's zone from ``chain.caller`` (set by the driver around the read). Its
``ks_data_size`` is 184 bytes (``sizeof (kstat_t)`` on LP64) a header.

KID 1 is ``unix:0:kstat_types``: the type names with their ``KSTAT_TYPE_*`` number.
"""

from __future__ import annotations

import errno
import time

from kstatpy.constants import FLAG
from kstatpy.constants import KSTAT_WRITE
from kstatpy.constants import KstatDataType
from kstatpy.constants import KstatType
from kstatpy.kstat import Kstat
from kstatpy.kstat import KstatBuffer
from kstatpy.records import kstat_named_init

TYPE_CHECKING = False  # not typing's: kept off the embedded kstat's start-up path
if TYPE_CHECKING:
    from kstatpy.chain import Chain

__all__ = ["KSTAT_HEADER_SIZE", "KSTAT_TYPES", "install_well_known"]

#: sizeof (kstat_t) on LP64: the size of one header in KID 0's data.
KSTAT_HEADER_SIZE = 184
#: KID 1's records: (name, KSTAT_TYPE_*).
KSTAT_TYPES = (("raw", 0), ("name=value", 1), ("interrupt", 2), ("i/o", 3), ("event_timer", 4))


def install_well_known(chain: Chain) -> None:
    """Create and install KID 0 and KID 1 on a new chain; its chain id then continues from 2."""

    def headers_update(ksp: Kstat, rw: int) -> int:
        if rw == KSTAT_WRITE:
            return errno.EACCES
        ksp.ks_ndata = len(chain.visible_headers(chain.caller_zone()))
        ksp.ks_data_size = ksp.ks_ndata * KSTAT_HEADER_SIZE
        return 0

    def headers_snapshot(ksp: Kstat, buf: KstatBuffer, rw: int) -> int:
        ksp.ks_snaptime = time.monotonic_ns()
        if rw == KSTAT_WRITE:
            return errno.EACCES
        buf.data = [k.header() for k in chain.visible_headers(chain.caller_zone())]
        return 0

    hdr = chain.kstat_create(
        "unix", 0, "kstat_headers", "kstat", KstatType.RAW, 0, FLAG.VIRTUAL | FLAG.VAR_SIZE
    )
    hdr.ks_lock = chain.lock
    hdr.ks_update = headers_update
    hdr.ks_snapshot = headers_snapshot
    chain.kstat_install(hdr)
    types = chain.kstat_create("unix", 0, "kstat_types", "kstat", KstatType.NAMED, len(KSTAT_TYPES), 0)
    for knp, (name, value) in zip(types.ks_data, KSTAT_TYPES, strict=True):
        kstat_named_init(knp, name, KstatDataType.ULONG)
        knp.value = value
    chain.kstat_install(types)
