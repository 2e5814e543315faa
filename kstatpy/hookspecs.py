"""The provider hooks: markers and every hookspec, nothing else.

A provider is a module or object with ``@hookimpl`` functions, found through the
entry-point group ``kstatpy.providers``. Every hook is called with keyword
arguments; an implementation may take a subset of them. docs/WRITING-PROVIDERS.md's "Provider
hooks" section documents each one (``tests/test_docs.py`` keeps the two in step).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any

import pluggy

if TYPE_CHECKING:
    from kstatpy.chain import Chain

__all__ = ["PROJECT", "hookimpl", "hookspec"]

PROJECT = "kstatpy"
#: Marks a provider's hook implementation.
hookimpl = pluggy.HookimplMarker(PROJECT)
#: Marks a hook specification (kstatpy itself only).
hookspec = pluggy.HookspecMarker(PROJECT)


# --- provider life cycle ----------------------------------------------------


@hookspec
def kstatpy_attach(chain: Chain) -> None:
    """Provider start: create and install the provider's kstats.

    Called once per chain, when the host (kstatd or the embedded ``kstat``) loads
    the providers, in registration order. All results collected (none expected).
    A provider that raises is reported by name and skipped; the others attach.

    :param chain: the chain to ``kstat_create`` / ``kstat_install`` into.
    illumos analogue: attach(9E) calling kstat_create(9F) and kstat_install(9F).
    """


@hookspec
def kstatpy_detach(chain: Chain) -> None:
    """Provider stop: delete every kstat the provider created.

    Called once when the host shuts down, before the chain goes. Each
    ``kstat_delete`` waits for the reader that holds its kstat, so after this hook
    returns no reader can reach the provider's state and it may be freed.

    :param chain: the chain the provider attached to.
    illumos analogue: detach(9E) calling kstat_delete(9F).
    """


@hookspec
def kstatpy_refresh(chain: Chain) -> None:
    """Reconcile kstats with the world before a reader looks at the chain.

    Called when a reader asks for the chain id (``kstat_chain_update``), never by a
    poller, so kstats of CPUs, links or devices that came or went appear and
    disappear when someone looks. Must be cheap when nothing changed.

    :param chain: the chain the provider attached to.
    illumos analogue: a driver's hotplug/DR callbacks creating and deleting kstats.
    """


# --- provider ioctls and connections (kstatd) --------------------------------


@hookspec(firstresult=True)
def kstatpy_ioctl(chain: Chain, conn: Any, cmd: int, arg: Any) -> Any:
    """Answer an ioctl outside the kstat range 0x4B00-0x4BFF (docs/PROTOCOL.md §7).

    Stops at first non-None result. Return ``(errno, result_map)`` to claim the
    command; return None to pass. An exception becomes EIO for that request.

    :param chain: the daemon's chain.
    :param conn: the caller's connection: ``conn.cred`` (uid, gid, pid, zone,
        privileged) and ``conn.state``, a dict private to each provider name.
    :param cmd: the ioctl number.
    :param arg: the request's argument (a map or None), unchecked.
    illumos analogue: a driver's ioctl(9E) entry point.
    """


@hookspec
def kstatpy_conn_close(chain: Chain, conn: Any) -> None:
    """A connection closed, for whatever reason: close what the provider opened on it.

    Called once per connection, after its last request was answered. All results
    collected.

    :param chain: the daemon's chain.
    :param conn: the connection that went (as in :func:`kstatpy_ioctl`).
    illumos analogue: close(9E), the last-close path of a driver.
    """


# --- instance life cycle (kstatpy.instance) ------------------------------------
# Called by kstatpy.instance.DeviceDriver through the driver's own plugin manager
# (the driver's ops object plus listeners added with DeviceDriver.add_listener), in
# an order the framework guarantees on every path that ends an instance:
#     kstat_delete of every kstat created through the instance (waiting for readers),
#     kstatpy_instance_kstat_fini, kstatpy_instance_destroy, then the minor is freed.


@hookspec
def kstatpy_instance_create(chain: Chain, inst: Any, arg: Any) -> None:
    """Build a device instance: its private state and its kstats.

    Called once per instance by ``DeviceDriver.create``, after the framework has
    reserved the instance's name and minor. All results collected (none expected);
    listeners run in pluggy order. Create kstats with ``inst.kstat_create`` or
    ``inst.kstat_create_zone`` (the framework records them and deletes them at
    teardown), keep private state in ``inst.private``, and ``chain.kstat_install``
    the kstats last. Raise to fail the create (a ``KstatError`` carries the errno):
    the framework then runs the full teardown on what was built (kstat fini, then
    :func:`kstatpy_instance_destroy`), frees the minor and re-raises.

    :param chain: the chain the instance's kstats go into.
    :param inst: the new ``DeviceInstance`` (``name``, ``minor``, ``zoneid``).
    :param arg: what the creator passed to ``DeviceDriver.create``, unchecked.
    :returns: nothing.
    illumos analogue: vmmdev_do_vm_create (vmm_kstat_alloc, vm_create, vmm_kstat_init).
    """


@hookspec
def kstatpy_instance_kstat_fini(chain: Chain, inst: Any) -> None:
    """The instance's kstats were deleted: drop every pointer to them.

    Called once per instance, on every teardown path (immediate destroy, last close
    of a destroyed instance, failed create, detach), after the framework deleted
    every kstat created through ``inst``; each ``kstat_delete`` waited for the
    reader holding its kstat, so no ``ks_update`` of the instance runs now or
    later. Always before :func:`kstatpy_instance_destroy` (in the legacy
    ``pre-14281`` order: after it on the immediate path, never on last close).
    All results collected. Must not delete the kstats itself.

    :param chain: the chain the kstats were in.
    :param inst: the ``DeviceInstance`` being torn down; ``inst.kstats`` is empty.
    :returns: nothing.
    illumos analogue: vmm_kstat_fini (kstat_delete of each kstat, NULLing pointers).
    """


@hookspec
def kstatpy_instance_destroy(chain: Chain, inst: Any) -> None:
    """Free the instance's private state; no kstat points at it any more.

    Called once per instance, last, on every teardown path, including a create
    that failed part way (free only what ``inst.private`` holds; it may be None or
    partly built). Runs after :func:`kstatpy_instance_kstat_fini` and without the
    driver's lock; the instance is in no table and has no open handle (detach
    excepted). All results collected. The minor is freed after it returns.

    :param chain: the chain the instance's kstats were in.
    :param inst: the ``DeviceInstance`` being torn down.
    :returns: nothing.
    illumos analogue: vm_destroy and ddi_soft_state_free in vmm_do_vm_destroy_locked
    and vmm_close.
    """
