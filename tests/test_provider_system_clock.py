"""CpuClock's deficit never counts a preemption between its two reads as lost time.

The deficit is uptime ticks minus the CPU's accounted ticks, ratcheted up (``worst``
never decreases) and added to idle. A reader preempted between reading ``proc/stat``
and ``proc/uptime`` saw the gap as lost time and added it to idle for good (issue 23's
flaky hunt: +4-10% idle over 3 s under load). Here the host's clock is a counter that
advances as files are read, so the preemption is exact and repeatable.
"""

from __future__ import annotations

from kstatpy_providers.system.cpustat import CpuClock
from kstatpy_providers.system.cpustat import CpuSource

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
