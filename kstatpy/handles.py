"""A connection's open handles on a driver's instances (illumos: the file table of an open minor).

:class:`DeviceHandles` maps fds to :class:`~kstatpy.instance.DeviceInstance` for one
connection on one driver. Closing the last handle of a destroyed instance runs the
instance teardown (``DeviceDriver.close``, order in ``instance.py``); a dropped
connection closes every handle (``close_all``, from the provider's
``kstatpy_conn_close``).

Locking: ``_lock`` guards the fd table and is held for the whole of
``with handles.use(fd)``, so a handle cannot be closed (and its instance torn
down) under an operation. Lock order: ``_lock``, then the driver's lock.
"""

from __future__ import annotations

import errno
import logging
import threading
from typing import TYPE_CHECKING

from kstatpy.constants import GLOBAL_ZONEID
from kstatpy.errors import KstatError
from kstatpy.kmem import BadTrap

if TYPE_CHECKING:
    from kstatpy.instance import DeviceDriver
    from kstatpy.instance import DeviceInstance

__all__ = ["DeviceHandles"]

log = logging.getLogger(__name__)


class DeviceHandles:
    """One connection's open handles (fds) on one driver's instances.

    ``_lock`` guards the fd table and is held for the whole of :meth:`use`, so a
    handle cannot be closed (and its instance torn down) under an operation.
    """

    def __init__(self, driver: DeviceDriver) -> None:
        self.driver = driver
        self._lock = threading.RLock()
        self._fds: dict[int, DeviceInstance] = {}
        self._next_fd = 3

    def open(self, name: str, zoneid: int = GLOBAL_ZONEID) -> int:
        """Open instance ``name``: a new fd (lowest unused from 3, like open(2))."""
        with self._lock:
            inst = self.driver.open(name, zoneid)
            fd = 3
            while fd in self._fds:
                fd += 1
            self._fds[fd] = inst
            return fd

    def use(self, fd: int) -> _HandleUse:
        """``with handles.use(fd) as inst:`` the instance, held open for the block.

        :raises KstatError: EBADF for an fd that is not open.
        """
        return _HandleUse(self, fd)

    def close(self, fd: int) -> None:
        """Close ``fd``; may be the last close that tears a destroyed instance down.

        :raises KstatError: EBADF.
        """
        with self._lock:
            inst = self._fds.pop(fd, None)
            if inst is None:
                raise KstatError(errno.EBADF, f"fd {fd} is not open")
            self.driver.close(inst)

    def close_all(self) -> None:
        """Close every handle (the connection went)."""
        with self._lock:
            fds = sorted(self._fds)
            for fd in fds:
                try:
                    self.close(fd)
                except BadTrap:  # a panic (e.g. the kmem audit), not a failed close
                    raise
                except Exception:
                    log.exception("%s: closing fd %d failed", self.driver.name, fd)

    def __len__(self) -> int:
        return len(self._fds)


class _HandleUse:
    def __init__(self, handles: DeviceHandles, fd: int) -> None:
        self.handles = handles
        self.fd = fd

    def __enter__(self) -> DeviceInstance:
        self.handles._lock.acquire()
        inst = self.handles._fds.get(self.fd)
        if inst is None:
            self.handles._lock.release()
            raise KstatError(errno.EBADF, f"fd {self.fd} is not open")
        return inst

    def __exit__(self, *exc: object) -> None:
        self.handles._lock.release()
