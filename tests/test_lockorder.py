"""The lock-order checker (kstatpy.lockorder): the 8149 order is a report the first time it is made.

The provider is ``tests/providers_fixture/datalink.py`` (illumos 8149's shape and its
fix). Everything here runs in one thread unless it says otherwise: the checker needs
no second thread to see the cycle.
"""

from __future__ import annotations

from typing import Any

import pytest

from kstatpy.chain import Chain
from kstatpy.constants import ALL_ZONES
from kstatpy.constants import KstatIoctl
from kstatpy.driver import read_kstat_data
from kstatpy.ioctl import Conn
from kstatpy.ioctl import Cred
from kstatpy.ioctl import IoctlHandler
from kstatpy.kmem import BadTrap
from kstatpy.kmem import Kmem
from kstatpy.lockorder import LockOrderViolation
from kstatpy.panic import format_panic
from kstatpy.plugins import load_providers
from kstatpy.testing import LifetimeRaceError
from kstatpy.testing import lifetime_race
from tests.providers_fixture import datalink


def _chain(order: str, lockorder: bool | None = None) -> tuple[Chain, Any]:
    chain = Chain(kmem=Kmem(audit=True, lockorder=lockorder), config={"dls_order": order})
    datalink.kstatpy_attach(chain)
    return chain, chain.provider_data["dls"]


def _read_all(chain: Chain) -> None:
    for k in chain.kstats():
        if k.ks_module == "dls":
            read_kstat_data(chain, k.ks_kid, ALL_ZONES, None)


def test_8149_one_read_then_one_delete_in_one_thread_is_the_report() -> None:
    chain, dls = _chain("8149")
    dls.create("etherstub0")
    _read_all(chain)
    with pytest.raises(LockOrderViolation) as info:
        dls.delete("etherstub0")
    trap = info.value
    report = format_panic(trap, chain.kmem)
    first = report.split("\n", 1)[0]
    assert first.endswith(
        "deadlock: lock order reversal: kstat_delete(dls:1:link) while holding mutex dls_lock (lock order checker)"
    ), report
    assert "  mutex dls_lock -> hold dls:*:link\n  hold dls:*:link -> mutex dls_lock\n" in report
    new, old = trap.cycle
    assert "datalink:delete+0x" in "\n".join(new.stack) and "genunix:kstat_delete+0x" in "\n".join(new.stack)
    assert old.what == "mutex_enter(dls_lock)" and old.held == "hold of dls:1:link (read)"
    assert "datalink:link_update+0x" in "\n".join(old.stack) and "kstat:read_kstat_data+0x" in "\n".join(old.stack)
    assert '    ks_name = [ "link" ]' in report  # ::print kstat_t of the kstat being deleted
    assert not dls.lock.held()  # the report unwound the provider's lock: nothing is left held


def test_without_the_checker_the_same_thread_finishes_silently() -> None:
    # What the checker adds: the same calls, checker off, raise nothing (a deadlock waits for a second thread).
    chain, dls = _chain("8149", lockorder=False)
    dls.create("etherstub0")
    _read_all(chain)
    dls.delete("etherstub0")
    assert chain.witness is None


def test_a_cycle_through_a_ks_lock_two_kstats_share() -> None:
    chain, dls = _chain("kslock")
    dls.create("e1")
    _read_all(chain)  # link: hold -> dls_stats_lock -> dls_lock; summary: hold -> dls_stats_lock
    with pytest.raises(LockOrderViolation) as info:
        dls.delete("e1")
    report = format_panic(info.value, chain.kmem)
    assert "kstat_delete(dls:1:summary) while holding mutex dls_lock" in report
    assert "lock order cycle (3 lock classes):" in report
    assert [(e.a.name, e.b.name) for e in info.value.cycle] == [
        ("mutex dls_lock", "hold dls:*:summary"),
        ("hold dls:*:summary", "mutex dls_stats_lock"),
        ("mutex dls_stats_lock", "mutex dls_lock"),
    ]


