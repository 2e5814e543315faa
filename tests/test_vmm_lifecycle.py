"""The vmm provider in process: ioctls, the VM life cycle, and the teardown order.

Requests go through kstatd's own dispatch (``kstatpy.ioctl.IoctlHandler``) with
real ``Conn``/``Cred`` objects; connection close is ``Providers.conn_close``.
"""

from __future__ import annotations

import errno
import time
from typing import Any

import kstatpy_providers.vmm.ioctl as ioc
import kstatpy_providers.vmm.provider as vmm
import pytest
from kstatpy_providers.vmm.state import VM
from kstatpy_providers.vmm.state import VMM_DESTROY
from kstatpy_providers.vmm.state import VU_IDLE
from kstatpy_providers.vmm.state import VU_RUN

from kstatpy.chain import Chain
from kstatpy.constants import GLOBAL_ZONEID
from kstatpy.constants import KstatType
from kstatpy.errors import KstatError
from kstatpy.hookspecs import hookimpl
from kstatpy.ioctl import Conn
from kstatpy.ioctl import Cred
from kstatpy.ioctl import IoctlHandler
from kstatpy.kmem import BadTrap
from kstatpy.panic import format_panic
from kstatpy.panic import panic_stack
from kstatpy.plugins import load_providers
from tests.chain_io import chain_read

ROOT = Cred(uid=0, privileged=True)
USER = Cred(uid=1000, gid=1000, privileged=False)


class Host:
    """A chain with the vmm provider attached, and kstatd's dispatch over it."""

    def __init__(self, teardown: str | None = None) -> None:
        self.chain = Chain(config={"vmm_teardown": teardown} if teardown else None)
        self.providers = load_providers(autoload=False, plugins=[("vmm", vmm)])
        assert self.providers.attach(self.chain) == []
        self.handler = IoctlHandler(self.chain, self.providers)
        self.driver = vmm.vmm_driver(self.chain)
        self.start_kids = self.kids()

    def kids(self) -> set[int]:
        return {k.ks_kid for k in self.chain.kstats()}

    def conn(self, cred: Cred = ROOT) -> Conn:
        return Conn(cred)

    def ioctl(self, conn: Conn, cmd: int, arg: Any = None) -> tuple[int, dict[str, Any]]:
        return self.handler.dispatch(conn, cmd, arg)

    def ok(self, conn: Conn, cmd: int, arg: Any = None) -> dict[str, Any]:
        code, result = self.ioctl(conn, cmd, arg)
        assert code == 0, result
        return result

    def drop(self, conn: Conn) -> None:
        self.providers.conn_close(self.chain, conn)

    def vmm_kstats(self, minor: int) -> list[Any]:
        return [k for k in self.chain.kstats() if k.ks_module == "vmm" and k.ks_instance == minor]

    def read(self, minor: int, name: str, zoneid: int = GLOBAL_ZONEID) -> dict[str, Any]:
        ksp = self.chain.kstat_lookup_name("vmm", minor, name)
        assert ksp is not None, f"vmm:{minor}:{name} missing"
        return chain_read(self.chain, ksp.ks_kid, zoneid)


@pytest.fixture
def host() -> Host:
    return Host()


def values(kstat: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, _, value in kstat["data"]}


# --- create -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "code"),
    [("", errno.EINVAL), ("a/b", errno.EINVAL), ("x" * 128, errno.ENAMETOOLONG), ("é" * 64, errno.ENAMETOOLONG)],
)
def test_create_rejects_bad_names(host: Host, name: str, code: int) -> None:
    assert host.ioctl(host.conn(), ioc.VMM_CREATE_VM, {"name": name})[0] == code
    assert host.kids() == host.start_kids
    assert len(host.driver.minors) == 0


def test_create_accepts_127_bytes_and_refuses_a_duplicate(host: Host) -> None:
    conn = host.conn()
    name = "x" * 127
    assert host.ok(conn, ioc.VMM_CREATE_VM, {"name": name}) == {"minor": 1}
    code, result = host.ioctl(conn, ioc.VMM_CREATE_VM, {"name": name})
    assert code == errno.EEXIST and result["error"] == f"VM '{name}' exists"


