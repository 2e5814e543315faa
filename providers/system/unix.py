"""``unix:0:system_misc`` and ``unix:0:system_pages`` from /proc.

system_misc (class misc, every record UINT32, values wrap at 2**32 as in illumos)
    ncpus        CPUs present: ``sys/devices/system/cpu/present`` (illumos counts
                 off-line CPUs too)
    lbolt        clock ticks since boot: ``proc/uptime`` x USER_HZ
    clk_intr     clock interrupts since boot: the same tick count (Linux keeps no
                 separate counter of the tick interrupt)
    nproc        processes: numeric entries of ``proc/``. The listing is taken again
                 only when ``proc/loadavg``'s last PID (every task created takes a
                 new one, in the reader's PID namespace, which is /proc's) or its task
                 count moved since the last one: a process cannot come without the
                 first nor go without the second, so an unchanged pair means an
                 unchanged count.
    avenrun_*    ``proc/loadavg`` x 256 (illumos fixed point, FSHIFT 8)
    boot_time    ``btime`` of ``proc/stat`` (epoch seconds), read when the kstat is
                 created: the boot does not move (Linux recomputes ``btime`` from
                 the wall clock, so it may step by a second when the clock is set)
    nsec_per_tick  10**9 / USER_HZ, the unit of every /proc tick counter
    deficit, vac  0, marked no source (kstatpy.metadata.no_source): Linux has no
                 memory "deficit" (illumos' pages the scheduler expects to be taken)
                 nor a virtual address cache; vmstat's ``de`` column reads deficit
    crtime is the boot (lbolt and clk_intr count from there).

system_pages (class pages, every record ULONG, in pages of ``SC_PAGE_SIZE``)
    physmem, pagestotal  MemTotal;  freemem, pagesfree  MemFree
    pp_kernel    Slab + KernelStack + PageTables + Percpu (+ SecPageTables), plus
                 the ZFS ARC's ``size`` (``proc/spl/kstat/zfs/arcstats``) where
                 OpenZFS is loaded: memory the kernel holds for itself (illumos'
                 ARC is kernel memory; Linux counts its buffers nowhere in meminfo)
    pageslocked  what illumos' kstat_fr.c publishes: availrmem_initial - availrmem,
                 the resident memory taken since the kernel came up, by the kernel
                 and by locked pages: pp_kernel + Mlocked. (availrmem_initial is
                 physmem here: MemTotal already leaves out the kernel image.)
                 So collectd's kernel memory, min(pp_kernel, pageslocked) - ARC,
                 is Linux's kernel memory, never negative
    availrmem    physmem - pageslocked: memory that could still be locked down
                 (illumos: available resident memory)
    lotsfree     sum of the zones' ``high`` watermarks (``proc/zoneinfo``): the free
                 level kswapd reclaims up to
    desfree      sum of the zones' ``low`` watermarks: below it kswapd wakes
    minfree      ``proc/sys/vm/min_free_kbytes`` (the sum of the ``min`` watermarks)
    Records whose source the host lacks are left out (decided at attach). Left out
    as having no Linux counterpart: nalloc, nfree, nalloc_calls, nfree_calls,
    kernelbase, econtig, fastscan, slowscan, nscan, desscan, low_mem_scan,
    zone_cap_scan, n_throttle.
"""

from __future__ import annotations

import os

from kstatpy_providers.system.source import SysRoot
from kstatpy_providers.system.source import create_named
from kstatpy_providers.system.source import find_ints
from kstatpy_providers.system.source import parse_cpu_list

from kstatpy.constants import KSTAT_DATA_UINT32
from kstatpy.constants import KSTAT_DATA_ULONG

TYPE_CHECKING = False  # not typing's: kept off the embedded kstat's start-up path
if TYPE_CHECKING:
    from typing import Any

    from kstatpy.chain import Chain
    from kstatpy.kstat import Kstat

__all__ = ["FSCALE", "MiscSource", "PagesSource", "create_system_misc", "create_system_pages", "present_cpus"]

#: illumos load averages are fixed point with FSHIFT = 8.
FSCALE = 1 << 8

