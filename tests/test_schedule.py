"""Controlled schedules (kstatpy.testing.schedule): one thread at a time, switched at the framework's
synchronisation points in an order drawn from the seed (PCT).

The budgets below are what the measurement in BENCHMARKS.md ("Controlled schedules") supports with
room to spare; a schedule is deterministic, so each test gives the same answer on every run.
"""

from __future__ import annotations

from typing import Any

import kstatpy_providers.vmm.provider as vmm
import pytest

from kstatpy.testing import LifetimeRaceError
from kstatpy.testing.schedule import controlled_race
from kstatpy.testing.schedule import explore
from tests.examples_path import use_examples
from tests.providers_fixture import datalink
from tests.providers_fixture import devices
from tests.test_vmm_race import vmm_cleanup
from tests.test_vmm_race import vmm_operations


def _dls_ops() -> dict[str, Any]:
    def create(ctx: Any) -> None:
        ctx.ioctl(datalink.LINK_CREATE, {"name": "e0"})

    def delete(ctx: Any) -> None:
        ctx.ioctl(datalink.LINK_DELETE, {"name": "e0"})

    return {"create": create, "delete": delete}


def _dls_cleanup(ctx: Any) -> None:
    ctx.ioctl(datalink.LINK_DELETE, {"name": "e0"})


def _dls(order: str, **kwargs: Any) -> dict[str, Any]:
    return {"name": "dls", "cleanup": _dls_cleanup, "config": {"dls_order": order}, "steps": 4, **kwargs}


def test_the_same_seed_replays_the_same_interleaving() -> None:
    runs = [controlled_race(datalink, _dls_ops(), seed=s, **_dls("fixed", steps=8)) for s in (5, 5, 6)]
    a, b, c = (r.schedule.trace for r in runs)
    assert len(a) > 100 and a == b  # every synchronisation point, thread by thread
    assert a != c
    assert {name for name, _ in a} == {"worker0", "worker1", "reader0"}
    kinds = {what.split(" ")[0] for _, what in a}
    assert {"read", "kstat_rele", "kstat_delete", "kmem_free", "ioctl", "mutex_enter", "mutex_exit"} <= kinds, kinds
    vmm_runs = [controlled_race(vmm, vmm_operations(), name="vmm", cleanup=vmm_cleanup, seed=9, steps=6) for _ in (1, 2)]
    assert vmm_runs[0].schedule.trace == vmm_runs[1].schedule.trace


def test_8149_without_the_checker_is_found_as_a_deadlock_and_replays() -> None:
    found = explore(datalink, _dls_ops(), budget=400, seed=0, **_dls("8149"))
    assert found.failed_seed is not None, "the 8149 deadlock was not found in 400 schedules"
    report = found.report
    assert f"seed={found.failed_seed}" in report and "deadlock at step" in report
    assert "kstat_delete: hold of dls:1:link, held by reader" in report
    assert "mutex_enter mutex dls_lock, held by worker" in report and "datalink:link_update+0x" in report
    assert "schedule: depth 2, change points [" in report and "  step 1: " in report
    with pytest.raises(LifetimeRaceError) as again:  # the seed alone replays it
        controlled_race(datalink, _dls_ops(), seed=found.failed_seed, **_dls("8149"))
    assert str(again.value) == report


def test_the_cycle_through_a_shared_ks_lock_is_found_as_a_three_thread_deadlock() -> None:
    found = explore(datalink, _dls_ops(), budget=400, seed=0, **_dls("kslock", readers=2, depth=3))
    assert found.failed_seed is not None, "the ks_lock cycle was not found in 400 schedules"
    report = found.report
    assert "deadlock at step" in report and "kstat_delete: hold of dls:" in report
    assert "mutex_enter mutex dls_stats_lock, held by" in report and "mutex_enter mutex dls_lock, held by" in report


def test_8149_with_the_checker_is_the_cycle_under_a_controlled_schedule() -> None:
    found = explore(datalink, _dls_ops(), budget=400, seed=0, **_dls("8149", audit=True))
    assert found.failed_seed is not None and "(lock order checker)" in found.report, found.report


def test_pre_14281_with_the_audit_off_is_found() -> None:
    config = {"vmm_teardown": "pre-14281"}
    found = explore(vmm, vmm_operations(), budget=100, seed=0, name="vmm", cleanup=vmm_cleanup, config=config, steps=6)
    assert found.failed_seed is not None, "pre-14281 was not found in 100 schedules"
    assert "BAD TRAP" in found.report and "vmm:vmm_kstat_update_vcpu+0x" in found.report
    assert f"seed={found.failed_seed}" in found.report and "schedule: depth 2" in found.report


@pytest.mark.parametrize("audit", [False, True])
def test_the_fixed_orders_pass_the_controlled_schedules(audit: bool) -> None:
    dls = explore(datalink, _dls_ops(), budget=200, seed=0, **_dls("fixed", audit=audit))
    assert dls.failed_seed is None, dls.report
    assert dls.schedules == 200 and min(dls.steps) > 20
    fixed = explore(vmm, vmm_operations(), budget=40, seed=0, name="vmm", cleanup=vmm_cleanup, steps=6, audit=audit)
    assert fixed.failed_seed is None, fixed.report


def test_the_template_provider_passes_the_controlled_schedules() -> None:
    use_examples()
    import kstatpy_provider_template.provider as template

    names = ("w1", "w2")

    def create(ctx: Any) -> None:
        ctx.ioctl(template.WIDGET_CREATE, {"name": ctx.rng.choice(names)})

    def destroy(ctx: Any) -> None:
        ctx.ioctl(template.WIDGET_DESTROY, {"name": ctx.rng.choice(names)})

    def cleanup(ctx: Any) -> None:
        for name in names:
            ctx.ioctl(template.WIDGET_DESTROY, {"name": name})

    ops = {"create": create, "destroy": destroy, "drop": lambda ctx: ctx.reconnect()}
    found = explore(template, ops, budget=50, name="template", cleanup=cleanup, audit=True)
    assert found.failed_seed is None and found.schedules == 50, found.report


def test_a_provider_blocking_outside_the_synchronisation_points_stalls_with_a_report() -> None:
    # DevProvider holds a plain threading.Lock across kstat_install (a synchronisation point):
    # another controlled thread then blocks on that lock where the scheduler cannot see it.
    prov = devices.DevProvider()
    found = explore(prov, devices.operations(prov), budget=200, seed=0, name="dev", cleanup=devices.cleanup(prov), stall=5.0)
    text = found.report
    assert "schedule stalled at step" in text and "has reached no synchronisation point for 5 s" in text
    assert "devices:" in text  # where the stalled thread is blocked, in the provider
