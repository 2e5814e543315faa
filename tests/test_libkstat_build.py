"""libkstat's build and headers: ``kstatpy-libkstat`` (help, version, errors, exit codes),
what it installs, the symbols and soname of the library, and the headers' layouts:
the RAW structs against kstatpy/raw.py's table, illumos' kstat structs against their
LP64 offsets, every constant against kstatpy.constants."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from kstatpy import constants
from kstatpy.raw import CPU_STAT
from kstatpy.raw import SYSINFO
from kstatpy.raw import VAR
from kstatpy.raw import VMINFO
from tests.libkstat_helpers import SCRIPT
from tests.libkstat_helpers import compile_c
from tests.libkstat_helpers import installed

API = [
    "kstat_chain_update",
    "kstat_close",
    "kstat_data_lookup",
    "kstat_lookup",
    "kstat_open",
    "kstat_read",
    "kstat_write",
]
CTYPE = {CPU_STAT: "cpu_stat_t", SYSINFO: "sysinfo_t", VMINFO: "vminfo_t", VAR: "struct var"}
# illumos uts/common/sys/kstat.h and lib/libkstat/kstat.h on LP64 (amd64): offset of each member.
ILLUMOS = {
    "kstat_t": (184, {"ks_crtime": 0, "ks_next": 8, "ks_kid": 16, "ks_module": 20, "ks_resv": 51,
                      "ks_instance": 52, "ks_name": 56, "ks_type": 87, "ks_class": 88, "ks_flags": 119,
                      "ks_data": 120, "ks_ndata": 128, "ks_data_size": 136, "ks_snaptime": 144,
                      "ks_update": 152, "ks_private": 160, "ks_snapshot": 168, "ks_lock": 176}),
    "kstat_named_t": (48, {"name": 0, "data_type": 31, "value": 32, "value.c": 32, "value.str.addr.ptr": 32,
                           "value.str.len": 40, "value.ui64": 32}),
    "kstat_intr_t": (20, {"intrs": 0}),
    "kstat_io_t": (80, {"nread": 0, "nwritten": 8, "reads": 16, "writes": 20, "wtime": 24, "wlentime": 32,
                        "wlastupdate": 40, "rtime": 48, "rlentime": 56, "rlastupdate": 64, "wcnt": 72,
                        "rcnt": 76}),
    "kstat_timer_t": (80, {"name": 0, "resv": 31, "num_events": 32, "elapsed_time": 40, "min_time": 48,
                           "max_time": 56, "start_time": 64, "stop_time": 72}),
    "kstat_ctl_t": (24, {"kc_chain_id": 0, "kc_chain": 8, "kc_kd": 16}),
}  # fmt: skip
CONSTANTS = [
    name
    for name in dir(constants)
    if name.startswith(("KSTAT_TYPE_", "KSTAT_DATA_", "KSTAT_FLAG_", "KSTAT_INTR_", "KSTAT_IOC_", "KSTAT_NUM_"))
    or name in ("KSTAT_STRLEN", "KSTAT_READ", "KSTAT_WRITE")
]


def run_c(tmp_path: Path, body: str) -> list[str]:
    src = tmp_path / "probe.c"
    src.write_text(
        "#include <stddef.h>\n#include <stdio.h>\n#include <kstat.h>\n#include <sys/sysinfo.h>\n"
        f"#include <sys/var.h>\nint main(void) {{\n{body}\nreturn 0;\n}}\n"
    )
    exe = compile_c([src], tmp_path / "probe")
    out = subprocess.run(
        [str(exe)],
        env=dict(os.environ, LD_LIBRARY_PATH=str(installed() / "lib")),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.splitlines()


def test_raw_headers_match_the_layout_table(tmp_path: Path) -> None:
    body, want = [], []
    for layout, ctype in CTYPE.items():
        body.append(f'printf("{ctype} %zu\\n", sizeof({ctype}));')
        want.append(f"{ctype} {layout.size}")
        for f in layout.fields:
            body.append(
                f'printf("{ctype}.{f.member} %zu %zu\\n", offsetof({ctype}, {f.member}), sizeof(((({ctype} *)0)->{f.member})));'
            )
            want.append(f"{ctype}.{f.member} {f.offset} {4 if f.ctype != 'uint64_t' else 8}")
    assert run_c(tmp_path, "\n".join(body)) == want


def test_kstat_structs_have_illumos_lp64_layouts(tmp_path: Path) -> None:
    body, want = [], []
    for ctype, (size, members) in ILLUMOS.items():
        body.append(f'printf("{ctype} %zu\\n", sizeof({ctype}));')
        want.append(f"{ctype} {size}")
        for member, offset in members.items():
            body.append(f'printf("{ctype}.{member} %zu\\n", offsetof({ctype}, {member}));')
            want.append(f"{ctype}.{member} {offset}")
    assert run_c(tmp_path, "\n".join(body)) == want


def test_constants_match_kstatpy_constants(tmp_path: Path) -> None:
    assert len(CONSTANTS) > 30
    got = run_c(tmp_path, "\n".join(f'printf("{n} %d\\n", (int)({n}));' for n in CONSTANTS))
    # kstatpy.constants is the provider's (kernel's) side: LONG and ULONG are 7 and 8
    # there; an LP64 user program sees them as INT64 and UINT64 (illumos sys/kstat.h).
    user = {"KSTAT_DATA_LONG": constants.KSTAT_DATA_INT64, "KSTAT_DATA_ULONG": constants.KSTAT_DATA_UINT64}
    assert got == [f"{n} {int(user.get(n, getattr(constants, n)))}" for n in CONSTANTS]


def test_installed_files_soname_and_symbols() -> None:
    prefix = installed()
    files = sorted(str(p.relative_to(prefix)) for p in prefix.rglob("*") if p.is_file() or p.is_symlink())
    assert files == [
        "include/kstat.h",
        "include/sys/kstat.h",
        "include/sys/kstatpy_types.h",
        "include/sys/sysinfo.h",
        "include/sys/var.h",
        "lib/libkstat.so",
        "lib/libkstat.so.1",
        "lib/pkgconfig/libkstat.pc",
    ]
    assert os.readlink(prefix / "lib" / "libkstat.so") == "libkstat.so.1"
    dyn = subprocess.run(
        ["readelf", "-d", str(prefix / "lib/libkstat.so.1")], capture_output=True, text=True, timeout=60
    )
    dyn = dyn.stdout
    assert "Library soname: [libkstat.so.1]" in dyn
    nm = subprocess.run(
        ["nm", "-D", "--defined-only", str(prefix / "lib/libkstat.so.1")], capture_output=True, text=True, timeout=60
    )
    symbols = sorted(line.split()[-1].split("@")[0] for line in nm.stdout.splitlines() if " T " in line)
    assert symbols == API


def script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300)


def test_cli_help_version_and_usage() -> None:
    assert script("--help").returncode == 0
    out = script("install", "--help")
    assert out.returncode == 0 and "--prefix" in out.stdout
    from kstatpy import __version__

    assert script("--version").stdout == f"kstatpy-libkstat (kstatpy {__version__})\n"  # as every command (test_release)
    assert script("install").returncode == 2
    assert script("frobnicate").returncode == 2


def test_cli_missing_tools_are_one_line_naming_the_package(tmp_path: Path) -> None:
    base = dict(os.environ)
    out = script("install", "--prefix", str(tmp_path / "a"), env=dict(base, CC="no-such-cc"))
    assert (out.returncode, out.stderr) == (
        3,
        "kstatpy-libkstat: no C compiler (no-such-cc) found: apt-get install gcc\n",
    )
    out = script(
        "install", "--prefix", str(tmp_path / "b"), env=dict(base, PKG_CONFIG_LIBDIR=str(tmp_path), PKG_CONFIG_PATH="")
    )
    assert out.returncode == 3
    assert out.stderr == (
        "kstatpy-libkstat: the msgpack C library is missing (pkg-config msgpack): apt-get install libmsgpack-dev\n"
    )
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "cc").symlink_to(
        subprocess.run(["sh", "-c", "command -v cc"], capture_output=True, text=True, timeout=60).stdout.strip()
    )
    out = script("install", "--prefix", str(tmp_path / "c"), env=dict(base, PATH=str(bindir)))
    assert (out.returncode, out.stderr) == (3, "kstatpy-libkstat: pkg-config not found: apt-get install pkg-config\n")
    out = script("install", "--prefix", str(tmp_path / "d"), env=dict(base, CFLAGS="-include no-such-header.h"))
    assert out.returncode == 3 and out.stderr.startswith("kstatpy-libkstat: cc failed (exit 1): ")
    assert len(out.stderr.splitlines()) == 1
    assert not (tmp_path / "d" / "lib").exists()  # nothing half-installed
    (tmp_path / "file").write_text("")
    out = script("install", "--prefix", str(tmp_path / "file" / "x"))
    assert out.returncode == 3 and len(out.stderr.splitlines()) == 1 and "Traceback" not in out.stderr, out.stderr


def test_install_never_writes_through_another_users_link(tmp_path: Path) -> None:
    # The prefix is nobody's; nobody plants NAME.part -> a root file for every file the
    # install writes. Before: the install copied into "NAME.part" (a fixed name) and so
    # overwrote the root file with a header, the .pc or the library.
    from tests.nobody import AS_NOBODY
    from tests.nobody import NOBODY_UID
    from tests.nobody import nobody_skip
    from tests.nobody import shared_dir

    nobody_skip()
    victim = tmp_path / "precious"
    victim.write_text("precious\n")
    names = ["include/kstat.h", "include/sys/kstat.h", "include/sys/kstatpy_types.h", "include/sys/sysinfo.h",
             "include/sys/var.h", "lib/libkstat.so.1", "lib/pkgconfig/libkstat.pc"]  # fmt: skip
    with shared_dir() as prefix:
        os.chown(prefix, NOBODY_UID, NOBODY_UID)
        plant = " && ".join(
            f"mkdir -p {prefix}/{os.path.dirname(n)} && ln -s {victim} {prefix}/{n}.part" for n in names
        )
        subprocess.run([*AS_NOBODY, "sh", "-c", plant], check=True, timeout=60)
        done = subprocess.run([str(SCRIPT), "install", "--prefix", prefix], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        assert victim.read_text() == "precious\n"
        assert (Path(prefix) / "lib/pkgconfig/libkstat.pc").read_text().startswith(f"prefix={prefix}\n")
        assert not (Path(prefix) / "lib/libkstat.so.1").is_symlink()
