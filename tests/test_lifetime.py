"""Lifetime rules under concurrency: holds, delete waits for readers, the debug heap catches misuse."""

from __future__ import annotations

import errno
import random
import threading
import time

import pytest

from kstatpy import constants as c
from kstatpy.chain import Chain
from kstatpy.errors import KstatError
from kstatpy.kmem import BadTrap
from kstatpy.kmem import KmemObject
from kstatpy.panic import format_panic
from kstatpy.panic import panic_stack
from kstatpy.records import kstat_named_init
from tests.chain_io import chain_read
from tests.chain_io import chain_write


def wait_until(pred, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.001)


def make(chain: Chain, name: str = "n", update=None):
    ksp = chain.kstat_create("m", 0, name, "misc", c.KSTAT_TYPE_NAMED, 1)
    kstat_named_init(ksp.ks_data[0], "v", c.KSTAT_DATA_UINT64)
    if update is not None:
        ksp.ks_update = update
    chain.kstat_install(ksp)
    return ksp


def test_delete_waits_for_the_reader_that_holds(chain: Chain) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow_update(ksp, rw):
        entered.set()
        assert release.wait(10)
        ksp.ks_data[0].value = 1
        return 0

    ksp = make(chain, update=slow_update)
    kid = ksp.ks_kid
    results: list = []
    reader = threading.Thread(target=lambda: results.append(chain_read(chain, kid)))
    reader.start()
    assert entered.wait(10)
    deleted = threading.Event()
    deleter = threading.Thread(target=lambda: (chain.kstat_delete(ksp), deleted.set()))
    deleter.start()
    wait_until(lambda: ksp.e_waiters == 1)  # the deleter waits for the hold
    assert not deleted.is_set()
    release.set()
    reader.join(10)
    deleter.join(10)
    assert deleted.is_set()
    assert results[0]["data"] == [["v", 4, 1]]  # the reader finished against live state
    with pytest.raises(KstatError) as info:
        chain_read(chain, kid)
    assert info.value.errno == errno.ENXIO


def test_readers_waiting_behind_a_delete_see_enxio(chain: Chain) -> None:
    enxio_seen = 0
    for _ in range(20):
        entered, release = threading.Event(), threading.Event()

        def gate(ksp, rw, entered=entered, release=release):
            if not entered.is_set():
                entered.set()
                assert release.wait(10)
            return 0

        ksp = make(chain, update=gate)
        kid = ksp.ks_kid
        first = threading.Thread(target=chain_read, args=(chain, kid))
        first.start()
        assert entered.wait(10)
        deleter = threading.Thread(target=chain.kstat_delete, args=(ksp,))
        deleter.start()
        wait_until(lambda ksp=ksp: ksp.e_waiters == 1)
        outcomes: list = []

        def late_reader(kid=kid, outcomes=outcomes):
            try:
                chain_read(chain, kid)
                outcomes.append(0)
            except KstatError as exc:
                outcomes.append(exc.errno)

        readers = [threading.Thread(target=late_reader) for _ in range(4)]
        for t in readers:
            t.start()
        wait_until(lambda ksp=ksp: ksp.e_waiters == 5)
        release.set()
        for t in [first, deleter, *readers]:
            t.join(10)
        assert set(outcomes) <= {0, errno.ENXIO}
        enxio_seen += outcomes.count(errno.ENXIO)
    assert enxio_seen > 0


