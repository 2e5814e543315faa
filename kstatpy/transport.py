"""Transports of the client library: one ``ioctl(cmd, arg) -> result map`` each.

:class:`SocketTransport` is a connection to kstatd (docs/PROTOCOL.md): one request
and its reply at a time, ``_lock`` held for the whole round trip, so threads may
share it. :class:`ChainTransport` calls :meth:`kstatpy.ioctl.IoctlHandler.dispatch`
on a chain in this process, the very function kstatd runs for a request. Both
raise the typed :class:`KstatError` of a reply's errno; a socket that cannot be
reached, or is lost, is :class:`ServerUnavailableError`.

The client connection contract (docs/PROTOCOL.md §9.7) is here: which socket, the
descriptor walk of a default path (:func:`kstatpy.safepath.open_socket_dir`), the
server's SO_PEERCRED uid, and one deadline per request (:func:`request_timeout`).

Imports: msgpack, _socket (not socket.py: it would load enum and selectors), math,
struct, and kstatpy's errors, protocol and safepath only.
"""

from __future__ import annotations

import _socket  # socket.py's C core: socket.py would import enum and selectors for nothing here
import errno
import math
import os
import struct
from _thread import allocate_lock
from time import monotonic

import msgpack

from kstatpy.errors import KstatError
from kstatpy.errors import RequestTimeoutError
from kstatpy.errors import ServerUnavailableError
from kstatpy.errors import UntrustedServerError
from kstatpy.errors import error_for_errno
from kstatpy.protocol import LENGTH
from kstatpy.protocol import pack_request
from kstatpy.safepath import check_socket_dir
from kstatpy.safepath import open_socket_dir
from kstatpy.safepath import resolve_socket_path as _resolve
from kstatpy.safepath import trusted_owners

TYPE_CHECKING = False  # not typing's: the kstat command's kstatd path never imports typing
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "DEFAULT_REQUEST_TIMEOUT",
    "MAX_REPLY",
    "ChainTransport",
    "SocketTransport",
    "raise_for_reply",
    "request_timeout",
    "resolve_socket_path",
    "trust_uids",
]

#: Seconds one request (connect, send, the whole reply) may take: docs/PROTOCOL.md §9.7.
DEFAULT_REQUEST_TIMEOUT = 10.0
#: The largest timeout accepted (one day), from any source.
MAX_REQUEST_TIMEOUT = 86400.0

#: The largest reply body (bytes) this client accepts: 1 GiB. A whole chain's headers
#: are megabytes and kstatd bounds a READ_MANY reply by ``--max-reply`` (8 MiB by
#: default), so this leaves ample room while a hostile or broken server's length
#: prefix (up to 4 GiB) can no longer make the client allocate it. Beyond: EPROTO,
#: connection closed (docs/PROTOCOL.md §2).
MAX_REPLY = 1 << 30
#: Large bodies are read this much at a time, so memory follows what actually arrives.
_CHUNK = 1 << 20
#: A length word with this bit is a piece with more to follow (docs/PROTOCOL.md §9.8).
_MORE = 0x8000_0000
#: Requests whose reply this client takes in pieces (READ_MANY, SELECT, DESCRIBE).
_PIECES = frozenset({0x4B11, 0x4B12, 0x4B13})


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


def request_timeout(value: float | str | None = None, environ: Any = None) -> float:
    """The per-request deadline in seconds: ``value``, else ``$KSTAT_TIMEOUT`` (empty:
    unset), else :data:`DEFAULT_REQUEST_TIMEOUT` (docs/PROTOCOL.md §9.7 step 4).

    :raises KstatError: EINVAL unless a finite number > 0 and <= 86400.
    """
    source = "timeout"
    if value is None:
        env = os.environ if environ is None else environ
        value = env.get("KSTAT_TIMEOUT") or None
        source = "KSTAT_TIMEOUT"
        if value is None:
            return DEFAULT_REQUEST_TIMEOUT
    try:
        # ASCII and no "_": float() also takes "1_0" and non-ASCII digits, which
        # libkstat's strtod (the same contract, in C) refuses.
        seconds = math.nan if isinstance(value, str) and (not value.isascii() or "_" in value) else float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not (0 < seconds <= MAX_REQUEST_TIMEOUT):  # also false for nan
        raise KstatError(
            errno.EINVAL, f"{source}: {value!r} is not a number of seconds > 0 and <= {MAX_REQUEST_TIMEOUT:g}"
        )
    return seconds