def test_the_order_is_caught_whichever_comes_first() -> None:
    chain, dls = _chain("8149")
    dls.create("a")
    dls.create("b")
    chain.witness.bind_thread()  # as a provider ioctl's entry does: this thread's KMutexes are seen
    dls.delete("a")  # dls_lock -> hold dls:*:link: one order, no cycle yet
    with pytest.raises(LockOrderViolation) as info:
        _read_all(chain)  # b's reader takes dls_lock in ks_update: the reverse order closes it
    assert info.value.cycle[0].what == "mutex_enter(dls_lock)"
    assert "kstat_delete(dls:1:link)" in info.value.cycle[1].what


def test_a_provider_ioctl_that_deletes_while_a_reader_holds() -> None:
    chain = Chain(kmem=Kmem(audit=True), config={"dls_order": "8149"})
    providers = load_providers(autoload=False, plugins=[("dls", datalink)])
    providers.attach(chain)
    handler = IoctlHandler(chain, providers)
    conn = Conn(Cred(uid=0, privileged=True), id=1)
    assert handler.dispatch(conn, datalink.LINK_CREATE, {"name": "stub0"})[0] == 0
    kid = next(k.ks_kid for k in chain.kstats() if k.ks_name == "link")
    assert handler.dispatch(conn, int(KstatIoctl.READ), {"kid": kid})[0] == 0
    with pytest.raises(BadTrap) as info:  # a panic, as kstatd handles it
        handler.dispatch(conn, datalink.LINK_DELETE, {"name": "stub0"})
    assert isinstance(info.value, LockOrderViolation)
    assert "kstat:_provider_ioctl+0x" in "\n".join(info.value.cycle[0].stack)


def test_the_fixed_order_passes_the_stress_run() -> None:
    res = lifetime_race(datalink, _ops(), name="dls", cleanup=_cleanup, steps=120, config={"dls_order": "fixed"})
    assert res.ops["delete"] > 20 and res.reads[0] > 100


@pytest.mark.parametrize("order", ["8149", "kslock"])
def test_the_stress_run_reports_the_wrong_orders_as_a_cycle(order: str) -> None:
    with pytest.raises(LifetimeRaceError) as info:
        lifetime_race(datalink, _ops(), name="dls", cleanup=_cleanup, steps=120, config={"dls_order": order})
    text = str(info.value)
    assert "(lock order checker)" in text and "lock order cycle" in text and "did not finish" not in text


def _ops() -> dict[str, Any]:
    names = ("e0", "e1")

    def create(ctx: Any) -> None:
        ctx.ioctl(datalink.LINK_CREATE, {"name": ctx.rng.choice(names)})

    def delete(ctx: Any) -> None:
        ctx.ioctl(datalink.LINK_DELETE, {"name": ctx.rng.choice(names)})

    return {"create": create, "delete": delete}


def _cleanup(ctx: Any) -> None:
    for name in ("e0", "e1"):
        ctx.ioctl(datalink.LINK_DELETE, {"name": name})


def test_without_the_checker_the_stress_run_reports_the_deadlock_by_the_deadman() -> None:
    def create(ctx: Any) -> None:
        ctx.ioctl(datalink.LINK_CREATE, {"name": "e0"})

    def delete(ctx: Any) -> None:  # holds dls_lock until a reader is in the link's ks_update
        ctx.ioctl(datalink.LINK_DELETE, {"name": "e0", "wait_reader": 30})

    ops = {"create": create, "delete": delete}
    with pytest.raises(LifetimeRaceError) as info:
        lifetime_race(datalink, ops, name="dls", steps=60, audit=False, deadman=1.0, config={"dls_order": "8149"})
    text = str(info.value)
    assert "deadlock: deadman: kstat_delete has waited" in text and "did not finish" not in text
    assert "blocked at datalink:link_update+0x" in text and "in mutex_enter(dls_lock), held by thread" in text
    assert "race-worker" in text and "race-reader" in text  # both threads, by name
