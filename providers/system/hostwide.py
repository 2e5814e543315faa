"""Host-wide kstats illumos' own tools look up: dnlcstats, kmem caches, kmem_oversize, the global zone.

vmstat (acquire.c) retries forever without ``unix:0:dnlcstats``; sadc exits without
``unix:0:file_cache``, a ``kmem_cache`` class kstat and ``vmem::kmem_oversize``. So
each is published; a statistic with no Linux source reads 0 and is marked no source
(kstatpy.metadata.no_source). Every record is UINT64 unless said otherwise.

unix:0:dnlcstats (class misc): illumos' directory name lookup cache counters, all 28
    of struct nc_stats with dnlc.c's names: vmstat reads the kstat into that struct and
    takes hits and misses by position. Linux's dcache keeps no hit or miss counts:
    every one has no source.

unix:0:file_cache (class kmem_cache): the open file table, ``proc/sys/fs/file-nr``
    ("allocated unused max"): buf_total allocated, buf_avail unused, buf_inuse
    allocated - unused (sar -v's file-sz: buf_total - buf_avail).

unix:0:NAME (class kmem_cache), one per cache of ``proc/slabinfo`` (version 2.x), when
    it is readable (root) at attach (240 kstats here: 30-90 ms of the attach on a loaded
    host); a cache created later (a module loaded) gets its kstat at the next refresh,
    one destroyed loses it (:class:`SlabCaches`). From its line
    (active_objs num_objs objsize objperslab pagesperslab ... num_slabs):
    buf_size objsize; slab_size pagesperslab x page size; chunk_size slab_size /
    objperslab; buf_inuse active_objs; buf_total num_objs; buf_avail num_objs -
    active_objs; slab_create num_slabs (a gauge: Linux counts slabs, not their
    creations; slab_destroy has no source, so sadc's (slab_create - slab_destroy) x
    slab_size is the cache's memory). A cache that left reads its last values until the
    next refresh deletes its kstat.

vmem:0:kmem_oversize (class vmem): illumos' arena for large allocations; Linux serves
    them from the page allocator without counting them: every statistic has no source.

zones:0:global (class zone_misc): the global zone is the host.
    zonename "global" (STRING); pgpgin, anonpgin from ``proc/vmstat`` pgpgin (kB ->
    pages) and pswpin; nsec_user, nsec_sys from the ``cpu`` line of ``proc/stat``
    (user + nice; system + irq + softirq + steal; ticks -> ns), as cpu:N:sys; avenrun_*
    ``proc/loadavg`` x 256; init_pid 1; boot_time ``btime``. No source: execpgin,
    fspgin, anon_alloc_fail, n_pf_throttle, n_pf_throttle_usec, nsec_waitrq,
    forkfail_*, nested_interp.
"""

from __future__ import annotations

import os

from kstatpy_providers.system.source import SysRoot
from kstatpy_providers.system.source import create_named
from kstatpy_providers.system.source import find_ints

from kstatpy.constants import KSTAT_DATA_STRING
from kstatpy.constants import KSTAT_DATA_UINT32
from kstatpy.constants import KSTAT_DATA_UINT64
from kstatpy.metadata import gauge
from kstatpy.metadata import no_source

TYPE_CHECKING = False  # not typing's: kept off the embedded kstat's start-up path
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from kstatpy.chain import Chain
    from kstatpy.kstat import Kstat

__all__ = ["DNLC_FIELDS", "KMEM_FIELDS", "SlabCaches", "create_hostwide", "create_slab_cache", "slab_lines"]

