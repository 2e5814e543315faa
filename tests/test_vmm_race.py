"""The vmm provider under the lifetime race harness (kstatpy.testing, through its pytest plugin).

docs/VMM.md §6's operations (create, open, drive a vCPU, destroy, close, drop the
connection) run in seeded random order on 3 connections while 4 readers and the
workers' sweeps read every vmm kstat: the fixed order passes; pre-14281 fails, at
the free with the audit on, and at a read of a lingering kstat with it off.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

import kstatpy_providers.vmm.ioctl as ioc
import kstatpy_providers.vmm.provider as vmm
import pytest

from kstatpy.errors import KstatError
from kstatpy.testing import LifetimeRaceError


def ok(code: int, result: dict[str, Any], allowed: tuple[int, ...] = ()) -> dict[str, Any]:
    """An ioctl answer as an operation sees it: a refusal becomes a KstatError (counted, not a failure)."""
    if code and code not in allowed:
        raise KstatError(code, result.get("error", ""))
    return result


VM_NAMES = ("alpha", "beta")


def vmm_operations() -> dict[str, Callable[[Any], Any]]:
    """docs/VMM.md §6's cycle as separate operations: create, open, ustate, destroy, close, drop."""

    def create(ctx: Any) -> None:
        ok(*ctx.ioctl(ioc.VMM_CREATE_VM, {"name": ctx.rng.choice(VM_NAMES)}))

    def open_(ctx: Any) -> None:
        fd = ok(*ctx.ioctl(ioc.VMM_OPEN, {"name": ctx.rng.choice(VM_NAMES)}))["fd"]
        ctx.state.setdefault("fds", []).append(fd)

    def ustate(ctx: Any) -> None:
        fds = ctx.state.get("fds")
        if fds:
            arg = {"fd": ctx.rng.choice(fds), "vcpu": ctx.rng.randrange(32), "state": ctx.rng.randrange(6)}
            ok(*ctx.ioctl(ioc.VMM_VCPU_USTATE, arg))

    def destroy(ctx: Any) -> None:
        ok(*ctx.ioctl(ioc.VMM_DESTROY_VM, {"name": ctx.rng.choice(VM_NAMES)}))

    def close(ctx: Any) -> None:
        fds = ctx.state.get("fds")
        if fds:
            ok(*ctx.ioctl(ioc.VMM_CLOSE, {"fd": fds.pop(ctx.rng.randrange(len(fds)))}))

    def drop(ctx: Any) -> None:  # a client that dies: every handle closes at once
        ctx.reconnect()
        ctx.state["fds"] = []

    return {"create": create, "open": open_, "ustate": ustate, "destroy": destroy, "close": close, "drop": drop}


def vmm_cleanup(ctx: Any) -> None:
    for name in VM_NAMES:
        ok(*ctx.ioctl(ioc.VMM_DESTROY_VM, {"name": name}), allowed=(errno.ENOENT,))


def test_vmm_passes_the_harness(lifetime_race) -> None:
    res = lifetime_race(vmm, vmm_operations(), name="vmm", cleanup=vmm_cleanup, steps=150)
    assert res.ops["create"] > 20 and res.ops["destroy"] > 20, res.ops
    assert set(res.reads) <= {0, errno.ENXIO, errno.EAGAIN} and res.reads[0] > 500, res.reads
    assert any(k.startswith("vmm:") and k.endswith(":vcpu31") for k in res.kstats_seen)


@pytest.mark.parametrize("audit", [True, False])
def test_the_harness_catches_vmm_pre_14281(lifetime_race, audit: bool) -> None:
    with pytest.raises(LifetimeRaceError) as info:
        lifetime_race(
            vmm, vmm_operations(), name="vmm", cleanup=vmm_cleanup, steps=150, audit=audit,
            config={"vmm_teardown": "pre-14281"},
        )  # fmt: skip
    text = str(info.value)
    assert "lifetime race of 'vmm' failed (seed=" in text
    if audit:  # caught at the free, whichever path it took
        assert "kernel memory allocator: buffer freed while referenced" in text and "vmm:vm_destroy+0x" in text
    else:  # caught by a read of a lingering kstat (sweep or reader)
        assert "BAD TRAP: type=e (#pf Page fault)" in text and "vmm:vmm_kstat_update_vcpu+0x" in text
