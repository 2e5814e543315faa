"""Block devices as ``KSTAT_TYPE_IO`` kstats (class disk), one per entry of ``sys/block``.

Naming, as illumos names disks: name = module + instance (``sd:0:sd0``).
    module    ``sd`` for SCSI/SATA/USB disks (``sdX``), ``cmdk`` for ``hdX``, ``xdf``
              for Xen's ``xvdX``, ``lofi`` for ``loopN``, and ``blkdev`` for every
              other block device (``nvmeXnY``, virtio ``vdX``, ``mmcblkN``, ``dm-N``,
              ``mdN``, ``zramN``, ...), as illumos' NVMe and virtio disks are blkdev
    instance  for sd, cmdk and xdf the unit letters counted from 0 (``sda`` 0,
              ``sdb`` 1, ``sdaa`` 26); for lofi the number; for blkdev the next
              free instance, given in the order (vd, nvme, mmcblk, others; then by
              name) at attach and at first sight on a hotplug, and kept for that
              Linux name while the provider runs (as illumos' path_to_inst)
    name      module + instance: ``sd0``, ``blkdev1``
The Linux device name is in the disk's error kstat, ``MODULEerr:N:MODULEN,err`` (class
device_error, as illumos' sderr): ``Device Name`` (STRING, e.g. ``sda``), then, where
sysfs has them, ``Vendor``, ``Product``, ``Revision``, ``Serial No`` (CHAR, from
``device/vendor``, ``device/model``, ``device/rev``, ``device/serial``, read once:
they cannot change while the disk exists), ``Size`` (UINT64 bytes, ``size`` x 512)
and ``Hard Errors`` (UINT32, SCSI ``device/ioerr_cnt``). illumos' other error
counters have no Linux source and are left out. Partitions are not published
(illumos: class "partition").

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

from kstatpy_providers.system.source import SysRoot
from kstatpy_providers.system.source import create_named
from kstatpy_providers.system.source import date_kstat
from kstatpy_providers.system.source import install_or_delete
from kstatpy_providers.system.source import os_errno

from kstatpy.constants import KSTAT_DATA_CHAR
from kstatpy.constants import KSTAT_DATA_STRING
from kstatpy.constants import KSTAT_DATA_UINT32
from kstatpy.constants import KSTAT_DATA_UINT64
from kstatpy.constants import KSTAT_TYPE_IO
from kstatpy.constants import KSTAT_WRITE

TYPE_CHECKING = False  # not typing's: kept off the embedded kstat's start-up path
if TYPE_CHECKING:
    from typing import Any

    from kstatpy.chain import Chain
    from kstatpy.kstat import Kstat
    from kstatpy.records import KstatIO

__all__ = ["DiskNamer", "DiskSource", "create_disk", "disk_module_instance", "disk_names", "disk_update"]

SECTOR_SIZE = 512
NS_PER_MS = 1_000_000
_LETTER_UNIT = re.compile(r"(sd|hd|xvd)([a-z]+)")
_LETTER_MODULE = {"sd": "sd", "hd": "cmdk", "xvd": "xdf"}
_LOOP = re.compile(r"loop(\d+)")
_BLKDEV_ORDER = ("vd", "nvme", "mmcblk")
#: error kstat record, type, file under sys/block/NAME/ read once (None: read each time)
_IDENTITY = (
    ("Vendor", "device/vendor"),
    ("Product", "device/model"),
    ("Revision", "device/rev"),
    ("Serial No", "device/serial"),
)


def disk_module_instance(name: str) -> tuple[str, int | None]:
    """(module, instance) for a Linux block device name; instance None: blkdev allocates."""
    m = _LETTER_UNIT.fullmatch(name)
    if m:
        unit = 0
        for ch in m.group(2):
            unit = unit * 26 + (ord(ch) - ord("a") + 1)
        return _LETTER_MODULE[m.group(1)], unit - 1
    m = _LOOP.fullmatch(name)
    if m:
        return "lofi", int(m.group(1))
    return "blkdev", None


def _blkdev_key(name: str) -> tuple[int, str]:
    for i, prefix in enumerate(_BLKDEV_ORDER):
        if name.startswith(prefix):
            return i, name
    return len(_BLKDEV_ORDER), name


class DiskNamer:
    """Linux name -> (module, instance), kept for the provider's life (path_to_inst)."""

    def __init__(self) -> None:
        self.assigned: dict[str, tuple[str, int]] = {}

    def name_all(self, names: list[str]) -> None:
        """Give instances to the new ``names`` in the documented order."""
        for name in sorted(names, key=_blkdev_key):
            self.instance(name)

    def instance(self, name: str) -> tuple[str, int]:
        got = self.assigned.get(name)
        if got is None:
            module, inst = disk_module_instance(name)
            if inst is None:
                used = {i for m, i in self.assigned.values() if m == module}
                inst = 0
                while inst in used:
                    inst += 1
            got = self.assigned[name] = (module, inst)
        return got


