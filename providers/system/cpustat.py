"""Per-CPU counters: ``cpu:N:sys``, ``cpu:N:vm`` (NAMED) and ``cpu_stat:N:cpu_statN`` (RAW).

All three read the same per-CPU sources, each on its own read (nothing is cached
between reads). Every counter counts from boot, so every kstat here has its
``crtime`` at the boot origin of ``snaptime``'s clock (:func:`boot_origin`).

CPU time (``proc/stat``'s ``cpuN`` line, USER_HZ ticks), mapped as illumos accounts it:
    cpu_ticks_idle    idle + iowait       (illumos: time waiting for I/O is idle)
    cpu_ticks_user    user + nice         (the kernel already counts guest and
                                           guest_nice inside user and nice)
    cpu_ticks_kernel  system + irq + softirq + steal
    cpu_ticks_wait    0, as on illumos (wait time has been idle since Solaris 10)
    cpu_nsec_{idle,user,kernel}  the same ticks x nsec_per_tick
    cpu_nsec_intr     (irq + softirq) x nsec_per_tick
    wait_ticks_io     0, as on illumos
  Steal (time a hypervisor ran something else while this CPU wanted to run) is
  charged to kernel: illumos has no steal state, the CPU was busy, and neither
  user nor idle would be true.
  Time Linux loses (a tickless idle loses some while tasks wait for I/O: 7-13% of a CPU
  under an fsync loop): :class:`CpuClock` adds the growth of the deficit (uptime ticks
  less the CPU's eight columns, less 2 ticks of slack) to idle, up to what the CPU idled
  since the last read, the rest (a vCPU its hypervisor stalled: steal comes at its next
  tick) to kernel until the steal column pays it. A CPU on-line at attach counts from
  boot (as cpu_info's state_begin), a later one from its first read. No state goes back:
  a drop in a state's columns (iowait may decrease, proc(5)) is added back from then on.
  So idle + user + kernel ticks add up to the time elapsed, as on illumos.

Other cpu:N:sys counters, per CPU. Every record of illumos' cpu_sys_stats_ks_data is
published, in its order (mpstat and vmstat look them up without checking); a record this
host has no source for reads 0 and is marked no source (kstatpy.metadata.no_source):
    intr        the CPU's column of ``proc/interrupts``, summed over every line but TLB
    xcalls      the CAL (function call) line (TLB shootdowns arrive as function calls:
                the TLB line counts flushes inside CAL's interrupts, and is never added)
    intrthread  the CPU's column of ``proc/softirqs``, summed (deferred interrupt
                work: what illumos runs as interrupt threads)
    pswitch     ``proc/schedstat``: timeslices run (pcount) + switches to idle
                (sched_goidle); idlethread: sched_goidle. Both need schedstats
                enabled (``kernel.sched_schedstats``), else only pswitch = pcount.
                Without ``proc/schedstat``: ``proc/stat``'s machine-wide ``ctxt``,
                charged whole to the CPU that carries cpu:N:vm (the others read 0)
    sysfork     ``proc/stat``'s ``processes`` (forks and clones since boot; Linux
                counts threads created too), charged the same way
  No source (never split from a machine-wide count): the rest (docs/SYSTEM-PROVIDER.md).

cpu:N:vm (class misc, as illumos creates it): Linux keeps its VM event counters
(``proc/vmstat``) only machine-wide. They are charged whole to the lowest CPU present at
attach; every other CPU's ``cpu:N:vm`` reads 0, so sums over CPUs (vmstat, sar, psutil)
are exact and nothing is divided. Mapping (pages of SC_PAGE_SIZE):
    pgpgin, pgpgout    pgpgin, pgpgout (kB) / page size
    dfree              pgsteal_kswapd + pgsteal_direct (+ pgsteal_khugepaged)
    scan               pgscan_kswapd + pgscan_direct (+ pgscan_khugepaged)
    as_fault           pgfault - pgmajfault (minor faults)
    maj_fault          pgmajfault
    pgrrun             pageoutrun (kswapd runs)
    anonpgin/anonpgout pswpin/pswpout (Linux swaps anonymous pages only)
  No source (0, marked): pgrec, pgfrec, pgin, pgout, swapin, pgswapin, swapout, pgswapout,
  zfod, rev, hat_fault, cow_fault, prot_fault, softlock, kernel_asflt, exec*, anonfree, fs*.

cpu_stat:N:cpu_statN (class misc) is the cpu_stat_t of ``kstatpy.raw``: the same
values as cpu:N:sys and cpu:N:vm wrapped to 32 bits; members with no source are 0.
"""

