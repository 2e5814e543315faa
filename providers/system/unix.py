"""``unix:0:system_misc`` and ``unix:0:system_pages`` from /proc.

system_misc (class misc, every record UINT32, values wrap at 2**32 as in illumos)
    ncpus        CPUs present: ``sys/devices/system/cpu/present`` (illumos counts
                 off-line CPUs too)
    lbolt        clock ticks since boot: ``proc/uptime`` x USER_HZ
    clk_intr     clock interrupts since boot: the same tick count (Linux keeps no
                 separate counter of the tick interrupt)
    nproc        processes: numeric entries of ``proc/`` (a directory listing)
    avenrun_*    ``proc/loadavg`` x 256 (illumos fixed point, FSHIFT 8)
    boot_time    ``btime`` of ``proc/stat`` (epoch seconds)
    nsec_per_tick  10**9 / USER_HZ, the unit of every /proc tick counter
    deficit and vac have no Linux meaning and are left out.

system_pages (class pages, every record ULONG, in pages of ``SC_PAGE_SIZE``)
    physmem, pagestotal  MemTotal;  freemem, pagesfree  MemFree;
    pageslocked  Mlocked;  minfree  ``proc/sys/vm/min_free_kbytes``.
    Records whose source the host lacks are left out (decided at attach); the
    other illumos records (availrmem, lotsfree, desfree, scanner counters, ...)
    have no Linux counterpart and are left out.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from typing import Any

from kstatpy_providers.system.source import SysRoot
from kstatpy_providers.system.source import create_named
from kstatpy_providers.system.source import parse_cpu_list

from kstatpy.constants import KSTAT_DATA_UINT32
from kstatpy.constants import KSTAT_DATA_ULONG

if TYPE_CHECKING:
    from kstatpy.chain import Chain
    from kstatpy.kstat import Kstat

__all__ = ["FSCALE", "MiscSource", "PagesSource", "create_system_misc", "create_system_pages", "present_cpus"]

#: illumos load averages are fixed point with FSHIFT = 8.
FSCALE = 1 << 8

MISC_FIELDS = (
    "ncpus", "lbolt", "clk_intr", "nproc", "avenrun_1min", "avenrun_5min", "avenrun_15min",
    "boot_time", "nsec_per_tick",
)  # fmt: skip

# illumos record -> (file, meminfo key or None for a kB file)
PAGES_SOURCES = (
    ("physmem", "proc/meminfo", "MemTotal"),
    ("freemem", "proc/meminfo", "MemFree"),
    ("minfree", "proc/sys/vm/min_free_kbytes", None),
    ("pagesfree", "proc/meminfo", "MemFree"),
    ("pageslocked", "proc/meminfo", "Mlocked"),
    ("pagestotal", "proc/meminfo", "MemTotal"),
)


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


class MiscSource:
    """system_misc's source: four small files and one directory listing a read."""

    def __init__(self, root: SysRoot) -> None:
        self.root = root

    def values(self) -> dict[str, Any]:
        root = self.root
        ticks_per_sec = hz()
        uptime = float(root.read("proc/uptime").split()[0])
        loads = root.read("proc/loadavg").split()
        lbolt = int(uptime * ticks_per_sec)
        return {
            "ncpus": len(present_cpus(root)),
            "lbolt": lbolt,
            "clk_intr": lbolt,
            "nproc": sum(1 for n in root.listdir("proc") if n.isdigit()),
            "avenrun_1min": round(float(loads[0]) * FSCALE),
            "avenrun_5min": round(float(loads[1]) * FSCALE),
            "avenrun_15min": round(float(loads[2]) * FSCALE),
            "boot_time": boot_time(root),
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


class PagesSource:
    """system_pages' source: ``proc/meminfo`` (and min_free_kbytes when listed)."""

    def __init__(self, root: SysRoot, fields: list[tuple[str, str, str | None]]) -> None:
        self.root = root
        self.fields = fields
        self.pagesize = os.sysconf("SC_PAGE_SIZE")

    def values(self) -> dict[str, Any]:
        cache: dict[str, Any] = {}
        out = {}
        for name, rel, key in self.fields:
            if rel not in cache:
                cache[rel] = meminfo_kb(self.root.read(rel)) if key else self.root.read_int(rel)
            kb = cache[rel][key] if key else cache[rel]
            out[name] = kb * 1024 // self.pagesize
        return out


def create_system_misc(chain: Chain, root: SysRoot) -> Kstat:
    """unix:0:system_misc."""
    source = MiscSource(root)
    return create_named(chain, "unix", 0, "system_misc", "misc", [(f, KSTAT_DATA_UINT32) for f in MISC_FIELDS], source)


def create_system_pages(chain: Chain, root: SysRoot) -> Kstat | None:
    """unix:0:system_pages with the records this host has a source for (None: no meminfo)."""
    try:
        have = set(meminfo_kb(root.read("proc/meminfo")))
    except FileNotFoundError:
        return None
    fields = [(name, rel, key) for name, rel, key in PAGES_SOURCES if (key in have if key else root.exists(rel))]
    if not fields:
        return None
    return create_named(
        chain,
        "unix",
        0,
        "system_pages",
        "pages",
        [(n, KSTAT_DATA_ULONG) for n, _, _ in fields],
        PagesSource(root, fields),
    )
