"""fsstat's kstats: ``unix:0:vopstats_FSTYPE`` per file-system type, ``unix:0:vopstats_FSID`` per mount.

What illumos publishes (uts/common/fs/vfs.c, sys/vnode.h)
    One NAMED kstat per file-system type that keeps statistics (``vopstats_`` + the
    type's name, made when its module is installed) and one per mounted file system
    (``vopstats_`` + its statvfs ``f_fsid`` in lower-case hex, ``%lx``; made at mount,
    deleted at unmount; a second mount with an fsid already taken gets none). Both
    are module ``unix``, instance 0, class ``misc``, with the 49 UINT64 counters of
    ``vopstats_t`` in its order (:data:`VOP_FIELDS`). fsstat(8) finds a type's kstat
    by its name and a path's by ``statvfs(path).f_fsid``, then copies the kstat's data
    into a ``vopstats_t`` and reads the counters by position.

What Linux has
    No VFS layer counts its operations per file-system type or per mount, so every
    counter reads 0, marked no source (``kstat --describe`` says so; ``--rate`` and
    ``kstatd --metrics`` leave them out). NFS's ``/proc/self/mountstats`` counts RPCs,
    not vnode operations (a read served from the page cache makes none), and
    ``/proc/PID/io`` counts per process: neither is a vopstats counter.

Which kstats (from ``proc/self/mountinfo``: kstatd's mount namespace)
    ``vopstats_TYPE`` for each type with at least one mount; ``vopstats_FSID`` for each
    mount whose ``statvfs(mount point).f_fsid`` (glibc's: both words of the kernel's
    fsid) is not 0, one per fsid (bind mounts of one file system share it), so that a
    port of fsstat finds ``fsstat /`` by the same statvfs call as on illumos. statvfs
    is not called for autofs (it would trigger the automount) nor for network and FUSE
    file systems (it can block for as long as their server does not answer): those
    mounts get their type's kstat only. Nor is it called for a mount whose point is at or
    under such a mount's point: the path to it is looked up through that file system
    (a FUSE mount any user makes with fusermount over a directory of theirs, above or on
    a mount point, would stop the refresh, or kstatd's start, in its statfs or lookup).
    The path can still change between the read of mountinfo and the call (a user who
    owns a directory above a mount point renames it and puts a symlink into their FUSE
    mount in its place), so the statvfs calls run on a worker thread and each is given
    one to two windows of :data:`STATVFS_TIMEOUT` seconds: past that the mount gets no
    fsid kstat (it is remembered, not asked again) and the worker is left to its wait
    (a new one takes the rest). The worker costs about 120 µs a mount-table change
    (26 mounts: 270 µs against 145 µs called inline, same run). After
    :data:`MAX_STALLED` such waits no statvfs is called any more (new mounts get their
    type's kstat only), so at most that many threads are ever stuck. A name longer than
    ``KSTAT_STRLEN - 1`` characters is not published.

Names from the mount table
    A type's kstat is named after the kernel's file-system type, the part of
    mountinfo's type before a '.': FUSE shows ``fuse.SUBTYPE`` (``fuse.sshfs``), and the
    subtype is chosen by whoever mounts (fusermount(1), setuid root, takes any
    ``subtype=`` from any local user). The type is what ``/proc/filesystems`` lists and
    what a port of ``fsstat -F`` looks up (``vopstats_fuse``), as illumos' per-type kstat
    is its vfssw entry's. The type is unescaped as the mount point is, and each ':'
    (kstat -p's separator), white-space or other non-printable character of it becomes
    '_', as :mod:`kstatpy_providers.system.intr` does with an IRQ's actions.

Cost
    On the host's own root a refresh polls a kept-open ``/proc/self/mountinfo`` (proc(5):
    POLLPRI and POLLERR once the mount table changed since the last poll) and reads
    nothing when it did not; on another tree, and after a change, it reads mountinfo
    (a few kB) and does nothing more when its bytes did not change; otherwise it calls
    statvfs for the mounts it has not seen (by mount ID, point and type) and creates or
    deletes the difference. A read costs nothing (every counter is the 0 it was created
    with).
"""

from __future__ import annotations

import os
import select
import threading

from kstatpy_providers.system.source import SysRoot
from kstatpy_providers.system.source import create_named

from kstatpy.constants import KSTAT_DATA_UINT64

TYPE_CHECKING = False  # not typing's: kept off the embedded kstat's start-up path
if TYPE_CHECKING:
    from typing import Any

    from kstatpy.chain import Chain
    from kstatpy.kstat import Kstat

