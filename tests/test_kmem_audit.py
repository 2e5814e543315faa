"""The reference audit (``Kmem(audit=True)``): a free that a live kstat still points into traps at the free."""

from __future__ import annotations

import errno

import kstatpy_providers.vmm.ioctl as ioc
import kstatpy_providers.vmm.provider as vmm
import pytest
from kstatpy_providers.vmm.state import VM

from kstatpy import constants as c
from kstatpy.chain import Chain
from kstatpy.ioctl import Conn
from kstatpy.ioctl import Cred
from kstatpy.ioctl import IoctlHandler
from kstatpy.kmem import FreeWhileReferenced
from kstatpy.kmem import Kmem
from kstatpy.kmem import KmemObject
from kstatpy.kstat import KMutex
from kstatpy.kstat import KstatNamed
from kstatpy.kstat import kstat_named_init
from kstatpy.panic import format_panic
from kstatpy.plugins import load_providers
from tests.test_vmm_stress import churn


class Softc(KmemObject):
    __slots__ = ("lock", "records", "value")
    kmem_size = 256

    def __init__(self) -> None:
        self.lock = KMutex()
        self.records = [KstatNamed("v", c.KSTAT_DATA_UINT64)]
        self.value = 0


def kstat(chain: Chain, name: str = "k", install: bool = True):
    ksp = chain.kstat_create("m", 0, name, "misc", c.KSTAT_TYPE_NAMED, 1)
    kstat_named_init(ksp.ks_data[0], "v", c.KSTAT_DATA_UINT64)
    if install:
        chain.kstat_install(ksp)
    return ksp


@pytest.fixture
def audited() -> Chain:
    return Chain(kmem=Kmem(audit=True))


@pytest.mark.parametrize(
    ("field", "point"),
    [
        ("ks_private", lambda sc: sc),
        ("ks_private", lambda sc: (sc, 3)),  # a container holding the pointer
        ("ks_lock", lambda sc: sc.lock),  # &sc->lock: embedded in the buffer
        ("ks_private", lambda sc: sc.records[0]),  # interior of an embedded array
    ],
)
def test_free_of_memory_a_kstat_points_into_traps_at_the_free(audited: Chain, field, point) -> None:
    sc = audited.kmem.zalloc(Softc)
    ksp = kstat(audited)
    setattr(ksp, field, point(sc))
    with pytest.raises(FreeWhileReferenced) as info:
        audited.kmem.free(sc)
    trap = info.value
    assert [(r.holder, r.field.split("[")[0]) for r in trap.refs] == [(ksp, field)]
    assert trap.buf.addr == sc.kmem_addr and not trap.buf.freed
    assert sc.value == 0  # refused: the buffer stays allocated and readable
    assert "test_kmem_audit:test_free_of_memory_a_kstat_points_into_traps_at_the_free" in trap.free_stack[0]


def test_virtual_kstat_data_inside_the_buffer_is_a_reference(audited: Chain) -> None:
    sc = audited.kmem.zalloc(Softc)
    ksp = audited.kstat_create("m", 0, "virt", "misc", c.KSTAT_TYPE_NAMED, 1, c.KSTAT_FLAG_VIRTUAL)
    ksp.ks_data = sc.records
    audited.kstat_install(ksp)
    with pytest.raises(FreeWhileReferenced) as info:
        audited.kmem.free(sc)
    assert info.value.refs[0].field == "ks_data"


def test_a_created_not_installed_kstat_counts(audited: Chain) -> None:
    sc = audited.kmem.zalloc(Softc)
    ksp = kstat(audited, install=False)
    ksp.ks_private = sc
    with pytest.raises(FreeWhileReferenced):
        audited.kmem.free(sc)


def test_delete_first_then_free_passes_and_poisons(audited: Chain) -> None:
    sc = audited.kmem.zalloc(Softc)
    ksp = kstat(audited)
    ksp.ks_private = sc
    other = kstat(audited, "other")  # points elsewhere: no effect
    other.ks_private = audited.kmem.zalloc(Softc)
    audited.kstat_delete(ksp)
    audited.kmem.free(sc)
    assert audited.kmem.is_freed(sc)


def test_audit_off_frees_without_looking(chain: Chain) -> None:
    sc = chain.kmem.zalloc(Softc)
    ksp = kstat(chain)
    ksp.ks_private = sc
    chain.kmem.free(sc)  # the bug is made silently; only a read would trap
    assert chain.kmem.is_freed(sc)


def test_the_audit_report_names_the_kstats_and_both_stacks(audited: Chain) -> None:
    sc = audited.kmem.zalloc(Softc)
    ksp = kstat(audited, "pointing")
    ksp.ks_private = sc
    try:
        audited.kmem.free(sc)
    except FreeWhileReferenced as trap:
        report = format_panic(trap, audited.kmem)
    else:
        raise AssertionError("no trap")
    assert "kernel memory allocator: buffer freed while referenced" in report
    assert f"kmem_free(0x{sc.kmem_addr:x}, 256)" in report
    assert "test_kmem_audit:test_the_audit_report_names_the_kstats_and_both_stacks+0x" in report  # the free
    assert f"{ksp.kmem_addr:16x} m" in report and "pointing" in report and "ks_private" in report
    assert "created (kstat_create) at, 1 kstat(s):" in report
    assert "test_kmem_audit:kstat+0x" in report  # the creation stack
    assert f"ks_private = 0x{sc.kmem_addr:x}" in report
    assert "allocated from kmem_alloc_256 (Softc)" in report