def test_create_and_destroy_need_privilege(host: Host) -> None:
    user, root = host.conn(USER), host.conn()
    assert host.ioctl(user, ioc.VMM_CREATE_VM, {"name": "a"})[0] == errno.EPERM
    host.ok(root, ioc.VMM_CREATE_VM, {"name": "a"})
    assert host.ioctl(user, ioc.VMM_DESTROY_VM, {"name": "a"})[0] == errno.EPERM
    assert host.ioctl(root, ioc.VMM_DESTROY_VM, {"name": "nope"})[0] == errno.ENOENT
    assert host.ioctl(root, ioc.VMM_CREATE_VM, None)[0] == errno.EINVAL


def test_create_publishes_33_kstats_and_bumps_the_chain_id_33(host: Host) -> None:
    kcid = host.chain.chain_id
    minor = host.ok(host.conn(), ioc.VMM_CREATE_VM, {"name": "web"})["minor"]
    assert host.chain.chain_id - kcid == 33
    ksps = host.vmm_kstats(minor)
    assert [k.ks_name for k in ksps] == ["vm"] + [f"vcpu{i}" for i in range(32)]
    vm = ksps[0].ks_private
    assert isinstance(vm, VM) and vm.name == "web"
    for ksp in ksps:
        assert (ksp.ks_class, ksp.ks_type, ksp.ks_private) == ("misc", KstatType.NAMED, vm)
    assert all(k.ks_update.__name__ == "vmm_kstat_update_vcpu" and k.ks_flags == 0 for k in ksps[1:])
    assert values(host.read(minor, "vm")) == {"vm_name": "web"}
    kstat = host.read(minor, "vcpu7")
    assert [(n, t) for n, t, _ in kstat["data"]] == [
        ("vcpu", 2), ("time_init", 4), ("time_run", 4), ("time_idle", 4),
        ("time_emu_kern", 4), ("time_emu_user", 4), ("time_sched", 4),
    ]  # fmt: skip
    assert values(kstat)["vcpu"] == 7
    sc = host.driver.ops.vmm_list[0]
    assert (sc.vmm_name, sc.vmm_minor, sc.vmm_vm, sc.vmm_is_open, sc.vmm_flags) == ("web", minor, vm, 0, 0)


def test_minors_are_next_fit_from_1(host: Host) -> None:
    conn = host.conn()
    assert [host.ok(conn, ioc.VMM_CREATE_VM, {"name": n})["minor"] for n in "abc"] == [1, 2, 3]
    host.ok(conn, ioc.VMM_DESTROY_VM, {"name": "a"})
    assert host.ok(conn, ioc.VMM_CREATE_VM, {"name": "a"})["minor"] == 4


def test_vm_from_a_non_global_zone_is_visible_there_and_in_the_global_zone(host: Host) -> None:
    ngz = host.conn(Cred(uid=0, zone="z1", zoneid=1, privileged=True))
    other = host.conn(Cred(uid=0, zone="z2", zoneid=2, privileged=True))
    kcid = host.chain.chain_id
    minor = host.ok(ngz, ioc.VMM_CREATE_VM, {"name": "zvm"})["minor"]
    assert host.chain.chain_id - kcid == 66  # 33 creates + 33 kstat_zone_add(GLOBAL_ZONEID)
    assert all(k.e_zones[0] == 1 and GLOBAL_ZONEID in k.e_zones for k in host.vmm_kstats(minor))
    assert values(host.read(minor, "vm", zoneid=1)) == {"vm_name": "zvm"}
    assert values(host.read(minor, "vm", zoneid=GLOBAL_ZONEID)) == {"vm_name": "zvm"}
    with pytest.raises(KstatError) as exc:
        host.read(minor, "vm", zoneid=2)
    assert exc.value.errno == errno.ENXIO
    assert host.ok(other, ioc.VMM_LIST)["vms"] == []
    assert host.ioctl(other, ioc.VMM_OPEN, {"name": "zvm"})[0] == errno.ENOENT
    assert host.ioctl(other, ioc.VMM_DESTROY_VM, {"name": "zvm"})[0] == errno.EPERM
    assert [v["name"] for v in host.ok(host.conn(), ioc.VMM_LIST)["vms"]] == ["zvm"]
    kcid = host.chain.chain_id
    host.ok(ngz, ioc.VMM_DESTROY_VM, {"name": "zvm"})
    assert host.chain.chain_id - kcid == 33
    assert host.kids() == host.start_kids


