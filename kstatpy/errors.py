"""The kstatpy exception hierarchy: one base carrying the illumos errno."""

from __future__ import annotations

import errno as _errno
import os

TYPE_CHECKING = False  # not typing's: the kstat command's kstatd path never imports typing
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "KstatAccessError",
    "KstatCreateError",
    "KstatError",
    "KstatFatalError",
    "KstatNotFoundError",
    "KstatUpdateError",
    "ProtocolError",
    "RequestTimeoutError",
    "ServerUnavailableError",
    "UntrustedServerError",
    "error_for_errno",
]


class KstatError(Exception):
    """A kstat operation failed with ``errno`` (illumos return code).

    ``extra`` carries fields some errors add on the wire (ENOMEM: ``data_size``,
    ``flags``, ``ndata``, ``snaptime``).
    """

    def __init__(self, errno: int, message: str | None = None, **extra: Any) -> None:
        self.errno = int(errno)
        self.message = message if message is not None else os.strerror(self.errno)
        self.extra = extra
        super().__init__(self.message)


class KstatCreateError(KstatError, ValueError):
    """``kstat_create`` / ``kstat_install`` refused (illumos: warning and NULL)."""


class KstatNotFoundError(KstatError, LookupError):
    """ENXIO / ENOENT: no such kstat, or deleted since the chain was read."""


class KstatAccessError(KstatError):
    """EACCES / EPERM: not writable, or the caller is not privileged."""


class KstatUpdateError(KstatError):
    """EIO: a provider's ``ks_update`` or ``ks_snapshot`` raised."""


class ProtocolError(KstatError):
    """A malformed or oversized frame (EPROTO, E2BIG)."""


class ServerUnavailableError(KstatError):
    """No kstatd answers on the socket; raised ``from`` the connect error."""


class RequestTimeoutError(ServerUnavailableError):
    """ETIMEDOUT: kstatd did not accept, or answer, a request within the client's
    deadline (``KSTAT_TIMEOUT``, docs/PROTOCOL.md §9.7)."""


class UntrustedServerError(KstatAccessError):
    """EACCES: the server's SO_PEERCRED uid is neither root nor the caller's
    (nor one the user opted in to with ``KSTAT_TRUST_UID``), docs/PROTOCOL.md §9.7."""


class KstatFatalError(Exception):
    """A provider broke a contract that illumos answers with a panic.

    Examples: ``kstat_delete`` while holding ``ks_lock``, a VAR_SIZE kstat without
    ``ks_lock`` at install. It is not a KstatError: nothing should catch it as one.
    """


_BY_ERRNO: dict[int, type[KstatError]] = {
    _errno.ENXIO: KstatNotFoundError,
    _errno.ENOENT: KstatNotFoundError,
    _errno.EACCES: KstatAccessError,
    _errno.EPERM: KstatAccessError,
    _errno.EIO: KstatUpdateError,
    _errno.EPROTO: ProtocolError,
}


def error_for_errno(errno: int, message: str | None = None, **extra: Any) -> KstatError:
    """Build the KstatError subclass that fits ``errno``."""
    return _BY_ERRNO.get(errno, KstatError)(errno, message, **extra)
