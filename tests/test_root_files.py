"""Issue 21: files root writes or reads never follow another user's links, and are bounded.

The entry-point cache (kstatpy/epcache.py), crash reports and dumps (kstatpy/safefile.py),
kstatpy-mdb's reading of a dump. The other user is ``nobody`` (setpriv).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kstatd_fixture import REPO
from kstatd_fixture import kstatd_env
from kstatd_fixture import rpc
from kstatd_fixture import running_kstatd
from nobody import AS_NOBODY
from nobody import NOBODY_UID
from nobody import nobody_skip
from nobody import shared_dir

from kstatpy.client import kstat_open
from kstatpy.safefile import FileTooLargeError
from kstatpy.safefile import read_capped
from kstatpy.safefile import write_new

PY = sys.executable
MDB = [PY, "-m", "kstatpy.cli.mdb"]
FREE = 0x7E5720
READ = 0x4B02


def env_with(**kw: str) -> dict[str, str]:
    env = kstatd_env()
    env.pop("KSTAT_SOCKET", None)
    env.update(kw)
    return env


# --- the entry-point cache ---------------------------------------------------------------

# Runs as root: plants nothing itself; asks nobody to plant a symlink at the name the old
# code wrote to (ENTRY.PID.tmp, PID = this process's, kept across exec), then execs kstat.
PLANT_AND_EXEC = r"""
import os, subprocess, sys
cache, target, nobody = sys.argv[1], sys.argv[2], sys.argv[3:]
link = os.path.join(cache, f"entry-points.cache.{os.getpid()}.tmp")
subprocess.run([*nobody, "-c", f"import os; os.symlink({target!r}, {link!r})"], check=True)
os.execv(sys.executable, [sys.executable, "-m", "kstatpy.cli.kstat", "-p", "unix:0:system_misc:ncpus"])
"""


def test_roots_kstat_never_writes_through_a_link_in_another_users_cache_dir(tmp_path):
    nobody_skip()
    secret = tmp_path / "shadow"
    secret.write_text("root's secret\n")
    os.chmod(secret, 0o600)
    with shared_dir(0o755) as cache:
        os.chown(cache, NOBODY_UID, -1)  # KSTATPY_CACHE_DIR another user owns (sudo -E, shared)
        env = env_with(KSTATPY_CACHE_DIR=cache, XDG_RUNTIME_DIR=str(tmp_path / "none"))
        env.pop("KSTATPY_DISABLE_PLUGIN_AUTOLOAD")
        r = subprocess.run([PY, "-c", PLANT_AND_EXEC, cache, str(secret), *AS_NOBODY, PY], cwd=str(REPO), env=env,
                           capture_output=True, timeout=120)  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(b"unix:0:system_misc:ncpus\t")
        assert secret.read_text() == "root's secret\n"
        # The cache is not used at all in a directory another user controls: nothing written.
        assert not os.path.lexists(os.path.join(cache, "entry-points.cache"))


def test_the_cache_is_written_whole_under_a_random_name(tmp_path):
    env = env_with(KSTATPY_CACHE_DIR=str(tmp_path / "cache"), XDG_RUNTIME_DIR=str(tmp_path / "none"))
    env.pop("KSTATPY_DISABLE_PLUGIN_AUTOLOAD")
    r = subprocess.run([PY, "-m", "kstatpy.cli.kstat", "-p", "unix:0:system_misc:ncpus"], cwd=str(REPO), env=env,
                       capture_output=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert os.listdir(tmp_path / "cache") == ["entry-points.cache"]  # no temporary left


# --- safefile ----------------------------------------------------------------------------


def test_write_new_never_follows_never_replaces_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "target"
    target.write_text("keep")
    os.symlink(target, tmp_path / "taken")
    with pytest.raises(FileExistsError):
        write_new(tmp_path, lambda n: "taken" if n == 0 else None, b"new")
    assert target.read_text() == "keep"
    assert sorted(os.listdir(tmp_path)) == ["taken", "target"]
    path = write_new(tmp_path, lambda n: f"f.{n}", b"x" * 100_000)
    assert path == str(tmp_path / "f.0") and len(Path(path).read_bytes()) == 100_000
    with pytest.raises(OSError):
        write_new(tmp_path / "taken", lambda n: "x", b"")  # a symlinked directory: refused


def test_read_capped_refuses_links_devices_and_long_files(tmp_path):
    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.truncate(300 << 20)  # sparse: costs nothing
    with pytest.raises(FileTooLargeError):
        read_capped(big, 256 << 20)
    os.symlink(big, tmp_path / "link")
    with pytest.raises(OSError):
        read_capped(tmp_path / "link", 1 << 30)
    with pytest.raises(OSError):
        read_capped("/dev/zero", 1 << 20)  # not a regular file
    with pytest.raises(FileTooLargeError):
        read_capped("/dev/zero", 1 << 20, regular=False)  # any file: still bounded
    assert read_capped(big, 1 << 30, regular=True)[:4] == b"\0\0\0\0"


# --- kstatpy-mdb ---------------------------------------------------------------------------


def mdb(*argv: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MDB, *argv], capture_output=True, text=True, timeout=60, cwd=str(REPO), **kw)


def one_line(res: subprocess.CompletedProcess[str]) -> str:
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
    return res.stderr


def test_mdb_refuses_a_symlinked_dump_and_a_huge_one(tmp_path):
    real = tmp_path / "kstatd.vmcore.1.0.json"
    real.write_text('{"format": "kstatpy-crashdump"}')
    link = tmp_path / "kstatd.vmcore.2.0.json"
    os.symlink(real, link)
    res = mdb(str(link), "-e", "$C")
    assert res.returncode == 3 and "symbolic link" in one_line(res)
    big = tmp_path / "kstatd.vmcore.3.0.json"
    with open(big, "wb") as f:
        f.truncate(300 << 20)
    res = mdb(str(big), "-e", "$C")
    assert res.returncode == 3 and "larger than 256 MiB" in one_line(res)
    res = mdb("/dev/zero", "-e", "$C")
    assert res.returncode == 3 and "not a regular file" in one_line(res)


@pytest.mark.parametrize(
    "text",
    [
        "[" * 200_000 + "]" * 200_000,  # nesting past the recursion limit
        '{"format": "kstatpy-crashdump", "version": ' + "9" * 5000 + "}",  # an int of 5,000 digits
        '{"format": "kstatpy-crashdump", "version": 1, "kstats": {"a": 1}, "kmem": []}',  # wrong shapes
        '{"format": "kstatpy-crashdump", "version": 1, "kstats": [], "kmem": {"buffers": [[]]}}',
    ],
)
def test_mdb_hostile_json_is_one_line(tmp_path, text):
    dump = tmp_path / "kstatd.vmcore.1.0.json"
    dump.write_text(text)
    res = mdb(str(dump), "-e", "$C")
    assert res.returncode == 3 and one_line(res).startswith(f"kstatpy-mdb: {dump}: ")


def test_mdb_version_and_output_errors():
    res = mdb("--version")
    assert res.returncode == 0 and res.stdout.startswith("kstatpy-mdb (kstatpy ")
    with open("/dev/full", "w") as full:
        res = subprocess.run([*MDB, "--version"], stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    assert res.returncode == 3 and one_line(res) == "kstatpy-mdb: write error: No space left on device\n"


# --- crash files on a full --crash-dir --------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                       capture_output=True, timeout=60)  # fmt: skip
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=60)


def test_a_panic_on_a_full_crash_dir_leaves_no_partial_dump_and_one_line(tmp_path):
    with small_tmpfs(tmp_path / "crashes", "16k") as crash_dir:
        plugins = ["tests.providers_fixture.uaf", "tests.providers_fixture.basic"]
        args = ["--on-panic=continue", "--crash-dir", str(crash_dir)]
        with running_kstatd(tmp_path, plugins=plugins, args=args) as kd:
            with kstat_open(kd.socket) as kc:
                uaf = kc.lookup("test", 0, "uaf")
                kc.ioctl(FREE)
                _seq, code, res = rpc(kd.socket, READ, {"kid": uaf.ks_kid})
                assert code != 0 and "BAD TRAP" in res["error"]
            assert kd.stop() == 0, kd.stderr
        names = os.listdir(crash_dir)
        for name in names:  # whatever is there is whole: every dump loads
            if name.endswith(".json"):
                json.loads((crash_dir / name).read_text())
        assert not [n for n in names if n.startswith(".kstatpy-tmp")], names
        assert kd.stderr.count("Traceback") == 0, kd.stderr
        if not any(n.endswith(".json") for n in names):
            assert kd.stderr.count("not written: No space left on device") == 1, kd.stderr


# --- provider sources: bounded, and malformed is an error ---------------------------------


def test_a_garbage_proc_stat_is_an_error_not_zeros(tmp_path):
    from kstatpy_providers.system.cpustat import stat_cpu_line
    from kstatpy_providers.system.source import SysRoot
    from kstatpy_providers.system.unixraw import SysinfoSource
    from test_provider_system import build_fake_tree

    root = build_fake_tree(tmp_path / "root")
    sysroot = SysRoot(str(root))
    try:
        assert "runque" in SysinfoSource(sysroot).sample()
        assert stat_cpu_line((root / "proc" / "stat").read_bytes(), 0)[0] == 100
        garbage = "this is not /proc/stat\nbtime 1700000000\nnor this\n"
        (root / "proc" / "stat").write_text(garbage)
        with pytest.raises(OSError, match="malformed"):
            SysinfoSource(sysroot).sample()  # the file was replaced: read again by name
        with pytest.raises(OSError, match="malformed"):
            stat_cpu_line(garbage.encode(), 0)
    finally:
        sysroot.close()  # its kept-open source files


DEV_ZERO_SOURCE = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (768 << 20, 768 << 20))  # the old read grew past it
from kstatpy_providers.system.source import SysFile
try:
    SysFile("/dev/zero", check_replaced=False).read()
except MemoryError:
    print("MemoryError")
except OSError as exc:
    print(exc.errno, exc.strerror)
"""


def test_dev_zero_as_a_source_is_an_error_not_a_growing_buffer():
    r = subprocess.run([PY, "-c", DEV_ZERO_SOURCE], cwd=str(REPO), env=env_with(), capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    assert r.stdout.startswith("27 /dev/zero: longer than 16 MiB"), (r.stdout, r.stderr)  # EFBIG
