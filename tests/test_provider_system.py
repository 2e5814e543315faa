"""The system provider: values against the host's own sources, read cost, hotplug, detach."""

from __future__ import annotations

import errno
import os
import shutil
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from kstatpy_providers.system.cpu import cpuid_signature
from kstatpy_providers.system.disk import DiskNamer
from kstatpy_providers.system.disk import disk_module_instance
from kstatpy_providers.system.source import SysFile

from kstatpy.chain import Chain
from kstatpy.constants import KstatDataType
from kstatpy.constants import KstatType
from kstatpy.errors import KstatError
from kstatpy.plugins import load_providers
from tests.chain_io import chain_read
from tests.chain_io import chain_write

HZ = os.sysconf("SC_CLK_TCK")
#: the fake host's idle ticks: uptime 1234.56 s less the CPU's other columns
IDLE0 = int(1234.56 * HZ) - (100 + 5 + 30 + 7 + 2 + 3 + 4)
IDLE1 = int(1234.56 * HZ) - (200 + 5 + 30 + 7 + 2 + 3 + 4)
PAGESIZE = os.sysconf("SC_PAGE_SIZE")
U32 = KstatDataType.UINT32
U64 = KstatDataType.UINT64


# --- helpers ------------------------------------------------------------------


#: chains attached by attach(), newest last; the oldest beyond 4 are detached (no test reads
#: a chain attached five attaches ago), so their kept-open /proc and /sys files (a hundred
#: or more a chain) are closed now rather than whenever the cycle collector runs
_ATTACHED: list[tuple[Chain, Any]] = []


def attach(root: str | Path | None = None) -> tuple[Chain, Any]:
    while len(_ATTACHED) >= 4:
        old_chain, old_providers = _ATTACHED.pop(0)
        old_providers.detach(old_chain)
    chain = Chain(config={"system_root": str(root)} if root is not None else None)
    providers = load_providers(autoload=False, modules=["kstatpy_providers.system"])
    providers.attach(chain)
    assert providers.failures == []
    _ATTACHED.append((chain, providers))
    return chain, providers


def read(chain: Chain, module: str, instance: int, name: str) -> dict[str, Any]:
    ksp = chain.kstat_lookup_name(module, instance, name)
    assert ksp is not None, f"{module}:{instance}:{name} missing"
    return chain_read(chain, ksp.ks_kid)


def named(result: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, _, value in result["data"]}


def types(result: dict[str, Any]) -> dict[str, int]:
    return {name: t for name, t, _ in result["data"]}


def disk_for(chain: Chain, linux_name: str) -> tuple[str, int, str]:
    """(module, instance, name) of the IO kstat of Linux disk ``linux_name``, found through
    the "Device Name" of the error kstats, as a user would."""
    for ksp in chain.kstats():
        if ksp.ks_class == "device_error" and ksp.ks_name.endswith(",err"):
            if named(chain_read(chain, ksp.ks_kid)).get("Device Name") == linux_name:
                module = ksp.ks_module.removesuffix("err")
                return module, ksp.ks_instance, ksp.ks_name.removesuffix(",err")
    raise AssertionError(f"no error kstat names {linux_name}")


def sysfs_int(path: str) -> int:
    return int(Path(path).read_text().strip())


def proc_stat_cpu(cpu: int) -> list[int]:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            return [int(x) for x in line.split()[1:]]
    raise AssertionError(f"no cpu{cpu} line")


def cpu_list(text: str) -> list[int]:
    out: list[int] = []
    for part in text.strip().split(","):
        lo, _, hi = part.partition("-")
        out += range(int(lo), int(hi or lo) + 1)
    return out


class OpenLog:
    """Paths opened, files read (SysFile.read) and directories listed by the recording thread."""

    def __init__(self) -> None:
        self.paths: list[str] | None = None
        self.listed: list[str] = []
        self.reads: list[str] = []
        self.thread = 0

    def read_hook(self, path: str) -> None:
        if self.paths is not None and threading.get_ident() == self.thread:
            self.reads.append(path)

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if self.paths is None or threading.get_ident() != self.thread:
            return
        if event == "open" and isinstance(args[0], str):
            self.paths.append(args[0])
        elif event in ("os.listdir", "os.scandir"):
            self.listed.append(os.fspath(args[0]))

    def record(self, fn: Any) -> list[str]:
        self.paths, self.listed, self.reads, self.thread = [], [], [], threading.get_ident()
        try:
            fn()
            return self.paths
        finally:
            self.paths = None


