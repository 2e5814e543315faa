"""providers/system/cpustat.py at its edges (mutation testing survivors, docs/TESTING.md):
a ``proc/stat`` cpu line shorter than ten columns, schedstats turned off, a vmstat
without pgmajfault. Every test reads a fake host's real files through a real chain,
or calls the parser on the bytes a kernel writes."""

from __future__ import annotations

from pathlib import Path

import pytest
from kstatpy_providers.system.cpustat import interrupts_column
from kstatpy_providers.system.cpustat import stat_cpu_line
from test_provider_system import HZ
from test_provider_system import IDLE0
from test_provider_system import IDLE1
from test_provider_system import OpenLog
from test_provider_system import attach
from test_provider_system import build_fake_tree
from test_provider_system import named
from test_provider_system import open_log  # noqa: F401  (the fixture)
from test_provider_system import read
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
