"""The crash dump and ``kstatpy-mdb`` on a real crash from the README's pre-14281 walkthrough.

kstatd (``--vmm-teardown=pre-14281``), ``vmmctl create/hold/run/destroy``, the hold
interrupted (the last close leaves the kstats lingering), then ``kstat -p vmm:1:vcpu0``
panics kstatd. The dump it writes is read back with the seed's three commands.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bounded import reap
from tests.console_scripts import require_script
from tests.kstatd_fixture import REPO
from tests.kstatd_fixture import kstatd_env
from tests.kstatd_fixture import running_kstatd
from tests.test_vmm_kstatd import VMM

MDB = [sys.executable, "-m", "kstatpy.cli.mdb"]


def run(cmd: list[str], socket: str, **kw) -> subprocess.CompletedProcess[str]:
    env = kstatd_env({"KSTAT_SOCKET": socket})
    return subprocess.run(cmd, cwd=str(REPO), env=env, capture_output=True, text=True, timeout=60, **kw)


def vmmctl(socket: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "kstatpy_providers.vmm.vmmctl", *args], socket)


def _line(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> str:
    assert proc.stderr is not None
    ready, _, _ = select.select([proc.stderr], [], [], timeout)
    assert ready, "vmmctl hold printed nothing"
    return proc.stderr.readline().decode()  # bounded: select above


@pytest.fixture(scope="module")
def crash(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The structured dump of a real pre-14281 panic (the README's walkthrough)."""
    tmp = tmp_path_factory.mktemp("walkthrough")
    with running_kstatd(tmp, plugins=VMM, args=("--vmm-teardown=pre-14281",)) as kd:
        assert vmmctl(kd.socket, "create", "web0").stdout == "created VM 'web0' (minor 1)\n"
        hold = subprocess.Popen(
            [sys.executable, "-m", "kstatpy_providers.vmm.vmmctl", "hold", "web0"],
            cwd=str(REPO), env=kstatd_env({"KSTAT_SOCKET": kd.socket}), stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            assert _line(hold).startswith("holding VM 'web0' open")
            ran = vmmctl(kd.socket, "run", "web0", "--seconds", "0.3")
            assert ran.returncode == 0, ran.stderr
            assert "stays until its last close" in vmmctl(kd.socket, "destroy", "web0").stdout
            hold.send_signal(signal.SIGINT)
            assert hold.wait(timeout=15) == 0
        finally:
            if hold.poll() is None:
                reap(hold)
        assert "vm_name\tweb0" in run([sys.executable, "-m", "kstatpy.cli.kstat", "-p", "vmm:1:vm"], kd.socket).stdout
        read = run([sys.executable, "-m", "kstatpy.cli.kstat", "-p", "vmm:1:vcpu0"], kd.socket)
        assert read.returncode == 3 and "lost kstatd" in read.stderr, read
        assert kd.wait(timeout=30) == 70
    (dump,) = tmp.glob("kstatd.vmcore.*.json")
    assert f"structured crash dump written to {dump}" in kd.stderr
    return dump


def mdb(crash: Path, commands: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MDB, str(crash), "-e", commands], capture_output=True, text=True, timeout=60, cwd=str(REPO))


def vcpu0(crash: Path) -> str:
    out = mdb(crash, "::kstat").stdout
    (addr,) = [line.split()[0] for line in out.splitlines() if line.split()[3:4] == ["vcpu0"]]
    return addr


def test_the_dump_carries_the_panic_the_kstats_and_the_heap(crash: Path) -> None:
    doc = json.loads(crash.read_text())
    assert (doc["format"], doc["version"]) == ("kstatpy-crashdump", 1)
    assert doc["panic"]["message"].startswith("BAD TRAP: type=e (#pf Page fault)")
    assert doc["panic"]["trap"]["kind"] == "page fault"
    assert any(f["symbol"].startswith("vmm:vmm_kstat_update_vcpu+0x") for f in doc["stack"])
    vmm = [k for k in doc["kstats"] if k["ks_module"] == "vmm"]
    assert len(vmm) == 33 and all(k["created"] for k in vmm)
    states = {b["type"]: b["state"] for b in doc["kmem"]["buffers"]}
    assert states["VM"] == "freed" and states["VmmSoftc"] == "freed" and states["Kstat"] == "allocated"
    assert "ks_update = vmm_kstat_update_vcpu" in doc["report"]  # the human report rides along (::msgbuf)
    text_report = crash.with_name(crash.name.replace("vmcore", "crash").removesuffix(".json"))
    assert text_report.read_text() in doc["report"]


