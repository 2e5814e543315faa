"""kstatd's listening sockets and peer credentials (docs/PROTOCOL.md §1 and §6).

A :class:`Listener` is one zone's socket. ``bind`` creates the socket's directory
(0755) when missing, refuses a directory that is a symbolic link, that another user
owns or that others may write to (unless sticky, like /tmp: :mod:`kstatpy.safepath`),
takes ``PATH.lock`` with flock() for the daemon's life (a second
kstatd fails there), refuses a live socket or a non-socket file at PATH, replaces a
stale socket, binds and makes the socket 0666. ``close`` removes both files.
A socket passed by systemd (``adopted``, :mod:`kstatpy.systemd`) is used as it is:
systemd bound it, owns its path and keeps listening after kstatd exits, so neither
file is made or removed for it (systemd starts one kstatd per socket unit).

A privileged listener (``priv=True``, kstatd run as root: docs/PROTOCOL.md §9.7) lives
in ``DIR/priv/``, a directory kstatd keeps root-owned 0700: only root reaches it, so
root's clients have a listen backlog no other user can fill. ``close`` removes the
``priv`` directory too (through the public listener's descriptor).
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
import struct

from kstatpy.safepath import UnsafePathError
from kstatpy.safepath import check_socket_dir
from kstatpy.safepath import trusted_owners

__all__ = ["SO_PEERGROUPS", "DaemonError", "Listener", "is_privileged", "peer_cred", "peer_groups"]

_UCRED = struct.Struct("3i")
_GID = struct.Struct("I")  # gid_t
_NGROUPS_MAX = 65536  # Linux's NGROUPS_MAX
#: socket.SO_PEERGROUPS where Python has it, else Linux's value (asm-generic/socket.h).
SO_PEERGROUPS: int = getattr(socket, "SO_PEERGROUPS", 59)


class DaemonError(Exception):
    """kstatd cannot start (live socket, bad path, ...); the message names the path."""


def peer_cred(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the peer, from SO_PEERCRED."""
    return _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))


def peer_groups(sock: socket.socket) -> frozenset[int]:
    """The peer's supplementary gids as they were at ``connect()``: SO_PEERGROUPS.

    The kernel's copy of the peer's credentials, taken with SO_PEERCRED's (Linux 4.13
    and later), so no group database (NSS, /etc/group) is read per connection. An
    older kernel (ENOPROTOOPT) or any other failure gives the empty set: only the
    primary gid of SO_PEERCRED then counts.
    """
    size = 64 * _GID.size
    while True:
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, size)
        except OSError as exc:
            if exc.errno == errno.ERANGE and size < _NGROUPS_MAX * _GID.size:
                size = _NGROUPS_MAX * _GID.size  # more than 64 groups: ask once for all
                continue
            return frozenset()
        return frozenset(g for (g,) in _GID.iter_unpack(raw[: len(raw) - len(raw) % _GID.size]))


def is_privileged(
    uid: int, gid: int, allow_uids: frozenset[int], allow_gids: frozenset[int], sock: socket.socket | None = None
) -> bool:
    """docs/PROTOCOL.md §6 in the global zone: uid 0, the daemon's uid, or ``--allow-write``.

    A ``@GROUP`` of ``allow_gids`` (resolved to a gid once, at start-up) admits a peer
    whose primary gid (SO_PEERCRED) or one of whose supplementary gids at connect time
    (:func:`peer_groups` of ``sock``) is that gid: the kernel's credentials, as
    illumos' ``crgetgroups`` of the caller, never a group database lookup.
    """
    if uid == 0 or uid == os.geteuid() or uid in allow_uids or gid in allow_gids:
        return True
    return bool(allow_gids) and sock is not None and not allow_gids.isdisjoint(peer_groups(sock))


