"""Device instances: the framework's half of a driver instance's life cycle.

This module owns the order of the create / kstat fini / destroy steps of an
instance (docs/VMM.md §2, the fix of illumos 14281), so that a provider cannot free
state that a live kstat points at by forgetting a call.

Model
    A :class:`DeviceDriver` is one provider's table of instances in one chain
    (illumos: a driver's soft-state anchor, its list of instances and its minor
    id space). A :class:`DeviceInstance` is one instance: a name unique among the
    live instances, a minor number (next-fit from 1), the creating zone, the
    provider's private state (``inst.private``), the kstats created through it, a
    count of open handles and a destroy flag. A connection's file table (fds) on
    one driver is :class:`kstatpy.handles.DeviceHandles`; minors come from an
    :class:`kstatpy.idspace.IdSpace`.

Life cycle (the guarantee)
    create
        ``driver.create(name, zoneid, arg)`` reserves the name and a minor and calls
        ``kstatpy_instance_create(chain, inst, arg)``. The provider creates its
        kstats with ``inst.kstat_create``/``inst.kstat_create_zone`` (recorded by
        the framework), builds ``inst.private`` and installs the kstats. If the hook
        raises, the instance is torn down (below) and the error re-raised.
    teardown, on every path that ends an instance (immediate destroy, last close
    of a destroyed instance, dropped connection, failed create, detach)
        1. ``kstat_delete`` of every kstat created through the instance, in
           creation order. Each waits for the reader holding it, so afterwards no
           ``ks_update`` can reach the private state;
        2. ``kstatpy_instance_kstat_fini(chain, inst)``: providers drop their
           kstat pointers (the kstats are already gone);
        3. ``kstatpy_instance_destroy(chain, inst)``: providers free private state;
        4. the minor returns to the id space.
    destroy
        ``driver.destroy(name)`` takes the instance out of the name table (the name
        is reusable at once). Without open handles it is torn down now; otherwise
        it is marked destroying, kept on the destroy list, and torn down by the
        last close (``DeviceHandles.close`` / ``close_all`` on connection close,
        which call :meth:`DeviceDriver.close`). A destroyed instance stays listed
        by :meth:`DeviceDriver.instances` (``destroying``, state ``teardown``) until
        its teardown has finished: nobody sees it gone while its kstats remain
        (illumos holds ``vmm_mtx`` across the whole teardown).

Legacy order (``teardown="pre-14281"``, off by default)
    Reproduces the bug the fix removed, so tests can prove the debug heap catches
    it: on the immediate path ``kstatpy_instance_destroy`` runs *before* the kstats
    are deleted; on the last-close path they are never deleted (they linger in the
    chain pointing at freed state). Failed create and detach keep the safe order.

Hooks
    The instance hooks are called through the driver's own plugin manager: the
    driver's ops object (the provider's hook implementations for its instances)
    plus listeners added with :meth:`DeviceDriver.add_listener`. No hookimpl
    receives the host's plugin manager, and instance events belong to one driver.

Locking
    ``driver._lock`` (illumos ``vmm_mtx``) guards the name table, the destroy list,
    the id space and every instance's ``state``, ``open_count`` and ``destroying``.
    Hooks and ``kstat_delete`` never run with it held (``kstat_delete`` waits for
    readers). An instance in teardown is in no table, so nothing else reaches it.

Registry
    :func:`register_driver` / :func:`device_driver` find a chain's drivers by name.
    A driver is anchored in ``chain.provider_data`` under its name and holds its
    chain weakly, so a chain and its drivers go together and two chains in one
    process never share one.
"""

from __future__ import annotations

import errno
import logging
import threading
import weakref
from typing import TYPE_CHECKING
from typing import Any

import pluggy

from kstatpy import hookspecs
from kstatpy.constants import ALL_ZONES
from kstatpy.constants import GLOBAL_ZONEID
from kstatpy.errors import KstatError
from kstatpy.idspace import IdSpace