# --- destroy ----------------------------------------------------------------------


def test_destroy_while_closed_removes_kstats_then_frees_the_vm(host: Host) -> None:
    conn = host.conn()
    minor = host.ok(conn, ioc.VMM_CREATE_VM, {"name": "a"})["minor"]
    vm = host.vmm_kstats(minor)[0].ks_private
    kcid = host.chain.chain_id
    host.ok(conn, ioc.VMM_DESTROY_VM, {"name": "a"})
    assert host.chain.chain_id - kcid == 33
    assert host.kids() == host.start_kids
    assert host.chain.kmem.is_freed(vm)
    assert not host.driver.minors.allocated(minor)
    assert host.ok(conn, ioc.VMM_LIST) == {"vms": []}


@pytest.mark.parametrize("how", ["close", "drop"])
def test_destroy_while_open_waits_for_the_last_close(host: Host, how: str) -> None:
    admin, guest = host.conn(), host.conn()
    minor = host.ok(admin, ioc.VMM_CREATE_VM, {"name": "a"})["minor"]
    fd1 = host.ok(guest, ioc.VMM_OPEN, {"name": "a"})["fd"]
    fd2 = host.ok(guest, ioc.VMM_OPEN, {"name": "a"})["fd"]
    assert (fd1, fd2) == (3, 4)
    vm = host.vmm_kstats(minor)[0].ks_private
    sc = host.driver.ops.vmm_list[0]
    kcid = host.chain.chain_id
    host.ok(admin, ioc.VMM_DESTROY_VM, {"name": "a"})
    # Lingering: still visible, still valid, marked destroying; the name is free.
    assert host.chain.chain_id == kcid
    assert (sc.vmm_is_open, sc.vmm_flags) == (2, VMM_DESTROY)
    assert host.driver.ops.vmm_destroy_list == [sc] and host.driver.ops.vmm_list == []
    assert values(host.read(minor, "vcpu0"))["vcpu"] == 0
    assert host.ok(admin, ioc.VMM_LIST)["vms"] == [{"name": "a", "minor": minor, "open": 2, "destroying": True}]
    assert host.ioctl(guest, ioc.VMM_VCPU_USTATE, {"fd": fd1, "vcpu": 0, "state": VU_RUN})[0] == errno.ENXIO
    assert host.ioctl(admin, ioc.VMM_OPEN, {"name": "a"})[0] == errno.ENOENT
    assert host.ioctl(admin, ioc.VMM_DESTROY_VM, {"name": "a"})[0] == errno.ENOENT
    host.ok(guest, ioc.VMM_CLOSE, {"fd": fd1})
    assert host.chain.chain_id == kcid and not host.chain.kmem.is_freed(vm)
    if how == "close":
        host.ok(guest, ioc.VMM_CLOSE, {"fd": fd2})
    else:
        host.drop(guest)
    assert host.chain.chain_id - kcid == 33
    assert host.kids() == host.start_kids
    assert host.chain.kmem.is_freed(vm)
    assert not host.driver.minors.allocated(minor)
    assert host.ok(admin, ioc.VMM_LIST) == {"vms": []}


@pytest.mark.parametrize("how", ["destroy", "close", "drop"])
def test_a_vm_is_listed_until_its_teardown_is_done(host: Host, how: str) -> None:
    # Nobody sees a VM gone while its kstats remain (illumos holds vmm_mtx across the
    # teardown): at kstat fini its kstats are deleted, and VMM_LIST still reports it.
    admin, guest = host.conn(), host.conn()
    seen: list[Any] = []

    class Witness:
        @hookimpl
        def kstatpy_instance_kstat_fini(self, chain: Chain, inst: Any) -> None:
            seen.append((host.kids() == host.start_kids, host.ok(admin, ioc.VMM_LIST)["vms"]))

    host.driver.add_listener(Witness(), "witness")
    minor = host.ok(admin, ioc.VMM_CREATE_VM, {"name": "a"})["minor"]
    fd = host.ok(guest, ioc.VMM_OPEN, {"name": "a"})["fd"] if how != "destroy" else None
    host.ok(admin, ioc.VMM_DESTROY_VM, {"name": "a"})
    if how == "close":
        host.ok(guest, ioc.VMM_CLOSE, {"fd": fd})
    elif how == "drop":
        host.drop(guest)
    assert seen == [(True, [{"name": "a", "minor": minor, "open": 0, "destroying": True}])]
    assert host.ok(admin, ioc.VMM_LIST) == {"vms": []}
    assert host.kids() == host.start_kids


