"""Block devices as ``KSTAT_TYPE_IO`` kstats (class disk), one per entry of ``sys/block``.

Naming (illumos: ``sd:0:sd0``; here the name is the Linux device so it can be found):
    module    the device family: the name without its unit part: ``sda`` -> ``sd``,
              ``vdb`` -> ``vd``, ``xvdc`` -> ``xvd``, ``nvme0n1`` -> ``nvme``,
              ``mmcblk0`` -> ``mmcblk``, ``dm-3`` -> ``dm``, ``loop7`` -> ``loop``
    instance  the unit: letters count from 0 (``sda`` 0, ``sdb`` 1, ``sdaa`` 26),
              otherwise the first number (``nvme1n2`` 1, ``loop7`` 7)
    name      the Linux device name (``sd:0:sda``, ``nvme:0:nvme0n1``)
Partitions are not published (illumos: class "partition").

Each read opens ``sys/block/NAME/stat`` only (Documentation/block/stat.rst):
    nread, nwritten  read/write sectors x 512 (the kernel's sector is 512 bytes)
    reads, writes    completed read/write requests (uint32, wrapping)
    rtime            io_ticks (ms -> ns): time with requests in flight
    rlentime         time_in_queue (ms -> ns): in-flight count x time
    rcnt             in_flight
    rlastupdate      the read's own timestamp, so the default snapshot's closing of
                     an open interval adds only the time since this read
    wtime, wlentime, wcnt, wlastupdate  0: Linux reports queued requests as in
                     flight, with no separate wait queue
"""

from __future__ import annotations

import errno
import re
import time
from typing import TYPE_CHECKING

from kstatpy_providers.system.meta import system_kstat_init
from kstatpy_providers.system.source import SysRoot
from kstatpy_providers.system.source import install_or_delete
from kstatpy_providers.system.source import os_errno

from kstatpy.constants import KSTAT_TYPE_IO
from kstatpy.constants import KSTAT_WRITE

if TYPE_CHECKING:
    from kstatpy.chain import Chain
    from kstatpy.kstat import Kstat
    from kstatpy.records import KstatIO

__all__ = ["DiskSource", "create_disk", "disk_module_instance", "disk_names", "disk_update"]

SECTOR_SIZE = 512
NS_PER_MS = 1_000_000
_LETTER_UNIT = re.compile(r"(sd|vd|xvd|hd)([a-z]+)")
_NUMBER_UNIT = re.compile(r"([A-Za-z_]+?)-?(\d+)")


def disk_module_instance(name: str) -> tuple[str, int]:
    """(module, instance) for a Linux block device name (see the module docstring)."""
    m = _LETTER_UNIT.fullmatch(name)
    if m:
        unit = 0
        for ch in m.group(2):
            unit = unit * 26 + (ord(ch) - ord("a") + 1)
        return m.group(1), unit - 1
    m = _NUMBER_UNIT.match(name)
    if m:
        return m.group(1), int(m.group(2))
    prefix = re.match(r"[A-Za-z_]+", name)
    return (prefix.group(0) if prefix else "blkdev"), 0


def disk_names(root: SysRoot) -> list[str]:
    """Whole-disk devices present: the entries of ``sys/block``."""
    return root.subdirs("sys/block")


class DiskSource:
    """One block device's ``stat`` file."""

    def __init__(self, root: SysRoot, name: str) -> None:
        self.root = root
        self.rel = f"sys/block/{name}/stat"

    def fill(self, kiop: KstatIO) -> None:
        f = [int(x) for x in self.root.read(self.rel).split()]
        now = time.monotonic_ns()
        kiop.nread = f[2] * SECTOR_SIZE
        kiop.nwritten = f[6] * SECTOR_SIZE
        kiop.reads = f[0] & 0xFFFFFFFF
        kiop.writes = f[4] & 0xFFFFFFFF
        kiop.rcnt = f[8]
        kiop.rtime = f[9] * NS_PER_MS
        kiop.rlentime = f[10] * NS_PER_MS
        kiop.rlastupdate = now


def disk_update(ksp: Kstat, rw: int) -> int:
    """ks_update of a disk kstat: refresh the kstat_io_t from the device's stat file."""
    if rw == KSTAT_WRITE:
        return errno.EACCES
    try:
        ksp.ks_private.fill(ksp.ks_data[0])
    except OSError as exc:
        return os_errno(exc)
    return 0


def create_disk(chain: Chain, root: SysRoot, name: str) -> Kstat:
    """The IO kstat of block device ``name``."""
    module, instance = disk_module_instance(name)
    ksp = chain.kstat_create(module, instance, name, "disk", KSTAT_TYPE_IO, 1, 0)
    system_kstat_init(ksp)
    ksp.ks_private = DiskSource(root, name)
    ksp.ks_update = disk_update
    return install_or_delete(chain, ksp)
