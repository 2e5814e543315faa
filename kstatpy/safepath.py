"""Socket paths no other local user can steer (docs/PROTOCOL.md §9.4, "Safe paths").

Both ends check the socket's directory before they trust or create anything in it:

* it is a real directory, not a symbolic link (checked with ``lstat``; kstatd then
  works through an ``O_NOFOLLOW`` descriptor of it, see :mod:`kstatpy.listener`);
* it is owned by an expected user: root or the caller itself for the per-user
  default path (a client) and always for kstatd; any owner for a path the user
  named (``--socket``, ``$KSTAT_SOCKET``: the user chose whose daemon to trust);
* nobody but its owner may write to it: no group or world write bit, unless the
  sticky bit is set (like ``/tmp``), where only a file's owner may remove or replace
  it; then the socket itself must not be a symbolic link and, for the default path,
  must be owned by an expected user.

A refused path raises :class:`UnsafePathError` (errno EACCES) whose message is one line
naming the path and the reason. Imports only the standard library and kstatpy.errors.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping

from kstatpy.errors import KstatAccessError

__all__ = [
    "PRIV_SOCKET",
    "PUBLIC_SOCKET",
    "UnsafePathError",
    "check_socket_dir",
    "default_socket_path",
    "open_socket_dir",
    "priv_socket_path",
    "resolve_socket_path",
    "root_run_dir",
    "trusted_owners",
]

#: kstatd run as root: its public socket (directory root-owned 0755) and root's
#: privileged one (directory root-owned 0700), docs/PROTOCOL.md §9.7.
PUBLIC_SOCKET = "/run/kstatpy/kstat.sock"
PRIV_SOCKET = "/run/kstatpy/priv/kstat.sock"


def root_run_dir(environ: Mapping[str, str] | None = None) -> str:
    """Root's run directory, ``/run/kstatpy``; ``$KSTATPY_RUNDIR`` (absolute) replaces it,
    for tests and packagers. Safe to honour: a client walks every directory of the
    default path and accepts only root's (or its own) and the server's uid (§9.7)."""
    env = os.environ if environ is None else environ
    value = env.get("KSTATPY_RUNDIR") or ""
    return value if value.startswith("/") else os.path.dirname(PUBLIC_SOCKET)


class UnsafePathError(KstatAccessError):
    """A socket path another user could control; ``message`` names the path and why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(errno.EACCES, f"{path}: {reason}; refusing to use it")
        self.path = path
        self.reason = reason


def priv_socket_path(public: str) -> str:
    """The privileged socket beside ``public``: ``DIR/priv/NAME`` (directory 0700)."""
    directory, name = os.path.split(os.path.abspath(public))
    return os.path.join(directory, "priv", name)


def default_socket_path(environ: Mapping[str, str] | None = None, euid: int | None = None) -> str:
    """The default socket (docs/PROTOCOL.md §9.7): root's privileged listener
    :data:`PRIV_SOCKET` for euid 0; else the per-user ``$XDG_RUNTIME_DIR/kstatpy/kstat.sock``,
    else ``/tmp/kstatpy-<uid>/kstat.sock`` (an empty variable counts as unset)."""
    env = os.environ if environ is None else environ
    if (os.geteuid() if euid is None else euid) == 0:
        return os.path.join(root_run_dir(env), "priv", "kstat.sock")
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "kstatpy", "kstat.sock")
    return f"/tmp/kstatpy-{os.getuid()}/kstat.sock"


def resolve_socket_path(path: str | None = None, environ: Mapping[str, str] | None = None) -> tuple[str, bool]:
    """``(socket, named)``: ``path``, else ``$KSTAT_SOCKET``, else the default.

    ``named`` is False only for the default path. An empty ``path`` is an error
    (never a silent fall back to the default); an empty ``$KSTAT_SOCKET`` is unset.

    :raises ValueError: ``path == ""``.
    """
    if path is not None:
        if not path:
            raise ValueError("empty socket path")
        return path, True
    env = os.environ if environ is None else environ
    named = env.get("KSTAT_SOCKET")
    if named:
        return named, True
    return default_socket_path(env), False


def trusted_owners() -> frozenset[int]:
    """Root and this process's effective uid: who may own a default socket's directory."""
    return frozenset((0, os.geteuid()))


def _describe(owners: frozenset[int]) -> str:
    return " or ".join(f"uid {u}" for u in sorted(owners))