def test_name_reuse_while_the_old_vm_lingers(host: Host) -> None:
    admin, guest = host.conn(), host.conn()
    old = host.ok(admin, ioc.VMM_CREATE_VM, {"name": "db"})["minor"]
    host.ok(guest, ioc.VMM_OPEN, {"name": "db"})
    host.ok(admin, ioc.VMM_DESTROY_VM, {"name": "db"})
    new = host.ok(admin, ioc.VMM_CREATE_VM, {"name": "db"})["minor"]
    assert new != old
    assert values(host.read(old, "vm")) == values(host.read(new, "vm")) == {"vm_name": "db"}
    assert [(v["minor"], v["destroying"]) for v in host.ok(admin, ioc.VMM_LIST)["vms"]] == [(new, False), (old, True)]
    host.drop(guest)
    assert host.vmm_kstats(old) == [] and len(host.vmm_kstats(new)) == 33


def test_handle_errors(host: Host) -> None:
    conn = host.conn()
    host.ok(conn, ioc.VMM_CREATE_VM, {"name": "a"})
    assert host.ioctl(conn, ioc.VMM_OPEN, {"name": "b"})[0] == errno.ENOENT
    assert host.ioctl(conn, ioc.VMM_CLOSE, {"fd": 3})[0] == errno.EBADF
    fd = host.ok(conn, ioc.VMM_OPEN, {"name": "a"})["fd"]
    assert host.ioctl(conn, ioc.VMM_VCPU_USTATE, {"fd": fd + 1, "vcpu": 0, "state": 1})[0] == errno.EBADF
    assert host.ioctl(conn, ioc.VMM_VCPU_USTATE, {"fd": fd, "vcpu": 32, "state": 1})[0] == errno.EINVAL
    assert host.ioctl(conn, ioc.VMM_VCPU_USTATE, {"fd": fd, "vcpu": 0, "state": 6})[0] == errno.EINVAL
    assert host.ioctl(host.conn(), ioc.VMM_CLOSE, {"fd": fd})[0] == errno.EBADF  # fds are per connection
    host.ok(conn, ioc.VMM_CLOSE, {"fd": fd})
    assert host.ioctl(conn, ioc.VMM_CLOSE, {"fd": fd})[0] == errno.EBADF


# --- failed create ------------------------------------------------------------------


def test_failed_create_unwinds_everything(host: Host) -> None:
    blocker = host.chain.kstat_create("vmm", 1, "vcpu5", "misc", KstatType.NAMED, 7)
    kids = host.kids()
    kcid = host.chain.chain_id
    code, result = host.ioctl(host.conn(), ioc.VMM_CREATE_VM, {"name": "a"})
    assert code == errno.ENOMEM
    assert "kstat_create('vmm', 1, 'vcpu5'): namespace collision" in result["error"]
    assert host.kids() == kids  # vm .. vcpu4 created, then deleted
    assert host.chain.chain_id - kcid == 6 + 6
    assert not host.driver.minors.allocated(1) and host.driver.instances() == []
    host.chain.kstat_delete(blocker)
    assert host.ok(host.conn(), ioc.VMM_CREATE_VM, {"name": "a"})["minor"] == 2  # next fit


# --- the order the framework guarantees ---------------------------------------------


