"""Metadata of every named statistic the system provider publishes (kstatpy.metadata).

One table, one row per statistic: ``(module, kstat name pattern, statistic, StatMeta)``.
The name pattern is an ``fnmatch`` glob (``cpu_info*``, ``*`` for any link). A kstat
created through :func:`kstatpy_providers.system.source.create_named` gets the rows of
its module and name (:func:`system_meta`). IO kstats (disks) need no rows: the
framework declares kstat_io_t's fields.

Counters count from boot, not from when kstatd created the kstat, so
:func:`system_kstat_init` also dates a kstat that has counters at boot
(``ks_crtime`` = :data:`BOOT_CRTIME`, the origin of Linux's CLOCK_MONOTONIC), as
illumos' kstats created at boot are: a rate "since crtime" (``kstat --rate``) is
then the average since boot, not a since-boot total divided by kstatd's uptime.

Host-sized units carry their scale: ticks are USER_HZ ticks (seconds per tick),
pages are ``SC_PAGE_SIZE`` bytes.
"""

from __future__ import annotations

import os

from kstatpy_providers.system.mib2_table import MIB2

from kstatpy.constants import KSTAT_TYPE_IO
from kstatpy.metadata import COUNTER
from kstatpy.metadata import StatMeta
from kstatpy.metadata import counter
from kstatpy.metadata import gauge
from kstatpy.metadata import identifier
from kstatpy.metadata import text

TYPE_CHECKING = False  # not typing's: kept off the embedded kstat's start-up path
if TYPE_CHECKING:
    from typing import Any

__all__ = ["BOOT_CRTIME", "META", "PAGE_SIZE", "SECONDS_PER_TICK", "system_kstat_init", "system_meta"]

#: ks_crtime of kstats whose counters count from boot: CLOCK_MONOTONIC (time.monotonic_ns)
#: starts at 0 at boot on Linux.
BOOT_CRTIME = 0
SECONDS_PER_TICK = 1.0 / os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _ticks(description: str) -> StatMeta:
    return counter("ticks", description, SECONDS_PER_TICK)


def _pages(description: str) -> StatMeta:
    return gauge("pages", description, PAGE_SIZE)


_MIB2_GAUGES = {"forwarding": "1 forwarding, 2 not", "defaultTTL": "default time to live",
                "rtoAlgorithm": "retransmit timeout algorithm", "rtoMin": "minimum retransmit timeout (ms)",
                "rtoMax": "maximum retransmit timeout (ms)", "maxConn": "connection limit (-1: none)",
                "currEstab": "connections established or closing"}  # fmt: skip


def _mib2_meta(module: str, name: str, stat: str, sources: tuple[str, ...]) -> StatMeta:
    linux = " + ".join(src.replace(":", " ", 2) for src in sources)
    mib = name + stat[0].upper() + stat[1:]
    if not sources:
        return counter("count", f"{mib}: Linux has no such counter")
    if stat in _MIB2_GAUGES:
        return gauge("ms" if stat in ("rtoMin", "rtoMax") else "", f"{mib}: {_MIB2_GAUGES[stat]} ({linux})")
    return counter("count", f"{mib} (Linux {linux})")