#: system_misc records in illumos' order (uts/common/os/clock.c); deficit and vac have no source.
MISC_FIELDS = (
    "ncpus", "lbolt", "deficit", "clk_intr", "vac", "nproc", "avenrun_1min", "avenrun_5min",
    "avenrun_15min", "boot_time", "nsec_per_tick",
)  # fmt: skip
MISC_ABSENT = ("deficit", "vac")
#: OpenZFS' ARC statistics (``size``: bytes the ARC holds)
ARCSTATS = "proc/spl/kstat/zfs/arcstats"

#: system_pages records in illumos' order.
PAGES_ORDER = (
    "physmem", "freemem", "availrmem", "lotsfree", "desfree", "minfree", "pp_kernel",
    "pagesfree", "pageslocked", "pagestotal",
)  # fmt: skip
_KERNEL_KEYS = ("Slab", "KernelStack", "PageTables", "Percpu", "SecPageTables")
_MEMINFO_KEYS = tuple(f"{k}:".encode() for k in ("MemTotal", "MemFree", "Mlocked", *_KERNEL_KEYS))
#: record -> meminfo keys it needs (zoneinfo and min_free_kbytes are checked apart)
_PAGES_NEEDS: dict[str, tuple[str, ...]] = {
    "physmem": ("MemTotal",),
    "freemem": ("MemFree",),
    "availrmem": ("MemTotal", "Mlocked", *_KERNEL_KEYS[:4]),
    "pp_kernel": _KERNEL_KEYS[:4],
    "pagesfree": ("MemFree",),
    "pageslocked": ("Mlocked",),
    "pagestotal": ("MemTotal",),
}


def hz() -> int:
    """USER_HZ: the tick of /proc's counters."""
    return os.sysconf("SC_CLK_TCK")


def present_cpus(root: SysRoot) -> list[int]:
    """CPU ids present: ``present``, else the ``cpuN`` directories."""
    try:
        return parse_cpu_list(root.read("sys/devices/system/cpu/present"))
    except FileNotFoundError:
        names = root.listdir("sys/devices/system/cpu")
        return sorted(int(n[3:]) for n in names if n.startswith("cpu") and n[3:].isdigit())


def boot_time(root: SysRoot) -> int:
    """``btime`` of proc/stat: epoch seconds at boot."""
    for line in root.read("proc/stat").splitlines():
        if line.startswith("btime "):
            return int(line.split()[1])
    raise OSError(0, "proc/stat has no btime line")


def _field_after(data: bytes, key: bytes) -> int:
    # The integer after ``key`` (which starts a line) in a /proc file.
    at = data.find(key)
    if at < 0:
        raise OSError(0, f"no {key.decode().strip()!r} line")
    at += len(key)
    return int(data[at : data.find(b"\n", at)])


class MiscSource:
    """system_misc's source: three small files a read, ``proc/`` listed only on a change."""

    def __init__(self, root: SysRoot) -> None:
        self.root = root
        self.ticks_per_sec = hz()
        self.boot_time = _field_after(root.read_bytes("proc/stat"), b"\nbtime ")
        self.nproc_key: tuple[bytes, bytes] | None = None
        self.nproc = 0
        self.listings = 0  # how many reads listed proc/ (benchmarks report it)
        self.present: tuple[bytes, int] = (b"", 0)  # the last ``present`` text and its count

    def _ncpus(self, text: bytes) -> int:
        if text != self.present[0]:
            self.present = (text, len(parse_cpu_list(text.decode())))
        return self.present[1]

    def values(self) -> dict[str, Any]:
        root = self.root
        ticks_per_sec = self.ticks_per_sec
        uptime = float(root.read_bytes("proc/uptime").split(None, 1)[0])
        loads = root.read_bytes("proc/loadavg").split()
        key = (loads[3].partition(b"/")[2], loads[4])  # total tasks, the last PID allocated
        if key != self.nproc_key:
            self.nproc = sum(1 for n in root.listdir("proc") if n.isdigit())
            self.listings += 1
            self.nproc_key = key
        lbolt = int(uptime * ticks_per_sec)
        return {
            "ncpus": self._ncpus(root.read_bytes("sys/devices/system/cpu/present")),
            "lbolt": lbolt,
            "clk_intr": lbolt,
            "nproc": self.nproc,
            "avenrun_1min": round(float(loads[0]) * FSCALE),
            "avenrun_5min": round(float(loads[1]) * FSCALE),
            "avenrun_15min": round(float(loads[2]) * FSCALE),
            "boot_time": self.boot_time,
            "nsec_per_tick": 1_000_000_000 // ticks_per_sec,
        }


