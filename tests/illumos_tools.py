"""The arithmetic of illumos' vmstat, mpstat, iostat -x, sar and fsstat, over kstat snapshots.

Written from the tools' formulas (illumos-gate usr/src/cmd/stat/{vmstat,mpstat,iostat},
common/acquire.c; usr/src/cmd/sa/sar.c), not their code, for the oracle tests: a
snapshot is what the tool reads, the functions compute what it prints (unrounded).

Snapshot (:func:`snapshot`): ``cpus`` {cpu: {"sys": {...}, "vm": {...}}} of the on-line
CPUs, ``sysinfo``, ``vminfo`` (RAW, decoded), ``misc`` (system_misc), ``pages``
(system_pages), ``disks`` {kstat name: IO fields + snaptime + crtime + device},
``links`` {ifname: named + snaptime}.
"""

from __future__ import annotations

import os
from typing import Any

from kstatpy.chain import Chain
from kstatpy.raw import SYSINFO
from kstatpy.raw import VMINFO
from tests.chain_io import chain_read

TICKS = ("cpu_ticks_idle", "cpu_ticks_user", "cpu_ticks_kernel", "cpu_ticks_wait")


def _named(chain: Chain, module: str, instance: int, name: str) -> dict[str, Any]:
    ksp = chain.kstat_lookup_name(module, instance, name)
    assert ksp is not None, f"{module}:{instance}:{name}"
    r = chain_read(chain, ksp.ks_kid)
    out = {n: v for n, _, v in r["data"]}
    out["snaptime"] = r["snaptime"]
    out["crtime"] = r["crtime"]
    return out


def snapshot(chain: Chain) -> dict[str, Any]:
    """Everything the four tools read, read now (in the tools' order: CPUs, devices, system)."""
    cpus = {}
    for k in chain.kstats():
        if k.ks_module == "cpu_info" and _named(chain, "cpu_info", k.ks_instance, k.ks_name)["state"] == b"on-line":
            c = k.ks_instance
            cpus[c] = {"vm": _named(chain, "cpu", c, "vm"), "sys": _named(chain, "cpu", c, "sys")}
    disks = {}
    links = {}
    for k in chain.kstats():
        if k.ks_class == "disk":
            r = chain_read(chain, k.ks_kid)
            disks[k.ks_name] = {**r["data"], "snaptime": r["snaptime"], "crtime": r["crtime"]}
        elif k.ks_class == "device_error":
            pass
        elif k.ks_module == "link":
            links[k.ks_name] = _named(chain, "link", 0, k.ks_name)
    for k in chain.kstats():  # the Linux name of each disk, from its error kstat
        if k.ks_class == "device_error":
            dev = _named(chain, k.ks_module, k.ks_instance, k.ks_name)["Device Name"]
            if k.ks_name.removesuffix(",err") in disks:
                disks[k.ks_name.removesuffix(",err")]["device"] = dev
    sysinfo = chain_read(chain, chain.kstat_lookup_name("unix", 0, "sysinfo").ks_kid)["data"]
    vminfo = chain_read(chain, chain.kstat_lookup_name("unix", 0, "vminfo").ks_kid)["data"]
    return {
        "cpus": cpus, "disks": disks, "links": links,
        "sysinfo": SYSINFO.decode(sysinfo), "vminfo": VMINFO.decode(vminfo),
        "misc": _named(chain, "unix", 0, "system_misc"), "pages": _named(chain, "unix", 0, "system_pages"),
    }  # fmt: skip


def _agg(snap: dict[str, Any], which: str) -> dict[str, int]:
    # acquire.c's kstat_add: every record summed over the active CPUs
    out: dict[str, int] = {}
    for cpu in snap["cpus"].values():
        for k, v in cpu[which].items():
            if isinstance(v, int) and k not in ("snaptime", "crtime"):
                out[k] = out.get(k, 0) + v
    return out


