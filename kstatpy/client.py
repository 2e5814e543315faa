"""The libkstat analogue (libkstat(3LIB), kstat(3KSTAT)): ``kstat_open()`` -> :class:`KstatCtl`.

Transports
    A :class:`KstatCtl` talks to the kernel side through a transport with one method,
    ``ioctl(cmd, arg) -> result map``, which raises the typed :class:`KstatError` of
    the reply's errno (``transport.py``). :func:`kstat_open` connects to kstatd
    (docs/PROTOCOL.md); :func:`kstat_open_chain` calls kstatd's dispatch function on
    a chain in this process.

Copies
    ``kc.kc_chain`` holds user copies of the headers (:class:`KstatUser`), in kid
    order. ``kc.read(ksp)`` fills ``ksp.ks_data`` and refreshes ``ks_ndata``,
    ``ks_data_size``, ``ks_flags`` and ``ks_snaptime``. ``kc.chain_update()`` keeps the
    entries whose kid survived (the same objects, their data and header untouched) and
    drops the others, as libkstat does.

Reply shapes
    The decoders check each field of a reply as they take it
    (:mod:`kstatpy.client_shapes`): a result of the wrong shape is ProtocolError
    (EPROTO), one line naming the ioctl and the socket (:meth:`KstatCtl.malformed`).

Threads
    One KstatCtl may be shared by threads: the transport serialises round trips (one
    lock around send and receive) and ``_lock`` guards ``kc_chain`` and ``kc_chain_id``.
    A :class:`KstatUser` read by two threads at once gets whichever read ends last.

Imports: kstatpy's constants, errors and transports; ``kstatpy.ioctl`` only inside
:func:`kstat_open_chain`, so a socket client loads no pluggy and no chain.
"""

from __future__ import annotations

import errno
import time
from _thread import allocate_lock

from kstatpy.client_kstat import KstatUser
from kstatpy.client_shapes import NAMES
from kstatpy.client_shapes import MalformedReply
from kstatpy.client_shapes import enomem_ok
from kstatpy.client_shapes import entries
from kstatpy.errors import KstatError
from kstatpy.errors import error_for_errno
from kstatpy.named import KstatNamedData
from kstatpy.named import KstatNamedRecord
from kstatpy.named import named_triples
from kstatpy.transport import ChainTransport
from kstatpy.transport import SocketTransport
from kstatpy.transport import resolve_socket_path

TYPE_CHECKING = False  # not typing's: the kstat command's kstatd path never imports typing
if TYPE_CHECKING:
    from collections.abc import Callable
    from collections.abc import Iterable
    from typing import Any

    from kstatpy.chain import Chain

__all__ = [
    "ChainTransport",
    "KstatCtl",
    "KstatNamedData",
    "KstatNamedRecord",
    "KstatUser",
    "SocketTransport",
    "kstat_open",
    "kstat_open_chain",
    "named_triples",
    "resolve_socket_path",
]

#: libkstat retries EAGAIN every 100 ms; we stop after ``timeout`` seconds.
EAGAIN_RETRY = 0.1
DEFAULT_TIMEOUT = 5.0
#: Bound of kstat_read's ENOMEM resize loop (every client retry loop is bounded).
RESIZE_RETRIES = 16
#: KSTATPY_IOC_READ_MANY's limit per request (docs/PROTOCOL.md §4).
READ_MANY_BATCH = 65536

# kstatpy.constants' values as plain ints: its enums stay off the command's start-up
# (tests/test_constants.py checks they agree).
_CHAIN_ID = 0x4B01  # KstatIoctl.CHAIN_ID
_READ = 0x4B02  # KstatIoctl.READ
_WRITE = 0x4B03  # KstatIoctl.WRITE
_HELLO = 0x4B10  # KstatIoctl.HELLO
_READ_MANY = 0x4B11  # KstatIoctl.READ_MANY
_RAW = 0  # KstatType.RAW
_RESIZABLE = 0x02 | 0x40  # KstatFlag.VAR_SIZE | KstatFlag.LONGSTRINGS
_GLOBAL_ZONEID = 0  # GLOBAL_ZONEID
# --- the control handle ----------------------------------------------------------