def test_holds_are_exclusive_even_for_readers(chain: Chain) -> None:
    inside = 0
    overlap = []
    lock = threading.Lock()

    def update(ksp, rw):
        nonlocal inside
        with lock:
            inside += 1
            overlap.append(inside)
        time.sleep(0.0005)
        with lock:
            inside -= 1
        return 0

    ksp = make(chain, update=update)
    threads = [threading.Thread(target=lambda: [chain_read(chain, ksp.ks_kid) for _ in range(20)]) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert max(overlap) == 1 and len(overlap) == 120


class ProviderState(KmemObject):
    """What a provider's ks_private points at, on the debug heap."""

    __slots__ = ("in_update", "deleted", "value")
    kmem_size = 256

    def __init__(self) -> None:
        self.in_update = 0
        self.deleted = False
        self.value = 0


def test_stress_deletes_racing_reads(chain: Chain) -> None:
    """No ks_update after kstat_delete returned; delete never returns while a reader is in ks_update."""
    violations: list[str] = []
    vlock = threading.Lock()
    kids: list[int] = []
    stop = threading.Event()
    outcomes: dict[int, int] = {}

    def update(ksp, rw):
        st = ksp.ks_private
        with vlock:
            st.in_update += 1
            if st.deleted:
                violations.append(f"ks_update of {ksp.ks_name} after kstat_delete returned")
        time.sleep(0)  # let other threads run while the hold is taken
        st.value += 1
        ksp.ks_data[0].value = st.value
        with vlock:
            st.in_update -= 1
        return 0

    def churn(worker: int, cycles: int) -> None:
        for i in range(cycles):
            st = chain.kmem.zalloc(ProviderState)
            ksp = chain.kstat_create("stress", worker, f"k{i % 7}", "misc", c.KSTAT_TYPE_NAMED, 1)
            kstat_named_init(ksp.ks_data[0], "v", c.KSTAT_DATA_UINT64)
            ksp.ks_private = st
            ksp.ks_update = update
            kids.append(ksp.ks_kid)
            if i % 5:
                chain.kstat_install(ksp)
            if i % 10 == 1:
                # A churner can run whole create/install/delete cycles in one GIL slice, so
                # no reader ever meets a live kstat: now and then, delete only once a read
                # has reached ks_update (more reads keep racing the delete).
                wait_until(lambda st=st: st.value > 0, timeout=60.0)
            chain.kstat_delete(ksp)  # right order: kstats first, then the state
            with vlock:
                if st.in_update:
                    violations.append("kstat_delete returned while a reader was in ks_update")
                st.deleted = True
            chain.kmem.free(st)

    def read_loop(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            if not kids:
                continue
            kid = rng.choice(kids[-50:])
            try:
                chain_read(chain, kid)
                rc = 0
            except KstatError as exc:
                rc = exc.errno
            except BadTrap as trap:  # pragma: no cover - the failure this test exists for
                violations.append(f"BAD TRAP {trap}")
                rc = -1
            outcomes[rc] = outcomes.get(rc, 0) + 1

    readers = [threading.Thread(target=read_loop, args=(s,)) for s in range(8)]
    churners = [threading.Thread(target=churn, args=(w, 400)) for w in range(4)]
    for t in readers + churners:
        t.start()
    for t in churners:
        t.join(600)
    stop.set()
    for t in readers:
        t.join(60)
    assert not [t for t in readers + churners if t.is_alive()], "a thread is stuck"
    assert violations == []
    assert set(outcomes) <= {0, errno.ENXIO, errno.EAGAIN}
    assert outcomes.get(0, 0) > 0 and outcomes.get(errno.ENXIO, 0) > 0
    assert [k.ks_kid for k in chain.kstats()] == [0, 1]  # back to the starting set


def vcpu_update(ksp, rw):
    ksp.ks_data[0].value = ksp.ks_private.value
    return 0


def test_freeing_private_before_delete_panics_a_concurrent_reader(chain: Chain) -> None:
    st = chain.kmem.zalloc(ProviderState)
    ksp = make(chain, name="vcpu0")
    ksp.ks_private = st
    ksp.ks_update = vcpu_update
    kid = ksp.ks_kid
    traps: list[BadTrap] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                chain_read(chain, kid)
            except BadTrap as trap:
                traps.append(trap)
                return

    t = threading.Thread(target=reader)
    t.start()
    chain.kmem.free(st)  # the pre-14281 order: free, then delete
    t.join(10)
    stop.set()
    assert traps, "the reader never trapped on the freed ks_private"
    trap = traps[0]
    assert trap.ksp is ksp
    report = format_panic(trap, chain.kmem)
    assert "BAD TRAP: type=e (#pf Page fault)" in report
    assert f"addr=0x{trap.addr:x}" in report
    assert "test_lifetime:vcpu_update+0x" in report
    assert "kstat:read_kstat_data+0x" in report
    assert "::print kstat_t" in report and 'ks_name = [ "vcpu0" ]' in report
    assert f"ks_private = 0x{st.__class__ and trap.buf.addr:x}" in report
    assert "ks_update = vcpu_update" in report
    assert f"{trap.buf.addr:x} is {trap.buf.addr:x}+0, freed from" in report
    chain.kstat_delete(ksp)


def test_right_order_never_panics(chain: Chain) -> None:
    stop = threading.Event()
    traps: list[BadTrap] = []
    current: list[int] = []

    def reader() -> None:
        while not stop.is_set():
            for kid in list(current):
                try:
                    chain_read(chain, kid)
                except KstatError:
                    pass
                except BadTrap as trap:  # pragma: no cover - the failure this test exists for
                    traps.append(trap)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(500):
        st = chain.kmem.zalloc(ProviderState)
        ksp = make(chain, name=f"vcpu{i % 3}")
        ksp.ks_private = st
        ksp.ks_update = vcpu_update
        current[:] = [ksp.ks_kid]
        chain.kstat_delete(ksp)
        chain.kmem.free(st)
    stop.set()
    for t in threads:
        t.join(10)
    assert traps == []


def _touch_private(ksp, *args):
    ksp.ks_data[0].value = ksp.ks_private.value
    return 0


@pytest.mark.parametrize(("callback", "driver"), [("ks_update", "read_kstat_data"), ("ks_snapshot", "read_kstat_data"), ("ks_update", "write_kstat_data")])
def test_panic_stack_shows_the_driver_once_above_the_faulting_callback(chain: Chain, callback: str, driver: str) -> None:
    # As illumos' panic stack: the provider's callback, then the driver function that
    # called it, once. The handler mapping a callback's exception to an errno is no frame.
    st = chain.kmem.zalloc(ProviderState)
    ksp = chain.kstat_create("m", 0, "vcpu0", "misc", c.KSTAT_TYPE_NAMED, 1, c.KSTAT_FLAG_WRITABLE)
    kstat_named_init(ksp.ks_data[0], "v", c.KSTAT_DATA_UINT64)
    ksp.ks_private = st
    setattr(ksp, callback, _touch_private)
    chain.kstat_install(ksp)
    chain.kmem.free(st)
    with pytest.raises(BadTrap) as info:
        if driver == "read_kstat_data":
            chain_read(chain, ksp.ks_kid)
        else:
            chain_write(chain, ksp.ks_kid, 1, [["v", c.KSTAT_DATA_UINT64, 1]])
    assert info.value.ksp is ksp
    names = [sym.split(":", 1)[1].split("+", 1)[0] for sym in panic_stack(info.value)]
    at = names.index("_touch_private")
    assert driver in names[at + 1 : at + 3], names
    assert names.count(driver) == 1, names
    assert "_callback_errno" not in names, names
    chain.kstat_delete(ksp)
