"""The /dev/kstat driver's read and write: ``io/kstat.c`` over a :class:`~kstatpy.chain.Chain`.

One in-process read and write path, used by kstatd and by the embedded ``kstat``
alike: hold, ``ks_lock``, ``ks_update``, snapshot into a plain copy, release. The
copy is made before the hold is released, so encoding and sending happen with no
lock held. Error precedence is that of illumos' read_kstat_data and write_kstat_data (io/kstat.c).
"""

from __future__ import annotations

import errno

from kstatpy.constants import FLAG
from kstatpy.constants import GLOBAL_ZONEID
from kstatpy.constants import KSTAT_READ
from kstatpy.constants import KSTAT_WRITE
from kstatpy.constants import KstatType
from kstatpy.errors import KstatError
from kstatpy.errors import KstatUpdateError
from kstatpy.errors import error_for_errno
from kstatpy.kmem import BadTrap
from kstatpy.kstat import Kstat
from kstatpy.kstat import KstatBuffer
from kstatpy.lazylog import get_logger
from kstatpy.lockorder import lock_enter
from kstatpy.lockorder import lock_exit
from kstatpy.ratelog import WARNING
from kstatpy.ratelog import RateLimitedLog
from kstatpy.write import check_write_data

TYPE_CHECKING = False  # not typing's: kept off the embedded kstat's start-up path
if TYPE_CHECKING:
    from typing import Any

    from kstatpy.chain import Chain

__all__ = ["read_kstat_data", "write_kstat_data"]

log = get_logger(__name__)  # logging is imported on first use
_INVALID = int(FLAG.INVALID)
_ratelog = RateLimitedLog(log)  # a reader repeating a failing read must not flood the log


def _callback_errno(ksp: Kstat, what: str, exc: Exception) -> int:
    # What a provider callback's exception means for this reader: a KstatError is its
    # errno; anything else is EIO (logged at most once a while). Called from the handler
    # around the callback; a BadTrap never comes here: the caller's own handler marks it
    # with the kstat and re-raises it bare, so the panic stack gains no frame.
    if isinstance(exc, KstatError):
        return exc.errno
    _ratelog((what, ksp.ks_module, ksp.ks_name), WARNING, "%s of %s raised %r", what, ksp, exc)
    raise KstatUpdateError(
        errno.EIO, f"{what} of {ksp.ks_module}:{ksp.ks_instance}:{ksp.ks_name} failed: {exc!r}"
    ) from exc


def _provider_call(ksp: Kstat, what: str, fn: Any, *args: Any) -> int:
    # A provider callback off the hot path: its return code, or its exception's errno.
    try:
        rc = fn(ksp, *args)
    except BadTrap as trap:
        trap.ksp = ksp
        raise
    except Exception as exc:
        return _callback_errno(ksp, what, exc)
    return _errno_of(ksp, what, rc) if rc else 0


def _errno_of(ksp: Kstat, what: str, rc: Any) -> int:
    # A callback's non-zero return as an errno (int(rc)); one that is no number is the
    # provider's bug: EIO for this reader, as an exception from the callback would be.
    try:
        return int(rc)
    except Exception as exc:
        return _callback_errno(ksp, what, exc)


def _hold_installed(chain: Chain, kid: int, zoneid: int) -> Kstat:
    # The first steps of write: hold by kid in the caller's zone (ENXIO), refuse an
    # INVALID kstat (EAGAIN). The caller releases the hold.
    ksp = chain.kstat_hold_bykid(kid, zoneid)
    if ksp is None:
        raise error_for_errno(errno.ENXIO, f"kid {kid}: no such kstat")
    if ksp.ks_flags & _INVALID:
        chain.kstat_rele(ksp)
        raise error_for_errno(errno.EAGAIN, f"kid {kid}: kstat not yet installed")
    return ksp


