"""The vmm provider's soft-state lists and kstat fini (providers/vmm/ops.py), for mutants that survived.

cosmic-ray (python tests/mutate.py vmm, docs/TESTING.md): with one VM at a time the
destroy list's filter could read "destroying OR live" (or take a VM in teardown), the
kstat fini hook could be dropped (its pointers then outlive the kstats until the free),
and a connection's close could make the vmm file table it never had, unnoticed.
"""

from __future__ import annotations

from typing import Any

import kstatpy_providers.vmm.ioctl as ioc
import pytest
from kstatpy_providers.vmm.state import VmmSoftc

from tests.test_vmm_lifecycle import Host


@pytest.fixture
def host() -> Host:
    return Host()


def test_the_lists_split_live_vms_from_those_destroyed_while_open(host: Host) -> None:
    admin, guest = host.conn(), host.conn()
    for name in ("live", "held", "gone"):
        host.ok(admin, ioc.VMM_CREATE_VM, {"name": name})
    host.ok(guest, ioc.VMM_OPEN, {"name": "held"})
    sc = {s.vmm_name: s for s in host.driver.ops.vmm_list}
    host.ok(admin, ioc.VMM_DESTROY_VM, {"name": "held"})
    host.ok(admin, ioc.VMM_DESTROY_VM, {"name": "gone"})  # not open: torn down at once
    ops = host.driver.ops
    assert ops.vmm_list == [sc["live"]] and ops.vmm_destroy_list == [sc["held"]]
    host.drop(guest)  # the last close
    assert ops.vmm_list == [sc["live"]] and ops.vmm_destroy_list == []


@pytest.mark.parametrize("open_first", [False, True])
def test_kstat_fini_forgets_the_kstats_before_the_soft_state_is_freed(
    host: Host, monkeypatch: pytest.MonkeyPatch, open_first: bool
) -> None:
    seen: list[tuple[Any, list[Any]]] = []
    free = host.chain.kmem.free

    def recording_free(obj: Any) -> None:
        if isinstance(obj, VmmSoftc):
            seen.append((obj.vmm_kstat_vm, list(obj.vmm_kstat_vcpu)))
            # In teardown: neither live nor waiting for a last close.
            assert host.driver.ops.vmm_list == [] and host.driver.ops.vmm_destroy_list == []
        free(obj)

    monkeypatch.setattr(host.chain.kmem, "free", recording_free)
    admin, guest = host.conn(), host.conn()
    host.ok(admin, ioc.VMM_CREATE_VM, {"name": "a"})
    sc = host.driver.ops.vmm_list[0]
    assert sc.vmm_kstat_vm is not None and all(k is not None for k in sc.vmm_kstat_vcpu)
    nvcpu = len(sc.vmm_kstat_vcpu)  # sc is freed (and poisoned) by the end
    if open_first:
        host.ok(guest, ioc.VMM_OPEN, {"name": "a"})
    host.ok(admin, ioc.VMM_DESTROY_VM, {"name": "a"})
    host.drop(guest)
    assert seen == [(None, [None] * nvcpu)]


def test_closing_a_connection_that_never_opened_a_vm_leaves_no_vmm_state(host: Host) -> None:
    admin, idle = host.conn(), host.conn()
    host.ok(admin, ioc.VMM_CREATE_VM, {"name": "a"})  # create and destroy need no handle
    host.ok(admin, ioc.VMM_DESTROY_VM, {"name": "a"})
    host.drop(admin)
    host.drop(idle)
    assert "vmm" not in admin.state and "vmm" not in idle.state
