"""Files root writes or reads that another user could steer (issue 21, RELIABILITY.md).

Writing: :func:`write_new` puts the whole content in a temporary file of a random name
(``O_CREAT|O_EXCL|O_NOFOLLOW``, in an ``O_NOFOLLOW`` descriptor of the directory),
then links it to its final name without replacing anything (``link``, ``EEXIST``
when the name is taken) and removes the temporary name. A planted symbolic link is
never written through, a reader never sees a partial file, and a failure (a full
disk: ``ENOSPC``) leaves nothing behind.

Reading: :func:`read_capped` opens with ``O_NOFOLLOW`` (a symbolic link is refused),
checks the opened descriptor with ``fstat`` (a regular file, or for provider sources
any file, at most ``cap`` bytes) and reads at most ``cap`` bytes: ``/dev/zero`` as a
source is an error, never a growing buffer.

Imports the standard library only.
"""

from __future__ import annotations

import errno
import os
import stat

TYPE_CHECKING = False  # not typing's: kstat's start-up imports this module
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["FileTooLargeError", "read_capped", "write_all", "write_new"]


class FileTooLargeError(OSError):
    """A file longer than the reader's cap (errno EFBIG); the message names the path and the cap."""


def write_all(fd: int, data: bytes | memoryview) -> None:
    """``os.write`` until every byte is out; a write of 0 bytes is ENOSPC.

    :raises OSError: the first write that fails (ENOSPC, EIO, EPIPE, ...).
    """
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[n:]


def write_new(directory: str | os.PathLike[str], name: Callable[[int], str | None], data: bytes) -> str:
    """Write ``data`` as a new file in ``directory``, named ``name(n)`` for the first
    ``n = 0, 1, ...`` not taken (``name(n)`` None: no more names, EEXIST); return its
    path (see the module docstring).

    :raises OSError: the directory cannot be opened (a symbolic link: ELOOP/ENOTDIR),
        or the write fails; nothing is left behind then.
    """
    dirpath = os.fspath(directory)
    dfd = os.open(dirpath, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        tmp = f".kstatpy-tmp.{os.getpid()}.{os.urandom(8).hex()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
        try:
            try:
                write_all(fd, data)
                os.fsync(fd)
                os.fchmod(fd, 0o644)
            finally:
                os.close(fd)
            for n in range(10_000):
                final = name(n)
                if final is None:
                    break
                try:
                    os.link(tmp, final, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
                except FileExistsError:
                    continue
                return os.path.join(dirpath, final)
            raise OSError(errno.EEXIST, f"no free name in {dirpath}")
        finally:
            try:
                os.unlink(tmp, dir_fd=dfd)
            except OSError:
                pass
    finally:
        os.close(dfd)


def read_capped(path: str | os.PathLike[str], cap: int, regular: bool = True) -> bytes:
    """The content of ``path``, at most ``cap`` bytes (see the module docstring).

    :param regular: True: only a regular file (crash dumps, caches); False: any file
        that is not a directory (provider sources under /proc and /sys).
    :raises FileTooLargeError: more than ``cap`` bytes.
    :raises OSError: missing, a symbolic link (ELOOP), not a regular file (EINVAL), unreadable.
    """
    p = os.fspath(path)
    fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode) or (regular and not stat.S_ISREG(st.st_mode)):
            raise OSError(errno.EINVAL, "not a regular file", p)
        if st.st_size > cap:
            raise FileTooLargeError(errno.EFBIG, f"longer than {cap} bytes", p)
        chunks = []
        got = 0
        while True:
            chunk = os.read(fd, min(1 << 20, cap + 1 - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
            if got > cap:
                raise FileTooLargeError(errno.EFBIG, f"longer than {cap} bytes", p)
        return b"".join(chunks)
    finally:
        os.close(fd)