def vmstat(old: dict[str, Any], new: dict[str, Any], hz: int, pagesize: int) -> dict[str, float]:
    """vmstat's columns over old -> new (dovmstats; disk columns: per disk, by wlastupdate)."""
    osys, nsys, ovm, nvm = _agg(old, "sys"), _agg(new, "sys"), _agg(old, "vm"), _agg(new, "vm")

    def d(o: dict[str, int], n: dict[str, int], k: str) -> int:
        return n[k] - o[k]

    etime = sum(d(osys, nsys, t) for t in TICKS)
    pct = 100.0 / (etime or 1)
    secs = etime / len(new["cpus"]) / hz if etime >= 1 else 1.0
    updates = (new["sysinfo"]["updates"] - old["sysinfo"]["updates"]) or 1
    kb = pagesize / 1024

    def si(k: str) -> float:
        return (new["sysinfo"][k] - old["sysinfo"][k]) / updates

    def vi(k: str) -> float:
        return (new["vminfo"][k] - old["vminfo"][k]) / updates

    out = {
        "r": si("runque"), "b": si("waiting"), "w": si("swpque"),
        "swap": vi("swap_avail") * kb, "free": vi("freemem") * kb,
        "re": d(ovm, nvm, "pgrec") / secs, "mf": (d(ovm, nvm, "hat_fault") + d(ovm, nvm, "as_fault")) / secs,
        "pi": d(ovm, nvm, "pgpgin") * kb / secs, "po": d(ovm, nvm, "pgpgout") * kb / secs,
        "fr": d(ovm, nvm, "dfree") * kb / secs, "de": new["misc"]["deficit"] * kb, "sr": d(ovm, nvm, "scan") / secs,
        "in": d(osys, nsys, "intr") / secs, "sy": d(osys, nsys, "syscall") / secs,
        "cs": d(osys, nsys, "pswitch") / secs,
        "us": d(osys, nsys, "cpu_ticks_user") * pct, "sys": d(osys, nsys, "cpu_ticks_kernel") * pct,
        "id": (d(osys, nsys, "cpu_ticks_idle") + d(osys, nsys, "cpu_ticks_wait")) * pct,
    }  # fmt: skip
    for name, io in new["disks"].items():
        prev = old["disks"].get(name)
        then = prev["wlastupdate"] if prev else io["crtime"]
        hr = (io["wlastupdate"] - then) or 1e9
        ops = io["reads"] - (prev["reads"] if prev else 0) + io["writes"] - (prev["writes"] if prev else 0)
        out[f"disk:{name}"] = ops / hr * 1e9
    return out


def mpstat(old: dict[str, Any], new: dict[str, Any], hz: int) -> dict[int, dict[str, float]]:
    """mpstat's per-CPU columns (print_cpu): rates per second of the CPU's own ticks, percentages."""
    rows = {}
    for cpu, n in new["cpus"].items():
        o = old["cpus"][cpu]
        ds = {k: n["sys"][k] - o["sys"][k] for k in n["sys"] if k not in ("snaptime", "crtime")}
        dv = {k: n["vm"][k] - o["vm"][k] for k in n["vm"] if k not in ("snaptime", "crtime")}
        ticks = sum(ds[t] for t in TICKS)
        etime = ticks / hz or 1.0
        pct = 100.0 / etime / hz
        rows[cpu] = {
            "minf": (dv["hat_fault"] + dv["as_fault"]) / etime, "mjf": dv["maj_fault"] / etime,
            "xcal": ds["xcalls"] / etime, "intr": ds["intr"] / etime, "ithr": ds["intrthread"] / etime,
            "csw": ds["pswitch"] / etime, "icsw": ds["inv_swtch"] / etime, "migr": ds["cpumigrate"] / etime,
            "smtx": ds["mutex_adenters"] / etime, "srw": (ds["rw_rdfails"] + ds["rw_wrfails"]) / etime,
            "syscl": ds["syscall"] / etime, "usr": ds["cpu_ticks_user"] * pct, "sys": ds["cpu_ticks_kernel"] * pct,
            "wt": ds["cpu_ticks_wait"] * pct, "idl": ds["cpu_ticks_idle"] * pct,
        }  # fmt: skip
    return rows


def iostat_x(old: dict[str, Any], new: dict[str, Any]) -> dict[str, dict[str, float]]:
    """iostat -x's columns per disk: the interval is the kstats' snaptime delta (ns)."""
    rows = {}
    for name, n in new["disks"].items():
        o = old["disks"].get(name)
        if o is None:
            continue
        etime = (n["snaptime"] - o["snaptime"]) / 1e9
        reads, writes = n["reads"] - o["reads"], n["writes"] - o["writes"]
        rlen, wlen = n["rlentime"] - o["rlentime"], n["wlentime"] - o["wlentime"]
        ops = reads + writes
        rows[n.get("device", name)] = {
            "r/s": reads / etime, "w/s": writes / etime,
            "kr/s": (n["nread"] - o["nread"]) / 1024 / etime, "kw/s": (n["nwritten"] - o["nwritten"]) / 1024 / etime,
            "wait": wlen / 1e9 / etime, "actv": rlen / 1e9 / etime,
            "svc_t": (rlen + wlen) / 1e6 / ops if ops else 0.0,
            "%w": (n["wtime"] - o["wtime"]) / 1e9 / etime * 100, "%b": (n["rtime"] - o["rtime"]) / 1e9 / etime * 100,
        }  # fmt: skip
    return rows


def sar_u(old: dict[str, Any], new: dict[str, Any]) -> dict[str, float]:
    """sar -u (from sadc's cpu_stat sums): %usr %sys %wio %idle of all CPUs' ticks."""
    osys, nsys = _agg(old, "sys"), _agg(new, "sys")
    d = {t: nsys[t] - osys[t] for t in TICKS}
    total = sum(d.values()) or 1
    return {"%usr": 100 * d["cpu_ticks_user"] / total, "%sys": 100 * d["cpu_ticks_kernel"] / total,
            "%wio": 100 * d["cpu_ticks_wait"] / total, "%idle": 100 * d["cpu_ticks_idle"] / total}  # fmt: skip


