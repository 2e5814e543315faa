"""Real kstat consumers re-implemented: an mpstat-style table and a psutil-style cpu_stat reader.

Both read through a real kstatd with the libkstat-style client, as the programs do
through libkstat; each must get every field it reads.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest
from kstatd_fixture import running_kstatd
from test_provider_system import HZ
from test_provider_system import IDLE0
from test_provider_system import IDLE1
from test_provider_system import build_fake_tree

from kstatpy.client import KstatCtl
from kstatpy.client import kstat_open

MPSTAT_COLUMNS = ("minf", "mjf", "xcal", "intr", "ithr", "csw", "icsw", "migr", "smtx", "srw", "syscl",
                  "usr", "sys", "idl")  # fmt: skip


def cpu_stats(kc: KstatCtl) -> dict[int, dict[str, int]]:
    """Every cpu_stat kstat, decoded by the client (no byte unpacking here)."""
    out = {}
    for ksp in kc.kc_chain:
        if ksp.ks_module == "cpu_stat":
            kc.read(ksp)
            fields = ksp.raw_fields()
            assert fields is not None
            out[ksp.ks_instance] = fields
    return out


def mpstat_rows(prev: dict[int, dict[str, int]], cur: dict[int, dict[str, int]]) -> dict[int, dict[str, int]]:
    """mpstat(8)'s per-CPU columns over one interval (the 16 of illumos less CPU and wt)."""
    rows = {}
    for cpu in sorted(cur):
        d = {k: (cur[cpu][k] - prev[cpu][k]) % 2**32 for k in cur[cpu]}
        ticks = d["user"] + d["kernel"] + d["idle"] + d["wait"]
        row = {
            "minf": d["hat_fault"] + d["as_fault"], "mjf": d["maj_fault"], "xcal": d["xcalls"],
            "intr": d["intr"], "ithr": d["intrthread"], "csw": d["pswitch"], "icsw": d["inv_swtch"],
            "migr": d["cpumigrate"], "smtx": d["mutex_adenters"], "srw": d["rw_rdfails"] + d["rw_wrfails"],
            "syscl": d["syscall"],
            "usr": round(100 * d["user"] / ticks) if ticks else 0,
            "sys": round(100 * d["kernel"] / ticks) if ticks else 0,
            "idl": round(100 * (d["idle"] + d["wait"]) / ticks) if ticks else 0,
        }  # fmt: skip
        rows[cpu] = row
    return rows


def psutil_per_cpu_times(kc: KstatCtl) -> list[tuple[float, float, float, float]]:
    """psutil's SunOS backend: cpu_stat's bytes as cpu_stat_t, cpu[] in seconds.

    psutil casts ks_data to cpu_stat_t and reads cpu_sysinfo.cpu[CPU_IDLE..CPU_WAIT];
    here the same offsets by hand: cpu_sysinfo follows the 8-byte __cpu_stat_lock.
    """
    out = []
    for ksp in sorted((k for k in kc.kc_chain if k.ks_module == "cpu_stat"), key=lambda k: k.ks_instance):
        kc.read(ksp)
        assert ksp.ks_data_size == 380 and len(ksp.ks_data) == 380  # sizeof (cpu_stat_t)
        idle, user, kernel, wait = struct.unpack_from("<4I", ksp.ks_data, 8)
        out.append((user / HZ, kernel / HZ, idle / HZ, wait / HZ))  # psutil: user, system, idle, iowait
    return out


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    return build_fake_tree(tmp_path / "root")


def test_mpstat_table_on_the_fake_host(tmp_path: Path, fake: Path) -> None:
    with running_kstatd(tmp_path, plugins=("kstatpy_providers.system",), env={"KSTATPY_SYSTEM_ROOT": str(fake)}) as kd:
        with kstat_open(kd.socket) as kc:
            zero = {c: dict.fromkeys(v, 0) for c, v in cpu_stats(kc).items()}
            rows = mpstat_rows(zero, cpu_stats(kc))  # since boot, as mpstat's first line
        assert kd.stop() == 0, kd.stderr
    assert list(rows) == [0, 1] and all(tuple(r) == MPSTAT_COLUMNS for r in rows.values())
    # cpu1: interrupts 20+200, softirqs 48, pcount 450 + goidle 200, vm charged to cpu0 only
    assert {k: rows[1][k] for k in ("intr", "ithr", "csw", "minf", "mjf", "xcal", "icsw", "syscl")} == {
        "intr": 220, "ithr": 48, "csw": 650, "minf": 0, "mjf": 0, "xcal": 0, "icsw": 0, "syscl": 0,
    }  # fmt: skip
    assert (rows[0]["minf"], rows[0]["mjf"]) == (990, 10)
    ticks1 = 205 + 39 + IDLE1 + 7
    assert (rows[1]["usr"], rows[1]["sys"], rows[1]["idl"]) == (
        round(100 * 205 / ticks1), round(100 * 39 / ticks1), round(100 * (IDLE1 + 7) / ticks1),
    )  # fmt: skip


def test_mpstat_table_on_the_live_host(tmp_path: Path) -> None:
    with running_kstatd(tmp_path, plugins=("kstatpy_providers.system",)) as kd:
        with kstat_open(kd.socket) as kc:
            prev = cpu_stats(kc)
            time.sleep(1.0)  # one mpstat interval
            rows = mpstat_rows(prev, cpu_stats(kc))
        assert kd.stop() == 0, kd.stderr
    present = Path("/sys/devices/system/cpu/present").read_text().strip()
    assert len(rows) == sum(int(p.partition("-")[2] or p) - int(p.partition("-")[0]) + 1 for p in present.split(","))
    for row in rows.values():
        assert tuple(row) == MPSTAT_COLUMNS
        assert 99 <= row["usr"] + row["sys"] + row["idl"] <= 101  # the CPU's time, all of it
        assert row["intr"] > 0  # the local timer at least


def test_psutil_style_cpu_times(tmp_path: Path, fake: Path) -> None:
    with running_kstatd(tmp_path, plugins=("kstatpy_providers.system",), env={"KSTATPY_SYSTEM_ROOT": str(fake)}) as kd:
        with kstat_open(kd.socket) as kc:
            times = psutil_per_cpu_times(kc)
        assert kd.stop() == 0, kd.stderr
    assert times == [
        (105 / HZ, 39 / HZ, (IDLE0 + 7) / HZ, 0.0),
        (205 / HZ, 39 / HZ, (IDLE1 + 7) / HZ, 0.0),
    ]


def test_psutil_style_cpu_times_on_the_live_host(tmp_path: Path) -> None:
    with running_kstatd(tmp_path, plugins=("kstatpy_providers.system",)) as kd:
        with kstat_open(kd.socket) as kc:
            times = psutil_per_cpu_times(kc)
        assert kd.stop() == 0, kd.stderr
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    for user, system, idle, iowait in times:
        assert iowait == 0.0
        # every second since boot is user, system or idle (32-bit ticks wrap after 497 days at 100 Hz)
        assert sum((user, system, idle)) == pytest.approx(uptime, rel=0.01)