# --- the two bugs of illumos 14281, with no reader running ---------------------------


class AuditedVmmHost:
    """The vmm provider on a chain whose heap audits every free; kstatd's dispatch over it."""

    def __init__(self, teardown: str) -> None:
        self.chain = Chain(kmem=Kmem(audit=True), config={"vmm_teardown": teardown})
        self.providers = load_providers(autoload=False, plugins=[("vmm", vmm)])
        assert self.providers.attach(self.chain) == []
        self.handler = IoctlHandler(self.chain, self.providers)
        self.start_kids = self.kids()

    def kids(self) -> set[int]:
        return {k.ks_kid for k in self.chain.kstats()}

    def ok(self, conn: Conn, cmd: int, arg: dict) -> dict:
        code, result = self.handler.dispatch(conn, cmd, arg)
        assert code == 0, result
        return result


def vm_of(trap: FreeWhileReferenced) -> str:
    assert trap.buf is not None
    return trap.buf.type_name


def test_14281_free_before_delete_traps_on_every_destroy() -> None:
    host = AuditedVmmHost("pre-14281")
    root = Conn(Cred(uid=0))
    for i in range(8):
        minor = host.ok(root, ioc.VMM_CREATE_VM, {"name": f"vm{i}"})["minor"]
        with pytest.raises(FreeWhileReferenced) as info:
            host.handler.dispatch(root, ioc.VMM_DESTROY_VM, {"name": f"vm{i}"})
        trap = info.value
        assert vm_of(trap) == VM.__name__
        names = sorted((r.holder.ks_instance, r.holder.ks_name, r.field) for r in trap.refs)
        assert len(names) == 33 and {n[0] for n in names} == {minor} and {n[2] for n in names} == {"ks_private"}
        assert any("vmm:vm_destroy" in s for s in trap.free_stack)


def test_14281_lingering_kstats_trap_at_the_last_close() -> None:
    host = AuditedVmmHost("pre-14281")
    root, guest = Conn(Cred(uid=0)), Conn(Cred(uid=0))
    for i in range(8):
        name = f"vm{i}"
        host.ok(root, ioc.VMM_CREATE_VM, {"name": name})
        fd = host.ok(guest, ioc.VMM_OPEN, {"name": name})["fd"]
        host.ok(root, ioc.VMM_DESTROY_VM, {"name": name})  # deferred: nothing freed yet
        with pytest.raises(FreeWhileReferenced) as info:
            host.handler.dispatch(guest, ioc.VMM_CLOSE, {"fd": fd})
        assert vm_of(info.value) == VM.__name__ and len(info.value.refs) == 33


def test_14281_lingering_kstats_trap_when_the_connection_drops() -> None:
    host = AuditedVmmHost("pre-14281")
    root, guest = Conn(Cred(uid=0)), Conn(Cred(uid=0))
    host.ok(root, ioc.VMM_CREATE_VM, {"name": "web"})
    host.ok(guest, ioc.VMM_OPEN, {"name": "web"})
    host.ok(root, ioc.VMM_DESTROY_VM, {"name": "web"})
    with pytest.raises(FreeWhileReferenced):
        host.providers.conn_close(host.chain, guest)  # kstatd's connection close: a panic, not a log line


def test_the_fixed_order_never_trips_the_audit() -> None:
    host = AuditedVmmHost("fixed")
    root, guest = Conn(Cred(uid=0)), Conn(Cred(uid=0))
    for i in range(8):
        name = f"vm{i % 2}"
        host.ok(root, ioc.VMM_CREATE_VM, {"name": name})
        if i % 2:
            fd = host.ok(guest, ioc.VMM_OPEN, {"name": name})["fd"]
            host.ok(root, ioc.VMM_DESTROY_VM, {"name": name})
            host.ok(guest, ioc.VMM_CLOSE, {"fd": fd})
        else:
            host.ok(root, ioc.VMM_DESTROY_VM, {"name": name})
    assert host.kids() == host.start_kids


class _AuditedConn:
    def __init__(self, host: AuditedVmmHost) -> None:
        self.host = host
        self.conn = Conn(Cred(uid=0))

    def ioctl(self, cmd: int, arg: object) -> tuple[int, object]:
        try:
            return self.host.handler.dispatch(self.conn, cmd, arg)
        except FreeWhileReferenced as trap:
            return -1, format_panic(trap, self.host.chain.kmem)

    def close(self) -> None:
        self.host.providers.conn_close(self.host.chain, self.conn)


def test_vmm_stress_with_the_audit_on_never_traps() -> None:
    # docs/VMM.md §6 in process, every free audited: the fixed order never frees what a kstat points at.
    host = AuditedVmmHost("fixed")
    res = churn(lambda: _AuditedConn(host), cycles=1000)
    assert res.failures == [] and res.panics == [], (res.failures[:3], res.panics[:1])
    assert set(res.reads) <= {0, errno.ENXIO, errno.EAGAIN}, res.reads
    assert res.cycles >= 1000 and res.vcpu_reads_ok > 100, (res.cycles, res.reads)
    assert host.kids() == host.start_kids