def meminfo_kb(text: str) -> dict[str, int]:
    """``/proc/meminfo`` as {key: kB}."""
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            out[key.strip()] = int(parts[0])
    return out


_WATERMARKS = (b"\n        min ", b"\n        low ", b"\n        high ")


def zone_watermarks(data: bytes) -> tuple[int, int, int]:
    """Sums over ``/proc/zoneinfo``'s zones of the (min, low, high) watermarks, in pages.

    The zones' lines are "        min      46" (8 spaces: mm/vmstat.c); the per-CPU
    pagesets' "              high:  0" is indented further and has a colon.
    """
    sums = []
    for key in _WATERMARKS:
        total = 0
        at = data.find(key)
        while at >= 0:
            at += len(key)
            end = data.find(b"\n", at)
            total += int(data[at:end])
            at = data.find(key, end)
        sums.append(total)
    return sums[0], sums[1], sums[2]


class PagesSource:
    """system_pages' source: ``proc/meminfo``, and the watermark files when listed."""

    def __init__(self, root: SysRoot, fields: list[str]) -> None:
        self.root = root
        self.fields = fields
        self.pagesize = os.sysconf("SC_PAGE_SIZE")
        self.zoneinfo = "lotsfree" in fields or "desfree" in fields
        self.minfree = "minfree" in fields
        self.arc = root.exists(ARCSTATS)

    def _arc_pages(self) -> int:
        data = self.root.read_bytes(ARCSTATS)
        at = data.find(b"\nsize ")
        if at < 0:
            return 0
        return int(data[at + 1 : data.find(b"\n", at + 1)].split()[2]) // self.pagesize

    def values(self) -> dict[str, Any]:
        root = self.root
        kb_per_page = self.pagesize // 1024
        found = find_ints(root.read_bytes("proc/meminfo"), _MEMINFO_KEYS)
        m = {k[:-1].decode(): v for k, v in found.items()}
        out: dict[str, int] = {}
        if "MemTotal" in m:
            out["physmem"] = out["pagestotal"] = m["MemTotal"] // kb_per_page
        if "MemFree" in m:
            out["freemem"] = out["pagesfree"] = m["MemFree"] // kb_per_page
        kernel = sum(m.get(k, 0) for k in _KERNEL_KEYS) // kb_per_page
        if self.arc:
            kernel += self._arc_pages()
        out["pp_kernel"] = kernel
        out["pageslocked"] = locked = kernel + m.get("Mlocked", 0) // kb_per_page
        out["availrmem"] = max(0, out.get("physmem", 0) - locked)
        if self.zoneinfo:
            _, out["desfree"], out["lotsfree"] = zone_watermarks(root.read_bytes("proc/zoneinfo"))
        if self.minfree:
            out["minfree"] = root.read_int("proc/sys/vm/min_free_kbytes") // kb_per_page
        return out


def create_system_misc(chain: Chain, root: SysRoot, origin: int) -> Kstat:
    """unix:0:system_misc (crtime ``origin``, the boot)."""
    source = MiscSource(root)
    fields = [(f, KSTAT_DATA_UINT32) for f in MISC_FIELDS]
    return create_named(chain, "unix", 0, "system_misc", "misc", fields, source, crtime=origin, absent=MISC_ABSENT)


def create_system_pages(chain: Chain, root: SysRoot) -> Kstat | None:
    """unix:0:system_pages with the records this host has a source for (None: no meminfo)."""
    try:
        have = set(meminfo_kb(root.read("proc/meminfo")))
    except FileNotFoundError:
        return None
    fields = []
    for name in PAGES_ORDER:
        if name in ("lotsfree", "desfree"):
            ok = root.exists("proc/zoneinfo")
        elif name == "minfree":
            ok = root.exists("proc/sys/vm/min_free_kbytes")
        else:
            ok = all(k in have for k in _PAGES_NEEDS[name])
        if ok:
            fields.append(name)
    if not fields:
        return None
    return create_named(
        chain, "unix", 0, "system_pages", "pages", [(n, KSTAT_DATA_ULONG) for n in fields], PagesSource(root, fields)
    )