from __future__ import annotations

import errno
import os
import threading
import time

from kstatpy_providers.system.parse import interrupts_column
from kstatpy_providers.system.parse import schedstat_cpu
from kstatpy_providers.system.parse import vmstat
from kstatpy_providers.system.source import SysRoot
from kstatpy_providers.system.source import create_named
from kstatpy_providers.system.source import create_raw
from kstatpy_providers.system.source import find_ints

from kstatpy.constants import KSTAT_DATA_UINT64
from kstatpy.raw import CPU_STAT

TYPE_CHECKING = False  # not typing's: kept off the embedded kstat's start-up path
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from kstatpy.chain import Chain
    from kstatpy.kstat import Kstat

__all__ = ["SYS_ORDER", "VM_ORDER", "CpuClock", "CpuSource", "create_cpu_stat", "create_cpu_sys", "create_cpu_vm",
           "hz", "interrupts_column"]  # fmt: skip

#: cpu:N:sys records in illumos' order (uts/common/os/cpu.c, cpu_sys_stats_ks_data): every
#: one is published; those without a source on this host read 0, marked no source.
SYS_ORDER = (
    "cpu_ticks_idle", "cpu_ticks_user", "cpu_ticks_kernel", "cpu_ticks_wait",
    "cpu_nsec_idle", "cpu_nsec_user", "cpu_nsec_kernel", "cpu_nsec_dtrace", "cpu_nsec_intr",
    "cpu_load_intr", "wait_ticks_io", "dtrace_probes", "bread", "bwrite", "lread", "lwrite",
    "phread", "phwrite", "pswitch", "trap", "intr", "syscall", "sysread", "syswrite", "sysfork",
    "sysvfork", "sysexec", "readch", "writech", "rcvint", "xmtint", "mdmint", "rawch", "canch",
    "outch", "msg", "sema", "namei", "ufsiget", "ufsdirblk", "ufsipage", "ufsinopage", "procovf",
    "intrthread", "intrblk", "intrunpin", "idlethread", "inv_swtch", "nthreads", "cpumigrate",
    "xcalls", "mutex_adenters", "rw_rdfails", "rw_wrfails", "modload", "modunload", "bawrite",
    "iowait",
)  # fmt: skip
_TIME_FIELDS = (
    "cpu_ticks_idle", "cpu_ticks_user", "cpu_ticks_kernel", "cpu_ticks_wait", "cpu_nsec_idle",
    "cpu_nsec_user", "cpu_nsec_kernel", "cpu_nsec_intr", "wait_ticks_io",
)  # fmt: skip
#: cpu:N:vm records in illumos' order (cpu.c, cpu_vm_stats_ks_data), all published.
VM_ORDER = (
    "pgrec", "pgfrec", "pgin", "pgpgin", "pgout", "pgpgout", "swapin", "pgswapin", "swapout",
    "pgswapout", "zfod", "dfree", "scan", "rev", "hat_fault", "as_fault", "maj_fault", "cow_fault",
    "prot_fault", "softlock", "kernel_asflt", "pgrrun", "execpgin", "execpgout", "execfree",
    "anonpgin", "anonpgout", "anonfree", "fspgin", "fspgout", "fsfree",
)  # fmt: skip

#: cpu:N:vm records with a Linux source and their /proc/vmstat keys.
VM_SOURCES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("pgpgin", ("pgpgin",)),
    ("pgpgout", ("pgpgout",)),
    ("dfree", ("pgsteal_kswapd", "pgsteal_direct", "pgsteal_khugepaged")),
    ("scan", ("pgscan_kswapd", "pgscan_direct", "pgscan_khugepaged")),
    ("as_fault", ("pgfault",)),
    ("maj_fault", ("pgmajfault",)),
    ("pgrrun", ("pageoutrun",)),
    ("anonpgin", ("pswpin",)),
    ("anonpgout", ("pswpout",)),
)

_KB_FIELDS = ("pgpgin", "pgpgout")


