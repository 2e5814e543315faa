"""The kstats added for illumos' own tools (issue 19): each ks_update against its floor.

    python bench/bench_system_tools.py [--rounds 10] [--block 100]

As bench_system.py (its ``compare``, ``rd`` and method): the floor is the least Python
that produces the same values from the same files, the records with no source included
as constants (the kstat never writes them). Kstats: unix:0:dnlcstats (no source at all),
unix:0:file_cache (/proc/sys/fs/file-nr), one slab cache (/proc/slabinfo, when
readable), vmem:0:kmem_oversize (no source), zones:0:global, fsstat's vopstats of the
root's file-system type (no source at all), and the INTR kstat of the busiest IRQ line
(/sys/kernel/irq/N/per_cpu_count kept open, /proc/irq/N/spurious opened each time, as
the provider does).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from bench_system import BTIME  # noqa: E402
from bench_system import HZ  # noqa: E402
from bench_system import PAGE_KB  # noqa: E402
from bench_system import after  # noqa: E402
from bench_system import compare  # noqa: E402
from bench_system import rd  # noqa: E402
from kstatpy_providers.system.hostwide import DNLC_FIELDS  # noqa: E402
from kstatpy_providers.system.hostwide import KMEM_FIELDS  # noqa: E402
from kstatpy_providers.system.hostwide import VMEM_FIELDS  # noqa: E402
from kstatpy_providers.system.hostwide import ZONE_FIELDS  # noqa: E402
from kstatpy_providers.system.vopstats import MOUNTINFO  # noqa: E402
from kstatpy_providers.system.vopstats import VOP_FIELDS  # noqa: E402
from kstatpy_providers.system.vopstats import parse_mountinfo  # noqa: E402

from kstatpy.chain import Chain  # noqa: E402
from kstatpy.constants import KSTAT_READ  # noqa: E402
from kstatpy.plugins import load_providers  # noqa: E402

DNLC_ZERO = dict.fromkeys(DNLC_FIELDS, 0)
KMEM_ZERO = dict.fromkeys(KMEM_FIELDS, 0)
VMEM_ZERO = dict.fromkeys(VMEM_FIELDS, 0)
ZONE_ZERO = {f: 0 for f, _ in ZONE_FIELDS}
VOP_ZERO = dict.fromkeys(VOP_FIELDS, 0)
NSPT = 10**9 // HZ


def floor_dnlc() -> dict[str, int]:
    return dict(DNLC_ZERO)


def floor_vmem() -> dict[str, int]:
    return dict(VMEM_ZERO)


def floor_vopstats() -> dict[str, int]:
    return dict(VOP_ZERO)


def make_floor_intr(irq: int) -> Callable[[], list[int]]:
    counts, spurious = f"/sys/kernel/irq/{irq}/per_cpu_count", f"/proc/irq/{irq}/spurious"

    def floor() -> list[int]:
        hard = sum(int(c) for c in rd(counts).split(b",")) & 0xFFFFFFFF
        with open(spurious, "rb") as f:
            data = f.read(4096)
        at = data.find(b"unhandled ") + 10
        return [hard, 0, 0, int(data[at : data.find(b"\n", at)]) & 0xFFFFFFFF, 0]

    return floor


def floor_file_cache() -> dict[str, int]:
    a, u = (int(x) for x in rd("/proc/sys/fs/file-nr").split()[:2])
    return KMEM_ZERO | {"buf_total": a, "buf_avail": u, "buf_inuse": a - u}


def make_floor_slab(cache: str) -> Callable[[], dict[str, int]]:
    key = b"\n" + cache.encode() + b" "
    page = PAGE_KB * 1024

    def floor() -> dict[str, int]:
        d = rd("/proc/slabinfo")
        at = d.find(key)
        p = d[at + 1 : d.find(b"\n", at + 1)].split()
        slab = int(p[5]) * page
        return KMEM_ZERO | {
            "buf_size": int(p[3]), "slab_size": slab, "chunk_size": slab // int(p[4]), "buf_inuse": int(p[1]),
            "buf_total": int(p[2]), "buf_avail": int(p[2]) - int(p[1]), "slab_create": int(p[14]),
        }  # fmt: skip

    return floor


def floor_zone() -> dict[str, Any]:
    st = rd("/proc/stat")
    t = [int(x) for x in st[4 : st.index(b"\n")].split()]
    v = b"\n" + rd("/proc/vmstat")
    la = rd("/proc/loadavg").split()
    return ZONE_ZERO | {
        "zonename": "global", "pgpgin": after(v, b"\npgpgin ") // PAGE_KB, "anonpgin": after(v, b"\npswpin "),
        "nsec_user": (t[0] + t[1]) * NSPT, "nsec_sys": (t[2] + t[5] + t[6] + t[7]) * NSPT,
        "avenrun_1min": round(float(la[0]) * 256), "avenrun_5min": round(float(la[1]) * 256),
        "avenrun_15min": round(float(la[2]) * 256), "init_pid": 1, "boot_time": BTIME,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--block", type=int, default=100)
    opts = ap.parse_args()
    chain = Chain()
    providers = load_providers(autoload=False, modules=["kstatpy_providers.system"])
    providers.attach(chain)
    cases: list[tuple[str, Any, Callable[[], Any]]] = [
        ("unix:0:dnlcstats", chain.kstat_lookup_name("unix", 0, "dnlcstats"), floor_dnlc),
        ("unix:0:file_cache", chain.kstat_lookup_name("unix", 0, "file_cache"), floor_file_cache),
        ("vmem:0:kmem_oversize", chain.kstat_lookup_name("vmem", 0, "kmem_oversize"), floor_vmem),
        ("zones:0:global", chain.kstat_lookup_name("zones", 0, "global"), floor_zone),
    ]
    root_type = next(t for _, point, t in parse_mountinfo(rd("/" + MOUNTINFO)) if point == "/")
    cases.append((f"unix:0:vopstats_{root_type}", chain.kstat_lookup_name("unix", 0, f"vopstats_{root_type}"),
                  floor_vopstats))  # fmt: skip
    caches = [k for k in chain.kstats() if k.ks_class == "kmem_cache" and k.ks_name != "file_cache"]
    if caches:
        k = caches[len(caches) // 2]  # a cache in the middle of /proc/slabinfo
        cases.append((f"unix:0:{k.ks_name} (kmem_cache)", k, make_floor_slab(k.ks_name)))
    intrs = [k for k in chain.kstats() if k.ks_module == "irq"]
    if intrs:
        busiest = max(intrs, key=lambda k: sum(int(c) for c in rd(f"/sys/kernel/irq/{k.ks_instance}/per_cpu_count").split(b",")))
        cases.append((f"irq:{busiest.ks_instance}:{busiest.ks_name} (INTR)", busiest, make_floor_intr(busiest.ks_instance)))
    print(f"## ks_update against its floor ({opts.rounds * opts.block} calls each, alternating; medians)\n")
    print("| kstat | floor µs | ks_update µs | ratio |")
    print("|---|---:|---:|---:|")
    for label, ksp, floor in cases:
        if ksp.ks_module == "irq":  # kstat_intr_t: five counters in order
            assert len(floor()) == 5, label
        else:
            names = {r.name for r in ksp.ks_data}
            assert set(floor()) == names, (label, set(floor()) ^ names)
        update = ksp.ks_update
        u, f = compare(lambda ksp=ksp, update=update: update(ksp, KSTAT_READ), floor, opts.rounds, opts.block)
        print(f"| `{label}` | {f:.1f} | {u:.1f} | {u / f:.2f} |")
    providers.detach(chain)


if __name__ == "__main__":
    main()