#: unix:0:dnlcstats: dnlc.c's names of struct nc_stats' 28 records, in its order
#: (uts/common/sys/dnlc.h): acquire.c kstat_reads the kstat into that struct
DNLC_FIELDS = (
    "hits", "misses", "negative_cache_hits", "enters", "double_enters", "purge_total_entries",
    "purge_all", "purge_vp", "purge_vfs", "purge_fs1", "pick_free", "pick_heuristic", "pick_last",
    "dir_hits", "dir_misses", "dir_cached_current", "dir_entries_cached_current", "dir_cached_total",
    "dir_start_no_memory", "dir_add_no_memory", "dir_add_abort", "dir_add_max", "dir_remove_entry_fail",
    "dir_remove_space_fail", "dir_update_fail", "dir_fini_purge", "dir_reclaim_last", "dir_reclaim_any",
)  # fmt: skip
#: a kmem cache's statistics in illumos' order (uts/common/os/kmem.c, kmem_cache_kstat), up
#: to slab_destroy: every one sadc reads (it finds their positions in the first cache and
#: reads every cache at those); the rest (vmem_source ... move_reclaimable) are left out
KMEM_FIELDS = (
    "buf_size", "align", "chunk_size", "slab_size", "alloc", "alloc_fail", "free", "depot_alloc",
    "depot_free", "depot_contention", "slab_alloc", "slab_free", "buf_constructed", "buf_avail",
    "buf_inuse", "buf_total", "buf_max", "slab_create", "slab_destroy",
)  # fmt: skip
#: metadata of a kmem cache's statistics with a source (create_named's ``meta``); the unit
#: "objects" also keeps the exporter's name of the gauge buf_total off the counters' "_total"
KMEM_META = {
    "buf_size": gauge("bytes", "object size (slabinfo objsize)"),
    "chunk_size": gauge("bytes", "slab size / objects per slab"),
    "slab_size": gauge("bytes", "slab size (pagesperslab x page size)"),
    "buf_avail": gauge("objects", "objects free (num_objs - active_objs; file-nr: unused)"),
    "buf_inuse": gauge("objects", "objects in use (active_objs; file-nr: allocated - unused)"),
    "buf_total": gauge("objects", "objects allocated (num_objs; file-nr: allocated)"),
    "slab_create": gauge("count", "slabs now (num_slabs: Linux counts slabs, not their creations)"),
}
_SLAB_SOURCED = ("buf_size", "chunk_size", "slab_size", "buf_avail", "buf_inuse", "buf_total", "slab_create")
_FILE_SOURCED = ("buf_avail", "buf_inuse", "buf_total")
#: vmem:0:kmem_oversize, in vmem_kstat_t's order (uts/common/sys/vmem_impl.h)
VMEM_FIELDS = (
    "mem_inuse", "mem_import", "mem_total", "vmem_source", "alloc", "free", "wait", "fail",
    "lookup", "search", "populate_fail", "contains", "contains_search",
)  # fmt: skip
#: zones:0:global, in zone_misc_kstat's order (uts/common/os/zone.c)
ZONE_FIELDS = (
    ("zonename", KSTAT_DATA_STRING), ("pgpgin", KSTAT_DATA_UINT64), ("anonpgin", KSTAT_DATA_UINT64),
    ("execpgin", KSTAT_DATA_UINT64), ("fspgin", KSTAT_DATA_UINT64), ("anon_alloc_fail", KSTAT_DATA_UINT64),
    ("n_pf_throttle", KSTAT_DATA_UINT64), ("n_pf_throttle_usec", KSTAT_DATA_UINT64),
    ("nsec_sys", KSTAT_DATA_UINT64), ("nsec_user", KSTAT_DATA_UINT64), ("nsec_waitrq", KSTAT_DATA_UINT64),
    ("avenrun_1min", KSTAT_DATA_UINT32), ("avenrun_5min", KSTAT_DATA_UINT32),
    ("avenrun_15min", KSTAT_DATA_UINT32), ("forkfail_cap", KSTAT_DATA_UINT32),
    ("forkfail_noproc", KSTAT_DATA_UINT32), ("forkfail_nomem", KSTAT_DATA_UINT32),
    ("forkfail_misc", KSTAT_DATA_UINT32), ("nested_interp", KSTAT_DATA_UINT32),
    ("init_pid", KSTAT_DATA_UINT32), ("boot_time", KSTAT_DATA_UINT64),
)  # fmt: skip
_ZONE_SOURCED = ("zonename", "pgpgin", "anonpgin", "nsec_sys", "nsec_user", "avenrun_1min", "avenrun_5min",
                 "avenrun_15min", "init_pid", "boot_time")  # fmt: skip