if TYPE_CHECKING:
    from kstatpy.chain import Chain
    from kstatpy.kstat import Kstat

__all__ = [
    "CREATING",
    "GONE",
    "LIVE",
    "TEARDOWN",
    "TEARDOWN_FIXED",
    "TEARDOWN_ORDERS",
    "TEARDOWN_PRE_14281",
    "DeviceDriver",
    "DeviceInstance",
    "device_driver",
    "register_driver",
    "unregister_driver",
]

log = logging.getLogger(__name__)

#: kstat fini, then destroy, on every path (the fix of illumos 14281; the default).
TEARDOWN_FIXED = "fixed"
#: The pre-fix order: destroy before kstat fini; no kstat fini on last close.
TEARDOWN_PRE_14281 = "pre-14281"
TEARDOWN_ORDERS = (TEARDOWN_FIXED, TEARDOWN_PRE_14281)

# Instance states; driver._lock guards transitions.
CREATING = "creating"
LIVE = "live"
TEARDOWN = "teardown"
GONE = "gone"


class DeviceInstance:
    """One instance of a driver. Built only by :meth:`DeviceDriver.create`.

    Fields the provider reads: ``driver``, ``name``, ``minor``, ``zoneid``,
    ``arg``; ``private`` is the provider's (set in ``kstatpy_instance_create``).
    ``open_count``, ``destroying`` and ``state`` are the driver's, under its lock.
    """

    def __init__(self, driver: DeviceDriver, name: str, minor: int, zoneid: int) -> None:
        self.driver = driver
        self.name = name
        self.minor = minor
        self.zoneid = zoneid
        self.private: Any = None
        self.state = CREATING
        self.open_count = 0
        self.destroying = False
        self._kstats: list[Kstat] = []  # created through this instance; deleted by teardown only

    def __repr__(self) -> str:
        return f"<DeviceInstance {self.driver.name}:{self.minor} {self.name!r} {self.state}>"

    @property
    def kstats(self) -> tuple[Kstat, ...]:
        """The kstats created through this instance and not yet deleted."""
        return tuple(self._kstats)

    def kstat_create(
        self, module: str, instance: int, name: str | None, ks_class: str, ks_type: int, ndata: int, flags: int = 0
    ) -> Kstat:
        """kstat_create(9F) on the driver's chain, recorded for teardown."""
        return self.kstat_create_zone(module, instance, name, ks_class, ks_type, ndata, flags, ALL_ZONES)

    def kstat_create_zone(
        self,
        module: str,
        instance: int,
        name: str | None,
        ks_class: str,
        ks_type: int,
        ndata: int,
        flags: int,
        zoneid: int,
    ) -> Kstat:
        """kstat_create_zone(9F) on the driver's chain, recorded for teardown.

        Only during ``kstatpy_instance_create``; the kstat is deleted by the
        framework's teardown, never by the provider.

        :raises KstatCreateError: as ``chain.kstat_create_zone``.
        """
        if self.state != CREATING:
            raise KstatError(errno.EINVAL, f"{self!r}: kstats are created during kstatpy_instance_create only")
        ksp = self.driver.chain.kstat_create_zone(module, instance, name, ks_class, ks_type, ndata, flags, zoneid)
        self._kstats.append(ksp)
        return ksp


