"""Transports of the client library: one ``ioctl(cmd, arg) -> result map`` each.

:class:`SocketTransport` is a connection to kstatd (docs/PROTOCOL.md): one request
and its reply at a time, ``_lock`` held for the whole round trip, so threads may
share it. :class:`ChainTransport` calls :meth:`kstatpy.ioctl.IoctlHandler.dispatch`
on a chain in this process, the very function kstatd runs for a request. Both
raise the typed :class:`KstatError` of a reply's errno; a socket that cannot be
reached, or is lost, is :class:`ServerUnavailableError`.

Imports: msgpack, _socket (not socket.py: it would load enum and selectors) and
kstatpy's errors and protocol only.
"""

from __future__ import annotations

import _socket  # socket.py's C core: socket.py would import enum and selectors for nothing here
import errno
import os
from _thread import allocate_lock

import msgpack

from kstatpy.errors import KstatError
from kstatpy.errors import ServerUnavailableError
from kstatpy.errors import error_for_errno
from kstatpy.protocol import LENGTH
from kstatpy.protocol import pack_request
from kstatpy.safepath import check_socket_dir
from kstatpy.safepath import resolve_socket_path as _resolve
from kstatpy.safepath import trusted_owners

TYPE_CHECKING = False  # not typing's: the kstat command's kstatd path never imports typing
if TYPE_CHECKING:
    from typing import Any

__all__ = ["MAX_REPLY", "ChainTransport", "SocketTransport", "raise_for_reply", "resolve_socket_path"]

#: The largest reply body (bytes) this client accepts: 1 GiB. A whole chain's headers
#: are megabytes and kstatd bounds a READ_MANY reply by ``--max-reply`` (8 MiB by
#: default), so this leaves ample room while a hostile or broken server's length
#: prefix (up to 4 GiB) can no longer make the client allocate it. Beyond: EPROTO,
#: connection closed (docs/PROTOCOL.md §2).
MAX_REPLY = 1 << 30
#: Large bodies are read this much at a time, so memory follows what actually arrives.
_CHUNK = 1 << 20


def raise_for_reply(code: int, result: dict[str, Any]) -> None:
    """Raise the typed KstatError of a reply's errno, with the result's extra fields."""
    extra = {k: v for k, v in result.items() if k != "error" and type(k) is str}
    message = result.get("error")
    raise error_for_errno(code, message if isinstance(message, str) else None, **extra)


def resolve_socket_path(path: str | None = None) -> str:
    """The socket a client uses: ``path``, else ``$KSTAT_SOCKET``, else the default.

    :raises KstatError: EINVAL for an empty ``path`` (no silent fall back).
    """
    try:
        return _resolve(path)[0]
    except ValueError as exc:
        raise KstatError(errno.EINVAL, f"socket path: {exc}") from None


