"""providers/vmm/state.py: the VM model's constants, micro-state accounting and soft state (issue 23).

Written for cosmic-ray's survivors (python tests/mutate.py vmm_state, docs/TESTING.md).
"""

from __future__ import annotations

import threading
import time

import kstatpy_providers.vmm.state as st
import pytest
from kstatpy_providers.vmm.state import VM
from kstatpy_providers.vmm.state import VmmSoftc
from kstatpy_providers.vmm.state import vcpu_ustate_change
from kstatpy_providers.vmm.state import vm_create
from kstatpy_providers.vmm.state import vm_destroy

from kstatpy.kmem import Kmem


def test_the_illumos_constants() -> None:
    # sys/vmm.h, sys/vmm_impl.h, sys/vmm_kernel.h (enum vcpu_ustate, vmm_softc_t flags).
    assert (st.VMM_MODULE_NAME, st.VMM_KSTAT_CLASS) == ("vmm", "misc")
    assert (st.VM_MAXCPU, st.VM_MAX_NAMELEN, st.MAXMIN32) == (32, 128, 0x3FFFF)
    assert (st.VU_INIT, st.VU_RUN, st.VU_IDLE, st.VU_EMU_KERN, st.VU_EMU_USER, st.VU_SCHED, st.VU_MAX) == (
        0, 1, 2, 3, 4, 5, 6)  # fmt: skip
    assert st.USTATE_NAMES == ("init", "run", "idle", "emu_kern", "emu_user", "sched")
    assert (st.VMM_HELD, st.VMM_CLEANUP, st.VMM_PURGED, st.VMM_BLOCK_HOOK, st.VMM_DESTROY) == (1, 2, 4, 8, 16)


def test_a_new_vm_has_its_vcpus_in_init_since_now() -> None:
    before = time.monotonic_ns()
    vm = VM("web", maxcpus=3)
    after = time.monotonic_ns()
    assert (vm.name, vm.maxcpus, len(vm.vcpu)) == ("web", 3, 3)
    for i, vcpu in enumerate(vm.vcpu):
        assert (vcpu.vcpuid, vcpu.ustate, vcpu.ustate_total) == (i, st.VU_INIT, [0] * st.VU_MAX)
        assert before <= vcpu.ustate_when <= after
        assert isinstance(vcpu.lock, type(threading.Lock()))
    assert VM("x").maxcpus == st.VM_MAXCPU == len(VM("x").vcpu)


def test_ustate_changes_charge_the_state_left() -> None:
    vm = VM("web", maxcpus=2)
    vcpu = vm.vcpu[1]
    start = vcpu.ustate_when
    vcpu_ustate_change(vm, 1, st.VU_RUN)
    t1 = vcpu.ustate_when
    assert vcpu.ustate == st.VU_RUN and t1 >= start
    assert vcpu.ustate_total == [t1 - start, 0, 0, 0, 0, 0]
    vcpu_ustate_change(vm, 1, st.VU_RUN)  # no change: nothing charged, the interval goes on
    assert (vcpu.ustate_when, vcpu.ustate_total[st.VU_RUN]) == (t1, 0)
    vcpu_ustate_change(vm, 1, st.VU_SCHED)
    t2 = vcpu.ustate_when
    assert vcpu.ustate_total == [t1 - start, t2 - t1, 0, 0, 0, 0] and vcpu.ustate == st.VU_SCHED
    assert vm.vcpu[0].ustate == st.VU_INIT  # only that vCPU


def test_an_interval_is_charged_whatever_the_clock_read_at_its_start() -> None:
    vm = VM("web", maxcpus=1)
    vcpu = vm.vcpu[0]
    vcpu.ustate_when = 1000  # entered 1 us after boot: now is far more than twice that
    vcpu_ustate_change(vm, 0, st.VU_RUN)
    assert vcpu.ustate_total[st.VU_INIT] == vcpu.ustate_when - 1000


def test_the_heap_sizes_the_reports_show() -> None:
    # kmem_free(addr, 28672) in docs/DEBUGGING.md's and docs/KMEM.md's walkthroughs.
    assert (VM.kmem_size, VmmSoftc.kmem_size) == (0x7000, 0x1A0)


@pytest.mark.parametrize("bad", [-1, st.VU_MAX, 99])
def test_a_bad_ustate_is_refused(bad: int) -> None:
    vm = VM("web", maxcpus=1)
    with pytest.raises(ValueError, match=f"bad state {bad}"):
        vcpu_ustate_change(vm, 0, bad)
    assert vm.vcpu[0].ustate == st.VU_INIT


@pytest.mark.parametrize("edge", [st.VU_INIT + 1, st.VU_MAX - 1])
def test_the_edge_ustates_are_accepted(edge: int) -> None:
    vm = VM("web", maxcpus=1)
    vcpu_ustate_change(vm, 0, edge)
    assert vm.vcpu[0].ustate == edge
    vcpu_ustate_change(vm, 0, st.VU_INIT)
    assert vm.vcpu[0].ustate == st.VU_INIT


def test_vm_create_and_destroy_use_the_debug_heap() -> None:
    kmem = Kmem()
    vm = vm_create(kmem, "db")
    assert isinstance(vm, VM) and vm.name == "db" and not kmem.is_freed(vm)
    vm_destroy(kmem, vm)
    assert kmem.is_freed(vm)


class Inst:
    def __init__(self) -> None:
        self.name, self.minor, self.zoneid = "web", 7, 3
        self.open_count, self.destroying = 0, False


def test_the_soft_state_reads_open_count_and_destroy_from_the_instance() -> None:
    inst = Inst()
    sc = VmmSoftc(inst)  # type: ignore[arg-type]
    assert (sc.vmm_name, sc.vmm_minor, sc.vmm_zoneid, sc.vmm_inst) == ("web", 7, 3, inst)
    assert (sc.vmm_vm, sc.vmm_kstat_vm, sc.vmm_kstat_vcpu) == (None, None, [None] * st.VM_MAXCPU)
    assert (sc.vmm_is_open, sc.vmm_flags) == (0, 0)
    inst.open_count, inst.destroying = 2, True
    assert (sc.vmm_is_open, sc.vmm_flags) == (2, st.VMM_DESTROY)
    assert repr(sc) == "<vmm_softc_t 'web' minor 7>"
