"""kstatpy.lockorder: the graph, the report's texts and the scheduled slow paths, one test per behaviour a mutant changed.

cosmic-ray (python tests/mutate.py lockorder, docs/TESTING.md) left mutants alive with
tests/test_lockorder.py and tests/test_deadman.py: the lock classes of a ks_lock that is
no KMutex and of the chain lock, the texts of each kind of edge, which held locks make
no edge (the same class, the same lock, another chain's), the breadth-first search past
a node already seen, and KMutex / ks_lock contention under a controlled scheduler
(kstatpy.testing.schedule), where a thread must never block outside the scheduler.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

import pytest

from kstatpy import constants as c
from kstatpy.chain import Chain
from kstatpy.constants import ALL_ZONES
from kstatpy.driver import read_kstat_data
from kstatpy.kmem import Kmem
from kstatpy.kmem import kmem_addr
from kstatpy.kstat import KMutex
from kstatpy.kstat import kstat_named_init
from kstatpy.lockorder import LockOrderViolation
from kstatpy.lockorder import Witness
from kstatpy.lockorder import curthread
from kstatpy.lockorder import lock_enter
from kstatpy.lockorder import lock_exit
from kstatpy.lockorder import sync_point
from kstatpy.lockorder import thread_state
from kstatpy.testing.schedule import Scheduler
from tests.bounded import join


@pytest.fixture(autouse=True)
def _fresh_thread_state() -> Iterator[None]:
    # A witness bound to this (pytest's) thread must not outlive the test.
    saved, curthread.st = curthread.st, None
    yield
    curthread.st = saved


def named(chain: Chain, name: str, lock: Any = None, update: Callable[[Any, int], int] | None = None) -> Any:
    ksp = chain.kstat_create("lo", 0, name, "misc", c.KSTAT_TYPE_NAMED, 1)
    kstat_named_init(ksp.ks_data[0], "v", c.KSTAT_DATA_UINT64)
    ksp.ks_lock = lock
    if update is not None:
        ksp.ks_update = update
    chain.kstat_install(ksp)
    return ksp


def read(chain: Chain, ksp: Any) -> None:
    read_kstat_data(chain, ksp.ks_kid, ALL_ZONES, None)


def edges(w: Witness) -> list[tuple[str, str, str, str]]:
    return [(e.a.name, e.b.name, e.held, e.what) for e in w.edges()]


# --- classes and the texts of each kind of edge -----------------------------------------------


def test_a_plain_ks_lock_is_its_kstats_class_and_the_chain_lock_is_the_chains() -> None:
    chain = Chain(kmem=Kmem(audit=True))
    w = chain.witness
    lock = threading.Lock()
    ksp = named(chain, "k", lock)
    cls = w.lock_class(lock, ksp, chain.lock)
    assert (cls.kind, cls.name) == ("ks_lock", "ks_lock lo:*:k") and cls is not w.chain_class
    assert w.lock_class(threading.Lock(), ksp, chain.lock) is cls  # by kstat name, not by instance
    assert w.lock_class(chain.lock, ksp, chain.lock) is w.chain_class
    assert (w.chain_class.kind, w.chain_class.name) == ("chain", "kstat_chain_lock")


def test_the_texts_of_hold_ks_lock_and_chain_lock_edges() -> None:
    chain = Chain(kmem=Kmem(audit=True))
    w = chain.witness
    w.bind_thread()
    ksp = named(chain, "k", threading.Lock())
    outer = KMutex("outer")
    with outer:
        read(chain, ksp)
        read(chain, chain.kstat_lookup_name("unix", 0, "kstat_headers"))
        chain.kstat_create("lo", 0, "new", "misc", c.KSTAT_TYPE_NAMED, 1)
    assert edges(w) == [
        ("mutex outer", "hold lo:*:k", "mutex outer", "read(lo:0:k)"),
        ("mutex outer", "ks_lock lo:*:k", "mutex outer", "ks_lock of lo:0:k"),
        ("hold lo:*:k", "ks_lock lo:*:k", "hold of lo:0:k (read)", "ks_lock of lo:0:k"),
        ("mutex outer", "hold unix:*:kstat_headers", "mutex outer", "read(unix:0:kstat_headers)"),
        ("mutex outer", "kstat_chain_lock", "mutex outer", "ks_lock of unix:0:kstat_headers"),
        ("hold unix:*:kstat_headers", "kstat_chain_lock", "hold of unix:0:kstat_headers (read)",
         "ks_lock of unix:0:kstat_headers"),
    ]  # fmt: skip
    assert not outer.held()


def test_the_held_texts_of_a_ks_lock_and_of_the_chain_lock() -> None:
    chain = Chain(kmem=Kmem(audit=True))
    w = chain.witness
    ksp = named(chain, "k", threading.Lock())
    inner = KMutex("inner")
    w.bind_thread()
    lock_enter(chain, ksp.ks_lock, ksp)
    try:
        with inner:
            pass
    finally:
        lock_exit(chain, ksp.ks_lock)
    headers = chain.kstat_lookup_name("unix", 0, "kstat_headers")
    w.push(w.chain_class, chain.lock, headers)  # as the read of KID 0 holds it
    try:
        w.check(w.mutex_class(inner), "mutex_enter", None, inner)
        w.check(w.chain_class, "kstat_create('lo', 0, 'x')")  # the same class again: no edge
    finally:
        w.pop(chain.lock)
    assert edges(w) == [
        ("ks_lock lo:*:k", "mutex inner", "ks_lock of lo:0:k", "mutex_enter(inner)"),
        ("kstat_chain_lock", "mutex inner", "kstat_chain_lock", "mutex_enter(inner)"),
    ]
    with KMutex("before") as before:
        chain.kstat_create("lo", 0, "x", "misc", c.KSTAT_TYPE_NAMED, 1)
    assert not before.held()
    assert edges(w)[-1] == ("mutex before", "kstat_chain_lock", "mutex before", "kstat_create('lo', 0, 'x')")


# --- which held locks make no edge ------------------------------------------------------------


def test_two_instances_of_one_class_and_another_chains_locks_make_no_edge() -> None:
    w = Witness()
    w.bind_thread()
    a1, a2 = KMutex("a"), KMutex("a")  # one class: lockdep's nesting, not checked
    with a1, a2:
        pass
    assert w.edges() == []
    other = Witness()
    b = KMutex("b")
    b._witness = other  # known to the other chain's checker
    with a1, b:
        pass
    assert w.edges() == [] and other.edges() == []
    with b, a1:
        pass
    assert w.edges() == [] and other.edges() == []


def test_the_same_lock_again_makes_no_edge() -> None:
    chain = Chain(kmem=Kmem(audit=True))
    w = chain.witness
    ksp = named(chain, "k", threading.Lock())
    lock_enter(chain, ksp.ks_lock, ksp)
    try:
        w.check(w.hold_class(ksp), "kstat_hold", ksp, ksp)
        w.check(w.mutex_class(KMutex("m")), "mutex_enter", None, ksp.ks_lock)  # the lock held itself
    finally:
        lock_exit(chain, ksp.ks_lock)
    assert edges(w) == [("ks_lock lo:*:k", "hold lo:*:k", "ks_lock of lo:0:k", "hold of lo:0:k")]


# --- the search ---------------------------------------------------------------------------------


def test_the_search_goes_on_past_a_node_already_seen() -> None:
    # b -> x, b -> y, x -> y, x -> a: from b, x's successor y is already seen; a comes after it.
    w = Witness()
    w.bind_thread()
    a, b, x, y = (KMutex(n) for n in "abxy")
    for first, then in ((b, x), (b, y), (x, y), (x, a)):
        with first, then:
            pass
    with pytest.raises(LockOrderViolation) as info:
        with a, b:
            pass
    assert [(e.a.name, e.b.name) for e in info.value.cycle] == [
        ("mutex a", "mutex b"), ("mutex b", "mutex x"), ("mutex x", "mutex a")]  # fmt: skip
    assert (info.value.addr, info.value.buf, info.value.ksp) == (0, None, None)  # no kstat in a mutex-only cycle
    assert not a.held() and not b.held()


# --- no checker, no thread state: the read path's plain ks_lock -------------------------------


def test_a_plain_ks_lock_read_without_a_checker_or_a_thread_state() -> None:
    chain = Chain(kmem=Kmem())
    chain.lockhooks = True  # as a controlled schedule sets it: ks_lock goes through lock_enter
    lock = threading.Lock()
    ksp = named(chain, "k", lock)
    done: list[bool] = []

    def reader() -> None:
        read(chain, ksp)  # a fresh thread: curthread.st is None
        done.append(not lock.locked())

    t = threading.Thread(target=reader)
    t.start()
    join(t, 60, "the reader")
    assert done == [True] and chain.witness is None


# --- contention under a controlled scheduler -------------------------------------------------


def scheduled(sched: Scheduler, bodies: dict[str, Callable[[], None]]) -> list[tuple[str, str]]:
    for name in bodies:
        sched.add(name)
    threads = [threading.Thread(target=sched.thread_main, args=(n, b), name=n) for n, b in bodies.items()]
    for t in threads:
        t.start()
    for t in threads:
        join(t, 120, f"scheduled thread {t.name}")
    assert sched.failure is None, sched.failure
    return sched.trace


def test_an_uncontended_kmutex_under_the_scheduler_is_taken_once() -> None:
    m = KMutex("m")
    got: list[bool] = []
    trace = scheduled(Scheduler(1, stall=30), {"t": lambda: got.append(m.acquire()) or m.release()})  # bounded: one thread
    assert got == [True] and trace == [("t", "mutex_enter mutex m"), ("t", "mutex_exit mutex m")]


def contended_kmutex(seed: int) -> tuple[Scheduler, list[tuple[str, str]]]:
    m, m2 = KMutex("m"), KMutex("m2")

    def a() -> None:
        with m, m2:
            pass

    def b() -> None:
        with m:
            pass

    sched = Scheduler(seed, depth=3, steps_hint=6, stall=10)
    return sched, scheduled(sched, {"a": a, "b": b})


def test_a_contended_kmutex_blocks_in_the_scheduler_and_retries_there() -> None:
    # Seed 10: a takes m, b blocks on it; a's release of m2 lets b retry while a still holds m.
    _sched, trace = contended_kmutex(10)
    assert trace == [
        ("a", "mutex_enter mutex m"), ("a", "mutex_enter mutex m2"), ("b", "mutex_enter mutex m"),
        ("b", "blocked: mutex_enter mutex m"), ("a", "mutex_exit mutex m2"), ("b", "blocked: mutex_enter mutex m"),
        ("a", "mutex_exit mutex m"), ("b", "mutex_exit mutex m"),
    ]  # fmt: skip


def test_a_contended_plain_ks_lock_blocks_in_the_scheduler() -> None:
    # Two kstats share one threading.Lock as ks_lock; each ks_update takes a KMutex (a switch point).
    chain = Chain(kmem=Kmem())
    chain.lockhooks = True
    shared = threading.Lock()
    inside = KMutex("inside")

    def update(ksp: Any, rw: int) -> int:
        with inside:
            return 0

    k1, k2 = named(chain, "k1", shared, update), named(chain, "k2", shared, update)
    sched = Scheduler(0, depth=3, steps_hint=8, stall=10)  # seed 0: r2 meets the lock r1 holds
    trace = scheduled(sched, {"r1": lambda: read(chain, k1), "r2": lambda: read(chain, k2)})
    assert [t for t in trace if "ks_lock" in t[1]] == [
        ("r1", "ks_lock of lo:0:k1"), ("r2", "ks_lock of lo:0:k2"), ("r2", "blocked: ks_lock of lo:0:k2"),
        ("r1", "ks_lock release"), ("r2", "ks_lock release")]  # fmt: skip
    assert not shared.locked()


# --- synchronisation points bind the thread ------------------------------------------------------


def test_a_sync_point_binds_a_fresh_thread_to_the_checker() -> None:
    w = Witness()
    seen: list[Any] = []

    def bound() -> None:
        sync_point("provider ioctl", w)  # as a provider ioctl's entry: this thread's KMutexes are checked
        seen.append(curthread.st.witness if curthread.st is not None else "no state")
        with KMutex("p"), KMutex("q"):
            pass

    def unbound() -> None:
        sync_point("kmem_free")  # no checker, no scheduler: nothing is made
        seen.append(curthread.st)

    for body in (bound, unbound):
        t = threading.Thread(target=body)
        t.start()
        join(t, 60, "the thread")
    assert seen == [w, None]
    assert edges(w) == [("mutex p", "mutex q", "mutex p", "mutex_enter(q)")]


# --- an edge's record and the violation ----------------------------------------------------------


def _deep(n: int, fn: Callable[[], None]) -> None:
    if n:
        _deep(n - 1, fn)
    else:
        fn()


def test_an_edge_records_the_thread_and_twelve_frames_from_the_call_that_took_the_lock() -> None:
    w = Witness()
    named_mutex, site_mutex = KMutex("one"), KMutex()  # no name: the class is where it was built
    fn = "test_an_edge_records_the_thread_and_twelve_frames_from_the_call_that_took_the_lock"
    assert site_mutex._site[1] == fn
    site = f"mutex {site_mutex._site[0]}:{fn}:{site_mutex._site[2]}"
    seen: list[Any] = []

    def take() -> None:
        with named_mutex, site_mutex:
            pass

    def body() -> None:
        w.bind_thread()
        _deep(15, take)
        seen.append(threading.get_ident())

    t = threading.Thread(target=body, name="worker")
    t.start()
    join(t, 60, "the worker")
    (edge,) = w.edges()
    record = edge.as_json()
    assert [s.split("+")[0] for s in record["stack"]] == ["genunix:acquire", "genunix:__enter__",
                                                          "test_mutants_lockorder:take"] + ["test_mutants_lockorder:_deep"] * 9  # fmt: skip
    del record["stack"]
    assert record == {"from": "mutex one", "to": site, "held": "mutex one", "what": f"mutex_enter({site[6:]})",
                      "thread": seen[0], "thread_name": "worker", "kstat": 0}  # fmt: skip


def test_a_try_lock_and_a_released_lock_make_no_edge() -> None:
    w = Witness()
    w.bind_thread()
    a, b = KMutex("a"), KMutex("b")
    with a:
        assert b.acquire(blocking=False)  # a try-lock cannot wait: no order
        b.release()
    with a:
        pass
    with b:  # a was released: nothing is held
        pass
    assert w.edges() == []
    w.pop(object())  # unknown, with nothing held: ignored
    assert curthread.st is not None and curthread.st.held == []


def test_the_violation_names_the_kstat_its_buffer_and_the_cycle() -> None:
    chain = Chain(kmem=Kmem(audit=True))
    w = chain.witness
    w.bind_thread()
    m = KMutex("m")

    def update(ksp: Any, rw: int) -> int:
        with m:
            return 0

    ksp = named(chain, "k", None, update)
    read(chain, ksp)  # hold lo:*:k -> mutex m
    with pytest.raises(LockOrderViolation) as info, m:
        read(chain, ksp)  # mutex m -> hold lo:*:k closes it
    trap = info.value
    assert str(trap) == "deadlock: lock order reversal: read(lo:0:k) while holding mutex m (a cycle of 2 lock classes)"
    assert trap.what == "lock order reversal: read(lo:0:k) while holding mutex m"
    assert trap.ksp is ksp and trap.addr == kmem_addr(ksp) != 0 and trap.buf is chain.kmem.lookup(trap.addr)
    assert [e.kstat for e in trap.cycle] == [kmem_addr(ksp), 0]


def test_thread_state_is_made_only_when_asked_and_once() -> None:
    seen: list[Any] = []

    def body() -> None:
        seen.append(thread_state())  # a fresh thread: none, and none made
        seen.append(curthread.st)
        st = thread_state(create=True)
        seen.append(st is not None and thread_state(create=True) is st and thread_state() is st)

    t = threading.Thread(target=body)
    t.start()
    join(t, 60, "the thread")
    assert seen == [None, None, True]


def test_a_lock_released_out_of_order_leaves_the_others_held() -> None:
    w = Witness()
    w.bind_thread()
    a, b, c = KMutex("a"), KMutex("b"), KMutex("c")
    a.acquire()  # bounded: uncontended, one thread
    b.acquire()  # bounded: uncontended, one thread
    c.acquire()  # bounded: uncontended, one thread
    b.release()  # not the innermost: found by the search from the top
    assert curthread.st is not None and [e[2] for e in curthread.st.held] == [a, c]
    c.release()
    a.release()
    assert curthread.st.held == []


def test_importing_the_checker_does_not_import_typing() -> None:
    # The embedded kstat's start-up never imports typing (kstatpy.lockorder's own TYPE_CHECKING).
    code = "import sys, kstatpy.lockorder; print('typing' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (res.returncode, res.stdout) == (0, "False\n"), res.stderr