def trust_uids(extra: Any = (), environ: Any = None) -> frozenset[int]:
    """The server uids a user opted in to for a NAMED socket: ``extra`` (``--trust-uid``)
    and ``$KSTAT_TRUST_UID=N[,N...]`` (docs/PROTOCOL.md §9.7 step 3).

    :raises KstatError: EINVAL for an entry that is not a uid (0 to 2**32 - 2).
    """
    env = os.environ if environ is None else environ
    words = [str(u) for u in extra] + [w for w in (env.get("KSTAT_TRUST_UID") or "").split(",") if w.strip()]
    uids = set()
    for word in words:
        w = word.strip()
        if not (w.isascii() and w.isdigit() and int(w) < 0xFFFFFFFF):
            raise KstatError(errno.EINVAL, f"KSTAT_TRUST_UID/--trust-uid: {word!r} is not a uid")
        uids.add(int(w))
    return frozenset(uids)


_PEERCRED_SIZE = 12  # struct ucred: pid, uid, gid (3 x int32)


class SocketTransport:
    """A connection to kstatd. ``_lock`` is held for each whole round trip.

    The client connection contract of docs/PROTOCOL.md §9.7: a default path is walked
    by descriptor and connected through ``/proc/self/fd/N/NAME``; the server's
    SO_PEERCRED uid must be root or the caller's (or, for a named socket only, one in
    ``trust``/``$KSTAT_TRUST_UID``); each request has a whole-request deadline.
    """

    def __init__(self, path: str | None = None, timeout: float | None = None, trust: Any = ()) -> None:
        """:param timeout: seconds per request (None: ``$KSTAT_TIMEOUT``, else 10).
        :param trust: server uids to accept on a named socket (``--trust-uid``).
        :raises UnsafePathError: the socket's path fails kstatpy.safepath's checks.
        :raises UntrustedServerError: the server runs as another user.
        :raises RequestTimeoutError: kstatd did not accept within the timeout.
        :raises KstatError: EINVAL for a bad timeout or trusted uid.
        """
        self.path = resolve_socket_path(path)
        self.named = bool(path or os.environ.get("KSTAT_SOCKET"))
        self._timeout = request_timeout(timeout)
        self._trust = trust_uids(trust) if self.named else frozenset()
        if self.named:
            check_socket_dir(self.path, None)
        sock = self._connect()
        self._sock: _socket.socket | None = sock
        self._lock = allocate_lock()
        self._seq = 0
        self._lenbuf = bytearray(4)
        self._deadline = 0.0

    def _timed_out(self) -> RequestTimeoutError:
        return RequestTimeoutError(
            errno.ETIMEDOUT, f"{self.path}: no reply from kstatd within {self._timeout:g} s (KSTAT_TIMEOUT)"
        )

    def _connect(self) -> _socket.socket:
        deadline = monotonic() + self._timeout
        target = self.path
        dirfd = -1
        if not self.named:
            try:
                dirfd = open_socket_dir(self.path, trusted_owners())
            except FileNotFoundError as exc:
                raise ServerUnavailableError(
                    errno.ENOENT, f"cannot connect to kstatd at {self.path}: {exc.strerror}"
                ) from exc
            via = f"/proc/self/fd/{dirfd}/{os.path.basename(self.path)}"
            if len(via) < 108 and os.path.isdir(f"/proc/self/fd/{dirfd}"):
                target = via  # through the checked directory: no rename can redirect it
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            # A blocking connect bounded by SO_SNDTIMEO: a full backlog is waited for
            # (woken when room frees), not failed at once with EAGAIN as with settimeout.
            sec = max(self._timeout, 0.001)
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDTIMEO, _timeval(sec))
            sock.connect(target)
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.EAGAIN, errno.EINPROGRESS):
                raise self._timed_out() from exc
            code = exc.errno or errno.ECONNREFUSED
            reason = exc.strerror or str(exc)
            if code == errno.ECONNREFUSED and not _is_socket(self.path):
                reason = "not a socket"
                code = errno.ENOTSOCK
            raise ServerUnavailableError(code, f"cannot connect to kstatd at {self.path}: {reason}") from exc
        finally:
            if dirfd >= 0:
                os.close(dirfd)
        try:
            _pid, uid, _gid = struct.unpack(
                "@iII", sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, _PEERCRED_SIZE)
            )
        except OSError as exc:
            sock.close()
            raise ServerUnavailableError(exc.errno or errno.EIO, f"{self.path}: {exc.strerror}") from exc
        me = os.geteuid()
        if uid not in (0, me) and uid not in self._trust:
            sock.close()
            raise UntrustedServerError(
                errno.EACCES,
                f"{self.path}: the server runs as uid {uid}, not root or uid {me}; "
                f"refusing it (KSTAT_TRUST_UID={uid} to trust it)",
            )
        sock.settimeout(max(deadline - monotonic(), 0.001))
        return sock

    def _remaining(self) -> float:
        left = self._deadline - monotonic()
        if left <= 0:
            raise TimeoutError(errno.ETIMEDOUT, "deadline passed")
        return left

    def _recv_exact(self, sock: _socket.socket, n: int, into: bytearray | None = None) -> bytearray:
        buf = into if into is not None else bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            if got:  # the deadline covers the whole reply, not each recv
                sock.settimeout(self._remaining())
            k = sock.recv_into(view[got:], n - got)
            if not k:
                raise ConnectionResetError(errno.ECONNRESET, "kstatd closed the connection")
            got += k
        return buf

    def _recv_body(self, sock: _socket.socket, n: int) -> bytearray:
        # Up to _CHUNK preallocated; beyond, grown as bytes arrive (never n up front).
        sock.settimeout(self._remaining())
        if n <= _CHUNK:
            return self._recv_exact(sock, n)
        buf = bytearray()
        while len(buf) < n:
            buf += self._recv_exact(sock, min(_CHUNK, n - len(buf)))
            sock.settimeout(self._remaining())
        return buf

    def _recv_reply(self, sock: _socket.socket, pieces: bool) -> bytearray:
        # One reply's body: a whole frame, or (pieces: asked for) the pieces of
        # docs/PROTOCOL.md §9.8 reassembled, MAX_REPLY in all. EPROTO closes the connection.
        (word,) = LENGTH.unpack(self._recv_exact(sock, 4, self._lenbuf))
        if not (pieces and word & _MORE):
            if word > MAX_REPLY:
                self._close_locked()
                raise error_for_errno(
                    errno.EPROTO, f"reply of {word} bytes from kstatd exceeds the client's limit of {MAX_REPLY}"
                )
            return self._recv_body(sock, word)
        body = bytearray()
        while True:
            n = word & ~_MORE
            if n == 0:
                self._close_locked()
                raise error_for_errno(errno.EPROTO, "malformed reply from kstatd: an empty piece")
            if len(body) + n > MAX_REPLY:
                self._close_locked()
                raise error_for_errno(
                    errno.EPROTO,
                    f"reply of over {len(body) + n} bytes in pieces from kstatd exceeds the client's limit of {MAX_REPLY}",
                )
            body += self._recv_body(sock, n)
            if not word & _MORE:
                return body
            sock.settimeout(self._remaining())
            (word,) = LENGTH.unpack(self._recv_exact(sock, 4, self._lenbuf))

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
            pieces = cmd in _PIECES and type(arg) is dict
            if pieces:  # this reply may come in pieces (docs/PROTOCOL.md §9.8); old kstatds ignore the key
                arg = {**arg, "pieces": True}  # type: ignore[dict-item]
            self._deadline = monotonic() + self._timeout
            try:
                sock.settimeout(self._timeout)
                try:
                    # MSG_NOSIGNAL: a lost kstatd is an error to report, not a SIGPIPE death.
                    sock.sendall(pack_request(cmd, seq, arg), _socket.MSG_NOSIGNAL)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # a refusal (connection cap) may be waiting to be read: read it below
                body = self._recv_reply(sock, pieces)
            except TimeoutError as exc:  # socket.timeout: the request's deadline passed
                self._close_locked()  # a late reply would pair with the next request
                raise self._timed_out() from exc
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


def _timeval(seconds: float) -> bytes:
    # struct timeval (two native longs) for SO_SNDTIMEO/SO_RCVTIMEO.
    sec = int(seconds)
    return struct.pack("@ll", sec, int((seconds - sec) * 1e6))


def _is_socket(path: str) -> bool:
    try:
        return (os.stat(path).st_mode & 0o170000) == 0o140000
    except OSError:
        return True  # cannot tell: keep the connect error


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