META: tuple[tuple[str, str, str, StatMeta], ...] = (
    # unix:0:system_misc
    ("unix", "system_misc", "ncpus", gauge("count", "CPUs present (on-line or not)")),
    ("unix", "system_misc", "lbolt", _ticks("clock ticks since boot")),
    ("unix", "system_misc", "clk_intr", _ticks("clock interrupts since boot (= lbolt on Linux)")),
    ("unix", "system_misc", "nproc", gauge("count", "processes")),
    ("unix", "system_misc", "avenrun_1min", gauge("1/256", "1-minute load average (fixed point, FSHIFT 8)")),
    ("unix", "system_misc", "avenrun_5min", gauge("1/256", "5-minute load average (fixed point, FSHIFT 8)")),
    ("unix", "system_misc", "avenrun_15min", gauge("1/256", "15-minute load average (fixed point, FSHIFT 8)")),
    ("unix", "system_misc", "boot_time", gauge("seconds", "boot time (seconds since the epoch)")),
    ("unix", "system_misc", "nsec_per_tick", gauge("ns", "length of a clock tick")),
    # unix:0:system_pages
    ("unix", "system_pages", "physmem", _pages("physical memory")),
    ("unix", "system_pages", "pagestotal", _pages("memory the kernel manages")),
    ("unix", "system_pages", "freemem", _pages("free memory")),
    ("unix", "system_pages", "pagesfree", _pages("free memory")),
    ("unix", "system_pages", "pageslocked", _pages("resident memory taken by the kernel and locked pages "
                                                   "(availrmem_initial - availrmem = pp_kernel + Mlocked)")),
    ("unix", "system_pages", "minfree", _pages("free memory the kernel keeps in reserve")),
    ("unix", "system_pages", "availrmem", _pages("memory that could still be locked (physmem - pageslocked)")),
    ("unix", "system_pages", "lotsfree", _pages("free level reclaim works up to (zones' high watermarks)")),
    ("unix", "system_pages", "desfree", _pages("free level below which reclaim starts (zones' low watermarks)")),
    ("unix", "system_pages", "pp_kernel", _pages("memory the kernel holds (slab, stacks, page tables, per-CPU, "
                                                 "ZFS ARC)")),
    ("unix", "system_misc", "deficit", gauge("pages", "memory deficit (illumos scheduler; no Linux source)")),
    ("unix", "system_misc", "vac", gauge("", "virtual address cache present (no Linux source)")),
    # zones:0:global (hostwide.py)
    ("zones", "global", "zonename", text("zone name")),
    ("zones", "global", "pgpgin", counter("pages", "pages paged in (proc/vmstat pgpgin)", PAGE_SIZE)),
    ("zones", "global", "anonpgin", counter("pages", "anonymous pages swapped in (pswpin)", PAGE_SIZE)),
    ("zones", "global", "nsec_user", counter("ns", "time in user mode, every CPU (user + nice)")),
    ("zones", "global", "nsec_sys", counter("ns", "time in the kernel, every CPU (system + irq + softirq + steal)")),
    ("zones", "global", "avenrun_1min", gauge("1/256", "1-minute load average (fixed point)")),
    ("zones", "global", "avenrun_5min", gauge("1/256", "5-minute load average (fixed point)")),
    ("zones", "global", "avenrun_15min", gauge("1/256", "15-minute load average (fixed point)")),
    ("zones", "global", "init_pid", identifier("the zone's init")),
    ("zones", "global", "boot_time", gauge("seconds", "boot time (seconds since the epoch)")),
    # cpu_info:N:cpu_infoN
    ("cpu_info", "cpu_info*", "state", text("on-line or off-line")),
    ("cpu_info", "cpu_info*", "state_begin", gauge("seconds", "when the state began (seconds since the epoch)")),
    ("cpu_info", "cpu_info*", "clock_MHz", gauge("MHz", "maximum clock frequency")),
    ("cpu_info", "cpu_info*", "current_clock_Hz", gauge("Hz", "current clock frequency")),
    ("cpu_info", "cpu_info*", "chip_id", identifier("physical package (socket) id")),
    ("cpu_info", "cpu_info*", "core_id", identifier("core id, unique across chips")),
    ("cpu_info", "cpu_info*", "pkg_core_id", identifier("core id within its chip")),
    ("cpu_info", "cpu_info*", "brand", text("CPU model name")),
    ("cpu_info", "cpu_info*", "cpu_type", text("instruction set family (illumos' name: i386 on every x86)")),
    ("cpu_info", "cpu_info*", "fpu_type", text("floating-point unit (illumos' name)")),
    ("cpu_info", "cpu_info*", "implementation", text("illumos' one-line summary: chip, vendor, cpuid signature, clock")),
    ("cpu_info", "cpu_info*", "socket_type", text("CPU socket's package type")),
    ("cpu_info", "cpu_info*", "vendor_id", text("CPU vendor")),
    ("cpu_info", "cpu_info*", "family", identifier("CPU family")),
    ("cpu_info", "cpu_info*", "model", identifier("CPU model number")),
    ("cpu_info", "cpu_info*", "stepping", identifier("CPU stepping")),
    ("cpu_info", "cpu_info*", "ncpu_per_chip", gauge("count", "hardware threads per chip")),
    ("cpu_info", "cpu_info*", "ncore_per_chip", gauge("count", "cores per chip")),
    # cpu:N:sys
    ("cpu", "sys", "cpu_ticks_idle", _ticks("idle time")),
    ("cpu", "sys", "cpu_ticks_user", _ticks("time in user mode (user + nice, guests included)")),
    ("cpu", "sys", "cpu_ticks_kernel", _ticks("time in the kernel (system + irq + softirq + steal)")),
    ("cpu", "sys", "cpu_ticks_wait", _ticks("wait time: always 0, I/O wait is idle (as illumos)")),
    ("cpu", "sys", "wait_ticks_io", _ticks("I/O wait time: always 0, it is idle (as illumos)")),
    ("cpu", "sys", "cpu_nsec_idle", counter("ns", "idle time (cpu_ticks_idle in ns)")),
    ("cpu", "sys", "cpu_nsec_user", counter("ns", "time in user mode (user + nice)")),
    ("cpu", "sys", "cpu_nsec_kernel", counter("ns", "time in the kernel (system + irq + softirq + steal)")),
    ("cpu", "sys", "cpu_nsec_intr", counter("ns", "time in interrupt handlers (irq + softirq)")),
    ("cpu", "sys", "intr", counter("count", "interrupts taken by this CPU")),
    ("cpu", "sys", "xcalls", counter("count", "cross-calls: function-call interrupts (TLB shootdowns among them)")),
    ("cpu", "sys", "intrthread", counter("count", "deferred interrupt work run (softirqs)")),
    ("cpu", "sys", "pswitch", counter("count", "context switches (schedstat timeslices + switches to idle; "
                                      "without schedstat proc/stat ctxt, machine-wide, on the lowest CPU)")),
    ("cpu", "sys", "idlethread", counter("count", "switches to the idle thread (schedstat)")),
    ("cpu", "sys", "sysfork", counter("count", "forks and clones, threads included (proc/stat processes; "
                                      "machine-wide, on the lowest CPU)")),
    # cpu:N:vm (machine-wide /proc/vmstat counts, on the lowest CPU)
    ("cpu", "vm", "pgpgin", counter("pages", "pages paged in (pgpgin)")),
    ("cpu", "vm", "pgpgout", counter("pages", "pages paged out (pgpgout)")),
    ("cpu", "vm", "dfree", counter("pages", "pages freed by reclaim (pgsteal_*)")),
    ("cpu", "vm", "scan", counter("pages", "pages scanned by reclaim (pgscan_*)")),
    ("cpu", "vm", "as_fault", counter("count", "minor page faults (pgfault - pgmajfault)")),
    ("cpu", "vm", "maj_fault", counter("count", "major page faults (pgmajfault)")),
    ("cpu", "vm", "pgrrun", counter("count", "times kswapd ran (pageoutrun)")),
    ("cpu", "vm", "anonpgin", counter("pages", "anonymous pages swapped in (pswpin)")),
    ("cpu", "vm", "anonpgout", counter("pages", "anonymous pages swapped out (pswpout)")),
    # link:0:IFNAME
    ("link", "*", "ifspeed", gauge("bits/s", "link speed")),
    ("link", "*", "link_state", gauge("", "1 up, 0 down, 4294967295 unknown")),
    ("link", "*", "link_duplex", gauge("", "2 full, 1 half, 0 unknown (sysfs duplex)")),
    ("link", "*", "multircv", counter("count", "multicast packets received")),
    ("link", "*", "norcvbuf", counter("count", "received packets dropped")),
    ("link", "*", "ierrors", counter("count", "receive errors")),
    ("link", "*", "unknowns", counter("count", "received packets for no protocol handler")),
    ("link", "*", "noxmtbuf", counter("count", "transmit packets dropped")),
    ("link", "*", "oerrors", counter("count", "transmit errors")),
    ("link", "*", "collisions", counter("count", "collisions")),
    ("link", "*", "rbytes", counter("bytes", "bytes received")),
    ("link", "*", "obytes", counter("bytes", "bytes sent")),
    ("link", "*", "ipackets", counter("count", "packets received")),
    ("link", "*", "opackets", counter("count", "packets sent")),
    ("link", "*", "rbytes64", counter("bytes", "bytes received")),
    ("link", "*", "obytes64", counter("bytes", "bytes sent")),
    ("link", "*", "ipackets64", counter("count", "packets received")),
    ("link", "*", "opackets64", counter("count", "packets sent")),
    ("link", "*", "align_errors", counter("count", "frames with alignment (framing) errors")),
    ("link", "*", "fcs_errors", counter("count", "frames with CRC errors")),
    ("link", "*", "toolong_errors", counter("count", "frames too long")),
    ("link", "*", "macrcv_errors", counter("count", "receive FIFO errors")),
    ("link", "*", "carrier_errors", counter("count", "transmit carrier errors")),
    ("link", "*", "ex_collisions", counter("count", "transmits aborted (excessive collisions)")),
    ("link", "*", "macxmt_errors", counter("count", "transmit FIFO errors")),
    ("link", "*", "sqe_errors", counter("count", "SQE (heartbeat) errors")),
    ("link", "*", "tx_late_collisions", counter("count", "late collisions (window errors)")),
    # disks' error kstats, MODULEerr:N:MODULEN,err
    *(
        row
        for module in ("sderr", "cmdkerr", "xdferr", "blkdeverr")
        for row in (
            (module, "*,err", "Device Name", text("the Linux block device (sys/block/NAME)")),
            (module, "*,err", "Vendor", text("vendor (device/vendor)")),
            (module, "*,err", "Product", text("model (device/model)")),
            (module, "*,err", "Model", text("model (device/model; blkdev's NVMe layout)")),
            (module, "*,err", "Revision", text("firmware revision (device/rev or device/firmware_rev)")),
            (module, "*,err", "Serial No", text("serial number (device/serial)")),
            (module, "*,err", "Size", gauge("bytes", "capacity")),
            (module, "*,err", "Soft Errors", counter("count", "recovered errors")),
            (module, "*,err", "Hard Errors", counter("count", "commands completed with an error (ioerr_cnt)")),
            (module, "*,err", "Transport Errors", counter("count", "transport (bus) errors")),
            (module, "*,err", "Media Error", counter("count", "medium errors")),
            (module, "*,err", "Device Not Ready", counter("count", "device not ready")),
            (module, "*,err", "No Device", counter("count", "device gone")),
            (module, "*,err", "Recoverable", counter("count", "recoverable errors")),
            (module, "*,err", "Illegal Request", counter("count", "illegal requests")),
            (module, "*,err", "Predictive Failure Analysis", counter("count", "predicted failures")),
        )
    ),
    # MIB-II (mib2.MIB2: the Linux counters each statistic sums)
    *(
        (module, name, stat, _mib2_meta(module, name, stat, sources))
        for (module, name), specs in MIB2.items()
        for stat, _, sources in specs
    ),
)