def disk_names(root: SysRoot) -> list[str]:
    """Whole-disk devices present: the entries of ``sys/block``."""
    return root.subdirs("sys/block")


class DiskSource:
    """One block device's ``stat`` file."""

    def __init__(self, root: SysRoot, name: str) -> None:
        self.root = root
        self.rel = f"sys/block/{name}/stat"

    def fill(self, kiop: KstatIO) -> None:
        f = [int(x) for x in self.root.read_bytes(self.rel).split()]
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


class DiskErrSource:
    """The error kstat's values: identity read once, size and errors each read."""

    def __init__(self, root: SysRoot, name: str, identity: dict[str, bytes], size: bool, errors: bool) -> None:
        self.root = root
        self.dir = f"sys/block/{name}/"
        self.values_fixed: dict[str, Any] = {"Device Name": name, **identity}
        self.size = size
        self.errors = errors

    def values(self) -> dict[str, Any]:
        out = dict(self.values_fixed)
        if self.size:
            out["Size"] = self.root.read_int(self.dir + "size") * SECTOR_SIZE
        if self.errors:
            out["Hard Errors"] = int(self.root.read(self.dir + "device/ioerr_cnt").strip(), 0)
        return out


def _create_err(chain: Chain, root: SysRoot, name: str, module: str, instance: int, origin: int | None) -> Kstat:
    identity: dict[str, bytes] = {}
    fields: list[tuple[str, int]] = [("Device Name", KSTAT_DATA_STRING)]
    for record, rel in _IDENTITY:
        try:
            value = root.read_bytes(f"sys/block/{name}/{rel}").strip()
        except OSError:
            continue
        identity[record] = value[:16]
        fields.append((record, KSTAT_DATA_CHAR))
    root.forget(f"sys/block/{name}/device/")  # read once: do not keep them open
    size = root.exists(f"sys/block/{name}/size")
    if size:
        fields.append(("Size", KSTAT_DATA_UINT64))
    errors = root.exists(f"sys/block/{name}/device/ioerr_cnt")
    if errors:
        fields.append(("Hard Errors", KSTAT_DATA_UINT32))
    source = DiskErrSource(root, name, identity, size, errors)
    ename = f"{module}{instance},err"
    return create_named(chain, f"{module}err", instance, ename, "device_error", fields, source, crtime=origin)


def create_disk(
    chain: Chain, root: SysRoot, name: str, origin: int | None, namer: DiskNamer, io: bool = True, err: bool = True
) -> list[Kstat]:
    """The IO kstat of block device ``name`` and its error kstat (``io``/``err``: which of the two).

    ``origin``: crtime for a disk present at attach (its counters count from boot).
    """
    module, instance = namer.instance(name)
    made: list[Kstat] = []
    if io:
        ksp = chain.kstat_create(module, instance, f"{module}{instance}", "disk", KSTAT_TYPE_IO, 1, 0)
        date_kstat(ksp, origin)
        ksp.ks_private = DiskSource(root, name)
        ksp.ks_update = disk_update
        made.append(install_or_delete(chain, ksp))
    try:
        if err:
            made.append(_create_err(chain, root, name, module, instance, origin))
    except BaseException:
        for ksp in made:
            chain.kstat_delete(ksp)
        raise
    return made
