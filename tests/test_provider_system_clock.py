"""CpuClock's deficit never counts a preemption between its two reads as lost time.

The deficit is uptime ticks minus the CPU's accounted ticks, ratcheted up (``worst``
never decreases) and added to idle. A reader preempted between reading ``proc/stat``
and ``proc/uptime`` saw the gap as lost time and added it to idle for good (issue 23's
flaky hunt: +4-10% idle over 3 s under load). Here the host's clock is a counter that
advances as files are read, so the preemption is exact and repeatable.
"""

from __future__ import annotations

import threading
import time

from kstatpy_providers.system.cpustat import CpuClock
from kstatpy_providers.system.cpustat import CpuSource

from tests.bounded import join

HZ = 100


class PreemptedHost:
    """A two-file host whose every tick is accounted (user time) at every instant; the
    reader is preempted for ``gap`` ticks after each read while ``preempt`` is on."""

    def __init__(self) -> None:
        self.now = 10_000  # ticks since boot
        self.preempt = False
        self.gap = 50

    def _after_read(self) -> None:
        if self.preempt:
            self.now += self.gap

    def read_bytes(self, rel: str) -> bytes:
        if rel == "proc/uptime":
            out = b"%d.%02d 0.00\n" % divmod(self.now, HZ)
        elif rel == "proc/stat":
            out = b"cpu  %d 0 0 0 0 0 0 0 0 0\ncpu0 %d 0 0 0 0 0 0 0 0 0\nctxt 1\nprocesses 1\n" % (self.now, self.now)
        else:
            raise FileNotFoundError(rel)
        self._after_read()
        return out

    def exists(self, rel: str) -> bool:
        return rel in ("proc/uptime", "proc/stat")

    def read_int_or(self, rel: str, default: int | None) -> int | None:
        return default


def test_a_preempted_read_adds_nothing_to_idle(monkeypatch) -> None:
    monkeypatch.setattr("kstatpy_providers.system.cpustat._HZ", HZ)
    host = PreemptedHost()
    src = CpuSource(host, 0, sys=True, vm=False, charge_vm=False, clock=CpuClock(host, since_boot=True))  # type: ignore[arg-type]
    first = src.values()
    assert first["cpu_ticks_idle"] == 0  # every tick accounted: nothing lost
    host.preempt = True
    for _ in range(5):
        got = src.values()
    # Every tick is accounted at every instant, so no tick was lost: idle stays 0.
    assert got["cpu_ticks_idle"] == 0, f"a preemption between the reads was added to idle: {got['cpu_ticks_idle']}"
    host.preempt = False
    assert src.values()["cpu_ticks_idle"] == 0  # and nothing was kept for later


def test_real_lost_time_still_reaches_idle(monkeypatch) -> None:
    # Time the kernel did not account while the CPU idled (uptime runs on further than the
    # CPU's columns, its idle column among them) is idle.
    monkeypatch.setattr("kstatpy_providers.system.cpustat._HZ", HZ)
    host = PreemptedHost()
    src = CpuSource(host, 0, sys=True, vm=False, charge_vm=False, clock=CpuClock(host, since_boot=True))  # type: ignore[arg-type]
    src.values()
    accounted = host.now
    host.read_bytes = _frozen_stat(host, accounted, idle=200)  # type: ignore[method-assign]
    host.now += 300  # 3 s: 2 s of idle accounted, 1 s not
    assert src.values()["cpu_ticks_idle"] == 200 + 100 - 2  # less DEFICIT_SLACK


def _frozen_stat(host: PreemptedHost, accounted: int, idle: int):  # type: ignore[no-untyped-def]
    real = PreemptedHost.read_bytes

    def read_bytes(rel: str) -> bytes:
        if rel == "proc/stat":
            return b"cpu  %d 0 0 %d 0 0 0 0 0 0\ncpu0 %d 0 0 %d 0 0 0 0 0 0\nctxt 1\nprocesses 1\n" % (
                accounted, idle, accounted, idle,
            )  # fmt: skip
        return real(host, rel)

    return read_bytes