def hz() -> int:
    """USER_HZ: the tick of /proc's counters."""
    return os.sysconf("SC_CLK_TCK")


_HZ = hz()


def stat_cpu_line(data: bytes, cpu: int) -> list[int] | None:
    """The ``cpuN`` line of ``/proc/stat`` as ints (10 columns, missing ones 0), or None
    (CPU ``cpu`` off-line). A file without the aggregate ``cpu`` line first is malformed:
    OSError (EIO), the reader's error rather than zeros."""
    if not data.startswith(b"cpu "):
        raise OSError(errno.EIO, "proc/stat does not begin with the cpu line (malformed)")
    key = b"\ncpu%d " % cpu
    at = data.find(key)
    if at < 0:
        return None
    end = data.find(b"\n", at + 1)
    t = [int(x) for x in data[at + len(key) : end if end > 0 else None].split()]
    return t + [0] * (10 - len(t))


def cpu_times(t: list[int], nspt: int) -> dict[str, int]:
    """The illumos CPU-time records of one ``proc/stat`` cpu line (module docstring)."""
    user, nice, system, idle, iowait, irq, softirq, steal = t[:8]
    u, k, i = user + nice, system + irq + softirq + steal, idle + iowait
    return {
        "cpu_ticks_idle": i, "cpu_ticks_user": u, "cpu_ticks_kernel": k, "cpu_ticks_wait": 0,
        "cpu_nsec_idle": i * nspt, "cpu_nsec_user": u * nspt, "cpu_nsec_kernel": k * nspt,
        "cpu_nsec_intr": (irq + softirq) * nspt, "wait_ticks_io": 0,
    }  # fmt: skip


#: ticks of sampling noise between the uptime clock and the tick-sampled columns
DEFICIT_SLACK = 2
#: the columns of a ``cpuN`` line summed into each published state: idle, user, kernel
_STATES = ((3, 4), (0, 1), (2, 5, 6, 7))


def suspended_ticks() -> int:
    """Ticks this host has spent suspended since boot (CLOCK_BOOTTIME - CLOCK_MONOTONIC)."""
    return int((time.clock_gettime(time.CLOCK_BOOTTIME) - time.clock_gettime(time.CLOCK_MONOTONIC)) * _HZ)


class CpuClock:
    """The time Linux has not accounted to one CPU (module docstring), shared by the CPU's
    kstats so cpu:N:sys and cpu_stat agree. ``lock`` guards every field and is held across
    :meth:`sample`'s two reads, so the state only moves forward with the files."""

    def __init__(self, root: SysRoot, since_boot: bool, suspended: Callable[[], int] | None = None) -> None:
        self.root = root
        #: ticks the host has been suspended since boot: ``proc/uptime`` counts them, the
        #: CPU's columns and kstat's snaptime (CLOCK_MONOTONIC) do not. A fake tree has none.
        self.suspended = suspended or (suspended_ticks if getattr(root, "real", False) else lambda: 0)
        self.base: int | None = 0 if since_boot else None
        self.lost = 0  # ticks added to idle; never decreases
        self.pending = 0  # ticks added to kernel until the CPU's steal column charges them
        self.steal = 0  # the highest steal column seen (what paid ``pending`` so far)
        self.last = [0, 0, 0]  # idle, user, kernel: each state's columns summed, last sample
        self.back = [0, 0, 0]  # each state's drops so far, added back: no state goes back
        self.lock = threading.Lock()

    def sample(self, cpu: int) -> tuple[bytes, list[int] | None]:
        """``proc/stat`` and CPU ``cpu``'s line of it, the time not accounted added in.

        ``proc/uptime`` is read first: a preemption between the reads shrinks the deficit."""
        with self.lock:
            up = self.root.read_bytes("proc/uptime")
            # After the uptime: a suspend in between then shrinks the deficit, never grows it.
            asleep = self.suspended()
            stat = self.root.read_bytes("proc/stat")
            t = stat_cpu_line(stat, cpu)
            if t is not None:
                self._account(t, int(float(up[: up.index(b" ")]) * _HZ) - asleep)
            return stat, t

    def _account(self, t: list[int], uptime: int) -> None:
        # A CPU that idled since the last sample lost the time in tickless idle: idle gets it
        # for good. One that did not idle was kept from running (a vCPU the hypervisor
        # preempted: Linux charges the steal at its next tick): kernel holds the time until
        # then; ratcheted into idle, it was counted twice once the steal came.
        # A state's columns may go back (proc(5): iowait can decrease; a CPU hotplug can
        # reset them): illumos' counters never do, and a tool's unsigned delta would wrap.
        # Each drop is added back from then on (``back``): the state's deltas stay right
        # from the next read, and the time added back counts as accounted.
        sums = [sum(t[i] for i in cols) for cols in _STATES]
        steal = t[7]
        self.pending = max(0, self.pending - max(0, steal - self.steal))
        self.steal = max(self.steal, steal)
        idled = max(0, sums[0] - self.last[0])
        for k in range(3):
            self.back[k] += max(0, self.last[k] - sums[k])
        self.last = sums
        deficit = uptime - sum(sums) - sum(self.back)
        if self.base is None:
            self.base = deficit
        gap = deficit - self.base - DEFICIT_SLACK - self.lost - self.pending
        if gap > 0:
            self.lost += min(gap, idled)
            self.pending += gap - min(gap, idled)
        t[3] += self.lost + self.back[0]
        t[0] += self.back[1]
        t[2] += self.back[2]
        t[7] += self.pending


