"""providers/system/cpu.py's cpu_info at its edges (mutation testing survivors,
docs/TESTING.md): the cpufreq files, a cpuinfo block with keys missing or malformed,
topology a kernel does not report, the records' order, and CPUID signatures of
extended families past 15 + 15. Every test reads a fake host's real files through a
real chain."""

from __future__ import annotations

from pathlib import Path

import pytest
from kstatpy_providers.system.cpu import cpuid_signature
from test_provider_system import CPUINFO_BLOCK
from test_provider_system import attach
from test_provider_system import build_fake_tree
from test_provider_system import named
from test_provider_system import read
from test_provider_system import set_cpus
from test_provider_system import write


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    return build_fake_tree(tmp_path / "root")


def test_cpufreq_gives_clock_mhz_current_clock_and_the_implementation_clock(fake: Path) -> None:
    freq = "sys/devices/system/cpu/cpu1/cpufreq/"
    write(fake, freq + "cpuinfo_max_freq", "3500000\n")  # kHz
    write(fake, freq + "scaling_cur_freq", "1234567\n")
    chain, _ = attach(fake)
    info = named(read(chain, "cpu_info", 1, "cpu_info1"))
    assert info["clock_MHz"] == 3500 and info["current_clock_Hz"] == 1_234_567_000
    assert info["implementation"].endswith(" clock 3500 MHz)"), info["implementation"]
    write(fake, freq + "scaling_cur_freq", "2000001\n")  # read at each read
    assert named(read(chain, "cpu_info", 1, "cpu_info1"))["current_clock_Hz"] == 2_000_001_000


def test_an_x86_block_without_family_model_stepping(fake: Path) -> None:
    block = "".join(ln + "\n" for ln in CPUINFO_BLOCK.format(n=1).splitlines()
                    if not ln.startswith(("cpu family", "model\t", "stepping")))  # fmt: skip
    write(fake, "proc/cpuinfo", CPUINFO_BLOCK.format(n=0) + block + "\n")
    chain, _ = attach(fake)
    info = named(read(chain, "cpu_info", 1, "cpu_info1"))
    assert "family" not in info and "model" not in info and "stepping" not in info
    assert info["implementation"] == "x86 (chipid 0x0 GenuineIntel 0 family 0 model 0 step 0 clock 2000 MHz)"


def test_a_malformed_cpu_mhz_reads_zero_hz(fake: Path) -> None:
    chain, _ = attach(fake)
    write(fake, "proc/cpuinfo", CPUINFO_BLOCK.format(n=0) + CPUINFO_BLOCK.format(n=1).replace("1999.998", "n/a"))
    assert named(read(chain, "cpu_info", 1, "cpu_info1"))["current_clock_Hz"] == 0
    assert named(read(chain, "cpu_info", 0, "cpu_info0"))["current_clock_Hz"] == 1_999_998_000


def test_topology_the_kernel_does_not_report_reads_minus_one(fake: Path) -> None:
    (fake / "sys/devices/system/cpu/cpu1/topology/physical_package_id").unlink()
    chain, _ = attach(fake)
    info = named(read(chain, "cpu_info", 1, "cpu_info1"))
    assert (info["chip_id"], info["core_id"], info["pkg_core_id"]) == (-1, 1, 1)


def test_records_are_in_illumos_order(fake: Path) -> None:
    # uts/common/os/cpu.c's cpu_info_template order, less what Linux has no record for.
    chain, _ = attach(fake)
    assert list(named(read(chain, "cpu_info", 1, "cpu_info1"))) == [
        "state", "state_begin", "cpu_type", "fpu_type", "clock_MHz", "chip_id", "implementation", "brand",
        "core_id", "current_clock_Hz", "vendor_id", "family", "model", "stepping", "ncpu_per_chip",
        "ncore_per_chip", "pkg_core_id", "socket_type",
    ]  # fmt: skip


def test_cpuid_signature_extended_family_past_thirty() -> None:
    # Extended family is family - 15 (8 bits), not family mod 15: 30 is 15 + 15.
    assert cpuid_signature(30, 0, 0) == 0xF00F00
    assert cpuid_signature(270, 0x71, 0) == 0xFF70F10  # the largest: extended family 0xFF
    assert cpuid_signature(6, 0x9F, 15) == 0x906FF  # the low nibbles at their largest


def test_topology_is_read_until_known_then_kept(fake: Path) -> None:
    topo = fake / "sys/devices/system/cpu/cpu0/topology"
    (topo / "physical_package_id").unlink()
    chain, _ = attach(fake)
    assert named(read(chain, "cpu_info", 0, "cpu_info0"))["chip_id"] == -1
    write(fake, "sys/devices/system/cpu/cpu0/topology/physical_package_id", "0\n")  # reported now: read again
    info = named(read(chain, "cpu_info", 0, "cpu_info0"))
    assert (info["chip_id"], info["core_id"], info["pkg_core_id"]) == (0, 0, 0)
    write(fake, "sys/devices/system/cpu/cpu0/topology/core_id", "5\n")  # known: kept, never read again
    assert named(read(chain, "cpu_info", 0, "cpu_info0"))["pkg_core_id"] == 0