class DeviceDriver:
    """One provider's instances in one chain, and the order of their teardown.

    :param chain: the chain the instances' kstats live in.
    :param name: the driver (provider) name, e.g. ``"vmm"``.
    :param ops: the object whose ``@hookimpl`` methods implement the instance hooks.
    :param teardown: :data:`TEARDOWN_FIXED` (default) or :data:`TEARDOWN_PRE_14281`.
    :param minors: the id space's ``(low, high)``; minor 0 is the control node.
    """

    def __init__(
        self,
        chain: Chain,
        name: str,
        ops: object,
        *,
        teardown: str = TEARDOWN_FIXED,
        minors: tuple[int, int] = (1, 0x3FFFF),
    ) -> None:
        if teardown not in TEARDOWN_ORDERS:
            raise ValueError(f"teardown order {teardown!r}: expected one of {', '.join(TEARDOWN_ORDERS)}")
        self._chain = weakref.ref(chain)  # weak: the chain anchors the driver, not the reverse
        self.name = name
        self.ops = ops
        self.teardown_order = teardown
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.pm.register(ops, name=name)
        self._lock = threading.Lock()  # illumos vmm_mtx: tables, ids, instance state/open/destroying
        self.minors = IdSpace(*minors)  # under _lock
        self._live: dict[str, DeviceInstance] = {}  # by name, in creation order; under _lock
        self._creating: set[str] = set()  # names reserved by a create in progress; under _lock
        # Destroyed, not yet gone: open (state LIVE) or in teardown; under _lock.
        self._destroy_list: list[DeviceInstance] = []

    @property
    def chain(self) -> Chain:
        """The chain the instances' kstats live in."""
        chain = self._chain()
        if chain is None:
            raise KstatError(errno.ENXIO, f"driver {self.name!r}: its chain is gone")
        return chain

    def add_listener(self, plugin: object, name: str | None = None) -> None:
        """Register another listener of this driver's instance hooks."""
        self.pm.register(plugin, name=name)

    # --- lookups ----------------------------------------------------------------

    def instances(self) -> list[DeviceInstance]:
        """Live instances (creation order), then destroyed ones still open or in teardown."""
        with self._lock:
            return list(self._live.values()) + list(self._destroy_list)

    def lookup(self, name: str) -> DeviceInstance | None:
        """The live instance called ``name``, if any."""
        with self._lock:
            return self._live.get(name)

    # --- create / open / close / destroy -------------------------------------------

    def create(self, name: str, zoneid: int = GLOBAL_ZONEID, arg: Any = None) -> DeviceInstance:
        """Create a live instance: reserve name and minor, then ``kstatpy_instance_create``.

        :raises KstatError: EEXIST when a live instance (or a create in progress)
            has ``name``; ENOMEM when minors are exhausted; whatever the create hook
            raised, after the instance was torn down.
        """
        with self._lock:
            if name in self._live or name in self._creating:
                raise KstatError(errno.EEXIST, f"{self.name}: instance {name!r} exists")
            minor = self.minors.alloc()
            self._creating.add(name)
        inst = DeviceInstance(self, name, minor, zoneid)
        try:
            self.pm.hook.kstatpy_instance_create(chain=self.chain, inst=inst, arg=arg)
        except BaseException:
            with self._lock:
                self._creating.discard(name)
                inst.state = TEARDOWN
            self._teardown(inst, TEARDOWN_FIXED)
            raise
        with self._lock:
            self._creating.discard(name)
            inst.state = LIVE
            self._live[name] = inst
        return inst

    def open(self, name: str, zoneid: int = GLOBAL_ZONEID) -> DeviceInstance:
        """open(9E) of a live instance by name; counts the handle.

        :raises KstatError: ENOENT when no live instance of that name is visible
            from ``zoneid`` (a non-global zone sees only its own).
        """
        with self._lock:
            inst = self._live.get(name)
            if inst is None or not _zone_sees(zoneid, inst):
                raise KstatError(errno.ENOENT, f"{self.name}: no instance {name!r}")
            inst.open_count += 1
            return inst

    def close(self, inst: DeviceInstance) -> None:
        """close(9E) of one handle; the last close of a destroyed instance tears it down."""
        with self._lock:
            if inst.open_count <= 0:
                raise KstatError(errno.EBADF, f"{inst!r} is not open")
            inst.open_count -= 1
            if inst.open_count or not inst.destroying or inst.state != LIVE:
                return
            inst.state = TEARDOWN  # stays on the destroy list until GONE
        self._teardown(inst, self.teardown_order, last_close=True)

    def destroy(self, name: str, zoneid: int = GLOBAL_ZONEID) -> bool:
        """Destroy the live instance ``name``; True when torn down now, False if deferred.

        The name is free for a new instance as soon as this returns.

        :raises KstatError: ENOENT (no such live instance), EPERM (a non-global
            zone destroying another zone's instance).
        """
        with self._lock:
            inst = self._live.get(name)
            if inst is None:
                raise KstatError(errno.ENOENT, f"{self.name}: no instance {name!r}")
            if not _zone_sees(zoneid, inst):
                raise KstatError(errno.EPERM, f"{self.name}: instance {name!r} belongs to another zone")
            del self._live[name]
            inst.destroying = True
            self._destroy_list.append(inst)
            if inst.open_count:
                return False
            inst.state = TEARDOWN
        self._teardown(inst, self.teardown_order)
        return True

    def detach(self) -> None:
        """Tear down every instance, open or not (the host is going away), in the safe order."""
        with self._lock:
            # Instances another thread is tearing down are that thread's.
            doomed = [*self._live.values(), *(i for i in self._destroy_list if i.state == LIVE)]
            self._live.clear()
            for inst in doomed:
                if not inst.destroying:
                    inst.destroying = True
                    self._destroy_list.append(inst)
                inst.state = TEARDOWN
        for inst in doomed:
            self._teardown(inst, TEARDOWN_FIXED)

    # --- teardown: the order this module exists for --------------------------------

    def _teardown(self, inst: DeviceInstance, order: str, last_close: bool = False) -> None:
        # The caller moved inst to TEARDOWN and out of every table under _lock.
        hook = self.pm.hook
        try:
            if order == TEARDOWN_FIXED:
                self._kstat_fini(inst)
                hook.kstatpy_instance_destroy(chain=self.chain, inst=inst)
            elif last_close:
                # pre-14281 vmm_close: destroy, and the kstats stay in the chain.
                hook.kstatpy_instance_destroy(chain=self.chain, inst=inst)
                inst._kstats.clear()
            else:
                # pre-14281 vmm_do_vm_destroy_locked: destroy, then kstat fini.
                hook.kstatpy_instance_destroy(chain=self.chain, inst=inst)
                self._kstat_fini(inst)
        finally:
            with self._lock:
                inst.state = GONE
                if inst.destroying:
                    self._destroy_list.remove(inst)
                self.minors.free(inst.minor)

    def _kstat_fini(self, inst: DeviceInstance) -> None:
        # Each kstat_delete waits for the reader holding that kstat.
        chain = self.chain
        while inst._kstats:
            chain.kstat_delete(inst._kstats.pop(0))
        self.pm.hook.kstatpy_instance_kstat_fini(chain=chain, inst=inst)


