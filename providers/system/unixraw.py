"""The RAW ``unix`` kstats: ``unix:0:sysinfo``, ``unix:0:vminfo``, ``unix:0:var``.

Layouts are ``kstatpy.raw``'s (illumos LP64). A member with no Linux source is 0.

sysinfo (class misc, sysinfo_t) and vminfo (class vm, vminfo_t) are illumos'
once-a-second accumulators: each second the clock adds the current value to the
member and 1 to ``updates``, so a reader's average over an interval is
delta(member) / delta(updates). Linux keeps no such history; here ``updates`` is
whole seconds of ``proc/uptime`` and each read adds the value it sees times the
seconds since the previous read (sample and hold; the first read charges the
value seen to every second since boot). The average a reader computes over two
reads is therefore the value at the later read, exactly as illumos would report
a value that held steady over the interval.

    sysinfo  runque   runnable threads waiting for a CPU, as illumos counts them (its
                      clock adds the dispatch queues' lengths, not the threads on a
                      CPU): ``procs_running`` of ``proc/stat`` (which counts the threads
                      on a CPU too, the reader itself among them) less the reader, less
                      the on-line CPUs (``sys/devices/system/cpu/online``), never below
                      0. illumos' clock samples while the reader sleeps, so the reader
                      is not counted: an idle host adds 0; N busy threads on M CPUs
                      add about N - M a second.
             runocc   +1 a second when runque > 0
             waiting  ``procs_blocked`` (threads in uninterruptible I/O wait)
             swpque, swpocc  0: Linux does not swap out whole processes
    vminfo   freemem  MemFree (pages)
             swap_resv   Committed_AS: anonymous memory promised
             swap_alloc  AnonPages + SwapTotal - SwapFree: anonymous memory backed
             swap_avail  max(0, MemTotal + SwapTotal - swap_resv)
             swap_free   max(0, MemTotal + SwapTotal - swap_alloc)
             (illumos' swap is virtual: memory plus swap devices; so here.)

var (class misc, struct var): tunables, read each time.
    v_proc, v_maxupttl  min(``proc/sys/kernel/threads-max``, ``proc/sys/kernel/pid_max``):
                        the tasks Linux can have, limited by both the task table and
                        the PIDs to give them (either alone when the other is missing)
    v_autoup            ``proc/sys/vm/dirty_expire_centisecs`` / 100 (seconds a
                        dirty page may age before writeback)
    v_nglobpris         SCHED_FIFO's maximum + 41 (the real-time priorities plus
                        the 40 nice levels); v_maxsyspri SCHED_FIFO's maximum
    v_buf, v_call, v_clist, v_maxup, v_hbuf, v_hmask, v_pbuf, v_sptmap,
    v_bufhwm  0 (no Linux counterpart); v_maxpmem 0 (illumos: use all memory)

crtime of sysinfo and vminfo is the boot; var's is its creation.
"""

from __future__ import annotations

import errno
import os

from kstatpy_providers.system.source import SysRoot
from kstatpy_providers.system.source import create_raw
from kstatpy_providers.system.source import find_ints
from kstatpy_providers.system.source import parse_cpu_list

from kstatpy.raw import SYSINFO
from kstatpy.raw import VAR
from kstatpy.raw import VMINFO

TYPE_CHECKING = False  # not typing's: kept off the embedded kstat's start-up path
if TYPE_CHECKING:
    from typing import Any

    from kstatpy.chain import Chain
    from kstatpy.kstat import Kstat

__all__ = ["SysinfoSource", "VarSource", "VminfoSource", "create_sysinfo", "create_var", "create_vminfo"]


_MEMINFO_KEYS = (b"MemTotal:", b"MemFree:", b"AnonPages:", b"Committed_AS:", b"SwapTotal:", b"SwapFree:")


def _uptime_s(root: SysRoot) -> int:
    return int(float(root.read_bytes("proc/uptime").split(None, 1)[0]))


_PROCS_KEYS = (b"procs_running ", b"procs_blocked ")


class _Accumulator:
    """Sample-and-hold once-a-second sums (see the module docstring)."""

    def __init__(self, root: SysRoot) -> None:
        self.root = root
        self.updates: int | None = None
        self.sums: dict[str, int] = {}

    def sample(self) -> dict[str, int]:
        raise NotImplementedError

    def values(self) -> dict[str, Any]:
        now = _uptime_s(self.root)
        sample = self.sample()
        seconds = now if self.updates is None else max(0, now - self.updates)
        sums = self.sums
        for k, v in sample.items():
            sums[k] = sums.get(k, 0) + v * seconds
        self.updates = now if self.updates is None else max(now, self.updates)
        out = dict(sums)
        out["updates"] = self.updates
        return out


