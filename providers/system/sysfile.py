"""One source file of the system provider, kept open and re-read with ``os.pread``.

See :class:`SysFile`; :mod:`kstatpy_providers.system.source` re-exports it.
"""

from __future__ import annotations

import errno
import os
import threading

__all__ = ["CHUNKED", "MAX_SOURCE_BYTES", "SysFile"]

#: The longest source file read (bytes): /proc/interrupts of a few thousand CPUs is a few
#: MiB. A longer one (``/dev/zero`` named as a source) is EFBIG for the reader, never a
#: read buffer that grows until memory runs out (issue 21).
MAX_SOURCE_BYTES = 16 << 20

#: a read this long may be one seq_file buffer of several (half the smallest buffer, a page)
CHUNKED = 2048

class SysFile:
    """One source file kept open and re-read with ``os.pread`` at offset 0.

    procfs and sysfs build a file's content when it is read at offset 0, so each
    read sees one fresh, consistent generation. ``lock`` serialises the open,
    re-open and close. On the host's own root an open fd is read without the lock:
    it is closed only by :meth:`close`, which the provider calls when no reader can
    be reading it (after the kstats that read it were deleted: kstat_delete waits
    for every hold). On another tree (``check_replaced``) a file that was replaced
    or removed (link count 0) is opened again by name, as a reader of the real
    sysfs would get ENODEV and a fresh open; those reads take the lock.
    """

    __slots__ = ("check_replaced", "fd", "lock", "path", "size")

    def __init__(self, path: str, check_replaced: bool) -> None:
        self.path = path
        self.check_replaced = check_replaced
        self.fd = -1
        self.size = 4096
        self.lock = threading.Lock()

    def read(self) -> bytes:
        """The whole file; raises OSError when it cannot be opened or read.

        A seq_file that iterates (``proc/slabinfo``, ``proc/vmstat``) hands out one
        buffer of whole records per read, whatever the size asked: a read of
        :data:`CHUNKED` bytes or more goes on at the next offset until end of file.
        """
        fd = self.fd
        if fd >= 0 and not self.check_replaced:
            data = os.pread(fd, self.size, 0)
            if len(data) < self.size:
                return data if len(data) < CHUNKED else self._rest(fd, data)
        with self.lock:
            fd = self.fd
            if fd >= 0 and self.check_replaced and os.fstat(fd).st_nlink == 0:
                os.close(fd)
                fd = self.fd = -1
            if fd < 0:
                fd = self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            size = self.size
            data = os.pread(fd, size, 0)
            while len(data) >= size:  # maybe cut short: grow and read it again whole
                if size > MAX_SOURCE_BYTES:
                    raise self._too_long()
                size = self.size = size * 4
                data = os.pread(fd, size, 0)
            return data if len(data) < CHUNKED else self._rest(fd, data)

    def _rest(self, fd: int, data: bytes) -> bytes:
        # The records after the first buffer (seq_file): read on until a read returns nothing.
        parts = [data]
        at = len(data)
        while more := os.pread(fd, self.size, at):
            parts.append(more)
            at += len(more)
            if at > MAX_SOURCE_BYTES:
                raise self._too_long()
        return b"".join(parts) if len(parts) > 1 else data

    def _too_long(self) -> OSError:
        return OSError(errno.EFBIG, f"{self.path}: longer than {MAX_SOURCE_BYTES >> 20} MiB; not read")

    def close(self) -> None:
        with self.lock:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1

    def __del__(self) -> None:
        # A chain dropped without detach (an embedder's, a test's) must not keep its
        # host's files open for the life of the process: closed when collected.
        fd, self.fd = self.fd, -1
        if fd >= 0:
            try:
                os.close(fd)
            except (OSError, TypeError):  # TypeError: os torn down at interpreter exit
                pass