def check_socket_dir(path: str, owners: frozenset[int] | None) -> os.stat_result | None:
    """Verify the directory of socket ``path`` (see the module docstring).

    :param owners: uids allowed to own the directory; None accepts any owner.
    :returns: the directory's ``lstat``, or None when it does not exist (nothing to
        trust yet: a client's connect then fails with ENOENT).
    :raises UnsafePathError: the directory (or the socket in a sticky directory) is a
        symbolic link, not a directory, owned by someone else, or writable by others.
    """
    directory = os.path.dirname(os.path.abspath(path))
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UnsafePathError(directory, f"cannot inspect it ({exc.strerror})") from None
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePathError(directory, "the socket's directory is a symbolic link")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePathError(directory, "the socket's directory is not a directory")
    if owners is not None and st.st_uid not in owners:
        raise UnsafePathError(directory, f"the socket's directory is owned by uid {st.st_uid}, not {_describe(owners)}")
    if st.st_mode & 0o022:
        if not st.st_mode & stat.S_ISVTX:
            raise UnsafePathError(
                directory, f"the socket's directory is writable by others (mode {st.st_mode & 0o7777:04o})"
            )
        try:
            sst = os.lstat(path)
        except FileNotFoundError:
            return st
        except OSError as exc:
            raise UnsafePathError(path, f"cannot inspect it ({exc.strerror})") from None
        if stat.S_ISLNK(sst.st_mode):
            raise UnsafePathError(path, "the socket is a symbolic link in a shared directory")
        if owners is not None and sst.st_uid not in owners:
            raise UnsafePathError(path, f"the socket is owned by uid {sst.st_uid}, not {_describe(owners)}")
    return st


def _refuse_component(dirfd: int, name: str, shown: str, exc: OSError) -> UnsafePathError:
    # openat(O_DIRECTORY|O_NOFOLLOW) failed with ENOTDIR/ELOOP: a symlink or a file.
    try:
        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except OSError:
        return UnsafePathError(shown, f"cannot open it ({exc.strerror})")
    if stat.S_ISLNK(st.st_mode):
        return UnsafePathError(shown, "a directory on the socket's path is a symbolic link")
    return UnsafePathError(shown, "a component of the socket's path is not a directory")


def open_socket_dir(path: str, owners: frozenset[int]) -> int:
    """Walk to the directory of the default socket ``path`` by descriptor (§9.7 step 2).

    "/" then each component is opened with ``openat(O_PATH|O_DIRECTORY|O_NOFOLLOW)``
    and ``fstat``ed: each must be owned by one of ``owners`` and not writable by group
    or others unless sticky; under a sticky last directory the socket itself
    (``fstatat(AT_SYMLINK_NOFOLLOW)``) must be a socket owned by one of ``owners``.
    The caller connects to ``/proc/self/fd/<fd>/<basename>`` and closes the descriptor.

    :returns: an ``O_PATH`` descriptor of the checked directory (the caller closes it).
    :raises FileNotFoundError: a component is missing (nothing listens: not running).
    :raises UnsafePathError: a symbolic link, a non-directory, a wrong owner or mode.
    """
    parts = [p for p in os.path.abspath(path).split("/")[:-1] if p]
    flags = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open("/", flags)
    shown = "/"
    try:
        for i, name in enumerate(["", *parts]):
            if name:
                shown = "/" + "/".join(parts[:i])
                try:
                    nfd = os.open(name, flags, dir_fd=fd)
                except (NotADirectoryError, OSError) as exc:
                    if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                        raise _refuse_component(fd, name, shown, exc) from None
                    if exc.errno == errno.ENOENT:
                        raise
                    raise UnsafePathError(shown, f"cannot open it ({exc.strerror})") from None
                os.close(fd)
                fd = nfd
            st = os.fstat(fd)
            if st.st_uid not in owners:
                raise UnsafePathError(
                    shown, f"a directory on the socket's path is owned by uid {st.st_uid}, not {_describe(owners)}"
                )
            if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
                raise UnsafePathError(
                    shown, f"a directory on the socket's path is writable by others (mode {st.st_mode & 0o7777:04o})"
                )
        if st.st_mode & 0o022:  # the last directory is shared (sticky): the socket must be ours
            try:
                sst = os.stat(os.path.basename(path), dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                raise
            except OSError as exc:
                raise UnsafePathError(path, f"cannot inspect it ({exc.strerror})") from None
            if not stat.S_ISSOCK(sst.st_mode):
                raise UnsafePathError(path, "not a socket in a shared directory")
            if sst.st_uid not in owners:
                raise UnsafePathError(path, f"the socket is owned by uid {sst.st_uid}, not {_describe(owners)}")
    except BaseException:
        os.close(fd)
        raise
    return fd