class CpuSource:
    """One CPU's counters from the sources found at creation (``what``: sys, vm or both)."""

    def __init__(
        self, root: SysRoot, cpu: int, sys: bool, vm: bool, charge_vm: bool, clock: CpuClock | None = None
    ) -> None:
        self.root = root
        self.cpu = cpu
        self.clock = clock
        self.nspt = 1_000_000_000 // hz()
        self.sys = sys
        self.vm = vm
        self.interrupts = sys and root.exists("proc/interrupts")
        self.softirqs = sys and root.exists("proc/softirqs")
        self.schedstat = sys and root.exists("proc/schedstat")
        goidle = root.read_int_or("proc/sys/kernel/sched_schedstats", 1) if self.schedstat else 0
        self.goidle = bool(goidle)
        # Machine-wide /proc/stat counters, charged to the CPU that carries cpu:N:vm's:
        # ctxt (pswitch, only without schedstat) and processes (sysfork).
        self.charge_sys = sys and charge_vm
        self.stat_keys: dict[str, bytes] = {}
        if sys:
            have = find_ints(root.read_bytes("proc/stat"), (b"ctxt ", b"processes "))
            if not self.schedstat and b"ctxt " in have:
                self.stat_keys["pswitch"] = b"ctxt "
            if b"processes " in have:
                self.stat_keys["sysfork"] = b"processes "
        self.vm_keys: dict[str, tuple[bytes, ...]] = {}
        self.vm_find: list[bytes] = []
        self.charge_vm = vm and charge_vm
        if vm:
            try:
                have = vmstat(root.read_bytes("proc/vmstat"))
            except OSError:
                have = {}
            for name, keys in VM_SOURCES:
                present = tuple(k.encode() for k in keys if k.encode() in have)
                if present:
                    self.vm_keys[name] = tuple(k + b" " for k in present)
            self.vm_find = sorted({k for keys in self.vm_keys.values() for k in keys} | {b"pgmajfault "})
        self.pagesize = os.sysconf("SC_PAGE_SIZE")
        # An off-line CPU has no line or column: it keeps its last values.
        self.last: dict[str, int] = dict.fromkeys(self.sys_fields() + self.vm_fields(), 0)

    def sys_sourced(self) -> set[str]:
        """cpu:N:sys records this host has a source for."""
        if not self.sys:
            return set()
        have = set(_TIME_FIELDS) | set(self.stat_keys)
        if self.interrupts:
            have |= {"intr", "xcalls"}
        if self.softirqs:
            have.add("intrthread")
        if self.schedstat:
            have.add("pswitch")
            if self.goidle:
                have.add("idlethread")
        return have

    def sys_fields(self) -> list[str]:
        """Every cpu:N:sys record (illumos' list); :meth:`sys_sourced` says which are fed."""
        return list(SYS_ORDER) if self.sys else []

    def vm_fields(self) -> list[str]:
        """Every cpu:N:vm record (illumos' list); ``vm_keys`` names those with a source."""
        return list(VM_ORDER) if self.vm else []

    def values(self) -> dict[str, Any]:
        root, cpu, last = self.root, self.cpu, self.last
        if self.sys:
            if self.clock is not None:
                stat, t = self.clock.sample(cpu)
            else:
                stat = root.read_bytes("proc/stat")
                t = stat_cpu_line(stat, cpu)
            if t is not None:
                last.update(cpu_times(t, self.nspt))
            if self.interrupts:
                col = interrupts_column(root.read_bytes("proc/interrupts"), cpu)
                if col is not None:
                    last["intr"], last["xcalls"] = col
            if self.softirqs:
                col = interrupts_column(root.read_bytes("proc/softirqs"), cpu)
                if col is not None:
                    last["intrthread"] = col[0]
            if self.schedstat:
                s = schedstat_cpu(root.read_bytes("proc/schedstat"), cpu)
                if s is not None and len(s) >= 9:
                    goidle = s[3] if self.goidle else 0
                    last["pswitch"] = s[8] + goidle
                    if self.goidle:
                        last["idlethread"] = goidle
            if self.charge_sys and self.stat_keys:
                found = find_ints(stat, self.stat_keys.values())
                for name, key in self.stat_keys.items():
                    last[name] = found.get(key, last[name])
        if self.charge_vm:
            vs = find_ints(root.read_bytes("proc/vmstat"), self.vm_find)
            for name, keys in self.vm_keys.items():
                v = sum(vs.get(k, 0) for k in keys)
                if name in _KB_FIELDS:
                    v = v * 1024 // self.pagesize
                elif name == "as_fault":
                    v -= vs.get(b"pgmajfault ", 0)
                last[name] = v
        return last