def test_a_block_without_vendor_or_mhz(fake: Path) -> None:
    # An arm64 cpuinfo (no vendor_id, no cpu MHz) and no cpufreq: no x86 records, clocks 0.
    write(fake, "proc/cpuinfo", "".join(f"processor\t: {n}\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\n\n"
                                        for n in (0, 1)))  # fmt: skip
    chain, _ = attach(fake)
    info = named(read(chain, "cpu_info", 1, "cpu_info1"))
    assert (info["clock_MHz"], info["current_clock_Hz"]) == (0, 0)
    assert not {"cpu_type", "fpu_type", "implementation", "socket_type", "brand", "vendor_id"} & set(info)


def test_each_record_once(fake: Path) -> None:
    chain, _ = attach(fake)
    names = [name for name, _, _ in read(chain, "cpu_info", 1, "cpu_info1")["data"]]
    assert len(names) == len(set(names)) == chain.kstat_lookup_name("cpu_info", 1, "cpu_info1").ks_ndata == 18


def test_an_off_line_cpu_without_a_cpuinfo_block_reads_zero_hz(fake: Path) -> None:
    chain, _ = attach(fake)
    set_cpus(fake, "0-1", online="0")  # /proc/cpuinfo lists on-line CPUs only
    write(fake, "proc/cpuinfo", CPUINFO_BLOCK.format(n=0))
    info = named(read(chain, "cpu_info", 1, "cpu_info1"))
    assert (info["state"], info["current_clock_Hz"], info["clock_MHz"]) == (b"off-line", 0, 2000)


def test_no_core_id_reads_minus_one_and_a_malformed_count_is_left_out(fake: Path) -> None:
    (fake / "sys/devices/system/cpu/cpu1/topology/core_id").unlink()
    write(fake, "proc/cpuinfo", CPUINFO_BLOCK.format(n=0) + CPUINFO_BLOCK.format(n=1).replace("siblings\t: 2", "siblings\t: n/a"))
    chain, _ = attach(fake)
    info = named(read(chain, "cpu_info", 1, "cpu_info1"))
    assert (info["chip_id"], info["core_id"], info["pkg_core_id"]) == (0, 1, -1)
    assert "ncpu_per_chip" not in info and info["ncore_per_chip"] == 2


def test_a_block_without_mhz_never_takes_the_next_cpus(fake: Path) -> None:
    chain, _ = attach(fake)
    write(fake, "proc/cpuinfo", CPUINFO_BLOCK.format(n=0).replace("cpu MHz\t\t: 1999.998\n", "") + CPUINFO_BLOCK.format(n=1))
    assert named(read(chain, "cpu_info", 0, "cpu_info0"))["current_clock_Hz"] == 0
    assert named(read(chain, "cpu_info", 1, "cpu_info1"))["current_clock_Hz"] == 1_999_998_000


def test_a_cpu_off_line_at_attach_began_its_state_at_the_first_read(fake: Path) -> None:
    set_cpus(fake, "0-1", online="0")
    chain, _ = attach(fake)
    info = named(read(chain, "cpu_info", 1, "cpu_info1"))
    assert info["state"] == b"off-line" and info["state_begin"] > 1700000000  # not the boot: on-line since boot only


def test_core_id_is_the_lowest_sibling_and_minus_one_without_siblings(fake: Path) -> None:
    write(fake, "sys/devices/system/cpu/cpu1/topology/thread_siblings_list", "0-1\n")  # two threads, one core
    (fake / "sys/devices/system/cpu/cpu0/topology/thread_siblings_list").unlink()
    chain, _ = attach(fake)
    assert named(read(chain, "cpu_info", 1, "cpu_info1"))["core_id"] == 0
    assert named(read(chain, "cpu_info", 0, "cpu_info0"))["core_id"] == -1


def test_a_cpufreq_maximum_between_two_mhz_is_rounded_down(fake: Path) -> None:
    # cpuinfo_max_freq is in kHz; clock_MHz (a LONG) and the implementation's clock are whole MHz.
    write(fake, "sys/devices/system/cpu/cpu1/cpufreq/cpuinfo_max_freq", "2400500\n")
    chain, _ = attach(fake)
    info = named(read(chain, "cpu_info", 1, "cpu_info1"))
    assert info["clock_MHz"] == 2400 and type(info["clock_MHz"]) is int, info["clock_MHz"]
    assert info["implementation"].endswith(" clock 2400 MHz)"), info["implementation"]


def test_a_host_without_an_online_file_has_every_present_cpu_on_line(fake: Path) -> None:
    # Kernels without CPU hotplug have no sys/devices/system/cpu/online: every CPU is on-line.
    (fake / "sys/devices/system/cpu/online").unlink()
    chain, _ = attach(fake)
    for cpu in (0, 1):
        info = named(read(chain, "cpu_info", cpu, f"cpu_info{cpu}"))
        assert info["state"] == b"on-line" and info["state_begin"] == 1700000000, (cpu, info["state"])
