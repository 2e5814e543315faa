"""What illumos' own stat tools look up is all there (issue 19), and the kstats added for them.

``INVENTORY`` is taken from the tools' sources (illumos-gate usr/src/cmd/stat/mpstat,
vmstat, iostat, common/acquire.c, usr/src/cmd/sa/sadc.c): every kstat each looks up and
every statistic it reads by name (``kstat_data_lookup``, ``kstat_delta``, ``agg_stat``,
``sum_out``), or by position (``@0``: the first record). A tool that does not find one
hangs (acquire.c retries forever), crashes (a NULL record dereferenced) or exits
(sadc's ``safe_kstat_lookup``). docs/SYSTEM-PROVIDER.md lists the same table with each
entry's Linux source.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Any

import pytest
from kstatpy_providers.system.mib2_table import MIB2
from test_provider_system import PAGESIZE
from test_provider_system import add_disk
from test_provider_system import add_link
from test_provider_system import attach
from test_provider_system import build_fake_tree
from test_provider_system import named
from test_provider_system import read
from test_provider_system import types
from test_provider_system import write

from kstatpy.chain import Chain
from kstatpy.constants import KstatDataType
from kstatpy.constants import KstatType
from kstatpy.raw import CPU_STAT
from kstatpy.raw import SYSINFO
from kstatpy.raw import VAR
from kstatpy.raw import VMINFO
from tests.chain_io import chain_read

HZ = os.sysconf("SC_CLK_TCK")
_TICKS = ("cpu_ticks_idle", "cpu_ticks_user", "cpu_ticks_kernel", "cpu_ticks_wait")

Lookup = tuple[str, str, str, str, tuple[str, ...]]

#: (tool, module, instance ("N": each CPU; "*": any), name ("*": any; "class:C": any of class C),
#:  statistics it reads: names, "@i" a record by position, "RAW:Layout" a raw struct)
INVENTORY: tuple[Lookup, ...] = (
    ("mpstat", "cpu_info", "N", "*", ()),
    ("mpstat", "cpu", "N", "vm", ("hat_fault", "as_fault", "maj_fault")),
    ("mpstat", "cpu", "N", "sys", ("xcalls", "intr", "intrthread", "pswitch", "inv_swtch", "cpumigrate",
                                   "mutex_adenters", "rw_rdfails", "rw_wrfails", "syscall", *_TICKS)),
    ("vmstat", "unix", "0", "sysinfo", ("RAW:sysinfo_t",)),
    ("vmstat", "unix", "0", "vminfo", ("RAW:vminfo_t",)),
    ("vmstat", "unix", "0", "dnlcstats", ("hits", "misses", "@0", "@1")),
    ("vmstat", "unix", "0", "system_misc", ("clk_intr", "deficit")),
    ("vmstat", "cpu", "N", "vm", (
        "pgrec", "hat_fault", "as_fault", "pgpgin", "pgpgout", "dfree", "scan", "swapin", "swapout",
        "execpgin", "execpgout", "execfree", "anonpgin", "anonpgout", "anonfree", "fspgin", "fspgout",
        "fsfree", "pgswapin", "pgswapout", "pgin", "pgout", "pgfrec", "maj_fault", "cow_fault", "zfod",
        "rev")),
    ("vmstat", "cpu", "N", "sys", ("intr", "syscall", "pswitch", "sysfork", "sysvfork", "sysexec", "trap",
                                   *_TICKS)),
    ("vmstat", "*", "*", "class:disk", ("IO:reads", "IO:writes", "IO:wlastupdate")),
    ("iostat", "*", "*", "class:disk", ("IO:nread", "IO:nwritten", "IO:reads", "IO:writes", "IO:rtime",
                                        "IO:rlentime", "IO:wtime", "IO:wlentime", "IO:wcnt", "IO:rcnt")),
    ("iostat", "*", "*", "class:device_error", (
        "@0", "@1", "@2", "Soft Errors", "Hard Errors", "Transport Errors", "Vendor", "Product", "Revision",
        "Serial No", "Size", "Media Error", "Device Not Ready", "No Device", "Recoverable", "Illegal Request",
        "Predictive Failure Analysis")),
    ("iostat", "cpu", "N", "sys", (*_TICKS, "rawch", "outch")),
    ("sadc", "unix", "0", "sysinfo", ("RAW:sysinfo_t",)),
    ("sadc", "unix", "0", "vminfo", ("RAW:vminfo_t",)),
    ("sadc", "vmem", "*", "kmem_oversize", ("mem_total", "fail")),
    ("sadc", "unix", "0", "var", ("RAW:struct var",)),
    ("sadc", "unix", "0", "system_misc", ("nproc",)),
    ("sadc", "unix", "0", "file_cache", ("buf_avail", "buf_total")),
    ("sadc", "cpu_stat", "N", "*", ("RAW:cpu_stat_t",)),
    ("sadc", "*", "*", "class:kmem_cache", ("buf_size", "slab_create", "slab_destroy", "slab_size", "buf_avail",
                                             "alloc_fail")),
    ("nicstat", "tcp", "*", "tcp", (
        "inDataInorderSegs", "outDataSegs", "inDataInorderBytes", "inDataUnorderSegs", "inDataUnorderBytes",
        "outDataBytes", "estabResets", "outRsts", "attemptFails", "retransBytes", "passiveOpens", "activeOpens",
        "halfOpenDrop", "listenDrop", "listenDropQ0")),
    ("nicstat", "udp", "*", "udp", ("inDatagrams", "outDatagrams", "inErrors", "outErrors")),
    ("nicstat", "link", "0", "*", ("rbytes64", "obytes64", "ipackets64", "opackets64", "ierrors", "oerrors",
                                   "collisions", "noxmtbuf", "ifspeed", "link_duplex")),
    # node_exporter's collector/*_solaris.go (go-kstat: UintVal reads unsigned records, IntVal signed ones)
    ("node_exporter", "cpu", "N", "sys", ("cpu_nsec_idle=u", "cpu_nsec_kernel=u", "cpu_nsec_user=u")),
    ("node_exporter", "cpu_info", "N", "*", ("current_clock_Hz=u", "clock_MHz=i")),
    ("node_exporter", "unix", "0", "system_misc", ("boot_time=u", "avenrun_1min=u", "avenrun_5min=u",
                                                   "avenrun_15min=u")),
    # collectd's src/{cpu,memory,interface,disk,uptime}.c (HAVE_LIBKSTAT; load and swap use no kstat)
    ("collectd", "cpu_stat", "N", "*", ("RAW:cpu_stat_t",)),
    ("collectd", "unix", "0", "system_pages", ("pagestotal", "pagesfree", "pageslocked", "pp_kernel", "physmem",
                                               "availrmem")),
    ("collectd", "*", "*", "class:net", ("obytes", "ipackets64", "opackets64", "rbytes64", "obytes64", "ierrors",
                                         "oerrors")),
    ("collectd", "*", "*", "class:disk", ("IO:nread", "IO:nwritten", "IO:reads", "IO:writes", "IO:rtime",
                                          "IO:wtime")),
    ("collectd", "unix", "0", "system_misc", ("boot_time",)),
    # zabbix agent's src/libs/zbxsysinfo/solaris/*.c (get_kstat_numeric_value: INT32, UINT32, INT64, UINT64 only)
    ("zabbix", "unix", "0", "system_misc", ("boot_time=n", "avenrun_1min=n", "avenrun_5min=n", "avenrun_15min=n")),
    ("zabbix", "unix", "0", "var", ("RAW:struct var",)),
    ("zabbix", "unix", "0", "vminfo", ("RAW:vminfo_t",)),
    ("zabbix", "cpu_stat", "N", "*", ("RAW:cpu_stat_t",)),
    ("zabbix", "*", "*", "class:net", ("rbytes64=n", "rbytes=n", "ipackets64=n", "ipackets=n", "ierrors=n",
                                       "obytes64=n", "obytes=n", "opackets64=n", "opackets=n", "oerrors=n",
                                       "collisions=n")),
    ("zabbix", "*", "*", "class:disk", ("IO:nread", "IO:reads", "IO:nwritten", "IO:writes")),
    # Oxide's oximeter (oximeter/instruments/src/kstat: kstat-rs as_u64 / as_u32 / as_str refuse other types)
    ("oximeter", "cpu", "N", "sys", ("cpu_nsec_idle=u64", "cpu_nsec_user=u64", "cpu_nsec_kernel=u64",
                                     "cpu_nsec_dtrace=u64", "cpu_nsec_intr=u64")),
    ("oximeter", "link", "0", "*", ("rbytes64=u64", "obytes64=u64", "ipackets64=u64", "opackets64=u64",
                                    "ierrors=u32", "oerrors=u32")),
    ("oximeter", "zones", "*", "*", ("zonename=s", "nsec_user=u64", "nsec_sys=u64", "nsec_waitrq=u64")),
)  # fmt: skip

#: What consumers look up that this host does not publish (docs/SYSTEM-PROVIDER.md, "Absent"):
#: node_exporter's cpu_nsec_wait (Oracle Solaris has it, illumos does not), and OpenZFS's kstats
#: where no OpenZFS is loaded (collectd's memory plugin fails to start without zfs:0:arcstats).
ABSENT: tuple[Lookup, ...] = (
    ("node_exporter", "cpu", "N", "sys", ("cpu_nsec_wait=u",)),
    ("node_exporter", "zfs", "0", "arcstats", ("hits", "misses", "c", "c_min", "c_max", "size")),
    ("node_exporter", "zfs", "0", "zfetchstats", ("hits", "misses")),
    ("collectd", "zfs", "0", "arcstats", ("size",)),
)  # fmt: skip

#: Record types a ``name=T`` statistic may have: what the consumer's accessor accepts.
_TYPES = {
    "u": {KstatDataType.UINT32, KstatDataType.UINT64}, "i": {KstatDataType.INT32, KstatDataType.INT64},
    "n": {KstatDataType.INT32, KstatDataType.UINT32, KstatDataType.INT64, KstatDataType.UINT64},
    "u32": {KstatDataType.UINT32}, "u64": {KstatDataType.UINT64}, "s": {KstatDataType.STRING},
}  # fmt: skip

_RAW = {"sysinfo_t": SYSINFO, "vminfo_t": VMINFO, "struct var": VAR, "cpu_stat_t": CPU_STAT}


def _cpus(chain: Chain) -> list[int]:
    return sorted(k.ks_instance for k in chain.kstats() if k.ks_module == "cpu_info")


def _matches(chain: Chain, module: str, instance: str, name: str) -> list[Any]:
    out = []
    for k in chain.kstats():
        if module != "*" and k.ks_module != module:
            continue
        if instance not in ("*", "N") and k.ks_instance != int(instance):
            continue
        if name.startswith("class:"):
            if k.ks_class != name[6:]:
                continue
        elif name != "*" and k.ks_name != name:
            continue
        out.append(k)
    return out


def missing_for_tools(chain: Chain, inventory: tuple[Lookup, ...] = INVENTORY) -> list[str]:
    """Every inventory entry this chain lacks, as "tool: module:instance:name:statistic"; a
    ``name=T`` statistic of another record type than ``_TYPES[T]`` is missing too."""
    missing = []
    cpus = _cpus(chain)
    assert cpus, "no CPUs"
    for tool, module, instance, name, stats in inventory:
        where = f"{tool}: {module}:{instance}:{name}"
        ksps = _matches(chain, module, instance, name)
        if instance == "N":
            have = {k.ks_instance for k in ksps}
            missing += [f"{where} (CPU {c})" for c in cpus if c not in have]
        if not ksps:
            missing.append(where)
            continue
        for ksp in ksps:
            data = chain_read(chain, ksp.ks_kid)
            for stat in stats:
                if stat.startswith("RAW:"):
                    layout = _RAW[stat[4:]]
                    if ksp.ks_type != KstatType.RAW or len(data["data"]) < layout.size:
                        missing.append(f"{where}: {stat} ({len(data['data'])} bytes)")
                elif stat.startswith("IO:"):
                    if ksp.ks_type != KstatType.IO or stat[3:] not in data["data"]:
                        missing.append(f"{where}: {stat}")
                elif stat.startswith("@"):
                    if len(data["data"]) <= int(stat[1:]):
                        missing.append(f"{where}: {stat}")
                elif "=" in stat:
                    stat, want = stat.split("=")
                    if types(data).get(stat) not in _TYPES[want]:
                        missing.append(f"{ksp.ks_module}:{ksp.ks_instance}:{ksp.ks_name}: {stat}={want} ({tool})")
                elif stat not in named(data):
                    missing.append(f"{ksp.ks_module}:{ksp.ks_instance}:{ksp.ks_name}: {stat} ({tool})")
    return missing


def _full_fake(root: Path) -> Path:
    build_fake_tree(root)
    write(root, "proc/sys/fs/file-nr", "1234\t0\t9223372036854775807\n")
    write(root, "proc/slabinfo", SLABINFO)
    write(root, "proc/net/snmp", SNMP)
    write(root, "sys/class/net/eth0/duplex", "full\n")
    meminfo = "MemTotal:  8192 kB\nMemFree:   4096 kB\nMlocked:   64 kB\nSlab:  256 kB\nKernelStack:  32 kB\n"
    write(root, "proc/meminfo", meminfo + "PageTables:  16 kB\nPercpu:  8 kB\n")  # collectd's pp_kernel
    write(root, "proc/self/mountinfo", "21 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n")  # fsstat's
    return root


SLABINFO = (
    "slabinfo - version: 2.1\n"
    "# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> "
    "<batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>\n"
    "kmalloc-64          2525   2816     64   64    1 : tunables    0    0    0 : slabdata     44     44      0\n"
    "dentry             10000  10080    192   21    1 : tunables    0    0    0 : slabdata    480    480      0\n"
    "sysinfo                1      8    512    8    1 : tunables    0    0    0 : slabdata      1      1      0\n"
)
SNMP = (
    "Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs "
    "OutSegs RetransSegs InErrs OutRsts InCsumErrors\n"
    "Tcp: 1 200 120000 -1 10 20 3 4 5 1000 2000 7 0 8 0\n"
    "Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\n"
    "Udp: 100 1 2 200 3 4 0 0 0\n"
)


def test_every_lookup_of_illumos_tools_is_there_on_a_fake_host(tmp_path: Path) -> None:
    chain, _ = attach(_full_fake(tmp_path / "root"))
    assert missing_for_tools(chain) == []


def test_every_lookup_of_illumos_tools_is_there_on_this_host() -> None:
    chain, _ = attach()
    missing = missing_for_tools(chain)
    assert missing == []


def test_the_walk_fails_on_what_is_absent(tmp_path: Path) -> None:
    """The walk can fail: a host without file-nr has no unix:0:file_cache for sadc."""
    root = _full_fake(tmp_path / "root")
    (root / "proc/sys/fs/file-nr").unlink()
    (root / "proc/slabinfo").unlink()
    chain, _ = attach(root)
    missing = missing_for_tools(chain)
    assert "sadc: unix:0:file_cache" in missing and "sadc: *:*:class:kmem_cache" in missing


def test_what_consumers_need_and_no_host_publishes_is_absent(tmp_path: Path) -> None:
    """ABSENT is absent (when one is published, move it to INVENTORY and docs' table), and the
    walk checks record types: a signed clock_MHz is not go-kstat's UintVal."""
    chain, _ = attach(_full_fake(tmp_path / "root"))
    missing = missing_for_tools(chain, ABSENT)
    assert "cpu:0:sys: cpu_nsec_wait=u (node_exporter)" in missing
    assert {m for m in missing if m.startswith(("node_exporter: zfs", "collectd: zfs"))} == {
        "node_exporter: zfs:0:arcstats",
        "node_exporter: zfs:0:zfetchstats",
        "collectd: zfs:0:arcstats",
    }
    assert len(missing) == len(_cpus(chain)) + 3
    wrong = missing_for_tools(chain, (("node_exporter", "cpu_info", "N", "*", ("clock_MHz=u", "clock_MHz=i")),))
    assert wrong == [f"cpu_info:{c}:cpu_info{c}: clock_MHz=u (node_exporter)" for c in _cpus(chain)]


def test_openzfs_kstats_are_where_collectd_and_node_exporter_look(tmp_path: Path) -> None:
    """With OpenZFS loaded, its kstats are zfs:0:arcstats and zfs:0:zfetchstats as on illumos
    (the statistic names are OpenZFS's own: the fake files hold a few of them)."""
    from test_provider_system_spl import build_spl

    root = _full_fake(tmp_path / "root")
    build_spl(root)
    chain, _ = attach(root)
    zfs = [e for e in ABSENT if e[1] == "zfs"]
    assert missing_for_tools(chain, tuple(zfs)) == []
    assert named(read(chain, "zfs", 0, "arcstats"))["size"] > 0


def test_hostwide_kstats_exact(tmp_path: Path) -> None:
    root = _full_fake(tmp_path / "root")
    chain, _ = attach(root)
    fc = read(chain, "unix", 0, "file_cache")
    assert fc["class"] == "kmem_cache"
    assert {k: v for k, v in named(fc).items() if v} == {"buf_total": 1234, "buf_inuse": 1234}
    dentry = named(read(chain, "unix", 0, "dentry"))
    assert {k: v for k, v in dentry.items() if v} == {
        "buf_size": 192, "slab_size": PAGESIZE, "chunk_size": PAGESIZE // 21, "buf_avail": 80, "buf_inuse": 10000,
        "buf_total": 10080, "slab_create": 480,
    }  # fmt: skip
    # sadc's arithmetic: (slab_create - slab_destroy) x slab_size is the cache's memory
    assert (dentry["slab_create"] - dentry["slab_destroy"]) * dentry["slab_size"] == 480 * PAGESIZE
    assert read(chain, "unix", 0, "sysinfo")["type"] == KstatType.RAW  # a cache named like a kstat: not made
    meta = chain.kstat_lookup_name("unix", 0, "dentry").ks_meta
    assert meta["slab_destroy"].no_source and meta["alloc_fail"].no_source and not meta["buf_total"].no_source
    dnlc = read(chain, "unix", 0, "dnlcstats")
    assert list(named(dnlc))[:2] == ["hits", "misses"] and set(named(dnlc).values()) == {0}
    assert all(m.no_source for m in chain.kstat_lookup_name("unix", 0, "dnlcstats").ks_meta.values())
    assert read(chain, "vmem", 0, "kmem_oversize")["class"] == "vmem"
    zone = read(chain, "zones", 0, "global")
    z = named(zone)
    assert zone["class"] == "zone_misc"
    # proc/stat cpu: user 300 nice 10 system 60 idle . iowait 14 irq 4 softirq 6 steal 8
    assert {k: v for k, v in z.items() if v} == {
        "zonename": "global", "pgpgin": 4000 * 1024 // PAGESIZE, "anonpgin": 7,
        "nsec_user": 310 * (10**9 // HZ), "nsec_sys": 78 * (10**9 // HZ),
        "avenrun_1min": 128, "avenrun_5min": 320, "avenrun_15min": 512, "init_pid": 1, "boot_time": 1700000000,
    }  # fmt: skip
    write(root, "proc/slabinfo", SLABINFO.replace("10000  10080", "10001  10080"))
    assert named(read(chain, "unix", 0, "dentry"))["buf_inuse"] == 10001


def test_link_duplex_and_nicstat_tcp(tmp_path: Path) -> None:
    root = _full_fake(tmp_path / "root")
    add_link(root, "eth1")
    write(root, "sys/class/net/eth1/duplex", "half\n")
    chain, _ = attach(root)
    assert named(read(chain, "link", 0, "eth0"))["link_duplex"] == 2
    assert named(read(chain, "link", 0, "eth1"))["link_duplex"] == 1
    assert named(read(chain, "link", 0, "lo"))["link_duplex"] == 0  # no duplex file: unknown
    tcp = named(read(chain, "tcp", 0, "tcp"))
    assert (tcp["activeOpens"], tcp["outRsts"], tcp["outDataBytes"], tcp["retransBytes"]) == (10, 8, 0, 0)
    meta = chain.kstat_lookup_name("tcp", 0, "tcp").ks_meta
    assert meta["outDataBytes"].no_source and not meta["activeOpens"].no_source


@pytest.mark.skipif(not os.access("/proc/slabinfo", os.R_OK), reason="needs a readable /proc/slabinfo (root)")
def test_every_slab_cache_of_this_host_is_a_kmem_cache_kstat() -> None:
    """proc/slabinfo is a seq_file that hands out one page of records per read: all are read."""
    lines = Path("/proc/slabinfo").read_text().splitlines()[2:]
    assert len("\n".join(lines)) > 4096  # more than one page on any host
    chain, _ = attach()
    caches = {k.ks_name for k in chain.kstats() if k.ks_class == "kmem_cache"} - {"file_cache"}
    names = {ln.split()[0] for ln in lines if len(ln.split()[0]) < 31}
    assert caches == names - {k.ks_name for k in chain.kstats() if k.ks_class != "kmem_cache"}
    last = lines[-1].split()
    assert named(read(chain, "unix", 0, last[0]))["buf_size"] == int(last[3])


def _row_for(ksp: Any) -> str:
    if ksp.ks_class == "kmem_cache":
        return "`unix:0:file_cache`" if ksp.ks_name == "file_cache" else "`unix:0:CACHE` (kmem_cache)"
    if ksp.ks_class == "disk":
        return "IO kstats (class `disk`)"
    if ksp.ks_class == "device_error":
        return "`MODULEerr:N:MODULEN,err`"
    if ksp.ks_module == "cpu":
        return f"`cpu:N:{ksp.ks_name}`"
    if ksp.ks_module == "cpu_info":
        return "`cpu_info:N:cpu_infoN`"
    if ksp.ks_name.startswith("vopstats_"):
        return "`unix:0:vopstats_*`"
    return f"`{ksp.ks_module}:{ksp.ks_instance}:{ksp.ks_name}`"


def test_the_docs_list_every_statistic_with_no_source(tmp_path: Path) -> None:
    """docs/SYSTEM-PROVIDER.md's "Statistics with no source" names each marked statistic in its kstat's row."""
    text = (Path(__file__).resolve().parent.parent / "docs/SYSTEM-PROVIDER.md").read_text()
    section = text[text.index("### Statistics with no source") :]
    section = section[: section.index("\n### ", 10)]
    rows = {ln.split(" | ")[0].strip("| "): ln for ln in section.splitlines() if ln.startswith("| `") or
            ln.startswith("| IO")}  # fmt: skip
    chain, _ = attach(_full_fake(tmp_path / "root"))
    unlisted = []
    for ksp in chain.kstats():
        marked = [s for s, m in (ksp.ks_meta or {}).items() if m.no_source]
        if not marked:
            continue
        row = rows.get(_row_for(ksp), "")
        if ksp.ks_class == "mib2":  # a counter this host's files lack: the MIB-II row says so
            never = {st for st, _, srcs in MIB2[(ksp.ks_module, ksp.ks_name)] if not srcs}
            marked = [st for st in marked if st in never]
        if not marked:
            continue
        assert row, f"no row for {_row_for(ksp)}"
        if row.split(" | ")[1].startswith("all"):
            continue
        unlisted += [f"{ksp.ks_module}:{ksp.ks_name}:{s}" for s in marked
                     if f" {s}," not in row and f" {s};" not in row and f" {s} " not in row]  # fmt: skip
    assert unlisted == []


def test_a_host_naming_modules_gets_the_slab_caches_with_unix(tmp_path: Path) -> None:
    """The embedded kstat's module predicate: the caches come with unix (lazy = full), not without."""
    from kstatpy.plugins import load_providers

    root = _full_fake(tmp_path / "root")
    for wanted, caches in (({"unix"}, {"file_cache", "kmalloc-64", "dentry"}), ({"zones"}, set())):
        chain = Chain(config={"system_root": str(root), "wants_module": wanted.__contains__})
        providers = load_providers(autoload=False, modules=["kstatpy_providers.system"])
        providers.attach(chain)
        assert providers.failures == []
        assert {k.ks_name for k in chain.kstats() if k.ks_class == "kmem_cache"} == caches
        assert (chain.kstat_lookup_name("zones", 0, "global") is not None) == ("zones" in wanted)
        providers.detach(chain)


#: (module, name ("*": any), class) as illumos creates each (uts/common/os/kstat_fr.c, clock.c,
#: cpu.c, kmem.c, vmem.c, zone.c, dnlc.c; io/sd, blkdev, lofi; inet/ip, tcp, udp; mac/dls)
CLASSES = (
    ("unix", "system_misc", "misc"), ("unix", "system_pages", "pages"), ("unix", "sysinfo", "misc"),
    ("unix", "vminfo", "vm"), ("unix", "var", "misc"), ("unix", "dnlcstats", "misc"),
    ("unix", "file_cache", "kmem_cache"), ("unix", "kmalloc-64", "kmem_cache"), ("unix", "dentry", "kmem_cache"),
    ("unix", "vopstats_*", "misc"),
    ("vmem", "kmem_oversize", "vmem"), ("zones", "global", "zone_misc"), ("cpu_info", "*", "misc"),
    ("cpu", "sys", "misc"), ("cpu", "vm", "misc"), ("cpu_stat", "*", "misc"), ("link", "*", "net"),
    ("sd", "*", "disk"), ("blkdev", "*", "disk"), ("lofi", "*", "disk"), ("sderr", "*", "device_error"),
    ("blkdeverr", "*", "device_error"), ("ip", "ip", "mib2"), ("ip", "icmp", "mib2"), ("tcp", "tcp", "mib2"),
    ("udp", "udp", "mib2"),
)  # fmt: skip


def test_every_kstat_has_illumos_module_name_and_class(tmp_path: Path) -> None:
    root = _full_fake(tmp_path / "root")
    write(root, "proc/net/netstat", "IpExt: InCsumErrors\nIpExt: 0\n")
    write(root, "proc/net/snmp", SNMP + "Icmp: InMsgs OutMsgs\nIcmp: 1 2\n")
    add_disk(root, "loop0")
    chain, _ = attach(root)
    seen = set()
    for ksp in chain.kstats():
        if ksp.ks_name.startswith("kstat_"):
            continue
        rows = [(n, c) for m, n, c in CLASSES if m == ksp.ks_module and fnmatch.fnmatchcase(ksp.ks_name, n)]
        assert rows, f"{ksp.ks_module}:{ksp.ks_instance}:{ksp.ks_name} is in no table row"
        row = min(rows, key=lambda r: r[0] == "*")  # a row naming the kstat before "*"
        assert ksp.ks_class == row[1], (ksp.ks_module, ksp.ks_name, ksp.ks_class, row[1])
        seen.add((ksp.ks_module, row[0]))
    assert {(m, n) for m, n, _ in CLASSES} - seen == set()  # the fake host has one of each
