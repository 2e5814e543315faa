"""RAW system kstats end to end: the LP64 layouts, the provider, kstatd, the kstat command, the client."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from kstatd_fixture import REPO
from kstatd_fixture import running_kstatd
from test_provider_system import HZ
from test_provider_system import IDLE0
from test_provider_system import PAGESIZE
from test_provider_system import attach
from test_provider_system import build_fake_tree
from test_provider_system import named
from test_provider_system import read

from kstatpy.client import kstat_open
from kstatpy.raw import CPU_STAT
from kstatpy.raw import SYSINFO
from kstatpy.raw import VAR
from kstatpy.raw import VMINFO
from kstatpy.raw import layout_for
from tests.chain_io import chain_read

NSPT = 1_000_000_000 // HZ


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    return build_fake_tree(tmp_path / "root")


def kstat(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kstatpy.cli.kstat", *args],
        cwd=str(REPO), env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def stable(stdout: str) -> list[str]:
    return [ln for ln in stdout.splitlines() if not ln.split("\t")[0].endswith((":crtime", ":snaptime"))]


# --- the layouts ------------------------------------------------------------------


def test_layout_sizes_and_offsets_are_illumos_lp64() -> None:
    assert (CPU_STAT.size, SYSINFO.size, VMINFO.size, VAR.size) == (380, 24, 48, 60)
    assert CPU_STAT.struct.size == 380 and VMINFO.struct.size == 48
    offsets = {f.member: f.offset for f in CPU_STAT.fields}
    assert offsets["__cpu_stat_lock[0]"] == 0
    assert offsets["cpu_sysinfo.cpu[0]"] == 8  # cpu_sysinfo follows the 8-byte lock
    assert offsets["cpu_sysinfo.bawrite"] == 8 + (7 + 45) * 4
    assert offsets["cpu_sysinfo.win_suo_cnt"] == 8 + 58 * 4  # the last of 59 uint_t (236 bytes)
    assert offsets["cpu_syswait.iowait"] == 244
    assert offsets["cpu_vminfo.pgrec"] == 256 and offsets["cpu_vminfo.fsfree"] == 376
    assert [f.offset for f in VMINFO.fields] == [0, 8, 16, 24, 32, 40]
    # kstat(8)'s names, in struct order (illumos cmd/stat/kstat/kstat.c)
    assert CPU_STAT.names[:8] == ("idle", "user", "kernel", "wait", "wait_io", "wait_swap", "wait_pio", "bread")
    assert CPU_STAT.names[52:57] == ("bawrite", "iowait", "swap", "physio", "pgrec")
    assert CPU_STAT.names[-1] == "fsfree" and len(CPU_STAT.names) == 53 + 3 + 31
    assert VAR.names[0] == "v_buf" and VAR.names[-1] == "v_bufhwm"


def test_layout_lookup_is_kstat8s_digit_free_prefix_match() -> None:
    assert layout_for("cpu_stat", "cpu_stat12") is CPU_STAT
    assert layout_for("unix", "vminfo") is VMINFO and layout_for("unix", "var") is VAR
    assert layout_for("unix", "system_misc") is None and layout_for("cpu", "sys") is None


def test_pack_wraps_to_the_member_width() -> None:
    data = SYSINFO.pack({"updates": 2**32 + 5, "runque": 7})
    assert struct.unpack("<6I", data) == (5, 7, 0, 0, 0, 0)
    assert VAR.decode(VAR.pack({"v_proc": -1}))["v_proc"] == -1


# --- the provider: RAW equals NAMED -------------------------------------------------


def test_fake_cpu_stat_equals_the_named_view(fake: Path) -> None:
    chain, _ = attach(fake)
    result = read(chain, "cpu_stat", 0, "cpu_stat0")
    assert result["class"] == "misc" and result["data_size"] == 380 and len(result["data"]) == 380
    raw = CPU_STAT.decode(result["data"])
    sys0 = named(read(chain, "cpu", 0, "sys"))
    vm0 = named(read(chain, "cpu", 0, "vm"))
    assert (raw["idle"], raw["user"], raw["kernel"], raw["wait"]) == (IDLE0 + 7, 105, 39, 0)
    assert raw["idle"] == sys0["cpu_ticks_idle"] and raw["kernel"] == sys0["cpu_ticks_kernel"]
    for f in ("pswitch", "intr", "intrthread", "idlethread", "xcalls"):
        assert raw[f] == sys0[f], f
    for f, v in vm0.items():
        assert raw[f] == v, f
    assert raw["syscall"] == raw["trap"] == raw["pgin"] == 0  # no Linux source: zero inside the struct
    assert set(CPU_STAT.decode(read(chain, "cpu_stat", 1, "cpu_stat1")["data"])[f] for f in vm0) == {0}


def test_live_cpu_stat_equals_the_named_view() -> None:
    chain, _ = attach()
    kid = chain.kstat_lookup_name("cpu_stat", 0, "cpu_stat0").ks_kid
    before = CPU_STAT.decode(chain_read(chain, kid)["data"])
    sys0 = named(read(chain, "cpu", 0, "sys"))
    vm0 = named(read(chain, "cpu", 0, "vm"))
    after = CPU_STAT.decode(chain_read(chain, kid)["data"])
    pairs = [("idle", "cpu_ticks_idle"), ("user", "cpu_ticks_user"), ("kernel", "cpu_ticks_kernel"),
             ("intr", "intr"), ("intrthread", "intrthread")] + [(f, f) for f in vm0]  # fmt: skip
    for raw_name, named_name in pairs:
        src = {**sys0, **vm0}[named_name] % 2**32
        assert before[raw_name] <= src <= after[raw_name], raw_name


def test_fake_sysinfo_vminfo_var(fake: Path) -> None:
    write_meminfo = (
        "MemTotal:  8192 kB\nMemFree:   4096 kB\nMlocked:   64 kB\nAnonPages: 1024 kB\nCommitted_AS: 3072 kB\n"
        "SwapTotal: 2048 kB\nSwapFree: 1024 kB\n"
    )
    (fake / "proc/meminfo").write_text(write_meminfo)
    (fake / "proc/sys/kernel").mkdir(parents=True)
    (fake / "proc/sys/kernel/threads-max").write_text("63000\n")
    (fake / "proc/sys/vm/dirty_expire_centisecs").write_text("3000\n")
    chain, _ = attach(fake)
    kpp = PAGESIZE // 1024
    up = 1234  # whole seconds of the fake uptime
    si = SYSINFO.decode(read(chain, "unix", 0, "sysinfo")["data"])
    # procs_running 6 = the reader + a thread on each of the 2 on-line CPUs + 3 waiting for one
    assert si == {"updates": up, "runque": 3 * up, "runocc": up, "swpque": 0, "swpocc": 0, "waiting": up}
    vi = VMINFO.decode(read(chain, "unix", 0, "vminfo")["data"])
    alloc = 1024 + 2048 - 1024
    assert vi == {
        "freemem": 4096 // kpp * up, "swap_resv": 3072 // kpp * up, "swap_alloc": alloc // kpp * up,
        "swap_avail": (8192 + 2048 - 3072) // kpp * up, "swap_free": (8192 + 2048 - alloc) // kpp * up,
        "updates": up,
    }  # fmt: skip
    (fake / "proc/uptime").write_text("1244.56 2000.00\n")  # 10 s on: sample and hold
    vi2 = VMINFO.decode(read(chain, "unix", 0, "vminfo")["data"])
    assert (vi2["freemem"] - vi["freemem"]) / (vi2["updates"] - vi["updates"]) == 4096 // kpp
    var = VAR.decode(read(chain, "unix", 0, "var")["data"])
    assert (var["v_proc"], var["v_maxupttl"], var["v_autoup"], var["v_buf"]) == (63000, 63000, 30, 0)
    (fake / "proc/sys/kernel/pid_max").write_text("32768\n")  # fewer PIDs than task slots: PIDs limit
    var_pid = VAR.decode(read(chain, "unix", 0, "var")["data"])
    assert (var_pid["v_proc"], var_pid["v_maxupttl"]) == (32768, 32768)
    (fake / "proc/sys/kernel/pid_max").write_text("4194304\n")
    assert VAR.decode(read(chain, "unix", 0, "var")["data"]) == var  # unchanged tunables: the same struct
    (fake / "proc/sys/kernel/threads-max").write_text("64000\n")  # a tunable set between two reads
    var2 = VAR.decode(read(chain, "unix", 0, "var")["data"])
    assert (var2["v_proc"], var2["v_maxupttl"], var2["v_autoup"]) == (64000, 64000, 30)
    assert read(chain, "unix", 0, "vminfo")["class"] == "vm"


# --- the kstat command and the client, through kstatd -------------------------------


def test_kstat_prints_raw_kstats_through_kstatd(tmp_path: Path, fake: Path) -> None:
    with running_kstatd(tmp_path, plugins=("kstatpy_providers.system",), env={"KSTATPY_SYSTEM_ROOT": str(fake)}) as kd:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        result = kstat(["--socket", kd.socket, "-p", "-m", "cpu_stat", "-s", "intr*"], env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [  # kstat(8) man page, example 2
            "cpu_stat:0:cpu_stat0:intr\t110", "cpu_stat:0:cpu_stat0:intrblk\t0",
            "cpu_stat:0:cpu_stat0:intrthread\t36",
            "cpu_stat:1:cpu_stat1:intr\t220", "cpu_stat:1:cpu_stat1:intrblk\t0",
            "cpu_stat:1:cpu_stat1:intrthread\t48",
        ]  # fmt: skip
        result = kstat(["--socket", kd.socket, "-p", "-n", "vminfo"], env)
        assert result.returncode == 0, result.stderr
        names = [ln.split("\t")[0].split(":")[3] for ln in stable(result.stdout)]
        assert names == ["class", "freemem", "swap_alloc", "swap_avail", "swap_free", "swap_resv", "updates"]
        result = kstat(["--socket", kd.socket, "-j", "unix:0:sysinfo"], env)
        assert result.returncode == 0, result.stderr
        doc = json.loads(result.stdout)
        assert doc[0]["type"] == 0 and doc[0]["data"]["updates"] == 1234 and doc[0]["data"]["runque"] == 3 * 1234
        # A decodable RAW kstat is listed; cpu_stat's members all print.
        result = kstat(["--socket", kd.socket, "-p", "cpu_stat:1"], env)
        assert len(stable(result.stdout)) == 1 + len(CPU_STAT.names)

        with kstat_open(kd.socket) as kc:
            ksp = kc.lookup("cpu_stat", 1, "cpu_stat1")
            kc.read(ksp)
            fields = ksp.raw_fields()
            assert fields is not None and list(fields) == list(CPU_STAT.names)
            assert fields["user"] == 205 and fields["intr"] == 220
            misc = kc.lookup("unix", 0, "system_misc")
            kc.read(misc)
            assert misc.raw_fields() is None  # NAMED: nothing to decode
        assert kd.stop() == 0, kd.stderr


# --- a root that is no host tree ------------------------------------------------------


@pytest.mark.parametrize("what", ["missing", "no_proc_stat"])
def test_bad_root_is_a_one_line_error_at_attach(tmp_path: Path, what: str) -> None:
    root = tmp_path / "nonexistent"
    if what == "no_proc_stat":
        (root / "proc").mkdir(parents=True)
    expect = "does not exist" if what == "missing" else "has no proc/stat"
    with running_kstatd(tmp_path, plugins=("kstatpy_providers.system",), env={"KSTATPY_SYSTEM_ROOT": str(root)}) as kd:
        assert kd.stop() == 0
    lines = [ln for ln in kd.stderr.splitlines() if str(root) in ln]
    assert len(lines) == 1 and expect in lines[0] and "system" in lines[0], kd.stderr
    assert "Traceback" not in kd.stderr

    env = dict(os.environ, KSTATPY_SYSTEM_ROOT=str(root), PYTHONPATH=str(REPO), XDG_RUNTIME_DIR=str(tmp_path / "xdg"))
    env.pop("KSTAT_SOCKET", None)
    env.pop("KSTATPY_DISABLE_PLUGIN_AUTOLOAD", None)
    env["KSTATPY_DISABLED_PROVIDERS"] = "vmm"
    result = kstat(["-p", "unix:0:system_misc"], env)
    assert result.returncode == 1, result.stderr  # nothing to print, and said why
    lines = [ln for ln in result.stderr.splitlines() if str(root) in ln]
    assert len(lines) == 1 and expect in lines[0], result.stderr
    assert "Traceback" not in result.stderr