class StallingHost:
    """A busy vCPU (every tick user time) that the hypervisor stops for 5 of every 12 ticks:
    its columns stand still, then the next tick charges the stop as steal. Each read of
    ``proc/uptime`` is a tick; ``lock`` makes the host's every read one instant."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 10_000
        self.user = self.steal = 10_000 // 2

    def read_bytes(self, rel: str) -> bytes:
        time.sleep(0)  # let the other reader in between any two reads (the GIL switches here)
        with self.lock:
            if rel == "proc/uptime":
                self.now += 1
                if self.now % 12 == 0:  # the vCPU runs again: the stop is charged as steal
                    self.steal = self.now - self.user
                elif self.now % 12 < 7:
                    self.user += 1
                return b"%d.%02d 0.00\n" % divmod(self.now, HZ)
            if rel == "proc/stat":
                t = b"%d 0 0 0 0 0 0 %d 0 0" % (self.user, self.steal)
                return b"cpu  " + t + b"\ncpu0 " + t + b"\nctxt 1\nprocesses 1\n"
            raise FileNotFoundError(rel)

    def exists(self, rel: str) -> bool:
        return rel in ("proc/uptime", "proc/stat")

    def read_int_or(self, rel: str, default: int | None) -> int | None:
        return default


def test_stress_two_kstats_of_a_stalling_cpu(monkeypatch) -> None:
    """Stress: cpu:N:sys and cpu_stat of one CPU read at once, from two threads, while the
    vCPU stalls and its steal comes in: idle never gets a tick (the CPU never idled), no
    counter of either kstat goes back, and no read counts more ticks than the uptime.
    The clock's lock, held across its two reads, keeps each sample whole."""
    monkeypatch.setattr("kstatpy_providers.system.cpustat._HZ", HZ)
    host = StallingHost()
    clock = CpuClock(host, since_boot=True)  # type: ignore[arg-type]
    sources = [CpuSource(host, 0, sys=True, vm=False, charge_vm=False, clock=clock) for _ in range(2)]  # type: ignore[arg-type]
    errors: list[str] = []

    def reader(src: CpuSource) -> None:
        try:
            read(src)
        except Exception as exc:  # a reader that dies must fail the test, not end it early
            errors.append(repr(exc))

    def read(src: CpuSource) -> None:
        prev = (0, 0, 0)
        for _ in range(400):
            v = src.values()
            got = (v["cpu_ticks_idle"], v["cpu_ticks_user"], v["cpu_ticks_kernel"])
            if got[0] or any(g < p for g, p in zip(got, prev, strict=True)) or sum(got) > host.now:
                errors.append(f"{prev} then {got} (idle, user, kernel) at uptime {host.now}")
            prev = got

    threads = [threading.Thread(target=reader, args=(s,)) for s in sources]
    for t in threads:
        t.start()
    for t in threads:
        join(t, 60, "a reader's 400 reads")
    assert errors == []


def test_time_suspended_counts_nowhere(monkeypatch) -> None:
    # A suspend: /proc/uptime (CLOCK_BOOTTIME) runs on, the CPU's columns and CLOCK_MONOTONIC
    # (kstat's snaptime) do not. Neither idle nor kernel may take the time, or a suspended
    # laptop's mpstat shows its CPUs busy (kernel) for the whole suspend.
    monkeypatch.setattr("kstatpy_providers.system.cpustat._HZ", HZ)
    host = PreemptedHost()
    asleep = [0]
    clock = CpuClock(host, since_boot=True, suspended=lambda: asleep[0])  # type: ignore[arg-type]
    src = CpuSource(host, 0, sys=True, vm=False, charge_vm=False, clock=clock)  # type: ignore[arg-type]
    before = dict(src.values())  # values() answers its own dict, updated in place
    accounted = host.now
    host.read_bytes = _frozen_stat(host, accounted, idle=0)  # type: ignore[method-assign]
    host.now += 6_000  # a minute asleep
    asleep[0] += 6_000
    after = src.values()
    for state in ("idle", "user", "kernel"):
        assert after[f"cpu_ticks_{state}"] == before[f"cpu_ticks_{state}"], (state, before, after)


def test_the_hosts_own_suspended_time_is_boottime_less_monotonic() -> None:
    from kstatpy_providers.system import cpustat

    lo = int((time.clock_gettime(time.CLOCK_BOOTTIME) - time.clock_gettime(time.CLOCK_MONOTONIC)) * cpustat._HZ)
    got = cpustat.suspended_ticks()
    hi = int((time.clock_gettime(time.CLOCK_BOOTTIME) - time.clock_gettime(time.CLOCK_MONOTONIC)) * cpustat._HZ)
    assert min(lo, hi) - 1 <= got <= max(lo, hi) + 1
    # The real root asks the host; a fake tree has never been suspended.
    from kstatpy_providers.system.source import SysRoot

    assert cpustat.CpuClock(SysRoot("/"), since_boot=True).suspended is cpustat.suspended_ticks
    assert cpustat.CpuClock(PreemptedHost(), since_boot=True).suspended() == 0  # type: ignore[arg-type]