def _raw_names(values: dict[str, int]) -> dict[str, int]:
    out = dict(values)
    out.update(
        idle=values.get("cpu_ticks_idle", 0), user=values.get("cpu_ticks_user", 0),
        kernel=values.get("cpu_ticks_kernel", 0), wait=0, wait_io=0,
    )  # fmt: skip
    return out


class CpuStatSource:
    """cpu_stat_t's values: a :class:`CpuSource` for both sys and vm, under cpu_stat's names."""

    def __init__(self, source: CpuSource) -> None:
        self.source = source

    def values(self) -> dict[str, Any]:
        return _raw_names(self.source.values())


def create_cpu_sys(
    chain: Chain, root: SysRoot, cpu: int, origin: int, clock: CpuClock | None = None, charge: bool = False
) -> Kstat:
    """cpu:N:sys (class misc, UINT64): illumos' records, those without a source marked.

    ``charge``: this CPU carries the machine-wide /proc/stat counts (pswitch without
    schedstat, sysfork).
    """
    source = CpuSource(root, cpu, sys=True, vm=False, charge_vm=charge, clock=clock)
    fields = [(f, KSTAT_DATA_UINT64) for f in source.sys_fields()]
    have = source.sys_sourced()
    absent = [f for f, _ in fields if f not in have]
    return create_named(chain, "cpu", cpu, "sys", "misc", fields, source, crtime=origin, absent=absent)


def create_cpu_vm(chain: Chain, root: SysRoot, cpu: int, origin: int, charge: bool) -> Kstat:
    """cpu:N:vm (class misc, as illumos' cpu.c, UINT64); ``charge``: this CPU carries the
    machine-wide counts. Records without a source are 0, marked no source."""
    source = CpuSource(root, cpu, sys=False, vm=True, charge_vm=charge)
    fields = [(f, KSTAT_DATA_UINT64) for f in source.vm_fields()]
    absent = [f for f, _ in fields if f not in source.vm_keys]
    return create_named(chain, "cpu", cpu, "vm", "misc", fields, source, crtime=origin, absent=absent)


def create_cpu_stat(
    chain: Chain, root: SysRoot, cpu: int, origin: int, charge: bool, clock: CpuClock | None = None
) -> Kstat:
    """cpu_stat:N:cpu_statN (RAW cpu_stat_t, class misc)."""
    source = CpuStatSource(CpuSource(root, cpu, sys=True, vm=True, charge_vm=charge, clock=clock))
    return create_raw(chain, "cpu_stat", cpu, f"cpu_stat{cpu}", "misc", CPU_STAT, source, crtime=origin)