def read_kstat_data(chain: Chain, kid: int, zoneid: int, data_size: int | None) -> dict[str, Any]:
    """KSTAT_IOC_READ (io/kstat.c ``read_kstat_data``), in illumos' order.

    Hold by kid in ``zoneid`` (ENXIO), INVALID (EAGAIN), ``ks_update(READ)`` under
    ``ks_lock`` (its errno, EIO for an exception), ENOMEM when ``data_size`` is
    smaller than the kstat's size (with the needed size, flags, ndata and
    snaptime), then ``ks_snapshot(READ)``. The returned KSTAT map is a plain copy
    made before the hold is released.

    :raises KstatError: with the errno of the first failure.
    :raises BadTrap: a provider touched freed memory (a panic); ``.ksp`` is set.
    """
    # The hot path of every read: the provider callbacks are called from this frame, as
    # illumos' read_kstat_data calls them (panic stacks show it).
    ksp = chain.kstat_hold_bykid(kid, zoneid, "read")
    if ksp is None:
        raise error_for_errno(errno.ENXIO, f"kid {kid}: no such kstat")
    hooks = chain.lockhooks  # the lock-order checker or a controlled scheduler watches ks_lock
    try:
        if ksp.ks_flags & _INVALID:
            raise error_for_errno(errno.EAGAIN, f"kid {kid}: kstat not yet installed")
        lock = ksp.ks_lock
        if lock is not None:
            if hooks:
                lock_enter(chain, lock, ksp)
            else:
                lock.acquire()
        if kid == 0:
            chain.caller.zoneid = zoneid  # KID 0's callbacks filter by the caller's zone
        try:
            try:
                rc = ksp.ks_update(ksp, KSTAT_READ)
            except BadTrap as trap:
                trap.ksp = ksp
                raise
            except Exception as exc:
                rc = _callback_errno(ksp, "ks_update", exc)
            if rc and (rc := _errno_of(ksp, "ks_update", rc)):  # as int(rc or 0): 0.5 is success
                raise error_for_errno(rc, f"ks_update of kid {kid} failed")
            needed = ksp.ks_data_size
            if data_size is not None and data_size < needed:
                raise error_for_errno(
                    errno.ENOMEM,
                    f"kid {kid}: buffer of {data_size} bytes, {needed} needed",
                    data_size=needed,
                    flags=int(ksp.ks_flags),
                    ndata=ksp.ks_ndata,
                    snaptime=ksp.ks_snaptime,
                )
            buf = KstatBuffer()
            try:
                rc = ksp.ks_snapshot(ksp, buf, KSTAT_READ)
            except BadTrap as trap:
                trap.ksp = ksp
                raise
            except Exception as exc:
                rc = _callback_errno(ksp, "ks_snapshot", exc)
            if rc and (rc := _errno_of(ksp, "ks_snapshot", rc)):  # as int(rc or 0): 0.5 is success
                raise error_for_errno(rc, f"ks_snapshot of kid {kid} failed")
            # The HEADER of Kstat.header() plus the data, built as one dict.
            return {
                "kid": ksp.ks_kid,
                "module": ksp.ks_module,
                "instance": ksp.ks_instance,
                "name": ksp.ks_name,
                "class": ksp.ks_class,
                "type": int(ksp.ks_type),
                "flags": int(ksp.ks_flags),
                "ndata": ksp.ks_ndata,
                "data_size": needed,
                "crtime": ksp.ks_crtime,
                "snaptime": ksp.ks_snaptime,
                "data": buf.data,
            }
        finally:
            if kid == 0:
                chain.caller.zoneid = GLOBAL_ZONEID
            if lock is not None:
                if hooks:
                    lock_exit(chain, lock)
                else:
                    lock.release()
    finally:
        chain.kstat_rele(ksp)


def write_kstat_data(chain: Chain, kid: int, ndata: int, data: Any, zoneid: int, privileged: bool) -> int:
    """KSTAT_IOC_WRITE (io/kstat.c ``write_kstat_data``), in illumos' order.

    EPERM (unprivileged, checked first), ENXIO, EAGAIN (INVALID), EACCES (not
    WRITABLE), ``ks_update(READ)``'s error, EINVAL (ndata, names, types, values
    not matching the current data), then ``ks_snapshot(WRITE)`` and
    ``ks_update(WRITE)``. Returns the chain id.
    """
    if not privileged:
        raise error_for_errno(errno.EPERM, "write needs privilege (PRIV_SYS_CONFIG)")
    ksp = _hold_installed(chain, kid, zoneid)
    try:
        if not ksp.ks_flags & FLAG.WRITABLE:
            raise error_for_errno(errno.EACCES, f"kid {kid}: kstat is not writable")
        lock = ksp.ks_lock
        if lock is not None:
            lock_enter(chain, lock, ksp) if chain.lockhooks else lock.acquire()
        try:
            rc = _provider_call(ksp, "ks_update", ksp.ks_update, KSTAT_READ)
            if rc:
                raise error_for_errno(rc, f"ks_update of kid {kid} failed")
            if ndata != ksp.ks_ndata:
                raise error_for_errno(errno.EINVAL, f"kid {kid}: ndata {ndata} != {ksp.ks_ndata}")
            current = KstatBuffer()
            if ksp.ks_type == KstatType.NAMED:
                rc = _provider_call(ksp, "ks_snapshot", ksp.ks_snapshot, current, KSTAT_READ)
                if rc:
                    raise error_for_errno(rc, f"ks_snapshot of kid {kid} failed")
            new = check_write_data(ksp, data, current.data)
            buf = KstatBuffer(new)
            rc = _provider_call(ksp, "ks_snapshot", ksp.ks_snapshot, buf, KSTAT_WRITE)
            if not rc:
                rc = _provider_call(ksp, "ks_update", ksp.ks_update, KSTAT_WRITE)
            if rc:
                raise error_for_errno(rc, f"write of kid {kid} failed")
            return chain.chain_id
        finally:
            if lock is not None:
                lock_exit(chain, lock) if chain.lockhooks else lock.release()
    finally:
        chain.kstat_rele(ksp)