_PAGE = os.sysconf("SC_PAGE_SIZE")
_NSPT = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


class _Nothing:
    """A source for kstats whose every statistic has no source."""

    def values(self) -> dict[str, Any]:
        return {}


class FileNrSource:
    def __init__(self, root: SysRoot) -> None:
        self.root = root

    def values(self) -> dict[str, Any]:
        allocated, unused = (int(x) for x in self.root.read_bytes("proc/sys/fs/file-nr").split()[:2])
        return {"buf_total": allocated, "buf_avail": unused, "buf_inuse": allocated - unused}


def slab_lines(data: bytes) -> dict[str, list[int]]:
    """``proc/slabinfo`` 2.x as {cache: [active_objs, num_objs, objsize, objperslab,
    pagesperslab, num_slabs]}."""
    out = {}
    for line in data.split(b"\n")[2:]:
        parts = line.split()
        if len(parts) >= 15 and parts[6] == b":" and parts[11] == b":":
            out[parts[0].decode(errors="replace")] = [int(p) for p in (*parts[1:6], parts[14])]
    return out


class SlabSource:
    """One cache's line of ``proc/slabinfo``; a cache that left keeps its last values."""

    def __init__(self, root: SysRoot, cache: str) -> None:
        self.root = root
        self.key = b"\n" + cache.encode() + b" "
        self.last: dict[str, int] = dict.fromkeys(_SLAB_SOURCED, 0)

    def values(self) -> dict[str, Any]:
        data = self.root.read_bytes("proc/slabinfo")
        at = data.find(self.key)
        if at >= 0:
            parts = data[at + 1 : data.find(b"\n", at + 1)].split()
            active, total, size, per_slab, pages, slabs = (int(p) for p in (*parts[1:6], parts[14]))
            slab = pages * _PAGE
            self.last = {
                "buf_size": size, "slab_size": slab, "chunk_size": slab // per_slab if per_slab else size,
                "buf_inuse": active, "buf_total": total, "buf_avail": total - active, "slab_create": slabs,
            }  # fmt: skip
        return self.last


class ZoneSource:
    def __init__(self, root: SysRoot, boot_time: int) -> None:
        self.root = root
        self.fixed = {"zonename": "global", "init_pid": 1, "boot_time": boot_time}

    def values(self) -> dict[str, Any]:
        root = self.root
        stat = root.read_bytes("proc/stat")
        t = [int(x) for x in stat[4 : stat.index(b"\n")].split()] + [0] * 8
        vm = find_ints(root.read_bytes("proc/vmstat"), (b"pgpgin ", b"pswpin "))
        loads = root.read_bytes("proc/loadavg").split()
        return {
            **self.fixed,
            "pgpgin": vm.get(b"pgpgin ", 0) * 1024 // _PAGE, "anonpgin": vm.get(b"pswpin ", 0),
            "nsec_user": (t[0] + t[1]) * _NSPT, "nsec_sys": (t[2] + t[5] + t[6] + t[7]) * _NSPT,
            "avenrun_1min": round(float(loads[0]) * 256), "avenrun_5min": round(float(loads[1]) * 256),
            "avenrun_15min": round(float(loads[2]) * 256),
        }  # fmt: skip


def _u64(names: tuple[str, ...]) -> list[tuple[str, int]]:
    return [(n, KSTAT_DATA_UINT64) for n in names]