class KstatCtl:
    """kstat_ctl_t: ``kc_chain_id``, ``kc_chain`` and the transport (``kc_kd``)."""

    def __init__(self, transport: Any) -> None:
        self.kc_kd = transport
        #: Replies come off a socket (any transport but the in-process one): decoders check them.
        self.wire = not isinstance(transport, ChainTransport)
        self.kc_chain_id = 0
        self.kc_chain: list[KstatUser] = []
        self._lock = allocate_lock()  # guards kc_chain and kc_chain_id

    def __enter__(self) -> KstatCtl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def malformed(self, cmd: int, exc: MalformedReply) -> KstatError:
        """ProtocolError (EPROTO) for a reply to ``cmd`` a decoder found malformed (one line)."""
        path = getattr(self.kc_kd, "path", None)
        where = f"kstatd at {path}" if isinstance(path, str) else "the in-process chain"
        return error_for_errno(errno.EPROTO, f"malformed {NAMES.get(cmd, hex(cmd))} reply from {where}: {exc}")

    def kcid_of(self, cmd: int, result: dict[str, Any]) -> int:
        """The ``kcid`` of a reply to ``cmd``; :raises ProtocolError: EPROTO, not an int."""
        kcid: Any = result.get("kcid")
        if type(kcid) is not int and self.wire:
            raise self.malformed(cmd, MalformedReply("no int kcid"))
        return kcid

    def ioctl(self, cmd: int, arg: dict[str, Any] | None = None) -> dict[str, Any]:
        """A raw ioctl (provider ioctls, HELLO): the result map or a typed KstatError."""
        return self.kc_kd.ioctl(cmd, arg)

    def hello(self) -> dict[str, Any]:
        """KSTATPY_IOC_HELLO: protocol version, server, zone, privileged."""
        return self.kc_kd.ioctl(_HELLO, {"protocol": 1})

    def close(self) -> None:
        """kstat_close(3KSTAT): drop the chain and close the transport."""
        with self._lock:
            self.kc_chain = []
        self.kc_kd.close()

    def chain_id(self) -> int:
        """KSTAT_IOC_CHAIN_ID: the kernel's current chain id."""
        return self.kcid_of(_CHAIN_ID, self.kc_kd.ioctl(_CHAIN_ID, None))

    def chain_update(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """kstat_chain_update(3KSTAT): 0 if the chain is unchanged, else the new kcid.

        Entries whose kid survives are kept (same objects, data untouched).
        """
        kcid = self.chain_id()
        if kcid == self.kc_chain_id:
            return 0
        headers = KstatUser({"kid": 0, "module": "unix", "instance": 0, "name": "kstat_headers",
                             "class": "kstat", "type": _RAW, "flags": 0, "ndata": 0,
                             "data_size": 0, "crtime": 0, "snaptime": 0})  # fmt: skip
        kcid = self.read(headers, timeout=timeout)
        with self._lock:
            old = {ksp.ks_kid: ksp for ksp in self.kc_chain}
            chain = []
            for hdr in headers.ks_data:
                ksp = old.get(hdr["kid"])
                chain.append(ksp if ksp is not None else KstatUser(hdr))
            self.kc_chain = chain
            self.kc_chain_id = kcid
        return kcid

    def lookup(self, module: str | None = None, instance: int = -1, name: str | None = None) -> KstatUser:
        """kstat_lookup(3KSTAT): the first kstat in kid order matching; None/-1 are wildcards.

        :raises KstatNotFoundError: ENOENT when nothing matches.
        """
        for ksp in self.kc_chain:
            if (
                (module is None or ksp.ks_module == module)
                and (instance == -1 or ksp.ks_instance == instance)
                and (name is None or ksp.ks_name == name)
            ):
                return ksp
        raise error_for_errno(errno.ENOENT, f"kstat_lookup: no kstat {module}:{instance}:{name}")

    def read(self, ksp: KstatUser, timeout: float = DEFAULT_TIMEOUT, data_size: int | None = None) -> int:
        """kstat_read(3KSTAT): fill ``ksp.ks_data``; returns the kcid of the read.

        EAGAIN is retried every 100 ms for at most ``timeout`` seconds. With
        ``data_size``, ENOMEM on a VAR_SIZE/LONGSTRINGS kstat is retried at the size
        the driver reports (libkstat's dance), at most ``RESIZE_RETRIES`` times (a
        kstat that keeps outgrowing the buffer, or a server that keeps answering
        ENOMEM, then raises it); on other kstats it is raised.
        """
        deadline = None
        resizes = 0
        arg: dict[str, Any] = {"kid": ksp.ks_kid}
        if data_size is not None:
            arg["data_size"] = data_size
        ioctl = self.kc_kd.ioctl
        while True:
            try:
                result = ioctl(_READ, arg)
            except KstatError as exc:
                if exc.errno == errno.EAGAIN:
                    now = time.monotonic()
                    if deadline is None:
                        deadline = now + timeout
                    if now + EAGAIN_RETRY <= deadline:
                        time.sleep(EAGAIN_RETRY)
                        continue
                elif exc.errno == errno.ENOMEM and "data_size" in exc.extra:
                    extra = exc.extra
                    if self.wire and not enomem_ok(extra):
                        raise self.malformed(_READ, MalformedReply("ENOMEM fields are not ints")) from None
                    ksp.ks_data_size = extra["data_size"]
                    ksp.ks_flags = extra.get("flags", ksp.ks_flags)
                    ksp.ks_ndata = extra.get("ndata", ksp.ks_ndata)
                    ksp.ks_snaptime = extra.get("snaptime", ksp.ks_snaptime)
                    if ksp.ks_flags & _RESIZABLE and resizes < RESIZE_RETRIES:
                        resizes += 1
                        arg["data_size"] = ksp.ks_data_size
                        continue
                raise
            kcid = self.kcid_of(_READ, result)
            try:
                ksp._fill(result.get("kstat"), self.wire)
            except MalformedReply as bad:
                raise self.malformed(_READ, bad) from None
            return kcid

    def read_many(self, ksps: Iterable[KstatUser]) -> list[tuple[int, KstatUser]]:
        """Read many kstats with KSTATPY_IOC_READ_MANY in batches of at most 65,536.

        Returns ``(errno, ksp)`` per kstat in the order given (``ksp`` filled when errno is 0).
        Entries kstatd left unread at its reply's byte budget (E2BIG after a read entry, docs/PROTOCOL.md
        §9.4) are asked for again in the next batch (each batch reads one at least, so this ends). A
        request answered EAGAIN as a whole (a stuck provider) is sent again; an entry's EAGAIN is not.
        """
        from kstatpy.client_select import ioctl_past_stuck  # imports kstatpy.select

        ksps = list(ksps)
        wire = self.wire
        codes = [0] * len(ksps)
        pending = list(range(len(ksps)))
        while pending:
            batch = pending[:READ_MANY_BATCH]
            result = ioctl_past_stuck(self.kc_kd.ioctl, _READ_MANY, {"kids": [ksps[i].ks_kid for i in batch]})
            if wire:
                self.kcid_of(_READ_MANY, result)
            again: list[int] = []
            progress = False
            try:
                for i, (code, kstat) in zip(batch, entries(result, len(batch), wire), strict=True):
                    if code == errno.E2BIG and progress:
                        again.append(i)
                        continue
                    progress = True
                    codes[i] = code
                    if not code:
                        ksps[i]._fill(kstat, wire)
            except MalformedReply as bad:
                raise self.malformed(_READ_MANY, bad) from None
            pending = again + pending[len(batch) :]
        return list(zip(codes, ksps, strict=True))

    def select(
        self, selectors: Iterable[Any], ks_class: str = "*", skip_name: str | None = None, types: Any = None
    ) -> list[tuple[int, KstatUser, int]]:
        """KSTATPY_IOC_SELECT: ``[(errno, ksp, prev_snaptime)]`` of the kstats kstat(8)
        selectors match, read in one round trip (:mod:`kstatpy.client_select`).

        :raises RegexError: a ``/regex/`` that had to be evaluated does not compile.
        """
        from kstatpy.client_select import select

        return select(self, selectors, ks_class, skip_name, types)

    def write(self, ksp: KstatUser, timeout: float = DEFAULT_TIMEOUT) -> int:
        """kstat_write(3KSTAT): push ``ksp.ks_data`` to the kstat; returns the kcid.

        EAGAIN is retried every 100 ms for at most ``timeout`` seconds.
        """
        arg = {"kid": ksp.ks_kid, "ndata": ksp.ks_ndata, "data": ksp.wire_data()}
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.kcid_of(_WRITE, self.kc_kd.ioctl(_WRITE, arg))
            except KstatError as exc:
                if exc.errno != errno.EAGAIN or time.monotonic() + EAGAIN_RETRY > deadline:
                    raise
                time.sleep(EAGAIN_RETRY)


# --- opening ---------------------------------------------------------------------


def kstat_open(
    path: str | None = None, timeout: float | None = None, read_chain: bool = True, trust: Iterable[int] = ()
) -> KstatCtl:
    """kstat_open(3KSTAT): connect to kstatd and read the chain (docs/PROTOCOL.md §9.7).

    :param path: the socket; else ``$KSTAT_SOCKET``; else the default (root's
        privileged ``/run/kstatpy/priv/kstat.sock`` for euid 0, else the per-user one).
    :param timeout: seconds each request may take (connect, send, whole reply); None:
        ``$KSTAT_TIMEOUT``, else 10.
    :param read_chain: False: ask only the chain id, for callers of ``select``.
    :param trust: server uids accepted beside root and the caller (a named socket only;
        also ``$KSTAT_TRUST_UID``).
    :raises ServerUnavailableError: nothing answers on the socket (ENOENT, ECONNREFUSED).
    :raises RequestTimeoutError: ETIMEDOUT, no answer within ``timeout``.
    :raises UntrustedServerError: EACCES, the server runs as another user.
    :raises UnsafePathError: EACCES, the default path runs through another user's directory.
    """
    kc = KstatCtl(SocketTransport(path, timeout, trust))
    try:
        if read_chain:
            kc.chain_update()
        else:
            kc.chain_id()
    except BaseException:
        kc.close()
        raise
    return kc


def kstat_open_chain(
    chain: Chain,
    zoneid: int = _GLOBAL_ZONEID,
    refresh: Callable[[], Any] | None = None,
    providers: Any = None,
    read_chain: bool = True,
) -> KstatCtl:
    """kstat_open(3KSTAT) on a chain in this process, through kstatd's dispatch code.

    :param zoneid: the caller's zone; only the global zone may write.
    :param refresh: called before each chain-id query and KID 0 read (default:
        ``providers.refresh(chain)`` when ``providers`` is given, else nothing).
    :param providers: a :class:`kstatpy.plugins.Providers` to offer provider ioctls to.
    :param read_chain: False leaves ``kc_chain`` empty (see :func:`kstat_open`).
    """
    from kstatpy.ioctl import Conn
    from kstatpy.ioctl import Cred
    from kstatpy.ioctl import IoctlHandler

    zone = "global" if zoneid == _GLOBAL_ZONEID else f"zone{zoneid}"
    handler = IoctlHandler(chain, providers=providers, refresh=refresh)
    kc = KstatCtl(ChainTransport(handler, Conn(Cred.of_this_process(zone, zoneid))))
    if read_chain:
        kc.chain_update()
    return kc