def _zone_sees(zoneid: int, inst: DeviceInstance) -> bool:
    return zoneid in (GLOBAL_ZONEID, ALL_ZONES) or zoneid == inst.zoneid


# --- finding a chain's drivers ----------------------------------------------------
# A driver is anchored in chain.provider_data under its name (illumos: the devinfo
# node of the driver), so two chains in one process never share a driver and no
# module-level table exists. The driver holds its chain weakly: no cycle.


def register_driver(driver: DeviceDriver) -> None:
    """Make ``driver`` findable by ``device_driver(chain, name)``.

    :raises KstatError: EEXIST when the chain has a driver of that name already.
    """
    if driver.chain.provider_data.setdefault(driver.name, driver) is not driver:
        raise KstatError(errno.EEXIST, f"driver {driver.name!r} is attached to this chain already")


def device_driver(chain: Chain, name: str) -> DeviceDriver | None:
    """The driver called ``name`` attached to ``chain``, or None."""
    driver = chain.provider_data.get(name)
    return driver if isinstance(driver, DeviceDriver) else None


def unregister_driver(chain: Chain, name: str) -> DeviceDriver | None:
    """Forget the driver called ``name`` on ``chain``; returns it."""
    driver = device_driver(chain, name)
    if driver is not None:
        chain.provider_data.pop(name, None)
    return driver