def system_meta(module: str, name: str) -> dict[str, StatMeta]:
    """The rows of :data:`META` for kstat ``module:*:name``, as {statistic: StatMeta}."""
    return {stat: meta for mod, pattern, stat, meta in META if mod == module and _name_matches(name, pattern)}


def _name_matches(name: str, pattern: str) -> bool:
    # fnmatchcase, without importing fnmatch (and re) for the table's shapes: "*",
    # "prefix*", "*suffix" and exact names.
    star = pattern.find("*")
    if star < 0 and "?" not in pattern and "[" not in pattern:
        return name == pattern
    rest = pattern[star + 1 :]
    if "*" not in rest and "?" not in pattern and "[" not in pattern:
        return name.startswith(pattern[:star]) and name.endswith(rest) and len(name) >= len(pattern) - 1
    from fnmatch import fnmatchcase

    return fnmatchcase(name, pattern)


def system_kstat_init(ksp: Any) -> None:
    """Declare ``ksp``'s metadata from :data:`META`; date it at boot if it counts from boot.

    Call between ``kstat_create`` and ``kstat_install``. IO kstats (kstat_io_t has
    counters) are dated at boot too.
    """
    meta = system_meta(ksp.ks_module, ksp.ks_name)
    if meta:
        ksp.ks_meta = meta
    if ksp.ks_type == KSTAT_TYPE_IO or any(m.kind == COUNTER for m in meta.values()):
        ksp.ks_crtime = ksp.ks_snaptime = BOOT_CRTIME
