"""The bhyve VM model: ``struct vm``, its vCPUs' micro-states, and ``vmm_softc_t``.

Paraphrases illumos ``uts/intel/io/vmm/vmm.c`` (micro-state accounting) and
``vmm_sol_dev.c`` (soft state); facts and constants only.

Memory
    A :class:`VM` and a :class:`VmmSoftc` live on the chain's debug heap
    (``chain.kmem.zalloc``); :func:`vm_destroy` and the soft-state free poison them,
    so a kstat whose ``ks_private`` still points at a destroyed VM traps on its next
    read instead of returning stale numbers. The vCPUs are embedded in the VM (as
    ``vm->vcpu[]`` is), reached only through it.

Micro-states
    Each vCPU is in one ``VU_*`` state since ``ustate_when``; ``ustate_total[s]``
    holds the completed time in state ``s`` in ns. Only :func:`vcpu_ustate_change`
    changes them, and only completed intervals count: the time in the current
    state shows up at the next transition. ``Vcpu.lock`` serialises changes of one
    vCPU; readers (``ks_update``) copy the totals without it, as illumos does.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING
from typing import Any

from kstatpy.kmem import KmemObject

if TYPE_CHECKING:
    from kstatpy.instance import DeviceInstance
    from kstatpy.kmem import Kmem

__all__ = [
    "MAXMIN32",
    "USTATE_NAMES",
    "VMM_DESTROY",
    "VMM_KSTAT_CLASS",
    "VMM_MODULE_NAME",
    "VM_MAXCPU",
    "VM_MAX_NAMELEN",
    "VU_EMU_KERN",
    "VU_EMU_USER",
    "VU_IDLE",
    "VU_INIT",
    "VU_MAX",
    "VU_RUN",
    "VU_SCHED",
    "VM",
    "Vcpu",
    "VmmSoftc",
    "vcpu_ustate_change",
    "vm_create",
    "vm_destroy",
]

VMM_MODULE_NAME = "vmm"  # sys/vmm_impl.h
VMM_KSTAT_CLASS = "misc"  # sys/vmm_kernel.h
VM_MAXCPU = 32
VM_MAX_NAMELEN = 128  # bytes with the NUL: a name has 1 to 127
MAXMIN32 = 0x3FFFF  # the highest minor of the vmm id space (minor 0 is /dev/vmmctl)

# enum vcpu_ustate
VU_INIT = 0  # initialised, never run
VU_RUN = 1  # in guest context
VU_IDLE = 2  # HLT / wait-for-SIPI
VU_EMU_KERN = 3  # emulation in the kernel
VU_EMU_USER = 4  # emulation in userspace (outside VM_RUN)
VU_SCHED = 5  # off-CPU: preempted, interrupted, lock contention
VU_MAX = 6
USTATE_NAMES = ("init", "run", "idle", "emu_kern", "emu_user", "sched")

# vmm_softc_t flags
VMM_HELD = 1
VMM_CLEANUP = 2
VMM_PURGED = 4
VMM_BLOCK_HOOK = 8
VMM_DESTROY = 16


class Vcpu:
    """One vCPU's micro-state accounting, embedded in its :class:`VM`."""

    __slots__ = ("lock", "ustate", "ustate_total", "ustate_when", "vcpuid")

    def __init__(self, vcpuid: int, now: int) -> None:
        self.vcpuid = vcpuid
        self.lock = threading.Lock()  # serialises vcpu_ustate_change of this vCPU
        self.ustate = VU_INIT
        self.ustate_when = now
        self.ustate_total = [0] * VU_MAX


class VM(KmemObject):
    """struct vm: the name it was created with and ``VM_MAXCPU`` vCPUs."""

    __slots__ = ("maxcpus", "name", "vcpu")
    kmem_size = 0x7000  # about sizeof (struct vm) with its vcpu array

    def __init__(self, name: str, maxcpus: int = VM_MAXCPU) -> None:
        self._kmem_buf = None
        self.name = name
        self.maxcpus = maxcpus
        now = time.monotonic_ns()
        self.vcpu = [Vcpu(i, now) for i in range(maxcpus)]


def vm_create(kmem: Kmem, name: str) -> VM:
    """vm_create: a VM on the debug heap, every vCPU in ``VU_INIT`` since now."""
    return kmem.zalloc(VM, name)


def vm_destroy(kmem: Kmem, vm: VM) -> None:
    """vm_destroy: free the VM; every later touch of it traps."""
    kmem.free(vm)


def vcpu_ustate_change(vm: VM, vcpuid: int, ustate: int) -> None:
    """vcpu_ustate_change: close the interval in the old state, enter ``ustate``.

    A change to the current state does nothing (newer illumos returns early).
    """
    if not 0 <= ustate < VU_MAX:
        raise ValueError(f"vcpu_ustate_change: bad state {ustate}")
    vcpu = vm.vcpu[vcpuid]
    with vcpu.lock:
        if ustate == vcpu.ustate:
            return
        now = time.monotonic_ns()
        vcpu.ustate_total[vcpu.ustate] += now - vcpu.ustate_when
        vcpu.ustate_when = now
        vcpu.ustate = ustate


class VmmSoftc(KmemObject):
    """vmm_softc_t: one VM's soft state, allocated per minor.

    ``vmm_is_open`` (open handles) and ``vmm_flags`` (``VMM_DESTROY``) are read
    from the framework's instance, which owns open counting and deferred destroy.
    """

    __slots__ = ("vmm_inst", "vmm_kstat_vcpu", "vmm_kstat_vm", "vmm_minor", "vmm_name", "vmm_vm", "vmm_zoneid")
    kmem_size = 0x1A0

    def __init__(self, inst: DeviceInstance) -> None:
        self._kmem_buf = None
        self.vmm_name = inst.name
        self.vmm_minor = inst.minor
        self.vmm_zoneid = inst.zoneid
        self.vmm_inst = inst
        self.vmm_vm: VM | None = None
        self.vmm_kstat_vm: Any = None
        self.vmm_kstat_vcpu: list[Any] = [None] * VM_MAXCPU

    @property
    def vmm_is_open(self) -> int:
        """How many handles have the VM's device open."""
        return self.vmm_inst.open_count

    @property
    def vmm_flags(self) -> int:
        """The softc flags: ``VMM_DESTROY`` once destroyed while open."""
        return VMM_DESTROY if self.vmm_inst.destroying else 0

    def __repr__(self) -> str:
        return f"<vmm_softc_t {self.vmm_name!r} minor {self.vmm_minor}>"
