"""The vmm ioctls (docs/VMM.md §5): argument checks and handlers (numbers: ``vmm_dev``).

Each handler takes the chain's ``DeviceDriver("vmm")``, the caller's connection
and the request's ``arg``, and returns the result map or raises ``KstatError``;
:func:`vmm_ioctl` turns that into ``(errno, result)``. Handles (fds) belong to
the connection: ``conn.state["vmm"]["handles"]`` is a
:class:`kstatpy.handles.DeviceHandles`, closed by ``kstatpy_conn_close``.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING
from typing import Any

from kstatpy_providers.vmm.state import VM_MAX_NAMELEN
from kstatpy_providers.vmm.state import VM_MAXCPU
from kstatpy_providers.vmm.state import VU_MAX
from kstatpy_providers.vmm.state import vcpu_ustate_change
from kstatpy_providers.vmm.vmm_dev import VMM_CLOSE
from kstatpy_providers.vmm.vmm_dev import VMM_CREATE_VM
from kstatpy_providers.vmm.vmm_dev import VMM_DESTROY_VM
from kstatpy_providers.vmm.vmm_dev import VMM_LIST
from kstatpy_providers.vmm.vmm_dev import VMM_OPEN
from kstatpy_providers.vmm.vmm_dev import VMM_VCPU_USTATE

from kstatpy.errors import KstatError
from kstatpy.handles import DeviceHandles
from kstatpy.instance import LIVE

if TYPE_CHECKING:
    from kstatpy.instance import DeviceDriver

__all__ = [
    "VMM_CLOSE",
    "VMM_CREATE_VM",
    "VMM_DESTROY_VM",
    "VMM_IOCTLS",
    "VMM_LIST",
    "VMM_OPEN",
    "VMM_VCPU_USTATE",
    "conn_handles",
    "vmm_ioctl",
]



def conn_handles(conn: Any, driver: DeviceDriver, create: bool = True) -> DeviceHandles | None:
    """The connection's vmm file table (made on first use when ``create``)."""
    state = conn.state.get("vmm")
    if state is None:
        if not create:
            return None
        state = conn.state.setdefault("vmm", {})
    handles = state.get("handles")
    if handles is None and create:
        handles = state["handles"] = DeviceHandles(driver)
    return handles


def _name_arg(arg: Any) -> str:
    # vmmdev_do_vm_create's checks on the name: 1..127 bytes, no '/'.
    name = arg.get("name") if isinstance(arg, dict) else None
    if not isinstance(name, str):
        raise KstatError(errno.EINVAL, "argument 'name' must be a string")
    return name


def _check_new_name(name: str) -> None:
    size = len(name.encode("utf-8", "surrogatepass"))
    if size == 0:
        raise KstatError(errno.EINVAL, "VM name is empty")
    if size >= VM_MAX_NAMELEN:
        raise KstatError(errno.ENAMETOOLONG, f"VM name is {size} bytes; at most {VM_MAX_NAMELEN - 1}")
    if "/" in name:
        raise KstatError(errno.EINVAL, f"VM name {name!r} contains '/'")


def _fd_arg(arg: Any) -> int:
    fd = arg.get("fd") if isinstance(arg, dict) else None
    if type(fd) is not int:
        raise KstatError(errno.EBADF, "argument 'fd' must be an open handle")
    return fd


def _create(driver: DeviceDriver, conn: Any, arg: Any) -> dict[str, Any]:
    _need_privilege(conn, "creating a VM")
    name = _name_arg(arg)
    _check_new_name(name)
    try:
        inst = driver.create(name, conn.cred.zoneid)
    except KstatError as exc:
        if exc.errno == errno.EEXIST:
            raise KstatError(errno.EEXIST, f"VM {name!r} exists") from exc
        raise
    return {"minor": inst.minor}


def _destroy(driver: DeviceDriver, conn: Any, arg: Any) -> dict[str, Any]:
    _need_privilege(conn, "destroying a VM")
    name = _name_arg(arg)
    try:
        driver.destroy(name, conn.cred.zoneid)
    except KstatError as exc:
        if exc.errno == errno.ENOENT:
            raise KstatError(errno.ENOENT, f"no VM {name!r}") from exc
        if exc.errno == errno.EPERM:
            raise KstatError(errno.EPERM, f"VM {name!r} belongs to another zone") from exc
        raise
    return {}


