"""The system provider's read cost: each kstat's ks_update against its floor, and
KSTAT_IOC_READ of unix:0:system_misc through kstatd against a bare msgpack echo.

    python bench/bench_system.py [--rounds 15] [--block 100] [--rtt 5000] [--rtt-only]

Floor: the least Python that produces the same values from the same files: the
files opened once and re-read with ``os.pread`` at offset 0, parsed with direct
byte searches, no objects, no dicts beyond the result, no kstat. Each kstat's
ks_update (the provider's whole read: sources, mapping, the NAMED records or the
packed struct) and its floor are timed call by call, alternating, ``--rounds`` x
``--block`` calls each, so load on the machine hits both alike; the table gives the
median µs per call of each and the ratio. The floors' results are checked to name
the same statistics as the kstat.

The second part starts kstatd with the system provider on the host's root and a
msgpack echo (bench_read's, in its own process) answering every request with the
very reply kstatd gave for unix:0:system_misc, and times single round trips to
both, interleaved (bench_read.rtt_interleaved).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from bench_read import READ  # noqa: E402
from bench_read import RawClient  # noqa: E402
from bench_read import rtt_interleaved  # noqa: E402
from infra import EchoDispatch  # noqa: E402
from infra import echo_server  # noqa: E402
from infra import wait_ready  # noqa: E402
from kstatpy_providers.system.cpustat import SYS_ORDER  # noqa: E402
from kstatpy_providers.system.cpustat import VM_ORDER  # noqa: E402

from kstatpy.chain import Chain  # noqa: E402
from kstatpy.constants import KSTAT_READ  # noqa: E402
from kstatpy.plugins import load_providers  # noqa: E402

HZ = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
_FDS: dict[str, int] = {}


_SIZES: dict[str, int] = {}


def rd(path: str) -> bytes:
    # As the provider: kept open, pread at 0 into a buffer sized to the file (4 KiB, x4),
    # then on to the end for a long seq_file.
    fd = _FDS.get(path)
    if fd is None:
        fd = _FDS[path] = os.open(path, os.O_RDONLY)
        _SIZES[path] = 4096
    size = _SIZES[path]
    data = os.pread(fd, size, 0)
    while len(data) >= size:
        size = _SIZES[path] = size * 4
        data = os.pread(fd, size, 0)
    if len(data) >= 2048:  # maybe one seq_file buffer of several (/proc/slabinfo): read on
        parts = [data]
        while more := os.pread(fd, size, sum(map(len, parts))):
            parts.append(more)
        data = b"".join(parts)
    return data


def after(data: bytes, key: bytes) -> int:
    at = data.find(key) + len(key)
    return int(data[at : data.find(b"\n", at)].split()[0])


# --- floors ---------------------------------------------------------------------------------


BTIME = after(rd("/proc/stat"), b"\nbtime ")  # read once, as the kstat does at creation
_NPROC_KEY: list[tuple[bytes, bytes] | None] = [None]


def floor_misc() -> dict[str, int]:
    up = rd("/proc/uptime")
    la = rd("/proc/loadavg").split()
    pr = rd("/sys/devices/system/cpu/present").strip()
    lbolt = int(float(up.split()[0]) * HZ)
    ncpus = sum(int(p.partition(b"-")[2] or p) - int(p.partition(b"-")[0]) + 1 for p in pr.split(b","))
    key = (la[3].partition(b"/")[2], la[4])  # the nproc change check (no listing while nothing changed)
    if key != _NPROC_KEY[0]:
        _NPROC_KEY[0] = key
    return {
        "ncpus": ncpus, "lbolt": lbolt, "clk_intr": lbolt, "nproc": 0, "avenrun_1min": round(float(la[0]) * 256),
        "avenrun_5min": round(float(la[1]) * 256), "avenrun_15min": round(float(la[2]) * 256),
        "boot_time": BTIME, "nsec_per_tick": 10**9 // HZ, "deficit": 0, "vac": 0,
    }  # fmt: skip


def floor_misc_listing() -> dict[str, int]:
    out = floor_misc()
    out["nproc"] = sum(1 for n in os.listdir("/proc") if n.isdigit())
    return out


ARC = "/proc/spl/kstat/zfs/arcstats" if os.path.exists("/proc/spl/kstat/zfs/arcstats") else ""


def floor_pages() -> dict[str, int]:
    m = b"\n" + rd("/proc/meminfo")
    total, free, locked = after(m, b"\nMemTotal:"), after(m, b"\nMemFree:"), after(m, b"\nMlocked:")
    kernel = sum(after(m, k) for k in (b"\nSlab:", b"\nKernelStack:", b"\nPageTables:", b"\nPercpu:"))
    if b"\nSecPageTables:" in m:
        kernel += after(m, b"\nSecPageTables:")
    z = rd("/proc/zoneinfo")
    low = high = 0
    at = z.find(b"\n        low ")
    while at >= 0:
        end = z.find(b"\n", at + 14)
        low += int(z[at + 14 : end])
        at = z.find(b"\n        low ", end)
    at = z.find(b"\n        high ")
    while at >= 0:
        end = z.find(b"\n", at + 15)
        high += int(z[at + 15 : end])
        at = z.find(b"\n        high ", end)
    pk = kernel // PAGE_KB
    if ARC:  # the ZFS ARC is kernel memory
        a = rd(ARC)
        at = a.find(b"\nsize ")
        pk += int(a[at + 1 : a.find(b"\n", at + 1)].split()[2]) // (PAGE_KB * 1024)
    pl = pk + locked // PAGE_KB
    return {
        "physmem": total // PAGE_KB, "freemem": free // PAGE_KB,
        "availrmem": max(0, total // PAGE_KB - pl), "lotsfree": high, "desfree": low,
        "minfree": int(rd("/proc/sys/vm/min_free_kbytes")) // PAGE_KB, "pp_kernel": pk,
        "pagesfree": free // PAGE_KB, "pageslocked": pl, "pagestotal": total // PAGE_KB,
    }  # fmt: skip


def _column(data: bytes, cpu: int) -> tuple[int, int]:
    lines = data.split(b"\n")
    head = lines[0].split()
    col = head.index(b"CPU%d" % cpu) + 1
    total = xc = 0
    for line in lines[1:]:
        parts = line.split()
        if len(parts) > len(head) and parts[0] != b"TLB:":
            v = int(parts[col])
            total += v
            if parts[0] == b"CAL:":
                xc = v
    return total, xc


def floor_cpu_sys(cpu: int = 0) -> dict[str, int]:
    st = rd("/proc/stat")
    at = st.find(b"\ncpu%d " % cpu)
    t = [int(x) for x in st[at + 5 : st.find(b"\n", at + 1)].split()]
    rd("/proc/uptime")  # the time Linux lost (CpuClock)
    nspt = 10**9 // HZ
    i, u, k = t[3] + t[4], t[0] + t[1], t[2] + t[5] + t[6] + t[7]
    intr, xc = _column(rd("/proc/interrupts"), cpu)
    out = {
        "cpu_ticks_idle": i, "cpu_ticks_user": u, "cpu_ticks_kernel": k, "cpu_ticks_wait": 0,
        "cpu_nsec_idle": i * nspt, "cpu_nsec_user": u * nspt, "cpu_nsec_kernel": k * nspt,
        "cpu_nsec_intr": (t[5] + t[6]) * nspt, "wait_ticks_io": 0, "intr": intr, "xcalls": xc,
        "intrthread": _column(rd("/proc/softirqs"), cpu)[0],
    }  # fmt: skip
    if os.path.exists("/proc/schedstat"):
        s = rd("/proc/schedstat")
        at = s.find(b"\ncpu%d " % cpu)
        f = s[at + 1 : s.find(b"\n", at + 1)].split()
        out["pswitch"], out["idlethread"] = int(f[9]) + int(f[4]), int(f[4])
    elif cpu == 0:  # ctxt, charged to the lowest CPU
        out["pswitch"] = after(st, b"\nctxt ")
    if cpu == 0:
        out["sysfork"] = after(st, b"\nprocesses ")
    return {**SYS_ZERO, **out}


_VM_KEYS = (b"\npgpgin ", b"\npgpgout ", b"\npgsteal_kswapd ", b"\npgsteal_direct ", b"\npgsteal_khugepaged ",
            b"\npgscan_kswapd ", b"\npgscan_direct ", b"\npgscan_khugepaged ", b"\npgfault ", b"\npgmajfault ",
            b"\npageoutrun ", b"\npswpin ", b"\npswpout ")  # fmt: skip


def floor_cpu_vm() -> dict[str, int]:
    d = b"\n" + rd("/proc/vmstat")
    v = {k: after(d, k) for k in _VM_KEYS if k in d}
    g = v.get
    return VM_ZERO | {
        "pgpgin": g(b"\npgpgin ", 0) // PAGE_KB, "pgpgout": g(b"\npgpgout ", 0) // PAGE_KB,
        "dfree": g(b"\npgsteal_kswapd ", 0) + g(b"\npgsteal_direct ", 0) + g(b"\npgsteal_khugepaged ", 0),
        "scan": g(b"\npgscan_kswapd ", 0) + g(b"\npgscan_direct ", 0) + g(b"\npgscan_khugepaged ", 0),
        "as_fault": g(b"\npgfault ", 0) - g(b"\npgmajfault ", 0), "maj_fault": g(b"\npgmajfault ", 0),
        "pgrrun": g(b"\npageoutrun ", 0), "anonpgin": g(b"\npswpin ", 0), "anonpgout": g(b"\npswpout ", 0),
    }  # fmt: skip


SYS_ZERO = dict.fromkeys(SYS_ORDER, 0)
VM_ZERO = dict.fromkeys(VM_ORDER, 0)
_CPU_STAT = struct.Struct("<95I")


def floor_cpu_stat() -> dict[str, int]:
    s, v = floor_cpu_sys(0), floor_cpu_vm()
    words = [0] * 95
    words[2:5] = s["cpu_ticks_idle"] & 0xFFFFFFFF, s["cpu_ticks_user"] & 0xFFFFFFFF, s["cpu_ticks_kernel"] & 0xFFFFFFFF
    words[9 + 6] = s.get("pswitch", 0) & 0xFFFFFFFF
    words[9 + 8] = s["intr"] & 0xFFFFFFFF
    words[9 + 33] = s["intrthread"] & 0xFFFFFFFF
    words[9 + 39] = s["xcalls"] & 0xFFFFFFFF
    for i, n in enumerate(v):
        words[64 + i] = v[n] & 0xFFFFFFFF  # not at their real offsets: the cost is the same
    return {"data": _CPU_STAT.pack(*words)}  # type: ignore[dict-item]


def floor_cpu_info(cpu: int = 0) -> dict[str, Any]:
    online = rd("/sys/devices/system/cpu/online")
    ci = rd("/proc/cpuinfo")
    start = ci.find(b"processor\t: %d\n" % cpu)
    at = ci.find(b"cpu MHz", start)
    mhz = float(ci[at : ci.find(b"\n", at)].partition(b":")[2])
    return {"state": b"on-line" if online else b"off-line", "current_clock_Hz": round(mhz * 1e6)}


def make_floor_link(ifname: str, counters: list[str]) -> Callable[[], dict[str, int]]:
    base = f"/sys/class/net/{ifname}/"

    def floor() -> dict[str, int]:
        out = {c: int(rd(base + "statistics/" + c)) for c in counters}
        try:
            out["ifspeed"] = int(rd(base + "speed")) * 10**6
        except OSError:
            out["ifspeed"] = 0
        oper = rd(base + "operstate").strip()
        out["link_state"] = 1 if oper == b"up" else 0 if oper == b"down" else int(rd(base + "carrier"))
        try:
            duplex = rd(base + "duplex").strip()
        except OSError:
            duplex = b""
        out["link_duplex"] = 2 if duplex == b"full" else 1 if duplex == b"half" else 0
        return out

    return floor


def make_floor_disk(name: str) -> Callable[[], dict[str, int]]:
    path = f"/sys/block/{name}/stat"

    def floor() -> dict[str, int]:
        f = rd(path).split()
        return {"reads": int(f[0]), "nread": int(f[2]) * 512, "writes": int(f[4]), "nwritten": int(f[6]),
                "rcnt": int(f[8]), "rtime": int(f[9]) * 10**6, "rlentime": int(f[10]) * 10**6,
                "rlastupdate": time.monotonic_ns()}  # fmt: skip

    return floor


def make_floor_disk_err(name: str, fields: list[str]) -> Callable[[], dict[str, Any]]:
    path = f"/sys/block/{name}/size"
    zero = dict.fromkeys(fields, 0)  # the layout of the disk's module (sd's or blkdev's)

    def floor() -> dict[str, Any]:
        return {**zero, "Device Name": name, "Size": int(rd(path)) * 512}

    return floor


def floor_sysinfo() -> dict[str, Any]:
    up = int(float(rd("/proc/uptime").split()[0]))
    st = rd("/proc/stat")
    on = rd("/sys/devices/system/cpu/online").strip()
    ncpu = sum(int(p.partition(b"-")[2] or p) - int(p.partition(b"-")[0]) + 1 for p in on.split(b","))
    q = max(0, after(st, b"\nprocs_running ") - 1 - ncpu)
    return {"data": struct.pack("<6I", up, q * up, up * (q > 0), 0, 0, after(st, b"\nprocs_blocked ") * up)}


def floor_vminfo() -> dict[str, Any]:
    up = int(float(rd("/proc/uptime").split()[0]))
    m = b"\n" + rd("/proc/meminfo")
    vals = [after(m, k) for k in (b"\nMemFree:", b"\nCommitted_AS:", b"\nAnonPages:", b"\nSwapTotal:", b"\nSwapFree:")]
    return {"data": struct.pack("<6Q", *(v * up // PAGE_KB for v in vals), up)}


def floor_var() -> dict[str, Any]:
    t = min(int(rd("/proc/sys/kernel/threads-max")), int(rd("/proc/sys/kernel/pid_max")))
    e = int(rd("/proc/sys/vm/dirty_expire_centisecs")) // 100
    return {"data": struct.pack("<15i", 0, 0, t, t, 140, 99, 0, 0, 0, 0, 0, 0, 0, e, 0)}


def make_floor_mib2(files: list[str], groups: dict[bytes, list[int]], snmp6: list[bytes]) -> Callable[[], dict]:
    def floor() -> dict[str, int]:
        out: dict[str, int] = {}
        for f in files:
            d = b"\n" + rd(f)
            if f.endswith("snmp6"):
                for k in snmp6:
                    out[k.decode()] = after(d, b"\n" + k)
                continue
            for g, cols in groups.items():
                h = d.find(b"\n" + g)
                if h < 0:
                    continue
                at = d.find(b"\n" + g, h + 1)
                vals = d[at + 1 : d.find(b"\n", at + 1)].split()
                for c in cols:
                    out[f"{g.decode()}{c}"] = int(vals[c])
        return out

    return floor


# --- measurement -----------------------------------------------------------------------------


def compare(update: Callable[[], Any], floor: Callable[[], Any], rounds: int, block: int) -> tuple[float, float]:
    """Median µs per call of each, timed call by call, alternating (a call the
    scheduler preempted is an outlier the median drops; load hits both alike)."""
    clock = time.perf_counter
    for _ in range(20):
        update()
        floor()
    us, fs = [], []
    for _ in range(rounds * block):
        t0 = clock()
        update()
        t1 = clock()
        floor()
        t2 = clock()
        us.append(t1 - t0)
        fs.append(t2 - t1)
    return statistics.median(us) * 1e6, statistics.median(fs) * 1e6


def kstat_cases(chain: Chain) -> list[tuple[str, Any, Callable[[], Any]]]:
    def ks(module: str, instance: int, name: str) -> Any:
        return chain.kstat_lookup_name(module, instance, name)

    cases: list[tuple[str, Any, Callable[[], Any]]] = [
        ("unix:0:system_misc", ks("unix", 0, "system_misc"), floor_misc),
        ("unix:0:system_pages", ks("unix", 0, "system_pages"), floor_pages),
        ("unix:0:sysinfo (RAW)", ks("unix", 0, "sysinfo"), floor_sysinfo),
        ("unix:0:vminfo (RAW)", ks("unix", 0, "vminfo"), floor_vminfo),
        ("unix:0:var (RAW)", ks("unix", 0, "var"), floor_var),
        ("cpu_info:0:cpu_info0", ks("cpu_info", 0, "cpu_info0"), floor_cpu_info),
        ("cpu:0:sys", ks("cpu", 0, "sys"), floor_cpu_sys),
        ("cpu:0:vm", ks("cpu", 0, "vm"), floor_cpu_vm),
        ("cpu_stat:0:cpu_stat0 (RAW)", ks("cpu_stat", 0, "cpu_stat0"), floor_cpu_stat),
    ]
    link = ks("link", 0, "lo")
    counters = {"rbytes64": "rx_bytes", "ipackets64": "rx_packets", "obytes64": "tx_bytes", "opackets64": "tx_packets"}
    stats = sorted({src for src in link.ks_private[0].counters.values()} | set(counters.values()))
    cases.append(("link:0:lo", link, make_floor_link("lo", stats)))
    disks = [k for k in chain.kstats() if k.ks_class == "disk"]
    if disks:
        d = disks[0]
        name = d.ks_private.rel.split("/")[2]
        cases.append((f"{d.ks_module}:{d.ks_instance}:{d.ks_name} (IO, {name})", d, make_floor_disk(name)))
        err = ks(d.ks_module + "err", d.ks_instance, d.ks_name + ",err")
        if err is not None:
            cases.append((f"{err.ks_module}:{err.ks_instance}:{err.ks_name}", err, make_floor_disk_err(name, [k.name for k in err.ks_data])))
    for module, name in (("ip", "ip"), ("ip", "icmp"), ("tcp", "tcp"), ("udp", "udp")):
        k = ks(module, 0, name)
        if k is not None:
            src = k.ks_private[0]  # the same columns as the kstat (found once, at creation)
            files = [f"/proc/net/{w}" for w in src.files]
            groups = {g + b": ": sorted(cols.values()) for w in src.columns for g, cols in src.columns[w].items()}
            snmp6 = [k6.encode() + b" " for _, srcs in src.stats for w, k6 in srcs if w == "snmp6"]
            cases.append((f"{module}:0:{name} (mib2)", k, make_floor_mib2(files, groups, snmp6)))
    return cases


def check_floor(ksp: Any, floor: Callable[[], Any]) -> None:
    # The floor must name the kstat's statistics (NAMED) or produce its bytes' size (RAW).
    from kstatpy.constants import KSTAT_TYPE_NAMED

    got = floor()
    if ksp.ks_type == KSTAT_TYPE_NAMED and ksp.ks_module not in ("cpu_info", "link", "ip", "tcp", "udp"):
        names = {k.name for k in ksp.ks_data}
        assert set(got) == names, (ksp.ks_name, set(got) ^ names)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--block", type=int, default=100)
    ap.add_argument("--rtt", type=int, default=5000)
    ap.add_argument("--rtt-only", action="store_true", help="only the system_misc round trips")
    opts = ap.parse_args()
    if not opts.rtt_only:
        _floors(opts)
    _round_trips(opts)


def _floors(opts: argparse.Namespace) -> None:

    chain = Chain()
    providers = load_providers(autoload=False, modules=["kstatpy_providers.system"])
    providers.attach(chain)
    print(f"## ks_update against its floor ({opts.rounds * opts.block} calls each, alternating; medians)\n")
    notes: list[str] = []
    print("| kstat | floor µs | ks_update µs | ratio |")
    print("|---|---:|---:|---:|")
    misc = chain.kstat_lookup_name("unix", 0, "system_misc")
    for label, ksp, floor in kstat_cases(chain):
        check_floor(ksp, floor)
        update = ksp.ks_update
        listings = misc.ks_private[0].listings
        u, f = compare(lambda ksp=ksp, update=update: update(ksp, KSTAT_READ), floor, opts.rounds, opts.block)
        print(f"| `{label}` | {f:.1f} | {u:.1f} | {u / f:.2f} |")
        if ksp is misc:
            calls = (opts.rounds + 1) * opts.block + 20
            share = (misc.ks_private[0].listings - listings) / calls
            u, f = compare(lambda update=update: update(misc, KSTAT_READ), floor_misc_listing, opts.rounds, opts.block)
            print(f"| `{label}`, floor listing /proc every read | {f:.1f} | {u:.1f} | {u / f:.2f} |")
            notes.append(f"system_misc listed /proc on {share:.0%} of its reads (tasks came or went in between)")
    providers.detach(chain)
    for note in notes:
        print(f"\n{note}")


def _round_trips(opts: argparse.Namespace) -> None:
    tmp = tempfile.mkdtemp(prefix="bench-system-")
    kpath = os.path.join(tmp, "kstat.sock")
    env = dict(os.environ, KSTATPY_DISABLE_PLUGIN_AUTOLOAD="1", PYTHONPATH=str(REPO))
    kstatd = subprocess.Popen(
        [sys.executable, "-m", "kstatpy.cli.kstatd", "--socket", kpath, "--plugin", "kstatpy_providers.system"],
        env=env, cwd=REPO,
    )  # fmt: skip
    echo = handler = None
    try:
        wait_ready(kpath)
        headers = RawClient(kpath).call(READ, {"kid": 0})[2]["kstat"]["data"]
        kid = next(h["kid"] for h in headers if h["module"] == "unix" and h["name"] == "system_misc")
        sample = RawClient(kpath).call(READ, {"kid": kid})[2]
        epath = os.path.join(tmp, "echo.sock")
        ctx = mp.get_context("fork")
        ready = ctx.Event()
        echo = ctx.Process(target=echo_server, args=(epath, sample, ready), daemon=True)
        echo.start()
        ready.wait(10)
        handler = EchoDispatch(os.path.join(tmp, "handler.sock"), 0, 0, system=True)
        hheaders = RawClient(handler.socket).call(READ, {"kid": 0})[2]["kstat"]["data"]
        if next(h["kid"] for h in hheaders if h["module"] == "unix" and h["name"] == "system_misc") != kid:
            raise RuntimeError("the echo+handler server's system_misc has another kid than kstatd's")
        k, h, e = rtt_interleaved([kpath, handler.socket, epath], opts.rtt, kid)
        km, hm, em = (statistics.median(x) * 1e6 for x in (k, h, e))
        print(f"\n## KSTAT_IOC_READ of unix:0:system_misc ({opts.rtt} round trips each, interleaved)\n")
        print("| server | median µs |")
        print("|---|---:|")
        print(f"| kstatd (system provider on /) | {km:.1f} |")
        print(f"| kstatd's request handler and the system provider in the echo's loop | {hm:.1f} |")
        print(f"| msgpack echo of the same reply | {em:.1f} |")
        print(
            f"\nratio kstatd / echo: **{km / em:.2f}x**; kstatd / handler in the echo's loop {km / hm:.2f}x"
            f" (kstatd's session share); handler / echo {hm / em:.2f}x (the provider's and data model's share)"
        )
    finally:
        kstatd.terminate()
        kstatd.wait(10)
        if echo is not None:
            echo.terminate()
        if handler is not None:
            handler.stop()


if __name__ == "__main__":
    main()