class SysinfoSource(_Accumulator):
    def __init__(self, root: SysRoot) -> None:
        super().__init__(root)
        self.online: tuple[bytes, int] = (b"", 1)  # the last ``online`` text and its CPU count

    def _online(self) -> int:
        try:
            text = self.root.read_bytes("sys/devices/system/cpu/online")
        except FileNotFoundError:
            return self.online[1]
        if text != self.online[0]:
            self.online = (text, max(1, len(parse_cpu_list(text.decode()))))
        return self.online[1]

    def sample(self) -> dict[str, int]:
        got = find_ints(self.root.read_bytes("proc/stat"), _PROCS_KEYS)
        if len(got) != len(_PROCS_KEYS):  # a malformed file is the reader's error, never zeros
            missing = " and ".join(k.decode().strip() for k in _PROCS_KEYS if k not in got)
            raise OSError(errno.EIO, f"proc/stat has no {missing} line (malformed)")
        # procs_running counts this reader (it is running) and a thread on each busy CPU.
        queued = max(0, got[b"procs_running "] - 1 - self._online())
        return {"runque": queued, "runocc": int(queued > 0), "waiting": got[b"procs_blocked "]}


class VminfoSource(_Accumulator):
    def __init__(self, root: SysRoot) -> None:
        super().__init__(root)
        self.kb_per_page = os.sysconf("SC_PAGE_SIZE") // 1024

    def sample(self) -> dict[str, int]:
        found = find_ints(self.root.read_bytes("proc/meminfo"), _MEMINFO_KEYS)
        m = {k[:-1]: v for k, v in found.items()}
        kpp = self.kb_per_page
        swap_total = m.get(b"SwapTotal", 0)
        virtual = m.get(b"MemTotal", 0) + swap_total
        resv = m.get(b"Committed_AS", 0)
        alloc = m.get(b"AnonPages", 0) + swap_total - m.get(b"SwapFree", 0)
        return {
            "freemem": m.get(b"MemFree", 0) // kpp,
            "swap_resv": resv // kpp,
            "swap_alloc": alloc // kpp,
            "swap_avail": max(0, virtual - resv) // kpp,
            "swap_free": max(0, virtual - alloc) // kpp,
        }


class VarSource:
    def __init__(self, root: SysRoot) -> None:
        self.root = root
        try:
            fifo_max = os.sched_get_priority_max(os.SCHED_FIFO)
        except (AttributeError, OSError):
            fifo_max = -1
        self.prios = {"v_nglobpris": fifo_max + 41, "v_maxsyspri": fifo_max} if fifo_max >= 0 else {}

    def values(self) -> dict[str, Any]:
        root = self.root
        out: dict[str, Any] = dict(self.prios)
        limits = [v for v in (root.read_int_or("proc/sys/kernel/threads-max", None),
                              root.read_int_or("proc/sys/kernel/pid_max", None)) if v is not None]  # fmt: skip
        if limits:
            out["v_proc"] = out["v_maxupttl"] = min(limits)
        expire = root.read_int_or("proc/sys/vm/dirty_expire_centisecs", None)
        if expire is not None:
            out["v_autoup"] = expire // 100
        return out


def create_sysinfo(chain: Chain, root: SysRoot, origin: int) -> Kstat:
    """unix:0:sysinfo (RAW sysinfo_t)."""
    return create_raw(chain, "unix", 0, "sysinfo", "misc", SYSINFO, SysinfoSource(root), crtime=origin)


def create_vminfo(chain: Chain, root: SysRoot, origin: int) -> Kstat | None:
    """unix:0:vminfo (RAW vminfo_t); None without ``proc/meminfo``."""
    if not root.exists("proc/meminfo"):
        return None
    return create_raw(chain, "unix", 0, "vminfo", "vm", VMINFO, VminfoSource(root), crtime=origin)


def create_var(chain: Chain, root: SysRoot) -> Kstat:
    """unix:0:var (RAW struct var)."""
    return create_raw(chain, "unix", 0, "var", "misc", VAR, VarSource(root))