def sar_q(old: dict[str, Any], new: dict[str, Any]) -> dict[str, float]:
    """sar -q: runq-sz (threads waiting, while any waited) and %runocc (of the seconds)."""
    d = {k: new["sysinfo"][k] - old["sysinfo"][k] for k in ("runque", "runocc", "updates")}
    return {"runq-sz": d["runque"] / d["runocc"] if d["runocc"] else 0.0,
            "%runocc": 100 * d["runocc"] / (d["updates"] or 1)}  # fmt: skip


def link_rates(old: dict[str, Any], new: dict[str, Any], ifname: str) -> dict[str, float]:
    """nicstat-style rates of one link: kB/s and packets/s over the snaptime delta."""
    o, n = old["links"][ifname], new["links"][ifname]
    etime = (n["snaptime"] - o["snaptime"]) / 1e9
    return {
        "rkB/s": (n["rbytes64"] - o["rbytes64"]) / 1024 / etime, "wkB/s": (n["obytes64"] - o["obytes64"]) / 1024 / etime,
        "rpk/s": (n["ipackets64"] - o["ipackets64"]) / etime, "wpk/s": (n["opackets64"] - o["opackets64"]) / etime,
    }  # fmt: skip


# --- fsstat (usr/src/cmd/stat/fsstat/fsstat.c) --------------------------------------------

#: vopstats_t's members in order (illumos sys/vnode.h): fsstat copies a vopstats kstat's data
#: into this struct and reads the counters by position
VOPSTATS_T = (
    "nopen", "nclose", "nread", "read_bytes", "nwrite", "write_bytes", "nioctl", "nsetfl", "ngetattr",
    "nsetattr", "naccess", "nlookup", "ncreate", "nremove", "nlink", "nrename", "nmkdir", "nrmdir",
    "nreaddir", "readdir_bytes", "nsymlink", "nreadlink", "nfsync", "ninactive", "nfid", "nrwlock",
    "nrwunlock", "nseek", "ncmp", "nfrlock", "nspace", "nrealvp", "ngetpage", "nputpage", "nmap",
    "naddmap", "ndelmap", "npoll", "ndump", "npathconf", "npageio", "ndumpctl", "ndispose",
    "nsetsecattr", "ngetsecattr", "nshrlock", "nvnevent", "nreqzcbuf", "nretzcbuf",
)  # fmt: skip
#: fstypes fsstat never shows (its is_exception list)
FSSTAT_EXCEPTIONS = ("specfs", "fifofs", "fd", "swapfs", "ctfs", "objfs", "nfsdyn")


def fsstat_fstypes(filesystems: str) -> list[str]:
    """fsstat's list of file-system types (sysfs(GETFSTYP) on illumos; a port's from Linux's
    ``/proc/filesystems``), less its exceptions."""
    types = [ln.split()[-1] for ln in filesystems.splitlines() if ln.strip()]
    return [t for t in types if t not in FSSTAT_EXCEPTIONS]


def fsstat_ksname(operand: str, fstypes: list[str]) -> str:
    """set_ksnames: a type's kstat is ``vopstats_TYPE``; a path's ``vopstats_`` + its statvfs
    f_fsid as ``%lx``; "" for an exception or a path statvfs refuses."""
    if operand in fstypes:
        return "vopstats_" + operand
    if operand in FSSTAT_EXCEPTIONS:
        return ""
    try:
        return f"vopstats_{os.statvfs(operand).f_fsid:x}"
    except OSError:
        return ""


def fsstat_read(chain: Chain, ksname: str) -> tuple[int, ...] | None:
    """get_vopstats: kstat_lookup(kc, NULL, -1, name) and kstat_read into a vopstats_t (the
    counters by position); None when there is no such kstat (fsstat drops the entity)."""
    for k in chain.kstats():
        if k.ks_name == ksname:
            data = chain_read(chain, k.ks_kid)["data"]
            assert len(data) >= len(VOPSTATS_T), f"{ksname}: {len(data)} records, vopstats_t has {len(VOPSTATS_T)}"
            return tuple(v for _, _, v in data[: len(VOPSTATS_T)])
    return None


def fsstat_default(old: tuple[int, ...] | None, new: tuple[int, ...]) -> dict[str, int]:
    """dflt_display's columns (deltas; ``old`` None: the first line, since boot)."""
    at = {name: i for i, name in enumerate(VOPSTATS_T)}

    def d(name: str) -> int:
        return new[at[name]] - (old[at[name]] if old is not None else 0)

    return {
        "new file": d("ncreate") + d("nmkdir") + d("nsymlink"), "name remov": d("nremove") + d("nrmdir"),
        "name chng": d("nrename") + d("nlink") + d("nsymlink"),
        "attr get": d("ngetattr") + d("naccess") + d("ngetsecattr") + d("nfid"),
        "attr set": d("nsetattr") + d("nsetsecattr") + d("nspace"), "lookup ops": d("nlookup"),
        "rddir ops": d("nreaddir"), "read ops": d("nread"), "read bytes": d("read_bytes"),
        "write ops": d("nwrite"), "write bytes": d("write_bytes"),
    }  # fmt: skip
