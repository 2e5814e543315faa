"""The kstat chain: the kernel side of illumos ``uts/common/os/kstat_fr.c``.

Identity and the chain id
    Every kstat has a KID. ``kstat_create`` assigns ``kid = chain_id++`` until the
    kid is unused, so creation bumps the chain id; ``kstat_install`` does not;
    deleting a non-persistent kstat bumps it by one; ``kstat_zone_add`` and
    ``kstat_zone_remove`` bump it by one. KID 0 is ``unix:0:kstat_headers``, KID 1
    ``unix:0:kstat_types``. KIDs only grow, so the KID index iterates in KID order.

Locking
    ``_lock`` (the chain lock, illumos ``kstat_chain_lock``) guards both indexes, the
    chain id, every header field the framework changes, and each kstat's hold
    (``e_owner``). It is also ``ks_lock`` of KID 0, so a header list is consistent.
    A hold is exclusive per kstat, readers included. Lock order: hold (chain lock
    briefly), then ``ks_lock``. Nobody calls a provider with the chain lock held,
    except KID 0's own update and snapshot. The chain lock also guards ``waits``
    (who waits for which hold, since when: kstatd's deadman reads it). With the
    lock-order checker on (``kmem.witness``, :mod:`kstatpy.lockorder`), every hold is
    checked before the thread takes or waits for it, and forgotten at its release.

Lifecycle
    ``kstat_create`` returns an INVALID kstat already in both indexes: readers get
    EAGAIN and the header list hides it. ``kstat_install`` clears INVALID.
    ``kstat_delete`` takes the hold, so it waits for the reader that holds the kstat;
    readers waiting for the hold then find nothing (ENXIO). After it returns no
    reader will call ``ks_update`` again, and the kstat's memory is freed (on the
    debug heap: any later touch traps). A PERSISTENT kstat goes DORMANT instead.

Zones
    A kstat is visible in zone z when z is ALL_ZONES or its zone list holds z or
    ALL_ZONES. A global-zone reader passes GLOBAL_ZONEID, not ALL_ZONES.

Neighbours
    KID 0 and KID 1 are built by ``headers.py``; the records by ``records.py``; the
    ioctl read and write paths (``read_kstat_data``, ``write_kstat_data``) by
    ``driver.py``, which sits above the chain: the chain never calls the driver.

Size
    Over 400 lines on purpose: every method here takes or relies on the chain lock,
    and that lock's contract (above) is easiest to check with all its users in one
    file. What does not take the lock lives in the neighbours.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Iterable

from kstatpy.constants import ALL_ZONES
from kstatpy.constants import FLAG
from kstatpy.constants import GLOBAL_ZONEID
from kstatpy.constants import KSTAT_NUM_TYPES
from kstatpy.constants import KSTAT_READ
from kstatpy.constants import KSTAT_WRITE
from kstatpy.constants import RECORD_SIZE
from kstatpy.constants import KstatDataType
from kstatpy.constants import KstatType
from kstatpy.errors import KstatCreateError
from kstatpy.errors import KstatFatalError
from kstatpy.headers import install_well_known
from kstatpy.kmem import Kmem
from kstatpy.kmem import kmem_alloc_time
from kstatpy.kstat import Kstat
from kstatpy.kstat import default_kstat_snapshot
from kstatpy.kstat import lock_held_by_caller
from kstatpy.lazylog import get_logger
from kstatpy.lockorder import curthread
from kstatpy.lockorder import kstat_label
from kstatpy.records import KstatIntr
from kstatpy.records import KstatIO
from kstatpy.records import KstatNamed
from kstatpy.records import KstatTimer
from kstatpy.records import truncate_name

TYPE_CHECKING = False  # not typing's: kept off the embedded kstat's start-up path
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Chain"]

log = get_logger(__name__)  # logging is imported on first use

INT_MAX = 2**31 - 1

_NDATA_RANGE = {
    KstatType.RAW: (0, INT_MAX),
    KstatType.NAMED: (0, INT_MAX),
    KstatType.INTR: (1, 1),
    KstatType.IO: (1, 1),
    KstatType.TIMER: (0, INT_MAX),
}


def _zone_find(ksp: Kstat, zoneid: int) -> bool:
    # kstat_zone_find
    zones = ksp.e_zones
    return zoneid == ALL_ZONES or ALL_ZONES in zones or zoneid in zones


def _zones_overlap(a: list[int], b: list[int]) -> bool:
    return ALL_ZONES in a or ALL_ZONES in b or not set(a).isdisjoint(b)


def _alloc_data(ks_type: int, ndata: int) -> Any:
    if ks_type == KstatType.NAMED:
        data: list[Any] = [None] * ndata  # exact size: a comprehension over-allocates by up to 1/8 + 6
        for i in range(ndata):
            data[i] = KstatNamed()
        return data
    if ks_type == KstatType.RAW:
        return bytearray(ndata)
    if ks_type == KstatType.INTR:
        return [KstatIntr()]
    if ks_type == KstatType.IO:
        return [KstatIO()]
    return [KstatTimer() for _ in range(ndata)]


class Chain:
    """The registry of kstats (the kernel's chain). Build one per "kernel".

    :param kmem: the debug heap kstats (and providers' private state) live on.
    :param config: host options providers may read (e.g. ``{"vmm_teardown": "pre-14281"}``
        from ``kstatd --vmm-teardown``); read-only after attach.
    """

    def __init__(self, kmem: Kmem | None = None, config: dict[str, Any] | None = None) -> None:
        self.kmem = kmem if kmem is not None else Kmem()
        self.config: dict[str, Any] = dict(config or {})
        #: Per-provider state anchored on this chain (illumos: a driver's soft-state
        #: anchor), keyed by provider name. A provider sets its entry in attach and
        #: pops it in detach; no provider keeps chain state in a module global.
        self.provider_data: dict[str, Any] = {}
        self._lock = threading.Lock()  # the chain lock: indexes, chain id, holds
        #: The chain lock, for KID 0's ``ks_lock`` (headers.py); nobody else takes it.
        self.lock = self._lock
        self._by_kid: dict[int, Kstat] = {}
        self._by_name: dict[tuple[str, int, str], list[Kstat]] = {}
        self._chain_id = 0
        #: ``.zoneid``: the reading thread's zone (curproc's zone), set by the driver
        #: around KID 0's update and snapshot.
        self.caller = threading.local()
        #: The lock-order checker (``kmem.witness``, on with the reference audit), or None.
        self.witness = self.kmem.witness
        #: Holds and ks_locks go through the checker or a controlled scheduler (the slow
        #: path); set when either is on (the race harness sets it for its scheduler).
        self.lockhooks = self.witness is not None
        #: Threads waiting for a hold: thread id -> (kstat, why, since: monotonic s);
        #: the chain lock guards it. kstatd's deadman reads it (kstatpy.deadman).
        self.waits: dict[int, tuple[Kstat, str, float]] = {}
        install_well_known(self)

    # --- identity -----------------------------------------------------------

    @property
    def chain_id(self) -> int:
        """KSTAT_IOC_CHAIN_ID: the current chain id (global, not per zone)."""
        return self._chain_id

    def __len__(self) -> int:
        return len(self._by_kid)

    # KID 0: ks_lock is the chain lock, so this runs with it held (headers.py).
    def visible_headers(self, zoneid: int) -> list[Kstat]:
        """The installed kstats visible in ``zoneid``, in KID order. Chain lock held."""
        return [
            k for k in self._by_kid.values() if not k.ks_flags & FLAG.INVALID and _zone_find(k, zoneid)
        ]

    def caller_zone(self) -> int:
        """The zone of the thread reading (illumos: curproc's zone); global by default."""
        return getattr(self.caller, "zoneid", GLOBAL_ZONEID)

    # --- holds (kstat_hold_bykid / kstat_hold_byname / kstat_rele) ----------

    def _hold(self, find: Any, why: str = "kstat_hold") -> Kstat | None:
        # Take the exclusive hold of what find() returns; after a wait, find again
        # from scratch: the kstat may have been deleted meanwhile. The checker sees
        # the order before the thread waits; a controlled thread waits through its
        # scheduler, with the chain lock dropped. A waiter is in self.waits. kstat_install's
        # hold orders nothing: an INVALID kstat has no reader in ks_update to wait for.
        # No barging: a newcomer waits behind the threads already waiting (it takes a
        # free hold only when none waits), so readers re-holding in a loop cannot starve
        # a waiting kstat_delete (it stalled a stress run for 300 s). A controlled thread
        # is exempt: its scheduler orders the waiters.
        me = threading.get_ident()
        w = self.witness
        st = curthread.st if self.lockhooks else None
        sched = st.sched if st is not None else None
        if sched is not None:
            sched.point(why)
        checked = None
        waited = sched is not None
        with self._lock:
            while True:
                ksp = find()
                if ksp is None:
                    if sched is not None and checked is not None:
                        sched.progress()  # a waiter leaves a deleted kstat: its kstat_delete may go on
                    return None
                if ksp is not checked:
                    if w is not None and why != "kstat_install":
                        w.check(w.hold_class(ksp), why, ksp, ksp)
                    checked = ksp
                if ksp.e_owner is None and (waited or not ksp.e_waiters):
                    ksp.e_owner = me
                    if w is not None:
                        w.push(w.hold_class(ksp), ksp, why)
                    return ksp
                if ksp.e_owner == me:
                    raise KstatFatalError(f"kstat_hold: recursive hold of {ksp!r}")
                cv = ksp.e_cv
                if cv is None:  # made on first contention: most kstats never need one
                    cv = ksp.e_cv = threading.Condition(self._lock)
                ksp.e_waiters += 1
                waited = True
                self.waits[me] = (ksp, why, time.monotonic())
                try:
                    if sched is not None:
                        self._sched_wait(sched, f"{why}: hold of {kstat_label(ksp)}", ksp.e_owner)
                    else:
                        cv.wait()
                finally:
                    self.waits.pop(me, None)
                    ksp.e_waiters -= 1
                    if not ksp.e_waiters:
                        cv.notify_all()  # a kstat_delete may wait for us to let go

    def _sched_wait(self, sched: Any, what: str, owner: int | None) -> None:
        # A controlled thread's wait (chain lock held on entry and on return).
        self._lock.release()
        try:
            sched.block(what, owner)
        finally:
            self._lock.acquire()

    def kstat_hold_bykid(self, kid: int, zoneid: int, why: str = "kstat_hold") -> Kstat | None:
        """Hold the kstat with ``kid`` visible in ``zoneid``; waits for its holder.

        ``why`` names the caller in lock-order reports (``read``, ``kstat_delete``).
        """
        if not self.lockhooks:
            with self._lock:  # the uncontended case, without building a finder
                ksp = self._by_kid.get(kid)
                if ksp is None or not _zone_find(ksp, zoneid):
                    return None
                if ksp.e_owner is None and not ksp.e_waiters:  # else behind the waiters (_hold)
                    ksp.e_owner = threading.get_ident()
                    return ksp

        def find() -> Kstat | None:
            ksp = self._by_kid.get(kid)
            return ksp if ksp is not None and _zone_find(ksp, zoneid) else None

        return self._hold(find, why)

    def kstat_hold_byname(self, module: str, instance: int, name: str, zoneid: int) -> Kstat | None:
        """Hold the kstat named (module, instance, name) visible in ``zoneid``."""
        key = (truncate_name(module), instance, truncate_name(name))

        def find() -> Kstat | None:
            for ksp in self._by_name.get(key, ()):
                if _zone_find(ksp, zoneid):
                    return ksp
            return None

        return self._hold(find)

    def kstat_rele(self, ksp: Kstat) -> None:
        """Release a hold and wake its waiters."""
        with self._lock:
            ksp.e_owner = None
            if ksp.e_waiters:
                assert ksp.e_cv is not None  # made by the first waiter
                ksp.e_cv.notify_all()
        if self.lockhooks:
            self._released(ksp, "kstat_rele")

    def _released(self, ksp: Kstat, what: str) -> None:
        # A hold ends: the checker forgets it; a controlled scheduler may switch.
        if self.witness is not None:
            self.witness.pop(ksp)
        st = curthread.st
        if st is not None and st.sched is not None:
            st.sched.released(what)

    # --- create / install / delete ------------------------------------------

    def kstat_create(
        self,
        ks_module: str,
        ks_instance: int,
        ks_name: str | None,
        ks_class: str,
        ks_type: int,
        ks_ndata: int,
        ks_flags: int = 0,
    ) -> Kstat:
        """kstat_create(9F): a kstat visible in every zone (ALL_ZONES)."""
        return self.kstat_create_zone(ks_module, ks_instance, ks_name, ks_class, ks_type, ks_ndata, ks_flags, ALL_ZONES)

    def kstat_create_zone(
        self,
        ks_module: str,
        ks_instance: int,
        ks_name: str | None,
        ks_class: str,
        ks_type: int,
        ks_ndata: int,
        ks_flags: int,
        ks_zoneid: int,
    ) -> Kstat:
        """kstat_create_zone(9F): allocate an INVALID kstat, or reactivate a dormant one.

        :raises KstatCreateError: with the illumos warning text, where illumos
            returns NULL.
        """
        module = truncate_name(ks_module)
        name = truncate_name(ks_name if ks_name is not None else f"{module}{ks_instance}")
        who = f"kstat_create('{ks_module}', {ks_instance}, '{name}')"
        flags = int(ks_flags)
        if not 0 <= ks_type < KSTAT_NUM_TYPES:
            raise KstatCreateError(errno.EINVAL, f"{who}: invalid kstat type {ks_type}")
        ks_type = KstatType(ks_type)
        if flags & FLAG.PERSISTENT and flags & FLAG.VIRTUAL:
            raise KstatCreateError(errno.EINVAL, f"{who}: cannot create persistent virtual kstat")
        if flags & FLAG.VAR_SIZE and not flags & FLAG.VIRTUAL:
            raise KstatCreateError(errno.EINVAL, f"{who}: cannot create variable-size physical kstat")
        lo, hi = _NDATA_RANGE[ks_type]
        if not lo <= ks_ndata <= hi:
            raise KstatCreateError(errno.EINVAL, f"{who}: ks_ndata={ks_ndata} out of range [{lo}, {hi}]")
        key = (module, ks_instance, name)
        zones = [ks_zoneid]

        if self.witness is not None:  # the chain lock is taken below: any lock held orders before it
            self.witness.check(self.witness.chain_class, f"kstat_create('{module}', {ks_instance}, '{name}')")
        dormant = self._find_dormant(key, zones, who, ks_class, ks_type, ks_ndata, flags)
        if dormant is not None:
            return dormant

        ksp = self.kmem.zalloc(Kstat)
        ksp.ks_crtime = kmem_alloc_time(ksp)  # created when allocated; one int shared with the heap
        ksp.ks_snaptime = ksp.ks_crtime
        ksp.ks_module = module
        ksp.ks_instance = ks_instance
        ksp.ks_name = name
        ksp.ks_class = truncate_name(ks_class)
        ksp.ks_type = ks_type
        ksp.ks_flags = flags | FLAG.INVALID
        ksp.ks_ndata = ks_ndata
        ksp.ks_data_size = RECORD_SIZE[ks_type] * ks_ndata
        ksp.ks_data = None if flags & FLAG.VIRTUAL else _alloc_data(ks_type, ks_ndata)
        ksp.e_zones = zones
        with self._lock:
            collides = self._collides(key, zones) is not None
            if not collides:
                self._insert(ksp, key)
        if collides:  # freed outside the chain lock: kmem_free is a synchronisation point
            self.kmem.free(ksp)
            raise KstatCreateError(errno.EEXIST, f"{who}: namespace collision")
        return ksp

    def _insert(self, ksp: Kstat, key: tuple[str, int, str]) -> None:
        # kstat_create's last step: a KID and both indexes. Chain lock held.
        same = self._by_name.get(key)
        if same is None:
            self._by_name[key] = [ksp]  # exact size: most names have one kstat
        else:
            same.append(ksp)
        kid = self._chain_id
        self._chain_id += 1
        while kid in self._by_kid:
            kid = self._chain_id
            self._chain_id += 1
        ksp.ks_kid = kid
        self._by_kid[kid] = ksp

    def _collides(self, key: tuple[str, int, str], zones: list[int]) -> Kstat | None:
        for other in self._by_name.get(key, ()):
            if _zones_overlap(other.e_zones, zones):
                return other
        return None

    def _find_dormant(
        self, key: tuple[str, int, str], zones: list[int], who: str, ks_class: str, ks_type: int, ndata: int, flags: int
    ) -> Kstat | None:
        # Step 7 of kstat_create: a live kstat collides; a compatible dormant one
        # comes back INVALID with the same kid, crtime and data.
        with self._lock:
            other = self._collides(key, zones)
            if other is None:
                return None
            other_kid = other.ks_kid
        ksp = self._hold(lambda: other if self._by_kid.get(other_kid) is other else None)
        if ksp is None:
            return None
        try:
            if not ksp.ks_flags & FLAG.DORMANT:
                raise KstatCreateError(errno.EEXIST, f"{who}: namespace collision")
            if (
                ksp.ks_class != truncate_name(ks_class)
                or ksp.ks_type != ks_type
                or ksp.ks_ndata != ndata
                or flags & FLAG.VIRTUAL
            ):
                raise KstatCreateError(errno.EINVAL, f"{who}: invalid reactivation of dormant kstat")
            with self._lock:
                ksp.ks_flags |= FLAG.INVALID
            return ksp
        finally:
            self.kstat_rele(ksp)

    def kstat_install(self, ksp: Kstat) -> None:
        """kstat_install(9F): make a created kstat visible (clears INVALID).

        :raises KstatFatalError: VAR_SIZE without ``ks_lock``, or a writable kstat
            with long strings that keeps the default snapshot (illumos panics).
        """
        if ksp.ks_flags & FLAG.VAR_SIZE and ksp.ks_lock is None:
            raise KstatFatalError(
                f"kstat_install('{ksp.ks_module}', {ksp.ks_instance}, '{ksp.ks_name}'): "
                "cannot create variable-size kstat without data lock"
            )
        lock = ksp.ks_lock
        if self.witness is not None and hasattr(lock, "_witness") and lock._witness is None:
            lock._witness = self.witness  # a KMutex ks_lock is checked from here on
        held = self.kstat_hold_bykid(ksp.ks_kid, ksp.e_zones[0], "kstat_install")
        if held is not ksp:
            if held is not None:
                self.kstat_rele(held)
            raise KstatCreateError(errno.ENXIO, f"kstat_install({ksp!r}): does not exist")
        try:
            if ksp.ks_type == KstatType.NAMED and ksp.ks_data is not None:
                if any(knp.data_type == KstatDataType.STRING for knp in ksp.ks_data[: ksp.ks_ndata]):
                    ksp.ks_flags |= FLAG.LONGSTRINGS
                if (
                    ksp.ks_flags & FLAG.LONGSTRINGS
                    and ksp.ks_flags & FLAG.WRITABLE
                    and ksp.ks_snapshot is default_kstat_snapshot
                ):
                    raise KstatFatalError(
                        f"kstat_install('{ksp.ks_module}', {ksp.ks_instance}, '{ksp.ks_name}'): "
                        "cannot create long string kstat with default snapshot and writable"
                    )
            if ksp.ks_flags & FLAG.DORMANT:
                # Reactivation: the provider inherits the values kept while dormant.
                self._call_locked(ksp, lambda: ksp.ks_update(ksp, KSTAT_WRITE))
                ksp.ks_flags &= ~FLAG.DORMANT
            with self._lock:
                ksp.ks_flags &= ~FLAG.INVALID
        finally:
            self.kstat_rele(ksp)

    @staticmethod
    def _call_locked(ksp: Kstat, fn: Any) -> Any:
        lock = ksp.ks_lock
        if lock is None or lock_held_by_caller(lock):
            return fn()
        with lock:
            return fn()

    def kstat_delete(self, ksp: Kstat | None) -> None:
        """kstat_delete(9F): remove a kstat once its current reader is done.

        Blocks until no reader holds it. After it returns, ``ks_update`` is never
        called again and (unless PERSISTENT) the kstat's memory is freed.

        :raises KstatFatalError: the caller holds ``ks_lock`` (illumos panics).
        """
        if ksp is None:
            return
        if lock_held_by_caller(ksp.ks_lock):
            raise KstatFatalError(f"kstat_delete({ksp!r}): caller holds data lock")
        held = self.kstat_hold_bykid(ksp.ks_kid, ksp.e_zones[0], "kstat_delete")
        if held is not ksp:
            if held is not None:
                self.kstat_rele(held)
            log.warning("kstat_delete(%r): does not exist", ksp)
            return
        if ksp.ks_flags & FLAG.PERSISTENT:
            try:
                self._call_locked(ksp, lambda: ksp.ks_update(ksp, KSTAT_READ))
            finally:
                with self._lock:
                    ksp.ks_flags |= FLAG.DORMANT
                    ksp.ks_lock = None
                    ksp.ks_update = _dormant_update
                    ksp.ks_private = None
                    ksp.ks_snapshot = default_kstat_snapshot
                self.kstat_rele(ksp)
            return
        with self._lock:
            del self._by_kid[ksp.ks_kid]
            key = (ksp.ks_module, ksp.ks_instance, ksp.ks_name)
            same = self._by_name[key]
            same.remove(ksp)
            if not same:
                del self._by_name[key]
            self._chain_id += 1
            ksp.e_owner = None
            sched = None
            if self.lockhooks:
                if self.witness is not None:
                    self.witness.pop(ksp)
                st = curthread.st
                sched = st.sched if st is not None else None
            if ksp.e_waiters:
                assert ksp.e_cv is not None  # made by the first waiter
                ksp.e_cv.notify_all()  # waiters re-find and see it gone: ENXIO
                while ksp.e_waiters:  # free only once no waiter will touch it again
                    if sched is not None:
                        sched.progress()  # the waiters may run: they find it gone
                        self._sched_wait(sched, "kstat_delete: waiters leaving", None)
                    else:
                        ksp.e_cv.wait()
        if sched is not None:
            sched.released("kstat_delete: removed")
        self.kmem.free(ksp)

    def kstat_delete_byname(self, ks_module: str, ks_instance: int, ks_name: str) -> None:
        """kstat_delete_byname(9F): delete by name (ALL_ZONES)."""
        self.kstat_delete_byname_zone(ks_module, ks_instance, ks_name, ALL_ZONES)

    def kstat_delete_byname_zone(self, ks_module: str, ks_instance: int, ks_name: str, ks_zoneid: int) -> None:
        """kstat_delete_byname_zone(9F)."""
        ksp = self.kstat_hold_byname(ks_module, ks_instance, ks_name, ks_zoneid)
        if ksp is None:
            return
        self.kstat_rele(ksp)
        self.kstat_delete(ksp)

    # --- zones --------------------------------------------------------------

    def kstat_zone_add(self, ksp: Kstat, zoneid: int) -> None:
        """kstat_zone_add(9F): make ``ksp`` visible in ``zoneid`` too."""
        with self._lock:
            ksp.e_zones.insert(1, zoneid)
            self._chain_id += 1

    def kstat_zone_remove(self, ksp: Kstat, zoneid: int) -> None:
        """kstat_zone_remove(9F): the first entry for ``zoneid`` goes; never the last one."""
        with self._lock:
            if len(ksp.e_zones) <= 1:
                raise KstatFatalError(f"kstat_zone_remove({ksp!r}, {zoneid}): cannot remove the only zone")
            ksp.e_zones.remove(zoneid)
            self._chain_id += 1

    # --- lookups for providers and tests ------------------------------------

    def kstat_lookup_kid(self, kid: int) -> Kstat | None:
        """The kstat with ``kid`` (any zone, any state), without a hold."""
        return self._by_kid.get(kid)

    def kstat_lookup_name(self, module: str, instance: int, name: str, zoneid: int = ALL_ZONES) -> Kstat | None:
        """The kstat named (module, instance, name) visible in ``zoneid``, without a hold."""
        for ksp in self._by_name.get((truncate_name(module), instance, truncate_name(name)), ()):
            if _zone_find(ksp, zoneid):
                return ksp
        return None

    def select_headers(self, zoneid: int, keep: Any, keys: list[tuple[str, int, str]] | None = None) -> list[Any]:
        """KSTATPY_IOC_SELECT's scan: ``(HEADER, keep(ksp))`` of KID 0's view where keep is not False.

        KID 0's view: visible in ``zoneid``, not INVALID, KID order; with ``keys``
        ((module, instance, name) as stored), only those kstats. ``keep`` and the header
        copies run under the chain lock, as KID 0's snapshot does (a kstat may be freed
        the moment the lock drops); ``keep`` must not block or take other locks.
        """
        with self._lock:
            found: Iterable[Kstat]
            if keys is None:
                found = self._by_kid.values()
            else:
                by_kid = {k.ks_kid: k for key in keys for k in self._by_name.get(key, ())}
                found = [by_kid[kid] for kid in sorted(by_kid)]
            out = []
            for k in found:
                if k.ks_flags & FLAG.INVALID or not _zone_find(k, zoneid):
                    continue
                verdict = keep(k)
                if verdict is not False:
                    out.append((k.header(), verdict))
            return out

    def kstats(self) -> list[Kstat]:
        """Every kstat in KID order (a copy), INVALID and DORMANT ones included."""
        with self._lock:
            return list(self._by_kid.values())


def _dormant_update(ksp: Kstat, rw: int) -> int:
    # A dormant kstat's provider is gone: reads see the kept data; the reactivating
    # install's KSTAT_WRITE has nowhere to push it.
    return 0
