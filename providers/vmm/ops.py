"""The vmm driver in one chain: its instance hooks and its soft-state lists.

:class:`VmmOps` is the ``ops`` object of the chain's ``DeviceDriver("vmm")``: it
implements the instance life-cycle hooks (docs/VMM.md §2), and the framework
(``kstatpy.instance``) calls them in the guaranteed order, kstat fini before
destroy, on every path. Per-chain state lives here and in the driver, never in a
module global: ``kstatpy_attach`` builds one VmmOps and one driver per chain.

Who frees what
    ``kstatpy_instance_create`` allocates the soft state and the VM on the debug
    heap and creates the kstats through the instance; ``kstatpy_instance_destroy``
    frees the VM and the soft state; the framework deletes the kstats. On a
    failed create the destroy hook sees whatever was built (soft state without a
    VM, or nothing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any

from kstatpy_providers.vmm.kstats import vmm_kstat_alloc
from kstatpy_providers.vmm.kstats import vmm_kstat_init
from kstatpy_providers.vmm.state import VmmSoftc
from kstatpy_providers.vmm.state import vm_create
from kstatpy_providers.vmm.state import vm_destroy

from kstatpy.hookspecs import hookimpl
from kstatpy.instance import LIVE

if TYPE_CHECKING:
    from kstatpy.chain import Chain
    from kstatpy.instance import DeviceDriver
    from kstatpy.instance import DeviceInstance

__all__ = ["VmmOps"]


class VmmOps:
    """The vmm driver's instance hooks for one chain (``driver.ops``)."""

    def __init__(self) -> None:
        self.driver: DeviceDriver | None = None  # set once, by kstatpy_attach

    @property
    def vmm_list(self) -> list[VmmSoftc]:
        """Soft states of the live VMs (creation order)."""
        if self.driver is None:  # pluggy reads every attribute at registration
            return []
        return [inst.private for inst in self.driver.instances() if not inst.destroying]

    @property
    def vmm_destroy_list(self) -> list[VmmSoftc]:
        """Soft states of VMs destroyed while open, waiting for their last close."""
        if self.driver is None:
            return []
        return [inst.private for inst in self.driver.instances() if inst.destroying and inst.state == LIVE]

    @hookimpl
    def kstatpy_instance_create(self, chain: Chain, inst: DeviceInstance, arg: Any) -> None:
        """vmmdev_do_vm_create after the checks: soft state, kstats, VM, kstat init."""
        sc = chain.kmem.zalloc(VmmSoftc, inst)
        inst.private = sc
        vmm_kstat_alloc(chain, inst, sc)
        sc.vmm_vm = vm_create(chain.kmem, inst.name)
        vmm_kstat_init(chain, sc)

    @hookimpl
    def kstatpy_instance_kstat_fini(self, chain: Chain, inst: DeviceInstance) -> None:
        """The framework deleted the kstats: forget the pointers (vmm_kstat_fini)."""
        sc = inst.private
        if sc is None:  # pre-14281 immediate path: the soft state is gone already
            return
        sc.vmm_kstat_vm = None
        sc.vmm_kstat_vcpu = [None] * len(sc.vmm_kstat_vcpu)

    @hookimpl
    def kstatpy_instance_destroy(self, chain: Chain, inst: DeviceInstance) -> None:
        """vm_destroy, then ddi_soft_state_free."""
        sc = inst.private
        if sc is None:
            return
        inst.private = None
        vm = sc.vmm_vm
        if vm is not None:
            sc.vmm_vm = None
            vm_destroy(chain.kmem, vm)
        chain.kmem.free(sc)
