"""kstatd under systemd: socket activation and readiness notification, without libsystemd.

Socket activation (sd_listen_fds(3))
    When ``$LISTEN_PID`` is this process's pid, ``$LISTEN_FDS`` descriptors starting
    at 3 (SD_LISTEN_FDS_START) were passed by the service manager, named by the
    colon-separated ``$LISTEN_FDNAMES`` (systemd.socket(5) ``FileDescriptorName=``;
    "unknown" when absent). :func:`listen_fds` takes them: each must be a listening
    AF_UNIX SOCK_STREAM socket (SO_DOMAIN, SO_TYPE, SO_ACCEPTCONN), else
    :class:`ActivationError`; each is made close-on-exec; the three variables are
    removed from the environment so that no child takes them for its own. Without
    ``$LISTEN_PID``, or with another pid (the variables were inherited from a
    parent), there are none.
    :func:`assign` hands each socket to the kstatd socket bound at the same path
    (``--socket`` or a ``--zone`` path): a socket whose name is ``global`` or a zone's
    name goes to that socket instead. A passed socket that matches none is an error,
    never silently ignored. The others are bound by kstatd as usual.

Readiness (sd_notify(3))
    :func:`notify` sends one datagram (``READY=1``, ``STATUS=...``, ``STOPPING=1``)
    to ``$NOTIFY_SOCKET``, an AF_UNIX datagram socket: a path, or an abstract
    address when it starts with ``@``. Without ``$NOTIFY_SOCKET`` it does nothing.
    It never raises: a manager that cannot be told times the service out by itself.

Sources: sd_listen_fds(3), sd_notify(3), systemd.socket(5); no code of libsystemd's.
"""

from __future__ import annotations

import logging
import os
import socket

__all__ = ["SD_LISTEN_FDS_START", "ActivationError", "assign", "listen_fds", "notify"]

log = logging.getLogger(__name__)

SD_LISTEN_FDS_START = 3
_ENV = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


class ActivationError(Exception):
    """The passed sockets cannot be used; ``str()`` is one line naming the descriptor."""


def _take(fd: int, name: str) -> socket.socket:
    # Verify on the descriptor itself: the environment only says a number.
    try:
        family = socket.socket(fileno=os.dup(fd))
    except OSError as exc:
        raise ActivationError(f"passed descriptor {fd} ({name}): not a socket: {exc.strerror or exc}") from None
    with family:
        try:
            domain = family.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN)
            kind = family.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
            listening = family.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        except OSError as exc:
            raise ActivationError(f"passed descriptor {fd} ({name}): {exc.strerror or exc}") from None
    if domain != socket.AF_UNIX or kind != socket.SOCK_STREAM or not listening:
        raise ActivationError(
            f"passed descriptor {fd} ({name}): not a listening AF_UNIX stream socket "
            "(ListenStream= must name a path in kstatd.socket)"
        )
    os.set_inheritable(fd, False)
    return socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=fd)


def listen_fds(environ: dict[str, str] | None = None) -> list[tuple[str, socket.socket]]:
    """The sockets passed to this process, as (name, socket); ``[]`` when none.

    :param environ: the environment to read and clean (default ``os.environ``).
    :raises ActivationError: a malformed variable, or a descriptor that is no listening
        AF_UNIX stream socket.
    """
    env: dict[str, str] = os.environ if environ is None else environ  # type: ignore[assignment]
    pid, count, names = (env.get(k) for k in _ENV)
    for k in _ENV:
        env.pop(k, None)
    if pid is None or not pid.isdigit() or int(pid) != os.getpid():
        return []  # not for us (absent, or inherited from a parent)
    if count is None or not count.isdigit():
        raise ActivationError(f"LISTEN_FDS={count!r}: expected a number of descriptors")
    n = int(count)
    labels = names.split(":") if names is not None else []
    if names is not None and len(labels) != n:
        raise ActivationError(f"LISTEN_FDNAMES has {len(labels)} names for LISTEN_FDS={n}")
    labels = labels or ["unknown"] * n
    return [(labels[i], _take(SD_LISTEN_FDS_START + i, labels[i])) for i in range(n)]


def _bound_path(sock: socket.socket) -> str:
    name = sock.getsockname()
    if isinstance(name, bytes):  # abstract or unnamed
        return ""
    return os.path.abspath(name) if name else ""


def assign(passed: list[tuple[str, socket.socket]], sockets: dict[str, str]) -> dict[str, socket.socket]:
    """Match passed sockets to kstatd's sockets: path -> the passed socket to adopt.

    :param sockets: kstatd's sockets, zone name (``global`` for the global zone) -> path.
    :raises ActivationError: a passed socket that matches no path or name, or two for one path.
    """
    by_path = {os.path.abspath(p): p for p in sockets.values()}
    out: dict[str, socket.socket] = {}
    for name, sock in passed:
        bound = _bound_path(sock)
        if name in sockets:
            path = sockets[name]
        elif bound in by_path:
            path = by_path[bound]
        else:
            raise ActivationError(
                f"passed socket {bound or '(unnamed)'} ({name}) is none of kstatd's sockets "
                f"({', '.join(sockets.values())}); give its path with --socket or --zone"
            )
        if path in out:
            raise ActivationError(f"two passed sockets for {path}")
        out[path] = sock
    return out


def notify(state: str, environ: dict[str, str] | None = None) -> bool:
    """Send ``state`` (``"READY=1\\nSTATUS=..."``) to ``$NOTIFY_SOCKET``; True when sent."""
    env = os.environ if environ is None else environ
    where = env.get("NOTIFY_SOCKET")
    if not where:
        return False
    address = "\0" + where[1:] if where.startswith("@") else where
    if not (where.startswith(("@", "/"))):
        log.warning("NOTIFY_SOCKET=%s: neither a path nor an abstract address; not notifying", where)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(state.encode("utf-8"), address)
    except OSError as exc:
        log.warning("cannot notify the service manager at %s: %s", where, exc.strerror or exc)
        return False
    return True