__all__ = ["MAX_STALLED", "MOUNTINFO", "STATVFS_TIMEOUT", "VOP_FIELDS", "Mounts", "create_vopstats", "parse_mountinfo"]

MOUNTINFO = "proc/self/mountinfo"
#: Seconds a statvfs of a mount point may take before its mount is given no fsid kstat.
STATVFS_TIMEOUT = 2.0
#: statvfs calls left waiting past the timeout after which no statvfs is called any more.
MAX_STALLED = 4
VOPSTATS_STR = "vopstats_"
#: vopstats_t's counters in its order (sys/vnode.h): fsstat reads them by position
VOP_FIELDS = (
    "nopen", "nclose", "nread", "read_bytes", "nwrite", "write_bytes", "nioctl", "nsetfl", "ngetattr",
    "nsetattr", "naccess", "nlookup", "ncreate", "nremove", "nlink", "nrename", "nmkdir", "nrmdir",
    "nreaddir", "readdir_bytes", "nsymlink", "nreadlink", "nfsync", "ninactive", "nfid", "nrwlock",
    "nrwunlock", "nseek", "ncmp", "nfrlock", "nspace", "nrealvp", "ngetpage", "nputpage", "nmap",
    "naddmap", "ndelmap", "npoll", "ndump", "npathconf", "npageio", "ndumpctl", "ndispose",
    "nsetsecattr", "ngetsecattr", "nshrlock", "nvnevent", "nreqzcbuf", "nretzcbuf",
)  # fmt: skip
_KSTAT_STRLEN = 31
#: types whose mount points statvfs must not touch: autofs mounts on access; network and
#: FUSE file systems answer only when their server does
_NO_STATVFS = frozenset(
    ("autofs", "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "9p", "ceph", "glusterfs", "afs", "lustre",
     "fuse", "fuseblk", "davfs", "sshfs")
)  # fmt: skip
_OCTAL_DIGITS = frozenset(b"01234567")


def parse_mountinfo(data: bytes) -> list[tuple[int, str, str]]:
    """``proc/self/mountinfo`` as [(mount ID, mount point, file-system type)] (proc(5):
    the mount point is field 5; the type follows the ``-`` separator; both octal-escaped)."""
    out = []
    for line in data.split(b"\n"):
        fields = line.split(b" ")
        try:
            sep = fields.index(b"-", 6)
            mount_id, point, fstype = int(fields[0]), fields[4], fields[sep + 1]
        except (ValueError, IndexError):
            continue
        out.append((mount_id, os.fsdecode(_unescape(point)), _unescape(fstype).decode("utf-8", "replace")))
    return out


def _unescape(field: bytes) -> bytes:
    # The kernel writes space, tab, newline and backslash as \ooo (octal); no ``re``:
    # the embedded kstat's start-up imports none (tests/test_startup.py).
    if b"\\" not in field:
        return field
    out, i = bytearray(), 0
    while i < len(field):
        digits = field[i + 1 : i + 4]
        if field[i] == 0x5C and len(digits) == 3 and _OCTAL_DIGITS.issuperset(digits):
            out.append(int(digits, 8) & 0xFF)
            i += 4
        else:
            out.append(field[i])
            i += 1
    return bytes(out)


def _blocks(fstype: str) -> bool:
    """Whether statvfs of, or a path lookup through, this type's mount may mount or block."""
    return fstype in _NO_STATVFS or fstype.startswith("fuse.")


def _under(point: str, risky: set[str]) -> bool:
    # ``point`` or one of its ancestors is the point of a mount of a _blocks type: its
    # path resolves through that mount (its root, then a lookup in it).
    if not risky:
        return False
    while True:
        if point in risky:
            return True
        if point in ("/", ""):
            return False
        point = point.rpartition("/")[0] or "/"


def _type_name(fstype: str) -> str:
    # The kernel's type, without FUSE's subtype (any local user names one through
    # fusermount's subtype=); a ':' would split kstat -p's module:instance:name:statistic,
    # a newline or escape its output lines.
    fstype = fstype.partition(".")[0]
    return "".join(c if c.isprintable() and not c.isspace() and c != ":" else "_" for c in fstype)


class _Nothing:
    """Every counter has no source: values() names none."""

    def values(self) -> dict[str, Any]:
        return {}


