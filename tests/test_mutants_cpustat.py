"""providers/system/cpustat.py at its edges (mutation testing survivors, docs/TESTING.md):
a ``proc/stat`` cpu line shorter than ten columns, schedstats turned off, a vmstat
without pgmajfault; and CpuClock's accounting of the time Linux loses, step by step
(a CPU short of its uptime since boot, iowait as idle time, a stall paid back by steal,
a hot-added CPU, a suspend). Every test reads a fake host's real files through a real
chain (the suspend: through the clock itself, with a fake suspended-time clock), or
calls the parser on the bytes a kernel writes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from kstatpy_providers.system import cpustat
from kstatpy_providers.system.cpustat import CpuClock
from kstatpy_providers.system.cpustat import CpuSource
from kstatpy_providers.system.cpustat import interrupts_column
from kstatpy_providers.system.cpustat import stat_cpu_line
from kstatpy_providers.system.source import SysRoot
from test_provider_system import HZ
from test_provider_system import IDLE0
from test_provider_system import IDLE1
from test_provider_system import OpenLog
from test_provider_system import attach
from test_provider_system import build_fake_tree
from test_provider_system import named
from test_provider_system import open_log  # noqa: F401  (the fixture)
from test_provider_system import read
from test_provider_system import set_cpus
from test_provider_system import write

from kstatpy.raw import CPU_STAT
from tests.chain_io import chain_read


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    return build_fake_tree(tmp_path / "root")


def test_a_short_cpu_line_is_padded_to_ten_columns() -> None:
    # Linux before 2.6.33 wrote fewer columns (no guest_nice, guest, steal): ten, the rest 0.
    stat = b"cpu  9 9 9 9 9 9 9\ncpu0 1 2 3 4 5 6 7\ncpu1 1 2 3 4 5 6 7 8 9 10\nctxt 1\n"
    assert stat_cpu_line(stat, 0) == [1, 2, 3, 4, 5, 6, 7, 0, 0, 0]
    assert stat_cpu_line(stat, 1) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert stat_cpu_line(stat, 2) is None  # off-line


def test_schedstats_off_pswitch_is_the_timeslices_alone(fake: Path) -> None:
    # kernel.sched_schedstats = 0: proc/schedstat is there, its sched_goidle stays 0 (not counted).
    write(fake, "proc/sys/kernel/sched_schedstats", "0\n")
    chain, _ = attach(fake)
    sys1 = named(read(chain, "cpu", 1, "sys"))
    assert (sys1["pswitch"], sys1["idlethread"]) == (450, 0)
    meta = chain.kstat_lookup_name("cpu", 1, "sys").ks_meta
    assert meta["idlethread"].no_source and not meta["pswitch"].no_source


def test_a_vmstat_without_pgmajfault(fake: Path) -> None:
    write(fake, "proc/vmstat", "nr_free_pages 1024\npgpgin 4000\npgpgout 8000\npgfault 1000\n")
    chain, _ = attach(fake)
    vm0 = named(read(chain, "cpu", 0, "vm"))
    assert (vm0["as_fault"], vm0["maj_fault"]) == (1000, 0)  # every fault minor: none is known major
    assert chain.kstat_lookup_name("cpu", 0, "vm").ks_meta["maj_fault"].no_source


def test_every_column_counts_once_whatever_its_bits(fake: Path) -> None:
    # Columns sharing bits (7 = 0b111 each): a mapping that or-ed two of them would lose 7.
    write(fake, "proc/uptime", "0.56 0.00\n")  # booted as long as the columns add up to: nothing lost
    write(fake, "proc/stat", (
        "cpu  14 14 14 14 14 14 14 14 0 0\ncpu0 7 7 7 7 7 7 7 7 0 0\ncpu1 7 7 7 7 7 7 7 7 0 0\n"
        "ctxt 1\nbtime 1700000000\nprocesses 1\n"
    ))  # fmt: skip
    chain, _ = attach(fake)
    sys1 = named(read(chain, "cpu", 1, "sys"))
    ticks = [sys1[f"cpu_ticks_{k}"] for k in ("user", "kernel", "idle", "wait")]
    assert ticks == [14, 28, 14, 0]  # user + nice; system + irq + softirq + steal; idle + iowait
    assert sys1["cpu_nsec_intr"] == 14 * (10**9 // HZ)  # irq + softirq


def test_guest_time_is_inside_user_and_never_counted_twice(fake: Path) -> None:
    # proc/stat's guest column (the ninth) is already inside user: the clock's deficit sums the
    # first eight, so 50 ticks of guest do not hide 50 ticks of lost time.
    chain, _ = attach(fake)
    sys1 = chain.kstat_lookup_name("cpu", 1, "sys").ks_kid
    assert named(chain_read(chain, sys1))["cpu_ticks_idle"] == IDLE1 + 7
    up = int(1234.56 * HZ) + 10 * HZ  # 10 s later: 50 ticks of guest (in user), 6 s idle, the rest lost
    write(fake, "proc/uptime", f"{up // HZ}.{up % HZ:02d} 2000.00\n")
    write(fake, "proc/stat", (
        f"cpu  350 10 60 0 14 4 6 8 50 0\ncpu0 100 5 30 {IDLE0} 7 2 3 4 0 0\n"
        f"cpu1 250 5 30 {IDLE1 + 6 * HZ} 7 2 3 4 50 0\nctxt 4567\nbtime 1700000000\nprocesses 100\n"
    ))  # fmt: skip
    got = named(chain_read(chain, sys1))
    lost = 10 * HZ - 50 - 6 * HZ - 2  # less the slack
    assert (got["cpu_ticks_user"], got["cpu_ticks_idle"]) == (255, IDLE1 + 7 + 6 * HZ + lost)


def test_interrupt_lines_with_fewer_counts_are_machine_wide() -> None:
    # Three CPUs (an odd count): ERR and MIS have one count, the machine's; never a CPU's.
    data = (b"           CPU0       CPU1       CPU2\n"
            b"  1:         10         20         30   IO-APIC  1-edge  i8042\n"
            b"CAL:          4          5          6   Function call interrupts\n"
            b"TLB:          1          1          1   TLB shootdowns\n"
            b"ERR:        100\nMIS:        200\n")  # fmt: skip
    assert [interrupts_column(data, c) for c in (0, 1, 2, 3)] == [(14, 4), (25, 5), (36, 6), None]


def test_with_schedstat_the_charged_cpu_has_its_own_pswitch(fake: Path) -> None:
    # proc/stat's machine-wide ctxt stands in for pswitch only without proc/schedstat.
    chain, _ = attach(fake)
    sys0 = named(read(chain, "cpu", 0, "sys"))  # cpu0 carries the machine-wide counts
    assert (sys0["pswitch"], sys0["idlethread"], sys0["sysfork"]) == (500 + 300, 300, 100)


def test_a_host_without_vmstat_still_reads_cpu_sys(fake: Path) -> None:
    (fake / "proc/vmstat").unlink()
    chain, _ = attach(fake)
    assert named(read(chain, "cpu", 0, "sys"))["pswitch"] == 800  # cpu:N:sys never reads proc/vmstat


def test_cpu_vm_reads_only_vmstat(fake: Path, open_log: OpenLog) -> None:  # noqa: F811
    chain, _ = attach(fake)
    vm0 = chain.kstat_lookup_name("cpu", 0, "vm").ks_kid
    open_log.record(lambda: chain_read(chain, vm0))
    assert [str(Path(p).relative_to(fake)) for p in open_log.reads] == ["proc/vmstat"]


def test_cpu_stat_wait_and_wait_io_are_zero(fake: Path) -> None:
    # illumos has counted no wait time since Solaris 10: cpu_stat's wait and wait_io read 0.
    chain, _ = attach(fake)
    cs = CPU_STAT.decode(read(chain, "cpu_stat", 1, "cpu_stat1")["data"])
    assert (cs["wait"], cs["wait_io"], cs["idle"], cs["kernel"]) == (0, 0, IDLE1 + 7, 39)


def test_a_schedstat_line_with_more_fields_is_read(fake: Path) -> None:
    # A newer schedstat version may add fields after the nine: the nine are still there.
    write(fake, "proc/schedstat", (
        "version 16\ntimestamp 4295\ncpu0 0 0 900 300 400 100 5000 6000 500 77\n"
        "cpu1 0 0 800 200 300 100 5000 6000 450 77\n"
    ))  # fmt: skip
    chain, _ = attach(fake)
    sys1 = named(read(chain, "cpu", 1, "sys"))
    assert (sys1["pswitch"], sys1["idlethread"]) == (450 + 200, 200)


def test_a_cpu_line_at_the_end_of_the_file_and_of_four_columns() -> None:
    # Linux 2.4 wrote four columns (user nice system idle); a line with no newline after it
    # (the file's last) is read to its last digit.
    assert stat_cpu_line(b"cpu  2 4 6 8\ncpu0 1 2 3 4\n", 0) == [1, 2, 3, 4, 0, 0, 0, 0, 0, 0]
    assert stat_cpu_line(b"cpu  2 4 6 8\ncpu0 1 2 3 40", 0) == [1, 2, 3, 40, 0, 0, 0, 0, 0, 0]


def test_a_schedstat_without_the_cpu_or_with_eight_fields_keeps_pswitch(fake: Path) -> None:
    # A CPU schedstat does not list yet, or a line short of the nine counters: nothing read,
    # the last values kept (0: never read).
    write(fake, "proc/schedstat", "version 15\ntimestamp 4295\ncpu0 0 0 900 300 400 100 5000 6000\n")
    chain, _ = attach(fake)
    for cpu in (0, 1):
        sys_n = named(read(chain, "cpu", cpu, "sys"))
        assert (sys_n["pswitch"], sys_n["idlethread"]) == (0, 0), cpu


def test_a_vmstat_key_gone_after_attach_counts_nothing(fake: Path) -> None:
    chain, _ = attach(fake)
    write(fake, "proc/vmstat", "pgpgin 4000\npgpgout 8000\npgfault 1000\npgmajfault 10\npgsteal_kswapd 50\n")
    vm0 = named(read(chain, "cpu", 0, "vm"))
    assert (vm0["dfree"], vm0["scan"], vm0["anonpgin"]) == (50, 0, 0)  # pgsteal_direct, pgscan_*, pswpin gone


# --- CpuClock, step by step --------------------------------------------------------
# Ticks of 1/100 s (USER_HZ on Linux). A step writes proc/uptime and both CPUs' lines of
# proc/stat; cpu:N:sys then shows idle (+ the lost time), user, kernel (+ the time held
# until steal pays it) and the interrupt time, exactly. A CPU's clock takes its first
# sample at the CPU's first read (not at attach).


def _cols(user: int = 0, idle: int = 0, iowait: int = 0, steal: int = 0) -> list[int]:
    return [user, 0, 0, idle, iowait, 0, 0, steal, 0, 0]


def _step(fake: Path, uptime: int, cpu0: list[int], cpu1: list[int] | None = None) -> None:
    cpu1 = cpu1 or cpu0
    line = " ".join
    write(fake, "proc/uptime", f"{uptime // 100}.{uptime % 100:02d} 0.00\n")
    write(fake, "proc/stat", (
        f"cpu  {line(str(a + b) for a, b in zip(cpu0, cpu1, strict=True))}\n"
        f"cpu0 {line(map(str, cpu0))}\ncpu1 {line(map(str, cpu1))}\n"
        "ctxt 4567\nbtime 1700000000\nprocesses 100\n"
    ))  # fmt: skip


def _ticks(chain, cpu: int) -> tuple[int, int, int, int]:  # type: ignore[no-untyped-def]
    v = named(read(chain, "cpu", cpu, "sys"))
    return v["cpu_ticks_idle"], v["cpu_ticks_user"], v["cpu_ticks_kernel"], v["cpu_nsec_intr"]


@pytest.fixture
def hz100(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpustat, "_HZ", 100)  # proc/uptime's seconds in the ticks the steps use


def test_since_boot_a_deficit_beyond_the_idle_column_is_kernel(fake: Path, hz100: None) -> None:
    # Early in boot: 10 s up, 3 s of user and 0.5 s of idle accounted. A CPU on-line at attach
    # counts from boot: of the 6.5 s missing, idle takes what the CPU idled (50), kernel the
    # rest (less the slack of 2) until steal pays it.
    _step(fake, 1000, _cols(user=300, idle=50))
    chain, _ = attach(fake)
    assert _ticks(chain, 0) == (100, 300, 598, 0)


def test_iowait_is_time_idled(fake: Path, hz100: None) -> None:
    # 4 s later: cpu0 idled 30 + iowait 120 and lost 150 ticks (all idle); cpu1 idled 120 +
    # iowait 30 and lost 250: 150 to idle, 100 to kernel.
    _step(fake, 1600, _cols(user=1000, idle=500, iowait=100))
    chain, _ = attach(fake)
    assert (_ticks(chain, 0), _ticks(chain, 1)) == ((600, 1000, 0, 0), (600, 1000, 0, 0))  # each clock's first read
    _step(fake, 2002, _cols(user=1100, idle=530, iowait=220), _cols(user=1000, idle=620, iowait=130))
    assert (_ticks(chain, 0), _ticks(chain, 1)) == ((900, 1100, 0, 0), (900, 1000, 100, 0))


def test_a_stall_is_kernel_until_steal_pays_it(fake: Path, hz100: None) -> None:
    _step(fake, 1505, _cols(user=1000, idle=500, steal=5))
    chain, _ = attach(fake)
    assert _ticks(chain, 0) == (500, 1000, 5, 0)
    _step(fake, 1605, _cols(user=1060, idle=500, steal=5))  # 40 ticks stalled, no idle: kernel
    assert _ticks(chain, 0) == (500, 1060, 5 + 38, 0)
    _step(fake, 1705, _cols(user=1100, idle=535, steal=35))  # steal pays 30; 25 lost while idling
    assert _ticks(chain, 0) == (560, 1100, 35 + 8, 0)
    _step(fake, 1805, _cols(user=1145, idle=565, steal=35))  # no steal: 25 lost, idled 30
    assert _ticks(chain, 0) == (615, 1145, 35 + 8, 0)
    # Steal column 2 back: nothing paid, and kernel does not go back (the 2 are added back,
    # not lost time: idle gets the 50 it idled, not 52).
    _step(fake, 1905, _cols(user=1195, idle=615, steal=33))
    assert _ticks(chain, 0) == (665, 1195, 33 + 8 + 2, 0)


def test_a_hot_added_cpu_counts_its_lost_time_from_its_first_read(fake: Path, hz100: None) -> None:
    # cpu1 comes on-line after attach 35 s short of its uptime: that is not counted; 30 ticks
    # lost after its first read (while it idled 20) are: 20 to idle, 10 to kernel.
    set_cpus(fake, "0")
    _step(fake, 5000, _cols(user=1000, idle=500))
    chain, providers = attach(fake)
    set_cpus(fake, "0-1")
    providers.refresh(chain)
    assert _ticks(chain, 1) == (500, 1000, 0, 0)
    _step(fake, 5100, _cols(user=1050, idle=520))
    assert _ticks(chain, 1) == (540, 1050, 8, 0)
    # cpu0, on-line since boot, read first now: the 35 s (and the 30 ticks) count, up to its idle
    assert _ticks(chain, 0) == (1040, 1050, 3008, 0)


def test_one_tick_past_the_slack_is_lost(fake: Path, hz100: None) -> None:
    _step(fake, 1500, _cols(user=1000, idle=500))
    chain, _ = attach(fake)
    assert _ticks(chain, 0) == (500, 1000, 0, 0)
    _step(fake, 1603, _cols(user=1050, idle=550))  # 3 ticks missing: 1 past the slack
    assert _ticks(chain, 0) == (551, 1050, 0, 0)


def test_an_idle_column_going_back_is_added_back_and_counted_once(fake: Path, hz100: None) -> None:
    # 8 ticks lost while idling go to idle for good; then idle + iowait goes 15 ticks back
    # (proc(5): iowait may decrease). cpu_ticks_idle never goes back (illumos' counters do
    # not; an unsigned delta would wrap): the 15 are added back from then on, so idle's
    # deltas are the columns' again from the next read, and the 15 are not lost time too
    # (kernel gets none of them).
    _step(fake, 1500, _cols(user=1000, idle=500, iowait=10))
    chain, _ = attach(fake)
    assert _ticks(chain, 0) == (510, 1000, 0, 0)
    _step(fake, 1630, _cols(user=1050, idle=560, iowait=10))
    assert _ticks(chain, 0) == (570 + 8, 1050, 0, 0)
    _step(fake, 1730, _cols(user=1160, idle=555, iowait=0))
    assert _ticks(chain, 0) == (555 + 8 + 15, 1160, 0, 0)
    _step(fake, 1830, _cols(user=1220, idle=600, iowait=0))
    assert _ticks(chain, 0) == (600 + 8 + 15, 1220, 0, 0)


def test_a_cpu_idling_after_its_idle_column_went_back_shows_idle_not_kernel(fake: Path, hz100: None) -> None:
    # Nothing lost: the columns add up to the uptime at every read. idle + iowait goes 50
    # back, then the CPU idles 40 ticks and 60 more: idle grows by exactly that, kernel
    # stays 0, and idle + user + kernel is the uptime (from the session-7 review: holding
    # idle at its highest instead charged those 40 ticks to kernel for good).
    _step(fake, 1600, _cols(user=1000, idle=500, iowait=100))
    chain, _ = attach(fake)
    assert _ticks(chain, 0) == (600, 1000, 0, 0)
    _step(fake, 1600, _cols(user=1000, idle=500, iowait=50))
    assert _ticks(chain, 0) == (600, 1000, 0, 0)
    _step(fake, 1640, _cols(user=1000, idle=540, iowait=50))
    assert _ticks(chain, 0) == (640, 1000, 0, 0)
    _step(fake, 1700, _cols(user=1000, idle=600, iowait=50))
    assert _ticks(chain, 0) == (700, 1000, 0, 0)


def test_user_and_kernel_columns_going_back_never_show_going_back(fake: Path, hz100: None) -> None:
    # The same for the other states: user (user + nice) and kernel (here steal) going back
    # are added back; the time still adds up (no lost time is made of the drops).
    _step(fake, 1600, _cols(user=1000, idle=500, steal=100))
    chain, _ = attach(fake)
    assert _ticks(chain, 0) == (500, 1000, 100, 0)
    _step(fake, 1700, _cols(user=990, idle=600, steal=90))
    assert _ticks(chain, 0) == (600, 1000, 100, 0)
    _step(fake, 1800, _cols(user=1040, idle=650, steal=90))
    assert _ticks(chain, 0) == (650, 1050, 100, 0)


def test_time_not_idled_while_idle_goes_back_is_kernel_and_the_drop_is_not_lost_time(fake: Path, hz100: None) -> None:
    # As above, but in the read where idle + iowait goes 15 back, uptime runs 130 ticks on
    # and user only 50: the CPU idled nothing, so the 80 not accounted (past the slack and
    # the 8 lost before) are kernel until steal pays them; the 15 added back are neither.
    _step(fake, 1500, _cols(user=1000, idle=500, iowait=10))
    chain, _ = attach(fake)
    _step(fake, 1630, _cols(user=1050, idle=560, iowait=10))
    assert _ticks(chain, 0) == (570 + 8, 1050, 0, 0)
    _step(fake, 1760, _cols(user=1100, idle=555, iowait=0))
    assert _ticks(chain, 0) == (570 + 8, 1100, 80, 0)


def test_a_cpu_whose_user_and_steal_columns_start_at_zero(fake: Path, hz100: None) -> None:
    # The clock's first read compares with zeros: a user column of 0 is no drop (nothing is
    # added back), and a steal column of 0 is the mark later steal pays from (30 risen, 30 paid).
    _step(fake, 500, _cols(idle=500))
    chain, _ = attach(fake)
    assert _ticks(chain, 0) == (500, 0, 0, 0)
    _step(fake, 600, _cols(user=60, idle=500))  # 40 stalled, no idle: kernel
    assert _ticks(chain, 0) == (500, 60, 38, 0)
    _step(fake, 700, _cols(user=100, idle=535, steal=30))  # steal pays 30; 25 lost while idling
    assert _ticks(chain, 0) == (560, 100, 38, 0)


def _fake_time(monkeypatch: pytest.MonkeyPatch, boottime: float, monotonic: float) -> None:
    clocks = {1: boottime, 2: monotonic}
    monkeypatch.setattr(cpustat, "time", SimpleNamespace(CLOCK_BOOTTIME=1, CLOCK_MONOTONIC=2, clock_gettime=clocks.get))


def test_suspended_ticks_are_boottime_less_monotonic(monkeypatch: pytest.MonkeyPatch, hz100: None) -> None:
    _fake_time(monkeypatch, boottime=1000.5, monotonic=990.25)  # 10.25 s suspended
    assert cpustat.suspended_ticks() == 1025

    class Duck:  # a root that is not a SysRoot: not the host's, never suspended
        pass

    assert CpuClock(Duck(), since_boot=True).suspended() == 0  # type: ignore[arg-type]


def test_suspended_time_is_in_no_state_but_lost_time_still_is(fake: Path, hz100: None) -> None:
    # 10 s suspended before the first read, 56 s more before the second, 30 ticks lost while
    # idling besides: only those reach idle.
    asleep = [1000]
    _step(fake, 2500, _cols(user=1000, idle=500))
    root = SysRoot(str(fake))
    clock = CpuClock(root, since_boot=True, suspended=lambda: asleep[0])
    src = CpuSource(root, 0, sys=True, vm=False, charge_vm=False, clock=clock)
    first = dict(src.values())
    assert (first["cpu_ticks_idle"], first["cpu_ticks_kernel"]) == (500, 0)
    asleep[0] = 6600
    _step(fake, 8230, _cols(user=1050, idle=550))
    second = src.values()
    assert (second["cpu_ticks_idle"], second["cpu_ticks_user"], second["cpu_ticks_kernel"]) == (578, 1050, 0)
    root.close()
