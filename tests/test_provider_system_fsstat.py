"""fsstat's kstats (issue 19): ``unix:0:vopstats_TYPE`` and ``unix:0:vopstats_FSID``, found as
illumos' fsstat finds them (tests/illumos_tools.py's fsstat_*), every counter 0 and no source."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from illumos_tools import VOPSTATS_T
from illumos_tools import fsstat_default
from illumos_tools import fsstat_fstypes
from illumos_tools import fsstat_ksname
from illumos_tools import fsstat_read
from kstatpy_providers.system.vopstats import parse_mountinfo
from test_provider_system import OpenLog
from test_provider_system import attach
from test_provider_system import build_fake_tree
from test_provider_system import open_log  # noqa: F401  (the fixture)
from test_provider_system import write

from kstatpy.constants import KstatDataType


def _mountinfo(*mounts: tuple[int, str, str]) -> str:
    # proc(5)'s line: ID parent major:minor root point options optional... - type source super-options
    return "".join(f"{mid} 1 0:{mid} / {point} rw,relatime shared:{mid} - {fstype} src rw\n"
                   for mid, point, fstype in mounts)  # fmt: skip


def _vopstats(chain) -> set[str]:  # type: ignore[no-untyped-def]
    return {k.ks_name for k in chain.kstats() if k.ks_module == "unix" and k.ks_name.startswith("vopstats_")}


def _fsid(path: str | Path) -> str:
    return f"vopstats_{os.statvfs(path).f_fsid:x}"


def test_fsstat_F_and_fsstat_slash_run_on_this_host() -> None:
    """fsstat -F: every type of /proc/filesystems with a kstat is shown (at least the one of
    /, else fsstat prints nothing and stops); fsstat /: statvfs('/').f_fsid names a kstat."""
    chain, _ = attach()
    fstypes = fsstat_fstypes(Path("/proc/filesystems").read_text())
    shown = {t: v for t in fstypes if (v := fsstat_read(chain, fsstat_ksname(t, fstypes))) is not None}
    root_type = next(t for mid, point, t in parse_mountinfo(Path("/proc/self/mountinfo").read_bytes())
                     if point == "/")  # fmt: skip
    assert root_type in shown, (root_type, sorted(shown))
    slash = fsstat_ksname("/", fstypes)
    assert slash == _fsid("/")
    first = fsstat_read(chain, slash)
    assert first is not None, f"fsstat /: no statistics available ({slash})"
    again = fsstat_read(chain, slash)
    assert again is not None
    assert set(fsstat_default(first, again).values()) == {0} and set(first) == {0}
    for name in _vopstats(chain):  # vopstats_t's layout: fsstat reads by position
        ksp = chain.kstat_lookup_name("unix", 0, name)
        assert [k.name for k in ksp.ks_data] == list(VOPSTATS_T), name
        assert {k.data_type for k in ksp.ks_data} == {KstatDataType.UINT64}
        assert ksp.ks_class == "misc" and all(m.no_source for m in ksp.ks_meta.values())


def test_vopstats_follow_the_mounts(tmp_path: Path) -> None:
    """A type's kstat for each mounted type; a mount's by the statvfs fsid of its mount point
    (one per fsid), never statvfs'd for autofs (it would mount) nor network file systems (they
    may hang); a mount or unmount shows at the next refresh, an unchanged mountinfo costs nothing."""
    fake = build_fake_tree(tmp_path / "root")
    (fake / "dev").mkdir()
    (fake / "dev/shm").symlink_to("/dev/shm")  # another file system than the fake root's
    (fake / "net").symlink_to("/sys")  # autofs: statvfs here would trigger the automount
    (fake / "mnt").mkdir()
    (fake / "mnt/nfs").symlink_to("/proc")  # NFS: statvfs may block on a dead server
    (fake / "mnt/with space").mkdir()
    mounts = [(21, "/", "ext4"), (22, "/proc", "proc"), (23, "/dev/shm", "tmpfs"), (24, "/net", "autofs"),
              (25, "/mnt/nfs", "nfs4"), (26, "/mnt/with\\040space", "ext4")]  # fmt: skip
    write(fake, "proc/self/mountinfo", _mountinfo(*mounts))
    chain, providers = attach(fake)
    types = {"vopstats_ext4", "vopstats_proc", "vopstats_tmpfs", "vopstats_autofs", "vopstats_nfs4"}
    assert _vopstats(chain) == types | {_fsid(fake), _fsid("/dev/shm")}
    assert _fsid("/sys") not in _vopstats(chain) and _fsid("/proc") not in _vopstats(chain)
    ksp = chain.kstat_lookup_name("unix", 0, _fsid("/dev/shm"))
    assert (ksp.ks_module, ksp.ks_instance, ksp.ks_class, ksp.ks_ndata) == ("unix", 0, "misc", 49)

    kcid = chain.chain_id
    providers.refresh(chain)  # mountinfo unchanged: nothing made or deleted
    assert chain.chain_id == kcid

    write(fake, "proc/self/mountinfo", _mountinfo(*mounts[:2], *mounts[3:]))  # umount /dev/shm
    providers.refresh(chain)
    assert chain.chain_id > kcid
    assert _vopstats(chain) == types - {"vopstats_tmpfs"} | {_fsid(fake)}
    write(fake, "proc/self/mountinfo", _mountinfo(*mounts, (27, "/mnt/x", "fuse.sshfs")))
    providers.refresh(chain)
    # the kernel's type, as /proc/filesystems lists it and fsstat -F looks it up: not fuse.sshfs
    assert _vopstats(chain) == types | {_fsid(fake), _fsid("/dev/shm"), "vopstats_fuse"}
    (fake / "sysfs").symlink_to("/sys")
    write(fake, "proc/self/mountinfo", _mountinfo(*mounts[:2], (23, "/sysfs", "sysfs"), *mounts[3:]))
    providers.refresh(chain)  # /dev/shm unmounted, its mount ID given to the next mount at once
    assert _vopstats(chain) == types - {"vopstats_tmpfs"} | {"vopstats_sysfs", _fsid(fake), _fsid("/sys")}


def test_mountinfo_is_parsed_as_proc5_says() -> None:
    text = (b"36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n"
            b"37 35 0:5 / /proc rw - proc proc rw\nnot a mount line\n"
            b"38 35 0:6 / /a\\134b\\011c\\9 rw - tmpfs x rw\n")  # fmt: skip
    assert parse_mountinfo(text) == [(36, "/mnt/with space", "ext3"), (37, "/proc", "proc"),
                                     (38, "/a\\b\tc\\9", "tmpfs")]  # fmt: skip


def test_a_fuse_subtype_any_user_names_is_not_published(tmp_path: Path) -> None:
    """fusermount(1), setuid root, takes any subtype= from any local user, so the mount
    table's ``fuse.SUBTYPE`` is theirs: ``fuse.a:b`` gave root's kstatd a kstat whose
    ``kstat -p`` lines had five fields. The kstat is the kernel's type's (``fuse``, what
    fsstat -F looks up); a type is unescaped as proc(5) escapes it, and each ':', space
    or non-printable character in it is '_' (as in an IRQ's actions)."""
    fake = build_fake_tree(tmp_path / "root")
    (fake / "mnt").mkdir()
    mounts = [(21, "/", "ext4"), (22, "/mnt/a", "fuse.a:b"), (23, "/mnt/b", "fuse.x\\040y\\012z"),
              (24, "/mnt/c", "fuse.e\x1b[2J"), (25, "/mnt/d", "odd:type\\040\x7f")]  # fmt: skip
    write(fake, "proc/self/mountinfo", _mountinfo(*mounts))
    chain, _ = attach(fake)
    types = {n for n in _vopstats(chain) if not n.startswith(_fsid(fake))}
    assert types == {"vopstats_ext4", "vopstats_fuse", "vopstats_odd_type__"}
    assert parse_mountinfo(b"22 1 0:22 / /mnt/b rw - fuse.x\\040y src rw\n") == [(22, "/mnt/b", "fuse.x y")]


def test_an_unchanged_mount_table_costs_a_poll(open_log: OpenLog) -> None:  # noqa: F811
    """On the host's own root, a refresh polls mountinfo (POLLPRI once the mount table
    changed) and reads it only then."""
    chain, providers = attach()
    open_log.record(lambda: providers.refresh(chain))
    assert not [p for p in open_log.reads if p.endswith("/mountinfo")], open_log.reads


_MOUNT_SCRIPT = """
import os, subprocess, sys
sys.path[:0] = [{tests!r}, {repo!r}]
from test_provider_system import attach
chain, providers = attach()
def vops():
    return {{k.ks_name for k in chain.kstats() if k.ks_name.startswith("vopstats_")}}
before = vops()
subprocess.run(["mount", "-t", "ramfs", "none", {point!r}], check=True, timeout=60)
fsid = "vopstats_%x" % os.statvfs({point!r}).f_fsid
providers.refresh(chain)
mounted = vops()
subprocess.run(["umount", {point!r}], check=True, timeout=60)
providers.refresh(chain)
print(fsid in before, fsid in mounted, "vopstats_ramfs" in mounted, vops() == before)
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare(1)")
def test_a_mount_and_an_unmount_on_this_host_show_at_the_next_refresh(tmp_path: Path) -> None:
    """In a mount namespace of its own (unshare -m), a ramfs mounted after attach gets its
    type's and its fsid's kstats at the next refresh, and loses them when unmounted."""
    point = tmp_path / "mnt"
    point.mkdir()
    here = Path(__file__).resolve().parent
    script = _MOUNT_SCRIPT.format(tests=str(here), repo=str(here.parent), point=str(point))
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c", script],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    if r.returncode != 0 and "unshare failed" in r.stderr:
        pytest.skip(f"no mount namespace here: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "True", "True", "True"], r.stdout


_FUSE_SCRIPT = """
import os, subprocess, sys
sys.path[:0] = [{tests!r}, {repo!r}]
from test_provider_system import attach
d, sub = {point!r}, {point!r} + "/sub"
def mount(*args, fds=()):
    subprocess.run(["mount", *args], check=True, timeout=60, pass_fds=fds)
mount("-t", "tmpfs", "low", d)
os.mkdir(sub)
mount("-t", "tmpfs", "sub", sub)
fsid = "vopstats_%x" % os.statvfs(sub).f_fsid
try:
    fd = os.open("/dev/fuse", os.O_RDWR)
except OSError:
    print("nofuse")
    sys.exit(0)
# A FUSE mount whose server never answers (nobody reads fd): any statfs or lookup
# through it waits, as with a user's fusermount over a directory of theirs.
mount("-t", "fuse.stall", "-o", "fd=%d,rootmode=40000,user_id=0,group_id=0" % fd, "stall", d, fds=(fd,))
chain, providers = attach()
def vops():
    return {{k.ks_name for k in chain.kstats() if k.ks_name.startswith("vopstats_")}}
covered = vops()
subprocess.run(["umount", "-l", d], check=True, timeout=60)
providers.refresh(chain)
print("vopstats_fuse" in covered, fsid in covered, fsid in vops())
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare(1)")
def test_a_mount_under_a_stalled_fuse_mount_is_not_statvfsd(tmp_path: Path) -> None:
    """A mount at or under a FUSE mount's point is reached through the FUSE file system:
    statvfs of it waits for the FUSE server (fusermount lets any user mount one over a
    directory of theirs). Attach must not call it (it hung in fuse_statfs, kstatd's start
    with it); once the FUSE mount is gone, the next refresh gives the mount its fsid's kstat."""
    point = tmp_path / "d"
    point.mkdir()
    here = Path(__file__).resolve().parent
    script = _FUSE_SCRIPT.format(tests=str(here), repo=str(here.parent), point=str(point))
    cmd = ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", script]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("attach did not return within 120 s: statvfs through the stalled FUSE mount")
    if r.returncode != 0 and "unshare failed" in r.stderr:
        pytest.skip(f"no mount namespace here: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    if r.stdout.strip() == "nofuse":
        pytest.skip("/dev/fuse cannot be opened here")
    assert r.stdout.split() == ["True", "False", "True"], r.stdout


def test_kstat_and_kstatd_metrics_treat_vopstats_as_no_source(tmp_path: Path) -> None:
    """Through a real kstatd: kstat prints the zeros fsstat reads, --describe says no source,
    --metrics exports none of them."""
    from test_provider_system_nosource import free_port
    from test_provider_system_nosource import kstat

    from tests.kstatd_fixture import running_kstatd

    fake = build_fake_tree(tmp_path / "root")
    write(fake, "proc/self/mountinfo", _mountinfo((21, "/", "ext4")))
    port = free_port()
    with running_kstatd(tmp_path, plugins=("kstatpy_providers.system",), args=("--metrics", f"127.0.0.1:{port}"),
                        env={"KSTATPY_SYSTEM_ROOT": str(fake)}) as kd:  # fmt: skip
        r = kstat(kd.socket, "-p", "unix:0:vopstats_ext4:/^n(open|read)$/")
        assert r.stdout == "unix:0:vopstats_ext4:nopen\t0\nunix:0:vopstats_ext4:nread\t0\n", r.stderr
        r = kstat(kd.socket, "--describe", "unix:0:vopstats_ext4:nwrite")
        assert r.returncode == 0 and "no source" in r.stdout, (r.stdout, r.stderr)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as resp:
            text = resp.read().decode()
        assert "kstat_unix_lbolt" in text and "vopstats" not in text and "kstat_unix_nopen" not in text
        assert kd.stop() == 0, kd.stderr


_RACE_SCRIPT = """
import os, subprocess, sys, threading, time
sys.path[:0] = [{tests!r}, {repo!r}]
from test_provider_system_fsstat import _mountinfo
from kstatpy_providers.system import vopstats
from kstatpy_providers.system.source import SysRoot
base = {base!r}
stall, fake = base + "/stall", base + "/root"
os.makedirs(stall)
os.makedirs(fake + "/proc/self")
try:
    fd = os.open("/dev/fuse", os.O_RDWR)
except OSError:
    print("nofuse")
    sys.exit(0)
subprocess.run(["mount", "-t", "fuse.stall", "-o", "fd=%d,rootmode=40000,user_id=0,group_id=0" % fd, "stall", stall],
               check=True, timeout=60, pass_fds=(fd,))
# mountinfo says tmpfs at /xN; by the time of the statvfs each /xN is a symlink into the
# stalled FUSE mount (the rename race a directory's owner can win), and /ok a real directory.
lines = [(21, "/", "ext4"), (22, "/ok", "tmpfs")] + [(30 + i, "/x%d" % i, "tmpfs") for i in range(6)]
with open(fake + "/proc/self/mountinfo", "w") as f:
    f.write(_mountinfo(*lines))
os.mkdir(fake + "/ok")
for i in range(6):
    os.symlink(stall + "/anything", fake + "/x%d" % i)
vopstats.STATVFS_TIMEOUT = 0.5
mounts = vopstats.Mounts(SysRoot(fake))
start = time.monotonic()
names = mounts.kstat_names()
took = time.monotonic() - start
stuck = sum(t.name == "kstatpy-statvfs" for t in threading.enumerate())
ok = "vopstats_%x" % os.statvfs(fake + "/ok").f_fsid
print(ok in names, "vopstats_tmpfs" in names, mounts.stalled, stuck, took < 30)
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare(1)")
def test_a_mount_point_swapped_for_a_symlink_into_a_stalled_fuse_mount_costs_a_timeout(tmp_path: Path) -> None:
    """The path race past the mount table: each statvfs is bounded (STATVFS_TIMEOUT) and
    after MAX_STALLED stuck calls none is made, so at most that many threads ever wait."""
    here = Path(__file__).resolve().parent
    script = _RACE_SCRIPT.format(tests=str(here), repo=str(here.parent), base=str(tmp_path / "b"))
    cmd = ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", script]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("kstat_names did not return within 120 s: statvfs followed the symlink into FUSE")
    assert r.returncode == 0, r.stderr
    if r.stdout.strip() == "nofuse":
        pytest.fail("/dev/fuse cannot be opened (CI runs as root with it)")
    assert r.stdout.split() == ["True", "True", "4", "4", "True"], r.stdout