def test_dollar_c_is_the_panic_stack_with_arguments(crash: Path) -> None:
    res = mdb(crash, "$C")
    assert res.returncode == 0, res.stderr
    addr = vcpu0(crash)
    frames = res.stdout.splitlines()
    update = next(f for f in frames if " vmm_kstat_update_vcpu+0x" in f)
    assert re.fullmatch(rf"fffffe007ae3[0-9a-f]{{4}} vmm_kstat_update_vcpu\+0x[0-9a-f]+\({addr}, 0\)", update), update
    assert any(" read_kstat_data+0x" in f for f in frames)


def test_print_kstat_t_as_in_the_seed(crash: Path) -> None:
    addr = vcpu0(crash)
    res = mdb(crash, f"{addr}::print kstat_t")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert [line.split(" = ")[0].strip() for line in lines] == [
        "ks_crtime", "ks_next", "ks_kid", "ks_module", "ks_resv", "ks_instance", "ks_name", "ks_type",
        "ks_class", "ks_flags", "ks_data", "ks_ndata", "ks_data_size", "ks_snaptime", "ks_update",
        "ks_private", "ks_snapshot", "ks_lock",
    ]  # fmt: skip
    assert '    ks_module = [ "vmm" ]' in lines and '    ks_name = [ "vcpu0" ]' in lines
    assert "    ks_update = vmm_kstat_update_vcpu" in lines and "    ks_ndata = 0x7" in lines
    assert mdb(crash, f"0x{addr}::print kstat_t ks_name ks_instance").stdout == 'ks_name = [ "vcpu0" ]\nks_instance = 0x1\n'


def test_print_ks_private_piped_to_whatis_finds_the_freed_vm(crash: Path) -> None:
    addr = vcpu0(crash)
    private = mdb(crash, f"{addr}::print kstat_t ks_private").stdout.strip().split(" = ")[1]
    res = mdb(crash, f"{addr}::print kstat_t ks_private | ::whatis")
    assert res.returncode == 0, res.stderr
    first, *rest = res.stdout.splitlines()
    assert first == f"{private[2:]} is {private[2:]}+0, freed from kmem_alloc_32768 (VM):"
    assert any("vmm:vm_destroy+0x" in line for line in rest)
    assert any("vmm:kstatpy_instance_destroy+0x" in line for line in rest)


def test_kstat_lists_every_kstat_and_d_the_dangling_ones(crash: Path) -> None:
    every = mdb(crash, "::kstat").stdout.splitlines()
    assert every[0].split() == ["ADDR", "MODULE", "INST", "NAME", "KS_PRIVATE"]
    assert any(line.split()[1:4] == ["unix", "0", "kstat_headers"] for line in every[1:])
    dangling = mdb(crash, "::kstat -d").stdout.splitlines()[1:]
    assert len(dangling) == 33 and {line.split()[1] for line in dangling} == {"vmm"}
    names = mdb(crash, "::kstat -d | ::print kstat_t ks_name").stdout.splitlines()
    assert len(names) == 33 and 'ks_name = [ "vm" ]' in names


def test_status_and_msgbuf(crash: Path) -> None:
    out = mdb(crash, "::status; ::msgbuf").stdout
    assert f"debugging crash dump {crash}" in out
    assert "panic message: BAD TRAP: type=e (#pf Page fault)" in out
    assert "> " in out and "::print kstat_t ks_private | ::whatis" in out


