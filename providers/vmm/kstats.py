"""The vmm kstats: ``vmm:<minor>:vm`` and ``vmm:<minor>:vcpu0`` .. ``vcpu31``.

Paraphrases ``vmm_kstat_alloc`` / ``vmm_kstat_init`` / ``vmm_kstat_update_vcpu`` of
illumos ``uts/intel/io/vmm/vmm_sol_dev.c``.

Ownership
    The kstats are created through the instance (``inst.kstat_create_zone``), so
    the framework (``kstatpy.instance``) deletes them before the VM is destroyed,
    on every path. Nothing here deletes a kstat. ``ks_private`` of all 33 is the
    VM; ``vmm_kstat_update_vcpu`` reads it, so it must not outlive the VM, and
    that is the framework's guarantee (or, with ``pre-14281``, the bug).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from kstatpy_providers.vmm.state import VM_MAXCPU
from kstatpy_providers.vmm.state import VMM_KSTAT_CLASS
from kstatpy_providers.vmm.state import VMM_MODULE_NAME
from kstatpy_providers.vmm.state import VU_EMU_KERN
from kstatpy_providers.vmm.state import VU_EMU_USER
from kstatpy_providers.vmm.state import VU_IDLE
from kstatpy_providers.vmm.state import VU_INIT
from kstatpy_providers.vmm.state import VU_RUN
from kstatpy_providers.vmm.state import VU_SCHED
from kstatpy_providers.vmm.state import VmmSoftc

from kstatpy.constants import GLOBAL_ZONEID
from kstatpy.constants import KstatDataType
from kstatpy.constants import KstatType
from kstatpy.errors import KstatCreateError
from kstatpy.errors import KstatError
from kstatpy.kstat import Kstat
from kstatpy.metadata import counter
from kstatpy.metadata import identifier
from kstatpy.metadata import kstat_set_meta
from kstatpy.metadata import text
from kstatpy.records import kstat_named_init
from kstatpy.records import kstat_named_setstr

if TYPE_CHECKING:
    from kstatpy.chain import Chain
    from kstatpy.instance import DeviceInstance

__all__ = ["VCPU_FIELDS", "vmm_kstat_alloc", "vmm_kstat_init", "vmm_kstat_update_vcpu"]

#: vmm_vcpu_kstats_t, in record order; the time fields map to VU_* totals.
VCPU_FIELDS = ("vcpu", "time_init", "time_run", "time_idle", "time_emu_kern", "time_emu_user", "time_sched")
_TIME_STATES = (VU_INIT, VU_RUN, VU_IDLE, VU_EMU_KERN, VU_EMU_USER, VU_SCHED)
VM_META = {"vm_name": text("name the VM was created with (vmmctl create NAME)")}
VCPU_META = {
    "vcpu": identifier("vCPU id within the VM"),
    "time_init": counter("ns", "time initialised but never run (VU_INIT)"),
    "time_run": counter("ns", "time in guest context (VU_RUN)"),
    "time_idle": counter("ns", "time halted or waiting for a SIPI (VU_IDLE)"),
    "time_emu_kern": counter("ns", "time emulating in the kernel (VU_EMU_KERN)"),
    "time_emu_user": counter("ns", "time emulating in userspace, outside VM_RUN (VU_EMU_USER)"),
    "time_sched": counter("ns", "time off-CPU: preempted, interrupted, contended (VU_SCHED)"),
}


def vmm_kstat_alloc(chain: Chain, inst: DeviceInstance, sc: VmmSoftc) -> None:
    """Create (not install) ``vm`` and the 32 ``vcpuN`` kstats in the creator's zone.

    A VM made in a non-global zone has the global zone added to every kstat.

    :raises KstatError: ENOMEM when any kstat_create fails (illumos returns -1 and
        the create fails with ENOMEM); the framework deletes what was created.
    """
    minor = inst.minor
    zoneid = inst.zoneid
    try:
        sc.vmm_kstat_vm = inst.kstat_create_zone(
            VMM_MODULE_NAME, minor, "vm", VMM_KSTAT_CLASS, KstatType.NAMED, 1, 0, zoneid
        )
        for i in range(VM_MAXCPU):
            sc.vmm_kstat_vcpu[i] = inst.kstat_create_zone(
                VMM_MODULE_NAME, minor, f"vcpu{i}", VMM_KSTAT_CLASS, KstatType.NAMED, len(VCPU_FIELDS), 0, zoneid
            )
    except KstatCreateError as exc:
        raise KstatError(errno.ENOMEM, f"vmm_kstat_alloc: {exc.message}") from exc
    if zoneid != GLOBAL_ZONEID:
        for ksp in inst.kstats:
            chain.kstat_zone_add(ksp, GLOBAL_ZONEID)


def vmm_kstat_init(chain: Chain, sc: VmmSoftc) -> None:
    """Name the records, point every kstat at the VM, install ``vm`` then the vCPUs."""
    vm = sc.vmm_vm
    if vm is None:
        raise KstatError(errno.EINVAL, f"vmm_kstat_init: {sc!r} has no VM")
    ksp = sc.vmm_kstat_vm
    kstat_named_init(ksp.ks_data[0], "vm_name", KstatDataType.STRING)
    kstat_named_setstr(ksp.ks_data[0], sc.vmm_name)
    kstat_set_meta(ksp, VM_META)
    ksp.ks_private = vm
    chain.kstat_install(ksp)
    for i, ksp in enumerate(sc.vmm_kstat_vcpu):
        records = ksp.ks_data
        kstat_named_init(records[0], "vcpu", KstatDataType.UINT32)
        records[0].value = i
        for knp, field in zip(records[1:], VCPU_FIELDS[1:], strict=True):
            kstat_named_init(knp, field, KstatDataType.UINT64)
        kstat_set_meta(ksp, VCPU_META)
        ksp.ks_private = vm
        ksp.ks_update = vmm_kstat_update_vcpu
        chain.kstat_install(ksp)


def vmm_kstat_update_vcpu(ksp: Kstat, rw: int) -> int:
    """ks_update of ``vmm:<minor>:vcpuN``: copy the vCPU's micro-state totals (rw ignored).

    Reads the VM through ``ks_private``: on a destroyed VM this is the
    use-after-free of illumos 14281, and the debug heap traps (BadTrap).
    """
    vm = ksp.ks_private
    records = ksp.ks_data
    vcpuid = records[0].value
    vcpu = vm.vcpu[vcpuid]
    totals = list(vcpu.ustate_total)
    for knp, state in zip(records[1:], _TIME_STATES, strict=True):
        knp.value = totals[state]
    return 0