class Listener:
    """One zone's listening socket.

    Everything in the socket's directory is done through ``dir_fd``, an ``O_NOFOLLOW``
    descriptor of the directory checked at :meth:`bind`: the socket is bound as
    ``/proc/self/fd/N/NAME`` when /proc is there, and the lock and socket files are
    removed relative to ``dir_fd``, so a directory swapped for a symbolic link after
    the check steers nothing into the link's target.
    """

    __slots__ = ("adopted", "dir_fd", "lock_fd", "name", "parent", "path", "priv", "sock", "zone", "zoneid")

    def __init__(self, path: str, zone: str, zoneid: int, parent: Listener | None = None) -> None:
        """``parent``: the public listener a privileged one (in ``parent``'s ``priv/``) belongs to."""
        self.path, self.zone, self.zoneid = path, zone, zoneid
        self.name = os.path.basename(path)
        self.sock: socket.socket | None = None
        self.lock_fd = -1
        self.dir_fd = -1
        self.adopted: socket.socket | None = None  # passed by systemd: bind() uses it, close() keeps the path
        self.parent = parent
        self.priv = parent is not None

    def _open_dir(self) -> int:
        path = self.path
        directory = os.path.dirname(os.path.abspath(path))
        try:
            mode = 0o700 if self.priv else 0o755
            if not os.path.lexists(directory):
                os.makedirs(os.path.dirname(directory), mode=0o755, exist_ok=True)
                os.mkdir(directory, mode)
                os.chmod(directory, mode)  # mkdir is subject to the umask
            # Raises UnsafePathError: a symlink, another owner, writable by others.
            check_socket_dir(path, trusted_owners())
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except UnsafePathError as exc:
            raise DaemonError(f"{path}: {exc.message}") from None
        except FileExistsError:  # created by someone else in between: check it on the next start
            raise DaemonError(f"{path}: directory {directory} appeared while kstatd created it; try again") from None
        except OSError as exc:
            raise DaemonError(f"{path}: cannot use directory {directory}: {exc.strerror or exc}") from None
        st = os.fstat(fd)
        if st.st_uid not in trusted_owners() or (st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX):
            os.close(fd)  # swapped after the check
            raise DaemonError(f"{path}: directory {directory} changed while kstatd checked it; not serving there")
        if self.priv and st.st_mode & 0o077:
            if st.st_uid != os.geteuid():
                os.close(fd)
                raise DaemonError(f"{path}: directory {directory} must be kstatd's own, mode 0700")
            os.fchmod(fd, 0o700)  # only kstatd's user (root) may reach the privileged socket
        return fd

    def _via_fd(self) -> str:
        # The socket's path through the checked directory descriptor (AF_UNIX: <= 107 bytes).
        proc = f"/proc/self/fd/{self.dir_fd}"
        return f"{proc}/{self.name}" if os.path.isdir(proc) and len(proc) + len(self.name) < 100 else self.path

    def bind(self) -> None:
        """Check the directory, take PATH.lock, replace a stale socket, bind, chmod 0666, listen.

        :raises DaemonError: one line naming the path and the reason.
        """
        path = self.path
        if self.adopted is not None:
            self.sock = self.adopted
            self.sock.setblocking(False)
            return
        self.dir_fd = self._open_dir()
        try:
            self.lock_fd = os.open(
                self.name + ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=self.dir_fd
            )
        except OSError as exc:
            raise DaemonError(f"{path}.lock: cannot open: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.lock_fd)
            self.lock_fd = -1
            raise DaemonError(f"{path}: another kstatd is running (its lock {path}.lock is held)") from None
        st: os.stat_result | None  # the socket path, if something is there
        try:
            st = os.lstat(self.name, dir_fd=self.dir_fd)
        except FileNotFoundError:
            st = None
        via = self._via_fd()
        if st is not None:
            if not stat.S_ISSOCK(st.st_mode):
                raise DaemonError(f"{path}: exists and is not a socket; not replacing it")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(via)
            except OSError:
                os.unlink(self.name, dir_fd=self.dir_fd)  # stale: nobody listens
            else:
                raise DaemonError(f"{path}: a kstatd is already listening there")
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(via)
            os.chmod(self.name, 0o666, dir_fd=self.dir_fd)
            sock.listen(socket.SOMAXCONN)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise DaemonError(f"{path}: cannot listen: {exc.strerror or exc}") from exc
        self.sock = sock

    def close(self) -> None:
        """Stop listening and remove the socket and lock files (idempotent)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
            if self.adopted is not None:
                return
            try:
                os.unlink(self.name, dir_fd=self.dir_fd)
            except FileNotFoundError:
                pass
        if self.lock_fd >= 0:
            try:
                os.unlink(self.name + ".lock", dir_fd=self.dir_fd)
            except FileNotFoundError:
                pass
            os.close(self.lock_fd)
            self.lock_fd = -1
        if self.dir_fd >= 0:
            os.close(self.dir_fd)
            self.dir_fd = -1
            parent = self.parent
            if parent is not None and parent.dir_fd >= 0:  # the priv/ directory, if now empty
                try:
                    os.rmdir(os.path.basename(os.path.dirname(self.path)), dir_fd=parent.dir_fd)
                except OSError:
                    pass