@pytest.fixture(scope="session")
def open_log() -> OpenLog:
    log = OpenLog()
    sys.addaudithook(log)  # audit hooks cannot be removed: one for the session
    real_read = SysFile.read

    def read(self: SysFile) -> bytes:
        log.read_hook(self.path)
        return real_read(self)

    SysFile.read = read  # type: ignore[method-assign]  # for the session, as the audit hook
    return log


# --- a fake host tree -----------------------------------------------------------


def write(root: Path, rel: str, text: str) -> None:
    # Atomic, as the kernel's files are: a concurrent reader never sees half a file.
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


CPUINFO_BLOCK = """processor\t: {n}
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 85
model name\t: Intel(R) Xeon(R) Fake CPU @ 2.00GHz
stepping\t: 7
cpu MHz\t\t: 1999.998
siblings\t: 2
core id\t\t: {n}
cpu cores\t: 2

"""


def add_link(root: Path, name: str, counters: dict[str, int] | None = None, operstate: str = "up") -> None:
    stats = {
        "rx_bytes": 1000, "tx_bytes": 2000, "rx_packets": 10, "tx_packets": 20, "rx_errors": 1,
        "tx_errors": 2, "rx_dropped": 3, "tx_dropped": 4, "multicast": 5, "collisions": 6, "rx_nohandler": 7,
    }  # fmt: skip
    stats.update(counters or {})
    for key, value in stats.items():
        write(root, f"sys/class/net/{name}/statistics/{key}", f"{value}\n")
    write(root, f"sys/class/net/{name}/operstate", operstate + "\n")
    write(root, f"sys/class/net/{name}/carrier", "1\n")
    write(root, f"sys/class/net/{name}/speed", "1000\n")


def add_disk(root: Path, name: str, stat: str = "5 0 80 7 6 0 96 9 2 300 450 0 0 0 0 0 0") -> None:
    write(root, f"sys/block/{name}/stat", f"    {stat}\n")
    write(root, f"sys/block/{name}/size", "2048\n")
    if name.startswith("sd"):
        write(root, f"sys/block/{name}/device/vendor", "ATA     \n")
        write(root, f"sys/block/{name}/device/model", "FAKE DISK 1000GB-LONG-MODEL\n")
        write(root, f"sys/block/{name}/device/ioerr_cnt", "0x2\n")


def add_cpu(root: Path, n: int) -> None:
    topo = f"sys/devices/system/cpu/cpu{n}/topology/"
    write(root, topo + "physical_package_id", "0\n")
    write(root, topo + "core_id", f"{n}\n")
    write(root, topo + "thread_siblings_list", f"{n}\n")


def set_cpus(root: Path, present: str, online: str | None = None) -> None:
    write(root, "sys/devices/system/cpu/present", present + "\n")
    write(root, "sys/devices/system/cpu/online", (online or present) + "\n")


