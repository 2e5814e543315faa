"""The vmm provider's host hooks: attach, detach, ioctls, connection close.

Per chain, ``kstatpy_attach`` builds a :class:`~kstatpy_providers.vmm.ops.VmmOps` and a
``kstatpy.instance.DeviceDriver`` named ``vmm`` (registered with the chain), with the
teardown order of ``chain.config["vmm_teardown"]``: unset or ``"fixed"`` is the
fixed order; ``"pre-14281"`` reproduces illumos bug 14281 for tests and demos.
The other hooks find that driver by chain; nothing is kept in a module global.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING
from typing import Any

from kstatpy_providers.vmm.ioctl import VMM_IOCTLS
from kstatpy_providers.vmm.ioctl import conn_handles
from kstatpy_providers.vmm.ioctl import vmm_ioctl
from kstatpy_providers.vmm.ops import VmmOps
from kstatpy_providers.vmm.state import MAXMIN32
from kstatpy_providers.vmm.state import VMM_MODULE_NAME

from kstatpy.hookspecs import hookimpl
from kstatpy.instance import TEARDOWN_FIXED
from kstatpy.instance import DeviceDriver
from kstatpy.instance import device_driver
from kstatpy.instance import register_driver
from kstatpy.instance import unregister_driver

if TYPE_CHECKING:
    from kstatpy.chain import Chain

#: The kstat modules this provider creates kstats under (kstatpy.epcache: an embedded
#: ``kstat`` whose selectors match none of them does not import this provider).
KSTATPY_MODULES = (VMM_MODULE_NAME,)

__all__ = ["KSTATPY_MODULES", "kstatpy_attach", "kstatpy_conn_close", "kstatpy_detach", "kstatpy_ioctl", "vmm_driver"]


def vmm_driver(chain: Chain) -> DeviceDriver | None:
    """The vmm driver attached to ``chain`` (its ``.ops`` is the VmmOps), or None."""
    return device_driver(chain, VMM_MODULE_NAME)


@hookimpl
def kstatpy_attach(chain: Chain) -> None:
    """Attach the vmm driver to ``chain``; no VM exists until VMM_CREATE_VM."""
    order = chain.config.get("vmm_teardown") or TEARDOWN_FIXED
    ops = VmmOps()
    driver = DeviceDriver(chain, VMM_MODULE_NAME, ops, teardown=order, minors=(1, MAXMIN32))
    ops.driver = driver
    register_driver(driver)


@hookimpl
def kstatpy_detach(chain: Chain) -> None:
    """Tear every VM down (kstats first) and detach the driver."""
    driver = unregister_driver(chain, VMM_MODULE_NAME)
    if driver is not None:
        driver.detach()


@hookimpl
def kstatpy_ioctl(chain: Chain, conn: Any, cmd: int, arg: Any) -> tuple[int, dict[str, Any]] | None:
    """The vmm ioctls of docs/VMM.md §5; None for any other command."""
    if cmd not in VMM_IOCTLS:
        return None
    driver = vmm_driver(chain)
    if driver is None:
        return errno.ENXIO, {"error": "the vmm driver is not attached"}
    return vmm_ioctl(driver, conn, cmd, arg)


@hookimpl
def kstatpy_conn_close(chain: Chain, conn: Any) -> None:
    """Close the connection's VM handles; a last close completes a deferred destroy."""
    driver = vmm_driver(chain)
    if driver is None:
        return
    handles = conn_handles(conn, driver, create=False)
    if handles is not None:
        handles.close_all()