class SocketTransport:
    """A connection to kstatd. ``_lock`` is held for each whole round trip."""

    def __init__(self, path: str | None = None, timeout: float | None = None) -> None:
        """:raises UnsafePathError: the socket's directory fails kstatpy.safepath's checks."""
        self.path = resolve_socket_path(path)
        check_socket_dir(self.path, None if path or os.environ.get("KSTAT_SOCKET") else trusted_owners())
        self._timeout = timeout
        sock = self._connect()
        self._sock: _socket.socket | None = sock
        self._lock = allocate_lock()
        self._seq = 0
        self._lenbuf = bytearray(4)

    def _connect(self) -> _socket.socket:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.settimeout(self._timeout)
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            code = exc.errno or errno.ECONNREFUSED
            raise ServerUnavailableError(
                code, f"cannot connect to kstatd at {self.path}: {exc.strerror or exc}"
            ) from exc
        return sock

    def _recv_exact(self, sock: _socket.socket, n: int, into: bytearray | None = None) -> bytearray:
        buf = into if into is not None else bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            k = sock.recv_into(view[got:], n - got)
            if not k:
                raise ConnectionResetError(errno.ECONNRESET, "kstatd closed the connection")
            got += k
        return buf

    def _recv_body(self, sock: _socket.socket, n: int) -> bytearray:
        # Up to _CHUNK preallocated; beyond, grown as bytes arrive (never n up front).
        if n <= _CHUNK:
            return self._recv_exact(sock, n)
        buf = bytearray()
        while len(buf) < n:
            buf += self._recv_exact(sock, min(_CHUNK, n - len(buf)))
        return buf

    def round_trip(self, cmd: int, arg: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
        """Send one request, return ``(errno, result)`` of its reply.

        kstatd closes an idle connection with ``[0, ETIMEDOUT, ...]`` (docs/PROTOCOL.md §9.4);
        a kstat ioctl (0x4B00-0x4BFF, no per-connection state) then reconnects and is
        sent again, once. Any other refusal raises :class:`ServerUnavailableError`.
        """
        code, result, goodbye = self._round_trip(cmd, arg)
        if goodbye and code == errno.ETIMEDOUT and 0x4B00 <= cmd <= 0x4BFF:
            with self._lock:
                self._sock = self._connect()
            code, result, goodbye = self._round_trip(cmd, arg)
        if goodbye:
            raise ServerUnavailableError(code, f"kstatd at {self.path}: {result.get('error')}")
        return code, result

    def _round_trip(self, cmd: int, arg: dict[str, Any] | None) -> tuple[int, dict[str, Any], bool]:
        # (errno, result, goodbye): goodbye when kstatd answered seq 0 with an error and closed.
        with self._lock:
            sock = self._sock
            if sock is None:
                raise KstatError(errno.EBADF, "kstat handle is closed")
            self._seq = seq = (self._seq + 1) & 0xFFFFFFFF
            try:
                try:
                    # MSG_NOSIGNAL: a lost kstatd is an error to report, not a SIGPIPE death.
                    sock.sendall(pack_request(cmd, seq, arg), _socket.MSG_NOSIGNAL)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # a refusal (connection cap) may be waiting to be read: read it below
                (length,) = LENGTH.unpack(self._recv_exact(sock, 4, self._lenbuf))
                if length > MAX_REPLY:
                    self._close_locked()
                    raise error_for_errno(
                        errno.EPROTO, f"reply of {length} bytes from kstatd exceeds the client's limit of {MAX_REPLY}"
                    )
                body = self._recv_body(sock, length)
            except OSError as exc:
                self._close_locked()
                raise ServerUnavailableError(
                    exc.errno or errno.ECONNRESET, f"lost kstatd at {self.path}: {exc.strerror or exc}"
                ) from exc
        try:
            rseq, code, result = msgpack.unpackb(body, raw=False)
        except Exception as exc:
            raise error_for_errno(errno.EPROTO, f"malformed reply from kstatd: {exc}") from exc
        if type(rseq) is not int or type(code) is not int or not isinstance(result, dict):
            # docs/PROTOCOL.md §3: [seq: uint, errno: int, result: map].
            raise error_for_errno(errno.EPROTO, "malformed reply from kstatd: not [seq, errno, map]")
        if rseq != seq:
            # kstatd answers a refused connection (connection cap) or a timed-out one
            # with seq 0 and closes.
            if code:
                with self._lock:
                    self._close_locked()
                return code, result, True
            raise error_for_errno(errno.EPROTO, f"reply seq {rseq} for request seq {seq}")
        return code, result, False

    def ioctl(self, cmd: int, arg: dict[str, Any] | None = None) -> dict[str, Any]:
        """One ioctl: its result map, or the typed KstatError of its errno."""
        code, result = self.round_trip(cmd, arg)
        if code:
            raise_for_reply(code, result)
        return result

    def _close_locked(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def close(self) -> None:
        """Close the connection (kstatd then closes what providers opened on it)."""
        with self._lock:
            self._close_locked()


class ChainTransport:
    """The in-process transport: kstatd's dispatch function called directly."""

    def __init__(self, handler: Any, conn: Any) -> None:
        self.handler = handler
        self.conn = conn

    def ioctl(self, cmd: int, arg: dict[str, Any] | None = None) -> dict[str, Any]:
        """One ioctl: its result map, or the typed KstatError of its errno."""
        code, result = self.handler.dispatch(self.conn, cmd, arg)
        if code:
            raise_for_reply(code, result)
        return result

    def close(self) -> None:
        """Close the "file": providers drop what they opened on this connection."""
        providers = getattr(self.handler, "providers", None)
        if providers is not None:
            providers.conn_close(self.handler.chain, self.conn)
