"""The ioctl layer: one request (cmd, arg) from one caller, answered as (errno, result).

This is ``io/kstat.c``'s ``kstat_ioctl`` for kstatpy: the daemon (``kstatpy.server``)
and the in-process transport (``kstatpy.transport.ChainTransport``) both call
:meth:`IoctlHandler.dispatch`, so the embedded ``kstat`` and ``kstatd`` share one code
path. No sockets and no framing here (``kstatpy.protocol`` owns those).

Contract
    ``dispatch(conn, cmd, arg)`` returns ``(errno, result_map)`` and never raises,
    except :class:`kstatpy.kmem.BadTrap` (a provider touched freed memory: a panic,
    the host decides what to do with it). ``arg`` has already passed the shape check
    of docs/PROTOCOL.md §3 (a map or None); its fields are checked here (EINVAL). A
    provider exception or any other unexpected failure is EIO for that request.

Callers
    ``conn.cred`` is a :class:`Cred` (uid, gid, pid, zone name, zoneid, privileged);
    ``conn.state`` is a dict whose values providers own, one key per provider name.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from threading import get_ident

from kstatpy import __version__
from kstatpy.constants import KSTATPY_PROTOCOL_VERSION
from kstatpy.constants import KstatIoctl
from kstatpy.cred import Conn
from kstatpy.cred import Cred
from kstatpy.describe import describe_many
from kstatpy.driver import read_kstat_data
from kstatpy.driver import write_kstat_data
from kstatpy.errors import KstatError
from kstatpy.kmem import BadTrap
from kstatpy.lazy_results import lazy_read_many
from kstatpy.lazy_results import lazy_select
from kstatpy.lazylog import get_logger
from kstatpy.lockorder import sync_point
from kstatpy.packed import PackedResults
from kstatpy.pieces import wants_pieces
from kstatpy.ratelog import ERROR
from kstatpy.ratelog import RateLimitedLog

TYPE_CHECKING = False  # not typing's: kept off the embedded kstat's start-up path
if TYPE_CHECKING:
    from typing import Any

    from kstatpy.chain import Chain
    from kstatpy.plugins import Providers

__all__ = ["DEFAULT_MAX_REPLY", "KSTAT_IOC_RANGE", "MAX_READ_MANY", "MAX_SELECTORS", "MAX_SELECT_PATTERN_BYTES", "Conn", "Cred", "IoctlHandler", "SERVER_NAME"]

log = get_logger(__name__)  # logging is imported on first use
_ratelog = RateLimitedLog(log)  # any caller may repeat a failing ioctl: bounded log lines

#: ioctl numbers kstatpy owns ('K' << 8); anything else goes to the providers.
KSTAT_IOC_RANGE = range(0x4B00, 0x4C00)
#: At most this many kids per KSTATPY_IOC_READ_MANY (E2BIG beyond).
MAX_READ_MANY = 65536
#: kstatd's default byte budget of one READ_MANY reply (``kstatd --max-reply``, docs/PROTOCOL.md §9.4).
DEFAULT_MAX_REPLY = 8 << 20
#: What one READ_MANY entry is charged besides its ``data_size`` (its header on the wire).
ENTRY_CHARGE = 256
SERVER_NAME = f"kstatd (kstatpy {__version__})"

_CHAIN_ID = int(KstatIoctl.CHAIN_ID)
_READ = int(KstatIoctl.READ)
_WRITE = int(KstatIoctl.WRITE)
_HELLO = int(KstatIoctl.HELLO)
_READ_MANY = int(KstatIoctl.READ_MANY)
_DESCRIBE = int(KstatIoctl.DESCRIBE)
_SELECT = int(KstatIoctl.SELECT)
_NAMED = 1
#: At most this many selectors per KSTATPY_IOC_SELECT (E2BIG beyond; kstat(8) sends a handful).
MAX_SELECTORS = 256
#: At most this many UTF-8 bytes in all the patterns of one SELECT (E2BIG beyond): matching
#: costs up to patterns x names, so this bounds the CPU one request can take.
MAX_SELECT_PATTERN_BYTES = 16 << 10


def _err(code: int, message: str, **extra: Any) -> tuple[int, dict[str, Any]]:
    result = {"error": message}
    result.update(extra)
    return code, result


def _opt_int_arg(arg: dict[str, Any] | None, key: str) -> int | None:
    # An optional integer field of arg; KstatError(EINVAL) when mistyped.
    value = None if arg is None else arg.get(key)
    if value is not None and type(value) is not int:
        raise KstatError(errno.EINVAL, f"argument {key!r} must be an integer, not {type(value).__name__}")
    return value


def _int_arg(arg: dict[str, Any] | None, key: str) -> int:
    # A required integer field of arg; KstatError(EINVAL) when missing or mistyped.
    value = _opt_int_arg(arg, key)
    if value is None:
        raise KstatError(errno.EINVAL, f"argument {key!r} is required")
    return value


def _no_pause() -> None:
    pass


def _selection_arg(arg: Any, pause: Callable[[], None] = _no_pause) -> Any:
    # KSTATPY_IOC_SELECT's argument as a Selection; KstatError(EINVAL/E2BIG) when malformed.
    # ``pause`` is called between selectors' compiles (IoctlHandler.pause).
    from kstatpy.select import Selection
    from kstatpy.select import SelectorPatterns
    from kstatpy.select import is_regex

    def strings(value: Any, what: str, most: int) -> list[str]:
        if not isinstance(value, list) or not 0 < len(value) <= most or not all(type(v) is str for v in value):
            raise KstatError(errno.EINVAL, f"argument {what} must be an array of 1 to {most} strings")
        return value

    sels = None if arg is None else arg.get("selectors")
    if not isinstance(sels, list) or not sels:
        raise KstatError(errno.EINVAL, "argument 'selectors' must be a non-empty array")
    if len(sels) > MAX_SELECTORS:
        raise KstatError(errno.E2BIG, f"{len(sels)} selectors in one SELECT; at most {MAX_SELECTORS}")
    patterns = []
    for sel in sels:
        pause()
        patterns.append(SelectorPatterns(*strings(sel, "'selectors' entry", 4)))
    ks_class = arg.get("class", "*")
    skip_name = arg.get("skip_name")
    if type(ks_class) is not str or (skip_name is not None and type(skip_name) is not str):
        raise KstatError(errno.EINVAL, "arguments 'class' and 'skip_name' must be strings")
    types = arg.get("types")
    if types is not None:
        if not isinstance(types, list) or not all(type(t) is int for t in types):
            raise KstatError(errno.EINVAL, "argument 'types' must be an array of integers")
        types = frozenset(types)
    size = sum(len(t.encode("utf-8", "surrogatepass")) for sel in sels for t in sel)
    if size > MAX_SELECT_PATTERN_BYTES:
        raise KstatError(errno.E2BIG, f"{size} bytes of patterns in one SELECT; at most {MAX_SELECT_PATTERN_BYTES}")
    # A client's regular expression could backtrack for minutes with the GIL held,
    # stalling every reader: kstatd matches globs only (linear, select.py) and a
    # client matches its own /regex/ (docs/PROTOCOL.md §9.2).
    texts = [t for sel in sels for t in sel] + [ks_class] + ([skip_name] if skip_name is not None else [])
    if any(is_regex(t) for t in texts):
        raise KstatError(errno.EINVAL, "KSTATPY_IOC_SELECT takes globs only: a client matches its own /regex/")
    return Selection(patterns, ks_class, skip_name, types)


class IoctlHandler:
    """Answers the ioctls of docs/PROTOCOL.md §4 and §7 against one chain.

    :param chain: the chain to serve.
    :param providers: offered the ioctls outside 0x4B00-0x4BFF (None: EINVAL for them).
    :param refresh: called before every chain-id query and KID 0 read so providers
        reconcile lazily (default: ``providers.refresh(chain)`` when providers given).
    :param server: the ``server`` string of KSTATPY_IOC_HELLO.
    """

    def __init__(
        self,
        chain: Chain,
        providers: Providers | None = None,
        refresh: Callable[[], Any] | None = None,
        server: str = SERVER_NAME,
    ) -> None:
        self.chain = chain
        self.providers = providers
        if refresh is None and providers is not None:

            def refresh() -> None:
                providers.refresh(chain)

        self.refresh = refresh
        self.server = server
        # Deadline support (kstatd): kids whose reader is stuck in ks_update past its
        # deadline answer EAGAIN at once; ``reading`` maps a thread to the kid it reads.
        # The server mutates ``stuck`` under its own lock; each thread writes only its
        # own ``reading`` entry.
        self.stuck: dict[int, int] = {}
        self.reading: dict[int, int] | None = None
        #: kstatd's limits, told in HELLO's "limits" (docs/PROTOCOL.md §9.4); empty in-process.
        self.limits: dict[str, int] = {}
        #: Byte budget of one READ_MANY, SELECT or DESCRIBE reply (None: unlimited, in-process).
        self.max_reply: int | None = None
        #: Called at the safe points of READ_MANY, SELECT and DESCRIBE, between kstats and
        #: between selectors' compiles, where no chain lock, hold or ks_lock is held
        #: (kstatd: kstatpy.fairness.PrivFirst.checkpoint; in-process: nothing).
        self.pause: Callable[[], None] = _no_pause
        self._table: dict[int, Callable[[Conn, Any], dict[str, Any]]] = {
            _CHAIN_ID: self._chain_id,
            _READ: self._read,
            _WRITE: self._write,
            _HELLO: self._hello,
            _READ_MANY: self._read_many,
            _DESCRIBE: lambda conn, arg: describe_many(
                self.chain, arg, conn.cred.zoneid, self.stuck, self.max_reply, wants_pieces(conn, arg), self.pause
            ),
            _SELECT: self._select,
        }

    def dispatch(self, conn: Conn, cmd: int, arg: Any) -> tuple[int, dict[str, Any]]:
        """Run one ioctl for ``conn``: ``(0, result)`` or ``(errno, {"error": ...})``.

        :raises BadTrap: a provider touched freed memory (a panic).
        """
        try:
            fn = self._table.get(cmd)
            if fn is not None:
                return 0, fn(conn, arg)
            if cmd in KSTAT_IOC_RANGE:
                return _err(errno.EINVAL, f"unknown kstat ioctl 0x{cmd:x}")
            return self._provider_ioctl(conn, cmd, arg)
        except BadTrap:
            raise
        except KstatError as exc:
            return _err(exc.errno, exc.message, **exc.extra)
        except Exception as exc:
            _ratelog(cmd, ERROR, "ioctl 0x%x failed", cmd, exc_info=True)
            return _err(errno.EIO, f"ioctl 0x{cmd:x} failed: {exc!r}")

    # --- the kstat ioctls -----------------------------------------------------

    def _chain_id(self, conn: Conn, arg: Any) -> dict[str, Any]:
        if self.refresh is not None:
            self.refresh()
        return {"kcid": self.chain.chain_id}

    def _read(self, conn: Conn, arg: Any) -> dict[str, Any]:
        kid = arg.get("kid") if type(arg) is dict else None
        data_size = arg.get("data_size") if type(arg) is dict else None
        if type(kid) is not int or (data_size is not None and (type(data_size) is not int or data_size < 0)):
            kid = _int_arg(arg, "kid")  # raises the argument's EINVAL
            data_size = _opt_int_arg(arg, "data_size")
            if data_size is not None and data_size < 0:
                raise KstatError(errno.EINVAL, "argument 'data_size' must not be negative")
        if kid == 0 and self.refresh is not None:
            self.refresh()
        kstat = self._read_one(kid, conn.cred.zoneid, data_size)
        return {"kcid": self.chain.chain_id, "kstat": kstat}

    def _read_one(self, kid: int, zoneid: int, data_size: int | None = None) -> dict[str, Any]:
        if kid in self.stuck:
            raise KstatError(errno.EAGAIN, f"kid {kid}: another reader is stuck in its ks_update")
        reading = self.reading
        if reading is None:
            return read_kstat_data(self.chain, kid, zoneid, data_size)
        tid = get_ident()
        reading[tid] = kid
        try:
            return read_kstat_data(self.chain, kid, zoneid, data_size)
        finally:
            reading.pop(tid, None)

    def _write(self, conn: Conn, arg: Any) -> dict[str, Any]:
        cred = conn.cred
        if not cred.privileged:  # checked first, before the argument is looked at
            raise KstatError(errno.EPERM, "write needs privilege (PRIV_SYS_CONFIG)")
        kid = _int_arg(arg, "kid")
        ndata = _int_arg(arg, "ndata")
        data = arg.get("data")  # type: ignore[union-attr]  # _int_arg proved arg is a map
        kcid = write_kstat_data(self.chain, kid, ndata, data, cred.zoneid, cred.privileged)
        return {"kcid": kcid}

    def _hello(self, conn: Conn, arg: Any) -> dict[str, Any]:
        return {
            "protocol": KSTATPY_PROTOCOL_VERSION,
            "server": self.server,
            "zone": conn.cred.zone,
            "privileged": conn.cred.privileged,
            "limits": self.limits,
        }

    def _read_many(self, conn: Conn, arg: Any) -> dict[str, Any]:
        kids = None if arg is None else arg.get("kids")
        if not isinstance(kids, list):
            raise KstatError(errno.EINVAL, "argument 'kids' must be an array of integers")
        if len(kids) > MAX_READ_MANY:
            raise KstatError(errno.E2BIG, f"{len(kids)} kids in one READ_MANY; at most {MAX_READ_MANY}")
        zoneid = conn.cred.zoneid
        if self.refresh is not None and 0 in kids:
            self.refresh()
        if wants_pieces(conn, arg):  # read as the reply is sent (docs/PROTOCOL.md §9.8)
            lazy = lazy_read_many(kids, zoneid, self._read_one, self.max_reply, ENTRY_CHARGE)
            return {"kcid": self.chain.chain_id, "results": lazy}
        results: list[list[Any]] | PackedResults = PackedResults() if conn.packed else []
        append = results.append
        read_one = self._read_one
        # Bounded work (docs/PROTOCOL.md §9.4): entries are charged their data_size; once the
        # charge passes max_reply every later entry is [E2BIG, nil] (the first is always
        # read), and KID 0 is read once per batch however often it is asked for.
        budget = self.max_reply
        spent = 0
        headers = None
        pause = self.pause
        for kid in kids:
            pause()  # a safe point: no hold between two reads
            if budget is not None and spent >= budget:
                append([errno.E2BIG, None])
                continue
            if type(kid) is not int:
                append([errno.EINVAL, None])
                continue
            try:
                if kid == 0:
                    if headers is None:
                        headers = read_one(0, zoneid)
                    kstat = headers
                else:
                    kstat = read_one(kid, zoneid)
            except BadTrap:
                raise
            except KstatError as exc:
                append([exc.errno, None])
                continue
            spent += kstat["data_size"] + ENTRY_CHARGE
            append([0, kstat])
        return {"kcid": self.chain.chain_id, "results": results}

    def _select(self, conn: Conn, arg: Any) -> dict[str, Any]:
        # docs/PROTOCOL.md §9.2: match in KID order over KID 0's view, then read each kept
        # kstat as READ does (one hold at a time); a failed read answers its header.
        from kstatpy.select import RegexError
        from kstatpy.select import filter_named

        pause = self.pause
        selection = _selection_arg(arg, pause)
        zoneid = conn.cred.zoneid
        if self.refresh is not None:
            self.refresh()
        match = selection.match
        try:
            picked = self.chain.select_headers(
                zoneid,
                lambda k: match(k.ks_module, k.ks_instance, k.ks_name, k.ks_class, k.ks_type),
                selection.exact_keys(),
            )
            if wants_pieces(conn, arg):  # read as the reply is sent (docs/PROTOCOL.md §9.8)
                lazy = lazy_select(picked, zoneid, self._read_one, self.max_reply, ENTRY_CHARGE, filter_named, _NAMED)
                return {"kcid": self.chain.chain_id, "results": lazy}
            results: list[list[Any]] | PackedResults = PackedResults() if conn.packed else []
            append = results.append
            read_one = self._read_one
            # The reply budget of READ_MANY (docs/PROTOCOL.md §9.4): past it, [E2BIG, HEADER].
            budget = self.max_reply
            spent = 0
            for header, stats in picked:
                pause()  # a safe point: no chain lock (select_headers returned), no hold
                if budget is not None and spent >= budget:
                    append([errno.E2BIG, header])
                    continue
                try:
                    kstat = read_one(header["kid"], zoneid)
                except KstatError as exc:
                    append([exc.errno, header])
                    continue
                if stats and kstat["type"] == _NAMED:
                    kstat["data"] = filter_named(kstat["data"], stats)
                kstat["prev_snaptime"] = header["snaptime"]
                spent += kstat["data_size"] + ENTRY_CHARGE
                append([0, kstat])
        except RegexError as exc:
            raise KstatError(errno.EINVAL, f"bad regular expression: {exc}", regerror=str(exc)) from exc
        return {"kcid": self.chain.chain_id, "results": results}

    # --- provider ioctls (docs/PROTOCOL.md §7) ---------------------------------------

    def _provider_ioctl(self, conn: Conn, cmd: int, arg: Any) -> tuple[int, dict[str, Any]]:
        if self.providers is None:
            return _err(errno.EINVAL, f"unknown ioctl 0x{cmd:x}")
        if self.chain.lockhooks:  # a synchronisation point; KMutexes the provider takes are checked
            sync_point(f"ioctl 0x{cmd:x}", self.chain.witness)
        answer = self.providers.ioctl(self.chain, conn, cmd, arg)
        if answer is None:
            return _err(errno.EINVAL, f"unknown ioctl 0x{cmd:x}: no provider claimed it")
        try:
            code, result = answer
        except (TypeError, ValueError):
            return _err(errno.EIO, f"provider answer to ioctl 0x{cmd:x} is not (errno, map): {answer!r}")
        if type(code) is not int or not (result is None or isinstance(result, dict)):
            return _err(errno.EIO, f"provider answer to ioctl 0x{cmd:x} is not (errno, map): {answer!r}")
        result = dict(result or {})
        if code and "error" not in result:
            result["error"] = os.strerror(code)
        return code, result