def build_fake_tree(root: Path) -> Path:
    """A host with 2 CPUs, links lo and eth0, disks sda and nvme0n1 (values in the tests)."""
    write(root, "proc/uptime", "1234.56 2000.00\n")
    write(root, "proc/loadavg", "0.50 1.25 2.00 1/87 7317\n")
    # Each CPU's eight time columns add up to the uptime (IDLE0/IDLE1: the idle column).
    write(root, "proc/stat", (
        f"cpu  300 10 60 {IDLE0 + IDLE1} 14 4 6 8 0 0\n"
        f"cpu0 100 5 30 {IDLE0} 7 2 3 4 0 0\n"
        f"cpu1 200 5 30 {IDLE1} 7 2 3 4 0 0\n"
        "intr 999 1 2\nctxt 4567\nbtime 1700000000\nprocesses 100\nprocs_running 6\nprocs_blocked 1\n"
    ))  # fmt: skip
    write(root, "proc/interrupts", (
        "           CPU0       CPU1\n"
        "  1:         10         20   IO-APIC  1-edge  i8042\n"
        "LOC:        100        200   Local timer interrupts\n"
        "ERR:          5\n"
    ))  # fmt: skip
    write(root, "proc/softirqs", (
        "                    CPU0       CPU1\n"
        "          HI:          1          2\n"
        "       TIMER:         30         40\n"
        "      NET_RX:          5          6\n"
    ))  # fmt: skip
    write(root, "proc/schedstat", (
        "version 15\ntimestamp 4295\n"
        "cpu0 0 0 900 300 400 100 5000 6000 500\n"
        "domain0 3 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35\n"
        "cpu1 0 0 800 200 300 100 5000 6000 450\n"
    ))  # fmt: skip
    write(root, "proc/vmstat", (
        "nr_free_pages 1024\npgpgin 4000\npgpgout 8000\npswpin 7\npswpout 9\npgfault 1000\npgmajfault 10\n"
        "pgsteal_kswapd 50\npgsteal_direct 5\npgscan_kswapd 70\npgscan_direct 7\npageoutrun 3\n"
    ))  # fmt: skip
    write(root, "proc/meminfo", "MemTotal:  8192 kB\nMemFree:   4096 kB\nMlocked:   64 kB\n")
    write(root, "proc/sys/vm/min_free_kbytes", "128\n")
    write(root, "proc/cpuinfo", CPUINFO_BLOCK.format(n=0) + CPUINFO_BLOCK.format(n=1))
    for pid in ("1", "42", "4242"):
        (root / "proc" / pid).mkdir()
    (root / "proc" / "self").mkdir()
    set_cpus(root, "0-1")
    add_cpu(root, 0)
    add_cpu(root, 1)
    write(root, "sys/class/net/bonding_masters", "\n")  # a file, not an interface
    add_link(root, "lo", operstate="unknown")
    add_link(root, "eth0", {"rx_bytes": 2**32 + 5, "rx_packets": 2**40})
    add_disk(root, "sda")
    add_disk(root, "nvme0n1")
    return root


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    return build_fake_tree(tmp_path / "root")


# --- values against the live host ---------------------------------------------


def test_system_misc_matches_host() -> None:
    chain, _ = attach()
    uptime0 = float(Path("/proc/uptime").read_text().split()[0])
    load0 = os.getloadavg()
    result = read(chain, "unix", 0, "system_misc")
    load1 = os.getloadavg()
    uptime1 = float(Path("/proc/uptime").read_text().split()[0])
    misc = named(result)

    assert result["class"] == "misc"
    assert set(types(result).values()) == {U32}
    assert list(misc) == [  # illumos' records, in its order (vmstat reads deficit, no source here)
        "ncpus", "lbolt", "deficit", "clk_intr", "vac", "nproc", "avenrun_1min", "avenrun_5min",
        "avenrun_15min", "boot_time", "nsec_per_tick",
    ]  # fmt: skip
    assert misc["deficit"] == misc["vac"] == 0
    present = cpu_list(Path("/sys/devices/system/cpu/present").read_text())
    assert misc["ncpus"] == len(present)
    if present == cpu_list(Path("/sys/devices/system/cpu/online").read_text()):
        assert misc["ncpus"] == os.cpu_count()
    btime = next(int(ln.split()[1]) for ln in Path("/proc/stat").read_text().splitlines() if ln.startswith("btime"))
    assert abs(misc["boot_time"] - btime) <= 1
    # /proc/loadavg has two decimals: 0.005 x 256 = 1.28 units of rounding, plus one of our own.
    for i, key in enumerate(("avenrun_1min", "avenrun_5min", "avenrun_15min")):
        lo, hi = sorted((load0[i] * 256, load1[i] * 256))
        assert lo - 2.3 <= misc[key] <= hi + 2.3, (key, misc[key], load0, load1)
    assert int(uptime0 * HZ) <= misc["lbolt"] <= int(uptime1 * HZ) + 1
    assert misc["nsec_per_tick"] == 1_000_000_000 // HZ
    nproc = sum(1 for n in os.listdir("/proc") if n.isdigit())
    assert abs(misc["nproc"] - nproc) <= 20


