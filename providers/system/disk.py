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
Loop devices with nothing attached (``size`` 0) are not published: illumos has lofi
kstats only for configured devices. One that gets a file (or loses it) is created (or
deleted) at the next refresh.

The error kstat, ``MODULEerr:N:MODULEN,err`` (class device_error), is made as the
illumos driver of its module makes it; ``iostat -e`` reads the first three records by
position as soft, hard and transport errors, so both layouts begin with them:
    Soft Errors          UINT32  no source
    Hard Errors          UINT32  SCSI ``device/ioerr_cnt`` (commands completed with an
                                 error); no source where the device has none (NVMe)
    Transport Errors     UINT32  no source
  sd, cmdk, xdf (sd.c's sd_create_errstats, struct sd_errstats):
    Vendor, Product, Revision, Serial No   CHAR[16] ``device/vendor``, ``device/model``,
                                 ``device/rev`` (else ``device/firmware_rev``),
                                 ``device/serial``
  blkdev (blkdev.c's bd_create_errstats, struct bd_errstats):
    Model                STRING  ``device/model`` of a device with no ``device/vendor``
                                 (NVMe: blkdev names what its driver gives as a model)
    or Vendor, Product   STRING  ``device/vendor``, ``device/model`` (blkdev's other branch;
                                 illumos leaves the unused slots unnamed: left out here)
    Revision, Serial No  STRING  as sd's, not cut at 16 bytes
  then, both:
    Size                 UINT64  bytes: ``size`` x 512
    Media Error, Device Not Ready, No Device, Recoverable, Illegal Request,
    Predictive Failure Analysis   UINT32  no source
The identity records are read once (they cannot change while the disk exists); empty and
no source where sysfs lacks one. Last, ``Device Name`` (STRING, e.g. ``sda``): the Linux
block device, kstatpy's addition, after illumos' records so their positions hold. lofi
has no error kstat (lofi.c creates only the IO kstat), so loop devices get none.
Partitions are not published (illumos: class "partition").

Each read opens ``sys/block/NAME/stat`` only (Documentation/block/stat.rst):
    nread, nwritten  read/write sectors x 512 (the kernel's sector is 512 bytes)
    reads, writes    completed read/write requests (uint32, wrapping)
    rtime            io_ticks (ms -> ns): time with requests in flight
    rlentime         time_in_queue (ms -> ns): in-flight count x time
    rcnt             in_flight
    rlastupdate      the read's own timestamp, so the default snapshot's closing of
                     an open interval adds only the time since this read
    wlastupdate      the same timestamp: vmstat times its disk rates with it
    wtime, wlentime, wcnt  0, marked no source: Linux reports queued requests as in
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
from kstatpy.metadata import IO_META
from kstatpy.metadata import kstat_set_meta
from kstatpy.metadata import no_source

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
#: error kstat identity records and the files under sys/block/NAME/ each is read from, once
_IDENTITY = {
    "Vendor": ("device/vendor",),
    "Product": ("device/model",),
    "Model": ("device/model",),
    "Revision": ("device/rev", "device/firmware_rev"),
    "Serial No": ("device/serial",),
}
_ERRORS = (("Soft Errors", KSTAT_DATA_UINT32), ("Hard Errors", KSTAT_DATA_UINT32),
           ("Transport Errors", KSTAT_DATA_UINT32))  # fmt: skip
_REQUEST_ERRORS = (
    ("Size", KSTAT_DATA_UINT64), ("Media Error", KSTAT_DATA_UINT32), ("Device Not Ready", KSTAT_DATA_UINT32),
    ("No Device", KSTAT_DATA_UINT32), ("Recoverable", KSTAT_DATA_UINT32), ("Illegal Request", KSTAT_DATA_UINT32),
    ("Predictive Failure Analysis", KSTAT_DATA_UINT32),
)  # fmt: skip
#: the sd error kstat's records in sd's order (sddef.h), then kstatpy's Device Name
ERR_FIELDS = (
    *_ERRORS, ("Vendor", KSTAT_DATA_CHAR), ("Product", KSTAT_DATA_CHAR), ("Revision", KSTAT_DATA_CHAR),
    ("Serial No", KSTAT_DATA_CHAR), *_REQUEST_ERRORS, ("Device Name", KSTAT_DATA_STRING),
)  # fmt: skip
#: the blkdev error kstat's records (struct bd_errstats' order; the unnamed slots left out)
BLKDEV_ERR_FIELDS = {
    "Model": (*_ERRORS, ("Model", KSTAT_DATA_STRING), ("Revision", KSTAT_DATA_STRING),
              ("Serial No", KSTAT_DATA_STRING), *_REQUEST_ERRORS, ("Device Name", KSTAT_DATA_STRING)),
    "Vendor": (*_ERRORS, ("Vendor", KSTAT_DATA_STRING), ("Product", KSTAT_DATA_STRING),
               ("Revision", KSTAT_DATA_STRING), ("Serial No", KSTAT_DATA_STRING), *_REQUEST_ERRORS,
               ("Device Name", KSTAT_DATA_STRING)),
}  # fmt: skip
#: modules whose disks have no error kstat (illumos' lofi.c creates none)
NO_ERR_MODULES = ("lofi",)
#: IO kstat fields Linux has no source for (kstat_io_t's wait queue)
IO_ABSENT = ("wtime", "wlentime", "wcnt")


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
    """Whole-disk devices present: the entries of ``sys/block``, loop devices only
    while something is attached (``size`` not 0)."""
    return [n for n in root.subdirs("sys/block") if not _LOOP.fullmatch(n) or _loop_attached(root, n)]


def _loop_attached(root: SysRoot, name: str) -> bool:
    # Read by name each time (no kept-open file): a refresh must see a new attach at once.
    try:
        with open(root.join(f"sys/block/{name}/size"), "rb") as f:
            return int(f.read()) > 0
    except (OSError, ValueError):
        return False


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
        kiop.rlastupdate = kiop.wlastupdate = now


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

    def __init__(self, root: SysRoot, name: str, identity: dict[str, Any], size: bool, errors: bool) -> None:
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


def err_fields(root: SysRoot, name: str, module: str) -> tuple[tuple[str, int], ...]:
    """The error kstat's records for block device ``name`` of ``module``, as its illumos
    driver makes them: blkdev's Model layout for a device with a model and no vendor."""
    if module != "blkdev":
        return ERR_FIELDS
    model = root.exists(f"sys/block/{name}/device/model") and not root.exists(f"sys/block/{name}/device/vendor")
    return BLKDEV_ERR_FIELDS["Model" if model else "Vendor"]


def _create_err(chain: Chain, root: SysRoot, name: str, module: str, instance: int, origin: int | None) -> Kstat:
    fields = err_fields(root, name, module)
    identity: dict[str, Any] = {}
    absent = ["Soft Errors", "Transport Errors", *(f for f, _ in _REQUEST_ERRORS[1:])]
    for record, data_type in fields:
        rels = _IDENTITY.get(record)
        if rels is None:
            continue
        for rel in rels:
            try:
                value = root.read_bytes(f"sys/block/{name}/{rel}").strip()
                break
            except OSError:
                continue
        else:
            absent.append(record)
            continue
        # CHAR holds 16 bytes (sd's); STRING the whole text (blkdev's)
        identity[record] = value[:16] if data_type == KSTAT_DATA_CHAR else value.decode("utf-8", "replace")
    root.forget(f"sys/block/{name}/device/")  # read once: do not keep them open
    size = root.exists(f"sys/block/{name}/size")
    if not size:
        absent.append("Size")
    errors = root.exists(f"sys/block/{name}/device/ioerr_cnt")
    if not errors:
        absent.append("Hard Errors")
    source = DiskErrSource(root, name, identity, size, errors)
    ename = f"{module}{instance},err"
    return create_named(chain, f"{module}err", instance, ename, "device_error", list(fields), source,
                        crtime=origin, absent=absent)  # fmt: skip


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
        kstat_set_meta(ksp, {f: no_source(IO_META[f]) for f in IO_ABSENT})
        ksp.ks_private = DiskSource(root, name)
        ksp.ks_update = disk_update
        made.append(install_or_delete(chain, ksp))
    try:
        if err and module not in NO_ERR_MODULES:
            made.append(_create_err(chain, root, name, module, instance, origin))
    except BaseException:
        for ksp in made:
            chain.kstat_delete(ksp)
        raise
    return made
