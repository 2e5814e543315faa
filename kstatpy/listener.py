"""kstatd's listening sockets and peer credentials (PROTOCOL.md §1 and §6).

A :class:`Listener` is one zone's socket. ``bind`` creates the socket's directory
(0755) when missing, refuses a directory another user owns or may write to (unless
sticky, like /tmp), takes ``PATH.lock`` with flock() for the daemon's life (a second
kstatd fails there), refuses a live socket or a non-socket file at PATH, replaces a
stale socket, binds and makes the socket 0666. ``close`` removes both files.
"""

from __future__ import annotations

import fcntl
import grp
import os
import pwd
import socket
import stat
import struct

__all__ = ["DaemonError", "Listener", "is_privileged", "peer_cred"]

_UCRED = struct.Struct("3i")


class DaemonError(Exception):
    """kstatd cannot start (live socket, bad path, ...); the message names the path."""


def peer_cred(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the peer, from SO_PEERCRED."""
    return _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))


def is_privileged(uid: int, gid: int, allow_uids: frozenset[int], allow_gids: frozenset[int]) -> bool:
    """PROTOCOL.md §6 in the global zone: uid 0, the daemon's uid, or ``--allow-write``."""
    if uid == 0 or uid == os.geteuid() or uid in allow_uids or gid in allow_gids:
        return True
    if allow_gids:  # supplementary groups: membership by user name
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            return False
        for g in allow_gids:
            try:
                if user in grp.getgrgid(g).gr_mem:
                    return True
            except KeyError:
                pass
    return False


class Listener:
    """One zone's listening socket."""

    __slots__ = ("lock_fd", "path", "sock", "zone", "zoneid")

    def __init__(self, path: str, zone: str, zoneid: int) -> None:
        self.path, self.zone, self.zoneid = path, zone, zoneid
        self.sock: socket.socket | None = None
        self.lock_fd = -1

    def bind(self) -> None:
        """Take PATH.lock, replace a stale socket, bind, chmod 0666, listen. :raises DaemonError."""
        path = self.path
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            os.makedirs(directory, mode=0o755, exist_ok=True)
            os.chmod(directory, 0o755)  # makedirs is subject to the umask
        dst = os.stat(directory)
        if dst.st_uid not in (0, os.geteuid()) or (dst.st_mode & 0o022 and not dst.st_mode & stat.S_ISVTX):
            # Someone else could swap the socket under our clients (e.g. a planted /tmp/kstatpy-0).
            raise DaemonError(
                f"{path}: directory {directory} is owned by uid {dst.st_uid} or writable by others; not serving there"
            )
        self.lock_fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.lock_fd)
            self.lock_fd = -1
            raise DaemonError(f"{path}: another kstatd is running (its lock {path}.lock is held)") from None
        st: os.stat_result | None  # the socket path, if something is there
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        if st is not None:
            if not stat.S_ISSOCK(st.st_mode):
                raise DaemonError(f"{path}: exists and is not a socket; not replacing it")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
            except OSError:
                os.unlink(path)  # stale: nobody listens
            else:
                raise DaemonError(f"{path}: a kstatd is already listening there")
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            os.chmod(path, 0o666)
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
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        if self.lock_fd >= 0:
            try:
                os.unlink(self.path + ".lock")
            except FileNotFoundError:
                pass
            os.close(self.lock_fd)
            self.lock_fd = -1
