"""The vmm provider: a model of the bhyve vmm driver's VMs, soft state and kstats.

This package only re-exports. The module is the pluggy plugin (entry point
``vmm = providers.vmm``): its hook implementations live in ``provider``; the
instance life cycle is in ``ops`` (hooks) and ``kstatpy.instance`` (the order).
"""

from __future__ import annotations

from providers.vmm.ioctl import VMM_CLOSE
from providers.vmm.ioctl import VMM_CREATE_VM
from providers.vmm.ioctl import VMM_DESTROY_VM
from providers.vmm.ioctl import VMM_LIST
from providers.vmm.ioctl import VMM_OPEN
from providers.vmm.ioctl import VMM_VCPU_USTATE
from providers.vmm.provider import kstatpy_attach
from providers.vmm.provider import kstatpy_conn_close
from providers.vmm.provider import kstatpy_detach
from providers.vmm.provider import kstatpy_ioctl
from providers.vmm.provider import vmm_driver

__all__ = [
    "VMM_CLOSE",
    "VMM_CREATE_VM",
    "VMM_DESTROY_VM",
    "VMM_LIST",
    "VMM_OPEN",
    "VMM_VCPU_USTATE",
    "kstatpy_attach",
    "kstatpy_conn_close",
    "kstatpy_detach",
    "kstatpy_ioctl",
    "vmm_driver",
]