def create_hostwide(
    chain: Chain, root: SysRoot, origin: int, boot_time: int, want: Callable[[str], bool]
) -> list[Kstat]:
    """Every kstat of this module the host has the files for and ``want`` passes the module
    of, but the slab caches' (the provider keeps them in step: :class:`SlabCaches`). On
    failure the ones made are deleted and the error raised.
    """
    made: list[Kstat] = []
    try:
        if want("unix"):
            made.extend(_create_unix(chain, root, origin))
        if want("vmem"):
            made.append(create_named(chain, "vmem", 0, "kmem_oversize", "vmem", _u64(VMEM_FIELDS), _Nothing(),
                                     crtime=origin, absent=VMEM_FIELDS))  # fmt: skip
        if want("zones") and root.exists("proc/vmstat"):
            absent = [f for f, _ in ZONE_FIELDS if f not in _ZONE_SOURCED]
            made.append(create_named(chain, "zones", 0, "global", "zone_misc", list(ZONE_FIELDS),
                                     ZoneSource(root, boot_time), crtime=origin, absent=absent))  # fmt: skip
    except BaseException:
        for ksp in made:
            chain.kstat_delete(ksp)
        raise
    return made


def _create_unix(chain: Chain, root: SysRoot, origin: int) -> list[Kstat]:
    made: list[Kstat] = []
    try:
        made.append(create_named(chain, "unix", 0, "dnlcstats", "misc", _u64(DNLC_FIELDS), _Nothing(),
                                 crtime=origin, absent=DNLC_FIELDS))  # fmt: skip
        if root.exists("proc/sys/fs/file-nr"):
            absent = [f for f in KMEM_FIELDS if f not in _FILE_SOURCED]
            made.append(create_named(chain, "unix", 0, "file_cache", "kmem_cache", _u64(KMEM_FIELDS),
                                     FileNrSource(root), crtime=origin, meta=KMEM_META, absent=absent))  # fmt: skip
    except BaseException:
        for ksp in made:
            chain.kstat_delete(ksp)
        raise
    return made


_SLAB_ABSENT = [f for f in KMEM_FIELDS if f not in _SLAB_SOURCED]
_SLAB_META = {**KMEM_META, **{f: no_source(None, f"illumos kmem_cache {f}: no Linux source") for f in _SLAB_ABSENT}}


def create_slab_cache(chain: Chain, root: SysRoot, cache: str, origin: int | None) -> Kstat:
    """``unix:0:CACHE`` (class kmem_cache) fed by the cache's line of ``proc/slabinfo``."""
    return create_named(chain, "unix", 0, cache, "kmem_cache", _u64(KMEM_FIELDS), SlabSource(root, cache),
                        crtime=origin, meta=_SLAB_META, absent=_SLAB_ABSENT)  # fmt: skip


class SlabCaches:
    """Which slab caches get a kstat now: those of ``proc/slabinfo`` whose name is free
    (not in ``taken``: the other unix:0 kstats) and shorter than KSTAT_STRLEN.

    :meth:`names` reads slabinfo only when the caches may have changed: SLUB gives each
    cache of slabinfo one directory of ``sys/kernel/slab`` (named by the cache, or by a
    unique id whose names are symbolic links; a cache merged into another at creation is
    a link and no line of slabinfo), so a cache created or destroyed changes that
    directory's link count (and mtime), one stat. Without that directory (SLAB, a fake
    tree) each call reads slabinfo. Called under the provider's lock.
    """

    def __init__(self, root: SysRoot, taken: set[str]) -> None:
        self.root = root
        self.taken = {*taken, "file_cache", "dnlcstats"}
        self.signature: tuple[int, int] | None = None
        self.read = False  # slabinfo was read once
        self.off = False  # slabinfo was unreadable at the first call (not root): never again

    def names(self) -> list[str] | None:
        """The caches to publish, or None when nothing changed since the last call (or
        slabinfo cannot be read: not root)."""
        if self.off:
            return None
        try:
            st = os.stat(self.root.join("sys/kernel/slab"))
        except OSError:
            signature = None
        else:
            signature = (st.st_nlink, st.st_mtime_ns)
            if signature == self.signature:
                return None
        try:
            caches = slab_lines(self.root.read_bytes("proc/slabinfo"))
        except OSError:  # not root: no per-cache kstats
            self.off = self.signature is None and not self.read
            return None
        self.signature, self.read = signature, True
        return [c for c in caches if c not in self.taken and len(c) < 31]