class OrderWitness:
    """A listener of the vmm driver's instance hooks: records what each step saw."""

    def __init__(self, chain: Chain, read_vcpu_at_destroy: bool = False) -> None:
        self.chain = chain
        self.read_vcpu_at_destroy = read_vcpu_at_destroy
        self.events: list[tuple[str, str, int]] = []
        self.traps: list[BadTrap] = []
        self.trapped_on: list[str] = []
        self.read_errors: list[int] = []
        self.kids: dict[str, int] = {}

    def _live(self, minor: int) -> int:
        # The provider's kstats of that minor (a test's blocker has no ks_private).
        return sum(
            1
            for k in self.chain.kstats()
            if k.ks_module == "vmm" and k.ks_instance == minor and k.ks_private is not None
        )

    @hookimpl(trylast=True)
    def kstatpy_instance_create(self, chain: Chain, inst: Any, arg: Any) -> None:
        self.kids[inst.name] = chain.kstat_lookup_name("vmm", inst.minor, "vcpu0").ks_kid
        self.events.append(("create", inst.name, self._live(inst.minor)))

    @hookimpl
    def kstatpy_instance_kstat_fini(self, chain: Chain, inst: Any) -> None:
        self.events.append(("kstat_fini", inst.name, self._live(inst.minor)))

    @hookimpl(trylast=True)  # after the provider freed the VM
    def kstatpy_instance_destroy(self, chain: Chain, inst: Any) -> None:
        self.events.append(("destroy", inst.name, self._live(inst.minor)))
        if self.read_vcpu_at_destroy and inst.name in self.kids:
            try:
                chain_read(chain, self.kids[inst.name])
            except BadTrap as trap:
                self.traps.append(trap)
                self.trapped_on.append(trap.ksp.ks_name)  # still held live here
            except KstatError as exc:
                self.read_errors.append(exc.errno)


def test_every_path_runs_kstat_fini_before_destroy(host: Host) -> None:
    witness = OrderWitness(host.chain)
    host.driver.add_listener(witness, "witness")
    admin, guest = host.conn(), host.conn()
    for name in ("now", "close", "drop", "detach"):
        host.ok(admin, ioc.VMM_CREATE_VM, {"name": name})
    host.ok(admin, ioc.VMM_DESTROY_VM, {"name": "now"})
    fd = host.ok(guest, ioc.VMM_OPEN, {"name": "close"})["fd"]
    host.ok(admin, ioc.VMM_DESTROY_VM, {"name": "close"})
    host.ok(guest, ioc.VMM_CLOSE, {"fd": fd})
    dropper = host.conn()
    host.ok(dropper, ioc.VMM_OPEN, {"name": "drop"})
    host.ok(admin, ioc.VMM_DESTROY_VM, {"name": "drop"})
    host.drop(dropper)
    blocker = host.chain.kstat_create("vmm", 5, "vcpu31", "misc", KstatType.NAMED, 7)
    assert host.ioctl(admin, ioc.VMM_CREATE_VM, {"name": "failed"})[0] == errno.ENOMEM
    host.chain.kstat_delete(blocker)
    host.ok(host.conn(), ioc.VMM_OPEN, {"name": "detach"})
    host.providers.detach(host.chain)
    teardowns = [e for e in witness.events if e[0] != "create"]
    names = ("now", "close", "drop", "failed", "detach")
    assert teardowns == [ev for n in names for ev in (("kstat_fini", n, 0), ("destroy", n, 0))]
    assert host.kids() == host.start_kids
    assert vmm.vmm_driver(host.chain) is None


def test_the_immediate_destroy_window(host: Host) -> None:
    witness = OrderWitness(host.chain, read_vcpu_at_destroy=True)
    host.driver.add_listener(witness, "witness")
    host.ok(host.conn(), ioc.VMM_CREATE_VM, {"name": "a"})
    host.ok(host.conn(), ioc.VMM_DESTROY_VM, {"name": "a"})
    assert witness.traps == [] and witness.read_errors == [errno.ENXIO]


# --- the pre-14281 order: the debug heap catches it -------------------------------


def test_pre_14281_immediate_destroy_reads_a_freed_vm() -> None:
    host = Host("pre-14281")
    witness = OrderWitness(host.chain, read_vcpu_at_destroy=True)
    host.driver.add_listener(witness, "witness")
    host.ok(host.conn(), ioc.VMM_CREATE_VM, {"name": "a"})
    host.ok(host.conn(), ioc.VMM_DESTROY_VM, {"name": "a"})
    assert witness.events[-2:] == [("destroy", "a", 33), ("kstat_fini", "a", 0)]
    (trap,) = witness.traps
    assert "vmm:vmm_kstat_update_vcpu" in " ".join(panic_stack(trap))
    assert witness.trapped_on == ["vcpu0"]
    assert host.kids() == host.start_kids  # kstat fini did run, too late