class Mounts:
    """The vopstats kstat names the mounts call for, recomputed only when mountinfo changed.

    Owned by one provider; called under its lock (refresh, attach).
    """

    def __init__(self, root: SysRoot) -> None:
        self.root = root
        self.last: bytes | None = None
        self.names: set[str] = set()
        # (mount ID, point, type) -> its vopstats_FSID name, None: none. The point and type
        # too: an ID freed by an unmount may be given to the next mount between two refreshes.
        self.fsids: dict[tuple[int, str, str], str | None] = {}
        self.watch = -1  # the host's mountinfo, polled for a change of the mount table
        self.stalled = 0  # statvfs calls that passed STATVFS_TIMEOUT (their threads still wait)
        self.poller = select.poll()
        if root.real:
            try:
                self.watch = os.open(root.join(MOUNTINFO), os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                pass
            else:
                self.poller.register(self.watch, select.POLLPRI)

    def kstat_names(self) -> set[str]:
        """:raises OSError: mountinfo cannot be read."""
        if self.watch >= 0 and self.last is not None and not self.poller.poll(0):
            return self.names  # no mount or unmount since the last poll
        data = self.root.read_bytes(MOUNTINFO)
        if data == self.last:
            return self.names
        mounts = parse_mountinfo(data)
        # A mount at or under a risky point is not statvfs'd, nor remembered: it is
        # looked at again after the next change (the risky mount may have gone).
        risky = {point for _, point, fstype in mounts if _blocks(fstype)}
        keep = [m for m in mounts if m in self.fsids or not _under(m[1], risky)]
        new = self._fsids([self.root.join(m[1].lstrip("/")) for m in keep if m not in self.fsids])
        fsids: dict[tuple[int, str, str], str | None] = {}
        for m in keep:
            if m in self.fsids:
                fsids[m] = self.fsids[m]
            else:
                fsid = new[self.root.join(m[1].lstrip("/"))]
                fsids[m] = f"{VOPSTATS_STR}{fsid:x}" if fsid else None
        names = {VOPSTATS_STR + _type_name(fstype) for _, _, fstype in mounts}
        names.update(n for n in fsids.values() if n is not None)
        self.last, self.fsids = data, fsids
        self.names = {n for n in names if len(n) < _KSTAT_STRLEN}
        return self.names

    def close(self) -> None:
        """Close the polled mountinfo (detach)."""
        if self.watch >= 0:
            os.close(self.watch)
            self.watch = -1

    def _fsids(self, paths: list[str]) -> dict[str, int | None]:
        """statvfs(path).f_fsid of each path (None: gone, refused, or past STATVFS_TIMEOUT).

        One worker thread calls them in turn; a call is given one to two STATVFS_TIMEOUT
        windows (a window in which no call finished ends the wait). A call past it is
        left waiting with its thread (which then stops), counted in
        ``stalled``, and a new worker takes the paths after it; once MAX_STALLED calls
        are stuck the rest get None without a call.
        """
        out: dict[str, int | None] = dict.fromkeys(paths)
        todo = list(dict.fromkeys(paths))  # a path twice (two mounts on one point): one call
        while todo and self.stalled < MAX_STALLED:
            batch = todo
            got: list[int | None] = []  # got[i]: batch[i]'s fsid; guarded by cond
            cond = threading.Condition()
            stop = [False]  # set by this thread when it gives the worker up; guarded by cond
            threading.Thread(target=_statvfs_worker, args=(batch, got, cond, stop), name="kstatpy-statvfs",
                             daemon=True).start()  # fmt: skip
            with cond:
                # Woken once, at the end; a window of STATVFS_TIMEOUT with no call finished
                # is a stuck call (so one call is given between one and two windows).
                n, size = -1, len(batch)
                while len(got) < size and len(got) > n:
                    n = len(got)
                    cond.wait_for(lambda got=got, size=size: len(got) == size, timeout=STATVFS_TIMEOUT)  # type: ignore[misc]
                if len(got) < len(batch):
                    stop[0] = True  # bounded: batch[len(got)] waits on a FUSE or network server
                out.update(zip(batch, got, strict=False))
                done = len(got)
            if done == len(batch):
                break
            self.stalled += 1
            todo = batch[done + 1 :]
        return out


def _statvfs_worker(batch: list[str], got: list[int | None], cond: threading.Condition, stop: list[bool]) -> None:
    # Mounts._fsids' worker: appends each path's fsid to got in order, until told to stop.
    for path in batch:
        try:
            fsid: int | None = os.statvfs(path).f_fsid
        except OSError:  # gone, or not ours to look at
            fsid = None
        with cond:
            if stop[0]:
                return
            got.append(fsid)
            if len(got) == len(batch):
                cond.notify()


def create_vopstats(chain: Chain, name: str) -> list[Kstat]:
    """``unix:0:NAME`` (class misc): vopstats_t's counters, every one 0 and no source."""
    fields = [(f, KSTAT_DATA_UINT64) for f in VOP_FIELDS]
    return [create_named(chain, "unix", 0, name, "misc", fields, _Nothing(), absent=VOP_FIELDS)]