def _need_privilege(conn: Any, what: str) -> None:
    # /dev/vmm/NAME is root-only on illumos: opening a VM, and everything done through
    # its handle, follows the create/destroy rule (zone sockets are never privileged).
    # The message says what grants it (docs/KSTATD.md: who is privileged).
    cred = conn.cred
    if not cred.privileged:
        if cred.zoneid == 0:  # GLOBAL_ZONEID
            how = f"start kstatd with --allow-write {cred.uid} (or --allow-write @GROUP) to grant it"
        else:
            how = f"callers on zone {cred.zone}'s socket never have it; use the global zone's socket"
        raise KstatError(errno.EPERM, f"{what} needs privilege: {how}")


def _open(driver: DeviceDriver, conn: Any, arg: Any) -> dict[str, Any]:
    _need_privilege(conn, "opening a VM")
    name = _name_arg(arg)
    handles = conn_handles(conn, driver)
    assert handles is not None
    try:
        fd = handles.open(name, conn.cred.zoneid)
    except KstatError as exc:
        if exc.errno == errno.ENOENT:
            raise KstatError(errno.ENOENT, f"no VM {name!r}") from exc
        raise
    return {"fd": fd}


def _close(driver: DeviceDriver, conn: Any, arg: Any) -> dict[str, Any]:
    _need_privilege(conn, "closing a VM handle")
    fd = _fd_arg(arg)
    handles = conn_handles(conn, driver, create=False)
    if handles is None:
        raise KstatError(errno.EBADF, f"fd {fd} is not open")
    handles.close(fd)
    return {}


def _vcpu_ustate(driver: DeviceDriver, conn: Any, arg: Any) -> dict[str, Any]:
    _need_privilege(conn, "VMM_VCPU_USTATE")
    fd = _fd_arg(arg)
    handles = conn_handles(conn, driver, create=False)
    if handles is None:
        raise KstatError(errno.EBADF, f"fd {fd} is not open")
    with handles.use(fd) as inst:
        # An open handle keeps the instance (and its VM) from teardown.
        if inst.destroying or inst.state != LIVE:
            raise KstatError(errno.ENXIO, f"VM {inst.name!r} is being destroyed")
        vcpu = arg.get("vcpu")
        state = arg.get("state")
        if type(vcpu) is not int or not 0 <= vcpu < VM_MAXCPU:
            raise KstatError(errno.EINVAL, f"vcpu must be an integer in [0, {VM_MAXCPU})")
        if type(state) is not int or not 0 <= state < VU_MAX:
            raise KstatError(errno.EINVAL, f"state must be an integer in [0, {VU_MAX})")
        vcpu_ustate_change(inst.private.vmm_vm, vcpu, state)
    return {}


def _list(driver: DeviceDriver, conn: Any, arg: Any) -> dict[str, Any]:
    zoneid = conn.cred.zoneid
    vms = [
        {"name": inst.name, "minor": inst.minor, "open": inst.open_count, "destroying": inst.destroying}
        for inst in driver.instances()
        if zoneid == 0 or inst.zoneid == zoneid
    ]
    return {"vms": vms}


_HANDLERS: dict[int, Callable[[DeviceDriver, Any, Any], dict[str, Any]]] = {
    VMM_CREATE_VM: _create,
    VMM_DESTROY_VM: _destroy,
    VMM_OPEN: _open,
    VMM_CLOSE: _close,
    VMM_VCPU_USTATE: _vcpu_ustate,
    VMM_LIST: _list,
}
VMM_IOCTLS = frozenset(_HANDLERS)


def vmm_ioctl(driver: DeviceDriver, conn: Any, cmd: int, arg: Any) -> tuple[int, dict[str, Any]]:
    """Run vmm ioctl ``cmd``: ``(0, result)`` or ``(errno, {"error": message})``."""
    try:
        return 0, _HANDLERS[cmd](driver, conn, arg)
    except KstatError as exc:
        return exc.errno, {"error": exc.message}