def test_interactive_prompt_and_errors_that_do_not_end_the_session(crash: Path) -> None:
    res = subprocess.run(
        [*MDB, str(crash)], input="::frob\n::status\n$q\n::status\n", capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("> ") and res.stdout.count("> ") == 3 and res.stdout.count("panic message:") == 1
    assert res.stderr == "kstatpy-mdb: dcmd '::frob' not supported by kstatpy-mdb (try ::help)\n"


def test_the_report_path_finds_its_dump(crash: Path) -> None:
    report = crash.with_name(crash.name.replace("vmcore", "crash").removesuffix(".json"))
    assert report.exists() and "panic message:" in mdb(report, "::status").stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the dump another owner")
def test_a_dump_another_user_left_beside_the_report_is_not_read(crash: Path, tmp_path: Path) -> None:
    # A shared crash directory: someone else's kstatd.vmcore.P.N.json beside the report
    # is not this panic's dump (kstatd's own write of it failed).
    report = crash.with_name(crash.name.replace("vmcore", "crash").removesuffix(".json"))
    planted_report = tmp_path / report.name
    planted_dump = tmp_path / crash.name
    shutil.copy(report, planted_report)
    shutil.copy(crash, planted_dump)
    os.chown(planted_dump, 65534, -1)
    r = mdb(planted_report, "::status")
    assert r.returncode == 3 and r.stdout == "", r
    assert r.stderr.count("\n") == 1 and "owned by uid 65534" in r.stderr, r.stderr
    assert mdb(planted_dump, "::status").returncode == 0  # named itself, it is the user's choice


@pytest.mark.parametrize(
    ("commands", "message"),
    [
        ("::frob", "kstatpy-mdb: dcmd '::frob' not supported by kstatpy-mdb (try ::help)\n"),
        ("1234::print kstat_t", "kstatpy-mdb: ::print: 1234 is not the address of a kstat_t in this dump (see ::kstat)\n"),
        ("::print proc_t", "kstatpy-mdb: ::print: failed to look up type proc_t: this dump knows kstat_t only\n"),
        ("zz::whatis", "kstatpy-mdb: failed to parse address 'zz'\n"),
        ("::kstat -x", "kstatpy-mdb: ::kstat: unknown option -x (only -d)\n"),
        ("hello", "kstatpy-mdb: syntax error near 'hello' (try ::help)\n"),
    ],
)
def test_bad_commands_exit_2_with_one_line(crash: Path, commands: str, message: str) -> None:
    res = mdb(crash, commands)
    assert (res.returncode, res.stdout, res.stderr) == (2, "", message)


def test_bad_files_exit_3_and_usage_2(tmp_path: Path) -> None:
    missing = tmp_path / "none"
    res = subprocess.run([*MDB, str(missing), "-e", "$C"], capture_output=True, text=True, timeout=60)
    assert (res.returncode, res.stderr) == (3, f"kstatpy-mdb: {missing}: no such file\n")
    junk = tmp_path / "junk.json"
    junk.write_text("not json")
    res = subprocess.run([*MDB, str(junk), "-e", "$C"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 3 and res.stderr.startswith(f"kstatpy-mdb: {junk}: not a kstatpy crash dump")
    other = tmp_path / "other.json"
    other.write_text('{"format": "something"}')
    res = subprocess.run([*MDB, str(other)], capture_output=True, text=True, timeout=60)
    assert (res.returncode, res.stderr.count("\n")) == (3, 1) and "Traceback" not in res.stderr
    assert subprocess.run(MDB, capture_output=True, timeout=60).returncode == 2
    damaged = tmp_path / "damaged.json"
    damaged.write_text('{"format": "kstatpy-crashdump", "version": 1, "kstats": [], "kmem": {"buffers": []}}')
    res = subprocess.run([*MDB, str(damaged), "-e", "$C"], capture_output=True, text=True, timeout=60)
    assert (res.returncode, res.stderr) == (3, f"kstatpy-mdb: {damaged}: damaged crash dump (KeyError: 'stack')\n")


def test_the_console_script_is_installed(crash: Path) -> None:
    exe = require_script("kstatpy-mdb")
    res = subprocess.run([exe, str(crash), "-e", "::status"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "panic message:" in res.stdout