def test_system_pages_matches_meminfo() -> None:
    chain, _ = attach()
    result = read(chain, "unix", 0, "system_pages")
    pages = named(result)
    meminfo = {ln.split(":")[0]: int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines()}
    assert result["class"] == "pages"
    assert set(types(result).values()) == {U64}  # ULONG as an LP64 reader sees it
    assert pages["physmem"] == pages["pagestotal"] == meminfo["MemTotal"] * 1024 // PAGESIZE
    # kstat_fr.c's pageslocked (availrmem_initial - availrmem): the kernel's memory and locked pages
    assert pages["pageslocked"] - pages["pp_kernel"] == pytest.approx(meminfo["Mlocked"] * 1024 // PAGESIZE, abs=256)
    assert pages["freemem"] == pytest.approx(meminfo["MemFree"] * 1024 // PAGESIZE, rel=0.05)
    assert pages["minfree"] == sysfs_int("/proc/sys/vm/min_free_kbytes") * 1024 // PAGESIZE
    kernel_kb = sum(meminfo.get(k, 0) for k in ("Slab", "KernelStack", "PageTables", "Percpu", "SecPageTables"))
    assert pages["pp_kernel"] == pytest.approx(kernel_kb * 1024 // PAGESIZE, rel=0.05)
    # availrmem is what pageslocked took from physmem, as on illumos.
    assert pages["availrmem"] + pages["pageslocked"] == pages["physmem"]
    assert min(pages["pp_kernel"], pages["pageslocked"]) == pages["pp_kernel"]  # collectd's kernel memory
    zones = Path("/proc/zoneinfo").read_text().split("\n")
    highs = sum(int(ln.split()[1]) for ln in zones if ln.split()[:1] == ["high"] and len(ln.split()) == 2)
    lows = sum(int(ln.split()[1]) for ln in zones if ln.split()[:1] == ["low"] and len(ln.split()) == 2)
    assert (pages["lotsfree"], pages["desfree"]) == (highs, lows)
    assert pages["lotsfree"] > pages["desfree"] > pages["minfree"] > 0
    assert "nscan" not in pages and "kernelbase" not in pages  # no Linux source: left out, not faked


def test_link_lo_counters_match_sysfs() -> None:
    chain, _ = attach()
    stats = "/sys/class/net/lo/statistics/"
    before = {k: sysfs_int(stats + k) for k in ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")}
    result = read(chain, "link", 0, "lo")
    after = {k: sysfs_int(stats + k) for k in before}
    link = named(result)
    assert result["class"] == "net"
    for ours, theirs in (("rbytes64", "rx_bytes"), ("obytes64", "tx_bytes"),
                         ("ipackets64", "rx_packets"), ("opackets64", "tx_packets")):  # fmt: skip
        assert before[theirs] <= link[ours] <= after[theirs], ours
        assert link[ours[:-2]] == link[ours] % 2**32
    assert types(result)["rbytes64"] == U64 and types(result)["rbytes"] == U32


def test_cpu_sys_matches_proc_stat() -> None:
    chain, _ = attach()
    before = proc_stat_cpu(0)
    sys0 = named(read(chain, "cpu", 0, "sys"))
    after = proc_stat_cpu(0)
    assert before[3] + before[4] <= sys0["cpu_ticks_idle"]  # iowait is idle
    # ... plus at most the time Linux left unaccounted since boot (CpuClock)
    uptime_ticks = float(Path("/proc/uptime").read_text().split()[0]) * HZ
    assert sys0["cpu_ticks_idle"] <= after[3] + after[4] + max(0, uptime_ticks - sum(after[:8])) + 2
    assert before[0] + before[1] <= sys0["cpu_ticks_user"] <= after[0] + after[1]
    kernel = (2, 5, 6, 7)  # system, irq, softirq, steal
    assert sum(before[i] for i in kernel) <= sys0["cpu_ticks_kernel"] <= sum(after[i] for i in kernel)
    assert sys0["cpu_ticks_wait"] == sys0["wait_ticks_io"] == 0
    assert sys0["cpu_nsec_idle"] == sys0["cpu_ticks_idle"] * (1_000_000_000 // HZ)
    assert sys0["intr"] > 0


def test_cpu_info_matches_cpuinfo() -> None:
    chain, _ = attach()
    blocks = [b for b in Path("/proc/cpuinfo").read_text().split("\n\n") if b.strip()]
    first = dict((k.strip(), v.strip()) for k, _, v in (ln.partition(":") for ln in blocks[0].splitlines()))
    info = named(read(chain, "cpu_info", 0, "cpu_info0"))
    assert info["state"] == b"on-line"
    if "vendor_id" in first:
        assert info["vendor_id"] == first["vendor_id"]
    if "model name" in first:
        assert info["brand"] == first["model name"]
    topo = "/sys/devices/system/cpu/cpu0/topology/"
    if os.path.exists(topo + "physical_package_id"):
        assert info["chip_id"] == sysfs_int(topo + "physical_package_id")


def test_disk_io_matches_block_stat() -> None:
    chain, _ = attach()
    sized = [n for n in sorted(os.listdir("/sys/block")) if sysfs_int(f"/sys/block/{n}/size") > 0]
    for n in sorted(os.listdir("/sys/block")):  # a loop device with nothing attached has no kstat
        if n.startswith("loop") and n not in sized:
            with pytest.raises(AssertionError, match="no error kstat"):
                disk_for(chain, n)
    name = sized[0]
    module, instance, ks_name = disk_for(chain, name)
    assert ks_name == f"{module}{instance}"
    before = [int(x) for x in Path(f"/sys/block/{name}/stat").read_text().split()]
    result = read(chain, module, instance, ks_name)
    after = [int(x) for x in Path(f"/sys/block/{name}/stat").read_text().split()]
    io = result["data"]
    assert result["type"] == KstatType.IO and result["class"] == "disk"
    assert before[0] <= io["reads"] <= after[0]
    assert before[2] * 512 <= io["nread"] <= after[2] * 512
    assert before[9] * 10**6 <= io["rtime"]


# --- exact mapping, on a fake tree ----------------------------------------------


def test_fake_tree_values_follow_the_mapping(fake: Path) -> None:
    chain, _ = attach(fake)
    misc = named(read(chain, "unix", 0, "system_misc"))
    assert misc == {
        "ncpus": 2, "lbolt": int(1234.56 * HZ), "clk_intr": int(1234.56 * HZ), "nproc": 3,
        "avenrun_1min": 128, "avenrun_5min": 320, "avenrun_15min": 512, "boot_time": 1700000000,
        "nsec_per_tick": 1_000_000_000 // HZ, "deficit": 0, "vac": 0,
    }  # fmt: skip
    pages = named(read(chain, "unix", 0, "system_pages"))
    assert pages["physmem"] == 8192 * 1024 // PAGESIZE and pages["freemem"] == 4096 * 1024 // PAGESIZE
    assert pages["pageslocked"] == 64 * 1024 // PAGESIZE and pages["minfree"] == 128 * 1024 // PAGESIZE

    sys1 = named(read(chain, "cpu", 1, "sys"))
    ticks = [sys1[f"cpu_ticks_{k}"] for k in ("user", "kernel", "idle", "wait")]
    assert ticks == [205, 39, IDLE1 + 7, 0]  # nice in user; irq, softirq, steal in kernel; iowait idle
    assert sys1["intr"] == 220

    info = named(read(chain, "cpu_info", 1, "cpu_info1"))
    assert info["brand"] == "Intel(R) Xeon(R) Fake CPU @ 2.00GHz" and info["family"] == 6
    assert info["state"] == b"on-line" and info["state_begin"] == 1700000000  # on-line since boot
    assert info["clock_MHz"] == 2000 and info["current_clock_Hz"] == 1999998000
    assert (info["chip_id"], info["core_id"], info["pkg_core_id"], info["ncore_per_chip"]) == (0, 1, 1, 2)
    # What illumos' x86 cpu_info always has and psrinfo -v reads unchecked (issue 18's psrinfo run).
    assert (info["cpu_type"], info["fpu_type"], info["socket_type"]) == (b"i386", "i387 compatible", "")
    assert info["implementation"] == "x86 (chipid 0x0 GenuineIntel 50657 family 6 model 85 step 7 clock 2000 MHz)"
    meta = chain.kstat_lookup_name("cpu_info", 1, "cpu_info1").ks_meta
    assert meta["socket_type"].no_source and not meta["implementation"].no_source

    eth0 = named(read(chain, "link", 0, "eth0"))
    assert eth0["rbytes64"] == 2**32 + 5 and eth0["rbytes"] == 5  # the 32-bit counter wraps
    assert eth0["ipackets"] == 0 and eth0["ipackets64"] == 2**40
    assert (eth0["norcvbuf"], eth0["noxmtbuf"], eth0["multircv"], eth0["unknowns"]) == (3, 4, 5, 7)
    assert eth0["ifspeed"] == 1_000_000_000 and eth0["link_state"] == 1
    assert named(read(chain, "link", 0, "lo"))["link_state"] == 1  # "unknown" operstate, carrier 1

    assert sorted(k.ks_name for k in chain.kstats() if k.ks_module == "link") == ["eth0", "lo"]
    io = read(chain, "sd", 0, "sd0")["data"]
    assert (io["reads"], io["writes"], io["nread"], io["nwritten"]) == (5, 6, 80 * 512, 96 * 512)
    assert (io["rcnt"], io["wcnt"], io["wtime"], io["wlentime"]) == (2, 0, 0, 0)
    # In flight: the snapshot closes the open interval from the read's own timestamp on.
    assert 300 * 10**6 <= io["rtime"] < 300 * 10**6 + 10**9
    assert 450 * 10**6 <= io["rlentime"] < 450 * 10**6 + 2 * 10**9
    assert read(chain, "blkdev", 0, "blkdev0")["class"] == "disk"


def test_cpuid_signature_from_family_model_stepping() -> None:
    # Known parts: Skylake-SP 6/85/7 is 0x50657; AMD Milan 25/17/1 (extended family 10) is 0xA10F11.
    assert cpuid_signature(6, 85, 7) == 0x50657
    assert cpuid_signature(25, 17, 1) == 0xA10F11
    assert cpuid_signature(15, 4, 1) == 0xF41


def test_offline_cpu_state_changes_state_begin(fake: Path) -> None:
    chain, _ = attach(fake)
    assert named(read(chain, "cpu_info", 1, "cpu_info1"))["state"] == b"on-line"
    set_cpus(fake, "0-1", online="0")
    info = named(read(chain, "cpu_info", 1, "cpu_info1"))
    assert info["state"] == b"off-line" and info["state_begin"] > 1700000000


@pytest.mark.parametrize(
    ("name", "expected"),
    [("sda", ("sd", 0)), ("sdb", ("sd", 1)), ("sdaa", ("sd", 26)), ("hdb", ("cmdk", 1)), ("xvdc", ("xdf", 2)),
     ("loop7", ("lofi", 7)), ("vda", ("blkdev", None)), ("nvme1n2", ("blkdev", None)), ("dm-3", ("blkdev", None))],
)  # fmt: skip
def test_disk_naming(name: str, expected: tuple[str, int | None]) -> None:
    assert disk_module_instance(name) == expected


def test_blkdev_instances_are_given_in_order_and_kept() -> None:
    namer = DiskNamer()
    namer.name_all(["zram0", "nvme0n1", "vdb", "vda", "sdb", "dm-0", "nvme1n1"])
    assert [namer.instance(n) for n in ("vda", "vdb", "nvme0n1", "nvme1n1", "dm-0", "zram0", "sdb")] == [
        ("blkdev", 0), ("blkdev", 1), ("blkdev", 2), ("blkdev", 3), ("blkdev", 4), ("blkdev", 5), ("sd", 1),
    ]  # fmt: skip
    namer.name_all(["nvme2n1"])  # hot-added: the next free instance; the others keep theirs
    assert namer.instance("nvme2n1") == ("blkdev", 6) and namer.instance("vda") == ("blkdev", 0)


def test_root_from_environment(fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KSTATPY_SYSTEM_ROOT", str(fake))
    chain, _ = attach()
    assert named(read(chain, "unix", 0, "system_misc"))["boot_time"] == 1700000000


def test_writes_are_refused(fake: Path) -> None:
    chain, _ = attach(fake)
    ksp = chain.kstat_lookup_name("unix", 0, "system_misc")
    with pytest.raises(KstatError) as exc:
        chain_write(chain, ksp.ks_kid, ksp.ks_ndata, read(chain, "unix", 0, "system_misc")["data"])
    assert exc.value.errno == errno.EACCES


# --- what a read costs ----------------------------------------------------------


def test_read_reads_only_its_own_source(fake: Path, open_log: OpenLog) -> None:
    chain, _ = attach(fake)
    lo = chain.kstat_lookup_name("link", 0, "lo").ks_kid
    open_log.record(lambda: chain_read(chain, lo))
    assert open_log.reads and all(p.startswith(str(fake / "sys/class/net/lo") + "/") for p in open_log.reads)
    assert open_log.listed == []

    def rels(paths: list[str]) -> list[str]:
        return sorted(os.path.relpath(p, fake) for p in paths)

    sd0 = chain.kstat_lookup_name("sd", 0, "sd0").ks_kid
    open_log.record(lambda: chain_read(chain, sd0))
    assert rels(open_log.reads) == ["sys/block/sda/stat"]

    cpu0 = chain.kstat_lookup_name("cpu", 0, "sys").ks_kid
    open_log.record(lambda: chain_read(chain, cpu0))
    assert rels(open_log.reads) == ["proc/interrupts", "proc/schedstat", "proc/softirqs", "proc/stat", "proc/uptime"]

    misc = chain.kstat_lookup_name("unix", 0, "system_misc").ks_kid
    open_log.record(lambda: chain_read(chain, misc))
    assert rels(open_log.reads) == ["proc/loadavg", "proc/uptime", "sys/devices/system/cpu/present"]
    assert rels(open_log.listed) == ["proc"]  # the first read counts the processes
    # Again, nothing created or gone: no listing, and no open (the files stay open).
    assert open_log.record(lambda: chain_read(chain, misc)) == [] and open_log.listed == []
    write(fake, "proc/loadavg", "0.50 1.25 2.00 1/88 7317\n")  # a task more: count again
    (fake / "proc" / "4343").mkdir()
    open_log.record(lambda: chain_read(chain, misc))
    assert rels(open_log.listed) == ["proc"]
    assert named(chain_read(chain, misc))["nproc"] == 4
    write(fake, "proc/loadavg", "0.75 1.25 2.00 3/88 7317\n")  # only the load and the running count moved
    open_log.record(lambda: chain_read(chain, misc))
    assert open_log.listed == []
    write(fake, "proc/loadavg", "0.75 1.25 2.00 3/88 7400\n")  # one task went, another came: same total
    (fake / "proc" / "4343").rmdir()
    (fake / "proc" / "7400").mkdir()
    (fake / "proc" / "7401").mkdir()  # (and its fork, in the same instant)
    open_log.record(lambda: chain_read(chain, misc))
    assert rels(open_log.listed) == ["proc"]
    assert named(chain_read(chain, misc))["nproc"] == 5


def test_live_reads_open_nothing_after_the_first(open_log: OpenLog) -> None:
    chain, _ = attach()
    lo = chain.kstat_lookup_name("link", 0, "lo").ks_kid
    opened = open_log.record(lambda: chain_read(chain, lo))
    assert opened and all(p.startswith("/sys/class/net/lo/") for p in opened), opened
    for module, instance, name in (("link", 0, "lo"), ("cpu", 0, "sys"), ("unix", 0, "system_pages")):
        kid = chain.kstat_lookup_name(module, instance, name).ks_kid
        chain_read(chain, kid)
        assert open_log.record(lambda kid=kid: chain_read(chain, kid)) == [], name  # pread on the kept fds


def test_refresh_without_change_is_cheap(fake: Path, open_log: OpenLog) -> None:
    chain, providers = attach(fake)
    kcid = chain.chain_id
    open_log.record(lambda: providers.refresh(chain))
    assert chain.chain_id == kcid
    assert open_log.reads == [str(fake / "sys/devices/system/cpu/present")]
    # the interrupt lines' listing: actions are read only for a line not seen with any (intr.py)
    assert sorted(os.path.relpath(p, fake) for p in open_log.listed) == ["sys/block", "sys/class/net", "sys/kernel/irq"]


# --- hotplug ----------------------------------------------------------------------


def test_interface_goes_and_comes_back(fake: Path) -> None:
    chain, providers = attach(fake)
    old = chain.kstat_lookup_name("link", 0, "eth0")
    old_kid, kcid = old.ks_kid, chain.chain_id
    shutil.rmtree(fake / "sys/class/net/eth0")
    with pytest.raises(KstatError) as exc:  # gone before anyone refreshed: ENXIO for the reader
        chain_read(chain, old_kid)
    assert exc.value.errno == errno.ENXIO
    providers.refresh(chain)
    assert chain.kstat_lookup_name("link", 0, "eth0") is None
    assert chain.chain_id > kcid
    kcid = chain.chain_id
    add_link(fake, "eth0")
    providers.refresh(chain)
    back = chain.kstat_lookup_name("link", 0, "eth0")
    assert back is not None and back.ks_kid > old_kid and chain.chain_id > kcid
    assert named(chain_read(chain, back.ks_kid))["rbytes64"] == 1000


def test_disk_goes_and_comes_back(fake: Path) -> None:
    chain, providers = attach(fake)
    kcid = chain.chain_id
    shutil.rmtree(fake / "sys/block/nvme0n1")
    providers.refresh(chain)
    assert chain.kstat_lookup_name("blkdev", 0, "blkdev0") is None and chain.chain_id > kcid
    assert chain.kstat_lookup_name("blkdeverr", 0, "blkdev0,err") is None
    add_disk(fake, "nvme0n1")
    add_disk(fake, "sdb")
    providers.refresh(chain)
    assert chain.kstat_lookup_name("blkdev", 0, "blkdev0") is not None  # its instance, kept
    assert read(chain, "sd", 1, "sd1")["data"]["reads"] == 5
    assert disk_for(chain, "sdb") == ("sd", 1, "sd1")


def test_cpu_goes_and_comes_back(fake: Path) -> None:
    chain, providers = attach(fake)
    kcid = chain.chain_id
    set_cpus(fake, "0")
    providers.refresh(chain)
    assert chain.kstat_lookup_name("cpu_info", 1, "cpu_info1") is None
    assert chain.kstat_lookup_name("cpu", 1, "sys") is None
    assert chain.chain_id > kcid
    assert named(read(chain, "unix", 0, "system_misc"))["ncpus"] == 1
    kcid = chain.chain_id
    set_cpus(fake, "0-1")
    providers.refresh(chain)
    assert chain.chain_id > kcid
    info = named(read(chain, "cpu_info", 1, "cpu_info1"))
    assert info["state"] == b"on-line" and info["state_begin"] != 1700000000  # hotplugged: not since boot
    assert named(read(chain, "cpu", 1, "sys"))["cpu_ticks_user"] == 205


def test_concurrent_refreshes_and_reads_agree(fake: Path) -> None:
    chain, providers = attach(fake)
    errors: list[BaseException] = []
    stop = threading.Event()
    start = threading.Barrier(5, timeout=60)

    def refresher() -> None:
        start.wait()  # bounded: Barrier(timeout=60)
        while not stop.is_set():
            try:
                providers.refresh(chain)
            except BaseException as exc:
                errors.append(exc)

    def reader() -> None:
        start.wait()  # bounded: Barrier(timeout=60)
        while not stop.is_set():
            for header in chain_read(chain, 0)["data"]:  # KID 0, as a reader does: no stale Kstat touched
                try:
                    chain_read(chain, header["kid"])
                except KstatError as exc:
                    if exc.errno not in (errno.ENXIO, errno.EAGAIN):
                        errors.append(exc)
                except BaseException as exc:
                    errors.append(exc)

    threads = [threading.Thread(target=fn) for fn in (refresher, refresher, refresher, reader, reader)]
    for t in threads:
        t.start()
    start_links = fake / "sys/class/net"
    for i in range(30):
        if i % 2:
            add_link(fake, "tap0")
        else:
            shutil.rmtree(start_links / "tap0", ignore_errors=True)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    providers.refresh(chain)
    names = sorted(k.ks_name for k in chain.kstats() if k.ks_module == "link")
    assert names == sorted(n for n in os.listdir(start_links) if (start_links / n).is_dir())


# --- per-chain state and detach -----------------------------------------------------


def test_detach_deletes_everything_and_chains_are_independent(fake: Path) -> None:
    live, live_providers = attach()
    chain, providers = attach(fake)
    assert named(read(chain, "unix", 0, "system_misc"))["boot_time"] == 1700000000
    assert named(read(live, "unix", 0, "system_misc"))["boot_time"] != 1700000000
    providers.detach(chain)
    assert [(k.ks_module, k.ks_name) for k in chain.kstats()] == [("unix", "kstat_headers"), ("unix", "kstat_types")]
    providers.refresh(chain)  # nothing attached any more: no kstat comes back
    assert len(chain) == 2
    assert live.kstat_lookup_name("link", 0, "lo") is not None
    live_providers.detach(live)
    assert len(live) == 2