def test_pre_14281_last_close_leaves_kstats_whose_read_panics() -> None:
    host = Host("pre-14281")
    admin, guest = host.conn(), host.conn()
    minor = host.ok(admin, ioc.VMM_CREATE_VM, {"name": "a"})["minor"]
    host.ok(guest, ioc.VMM_OPEN, {"name": "a"})
    host.ok(admin, ioc.VMM_DESTROY_VM, {"name": "a"})
    kcid = host.chain.chain_id
    host.drop(guest)
    assert host.chain.chain_id == kcid  # no kstat fini at all
    assert len(host.vmm_kstats(minor)) == 33
    assert not host.driver.minors.allocated(minor)
    kid = host.chain.kstat_lookup_name("vmm", minor, "vcpu3").ks_kid
    with pytest.raises(BadTrap) as exc:
        host.ioctl(host.conn(USER), 0x4B02, {"kid": kid})  # KSTAT_IOC_READ through kstatd's dispatch
    report = format_panic(exc.value, host.chain.kmem)
    assert "BAD TRAP: type=e (#pf Page fault)" in report
    assert "vmm:vmm_kstat_update_vcpu+0x" in report
    assert "ks_update = vmm_kstat_update_vcpu" in report
    assert "freed from" in report


def test_unknown_teardown_order_fails_attach() -> None:
    chain = Chain(config={"vmm_teardown": "sometimes"})
    providers = load_providers(autoload=False, plugins=[("vmm", vmm)])
    (failure,) = providers.attach(chain)
    assert failure.name == "vmm" and "sometimes" in str(failure.error)


def test_two_chains_have_their_own_vms() -> None:
    a, b = Host(), Host()
    assert a.ok(a.conn(), ioc.VMM_CREATE_VM, {"name": "x"}) == {"minor": 1}
    assert b.ok(b.conn(), ioc.VMM_CREATE_VM, {"name": "x"}) == {"minor": 1}
    a.ok(a.conn(), ioc.VMM_DESTROY_VM, {"name": "x"})
    assert [v["name"] for v in b.ok(b.conn(), ioc.VMM_LIST)["vms"]] == ["x"]


# --- micro-states -----------------------------------------------------------------------


def wait_ns(ns: int) -> None:
    # Let the monotonic clock move; a deadline-bounded poll, not a synchronising sleep.
    end = time.monotonic_ns() + ns
    while time.monotonic_ns() < end:
        time.sleep(ns / 4e9)


def test_ustate_times_move_with_real_time_only_on_transitions(host: Host) -> None:
    conn = host.conn()
    minor = host.ok(conn, ioc.VMM_CREATE_VM, {"name": "a"})["minor"]
    fd = host.ok(conn, ioc.VMM_OPEN, {"name": "a"})["fd"]
    assert values(host.read(minor, "vcpu2"))["time_init"] == 0  # no completed interval yet
    wait_ns(2_000_000)
    before = time.monotonic_ns()
    host.ok(conn, ioc.VMM_VCPU_USTATE, {"fd": fd, "vcpu": 2, "state": VU_RUN})
    first = values(host.read(minor, "vcpu2"))
    assert first["time_init"] >= 2_000_000 and first["time_run"] == 0
    wait_ns(5_000_000)
    assert values(host.read(minor, "vcpu2")) == first  # still running: nothing completed
    host.ok(conn, ioc.VMM_VCPU_USTATE, {"fd": fd, "vcpu": 2, "state": VU_RUN})  # same state: no-op
    assert values(host.read(minor, "vcpu2")) == first
    host.ok(conn, ioc.VMM_VCPU_USTATE, {"fd": fd, "vcpu": 2, "state": VU_IDLE})
    after = time.monotonic_ns()
    second = values(host.read(minor, "vcpu2"))
    assert 5_000_000 <= second["time_run"] <= after - before
    assert second["time_init"] == first["time_init"] and second["time_idle"] == 0
    assert values(host.read(minor, "vcpu3"))["time_init"] == 0  # other vCPUs untouched
