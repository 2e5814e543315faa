"""kstatpy.deadman: which waits are stuck, the report's lines, and the deadman thread's scans.

cosmic-ray (python tests/mutate.py deadman, docs/TESTING.md) left mutants alive with
tests/test_deadman.py, tests/test_lockorder.py and test_schedule's deadlock reports: the
threshold's boundary and an explicit ``now``, the order of stuck kstats (a
``kstat_delete`` first) and of waiters (then the longest wait), waiters that joined
after the scan, a holder that itself waits for another hold (not a mutex), kstatd's
``reading`` table, the depth of a stack, a wait that ends and comes back, and the
thread's tick and its report of a failed scan.

Real threads waiting for real holds of a real chain: the test's thread takes a hold,
a worker waits for it (``chain.waits``), and the test releases it at the end.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest

from kstatpy import deadman
from kstatpy.chain import Chain
from kstatpy.constants import ALL_ZONES
from kstatpy.constants import KSTAT_DATA_UINT64
from kstatpy.constants import KSTAT_TYPE_NAMED
from kstatpy.deadman import Deadman
from kstatpy.deadman import stuck_waits
from kstatpy.deadman import thread_stack
from kstatpy.deadman import wait_report
from kstatpy.kstat import KMutex
from kstatpy.kstat import kstat_named_init
from tests.bounded import join
from tests.bounded import wait


def _until(pred: Callable[[], Any], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.005)  # polling with a deadline


def _kstat(chain: Chain, name: str) -> Any:
    ksp = chain.kstat_create("dm", 0, name, "misc", KSTAT_TYPE_NAMED, 1)
    kstat_named_init(ksp.ks_data[0], "v", KSTAT_DATA_UINT64)
    chain.kstat_install(ksp)
    return ksp


def _hold(chain: Chain, ksp: Any, why: str = "kstat_hold") -> Any:
    held = chain.kstat_hold_bykid(ksp.ks_kid, ALL_ZONES, why)
    assert held is ksp
    return held


def _hold_and_let_go(chain: Chain, kid: int, why: str) -> None:
    held = chain.kstat_hold_bykid(kid, ALL_ZONES, why)
    if held is not None:  # None: deleted while this thread waited
        chain.kstat_rele(held)


@contextmanager
def _waiters(chain: Chain) -> Iterator[Callable[..., threading.Thread]]:
    # start(name, fn, *args): a worker that must end up waiting for a hold; all joined at the end
    # (the test releases what they wait for before leaving the block).
    started: list[threading.Thread] = []

    def start(name: str, fn: Callable[..., Any], *args: Any) -> threading.Thread:
        t = threading.Thread(target=fn, args=args, name=name, daemon=True)
        t.start()
        started.append(t)
        _until(lambda: t.ident in chain.waits, f"{name} waiting for a hold")
        return t

    try:
        yield start
    finally:
        me = threading.get_ident()
        for ksp in chain.kstats():  # what the test still holds (it failed before releasing)
            if ksp.e_owner == me:
                chain.kstat_rele(ksp)
        for t in started:
            join(t, 30, f"{t.name} after its hold was released")


# --- stuck_waits ------------------------------------------------------------------------------


def test_stuck_waits_counts_from_now_includes_the_threshold_and_puts_kstat_delete_first() -> None:
    chain = Chain()
    a, b = _kstat(chain, "a"), _kstat(chain, "b")
    _hold(chain, a)
    _hold(chain, b)
    with _waiters(chain) as start:
        reader_a = start("reader-a", _hold_and_let_go, chain, a.ks_kid, "read")
        deleter_b = start("deleter-b", chain.kstat_delete, b)
        reader_b = start("reader-b", _hold_and_let_go, chain, b.ks_kid, "read")
        since = {tid: s for tid, (_, _, s) in chain.waits.items()}
        now = since[reader_b.ident]  # the newest wait: waited exactly 0 s at `now`
        stuck = stuck_waits(chain, 0.0, now)
        # b (a later kid) first: a kstat_delete waits for it, though a reader waits for it too.
        assert list(stuck) == [b.ks_kid, a.ks_kid]
        assert stuck[a.ks_kid] == [(reader_a.ident, "read", now - since[reader_a.ident])]
        assert stuck[b.ks_kid] == [(deleter_b.ident, "kstat_delete", now - since[deleter_b.ident]),
                                   (reader_b.ident, "read", 0.0)]  # fmt: skip
        # The threshold counts from `now`: a wait shorter than it is not stuck.
        later = now + 100.0
        assert stuck_waits(chain, 100.0 + (now - since[reader_a.ident]) + 1.0, later) == {}
        assert list(stuck_waits(chain, 100.0, later)) == [b.ks_kid, a.ks_kid]
        assert [w[0] for w in stuck_waits(chain, 100.0, later)[b.ks_kid]] == [deleter_b.ident, reader_b.ident]
        # Without `now`, the clock's: every wait began before it.
        assert list(stuck_waits(chain, 0.0)) == [b.ks_kid, a.ks_kid]
        assert stuck_waits(chain, 3600.0) == {}
        # An explicit `now` long after: each wait is `now - since` long, whatever the clock's value.
        far = 3 * max(since.values())
        stuck = stuck_waits(chain, far - max(since.values()), far)
        assert stuck[a.ks_kid] == [(reader_a.ident, "read", far - since[reader_a.ident])]
        chain.kstat_rele(a)
        chain.kstat_rele(b)


# --- thread_stack -------------------------------------------------------------------------------


def _nest(n: int, then: Callable[[], list[str]]) -> list[str]:
    return _nest(n - 1, then) if n else then()


def test_thread_stack_is_innermost_first_and_cut_at_its_depth() -> None:
    assert thread_stack(None) == []
    here = thread_stack(sys._getframe(), 2)
    assert len(here) == 2 and here[0].startswith("test_mutants_deadman:test_thread_stack_is_innermost_first")
    deep = _nest(20, lambda: thread_stack(sys._getframe(1)))
    assert len(deep) == deadman.STACK_DEPTH == 14
    assert all(sym.startswith("test_mutants_deadman:_nest+0x") for sym in deep)
    whole = thread_stack(sys._getframe(), 500)  # the whole stack, to the thread's first frame
    assert (
        whole[0].startswith("test_mutants_deadman:test_thread_stack") and whole[1] == here[1] and 2 < len(whole) < 500
    )


# --- wait_report --------------------------------------------------------------------------------


def test_the_report_orders_its_waiters_and_names_kstatds_reader_as_the_holder() -> None:
    chain = Chain()
    k = _kstat(chain, "k")
    _hold(chain, k)
    me = threading.get_ident()
    kid = k.ks_kid
    with _waiters(chain) as start:
        r1 = start("reader-1", _hold_and_let_go, chain, kid, "read")
        d = start("deleter", chain.kstat_delete, k)
        r2 = start("reader-2", _hold_and_let_go, chain, kid, "read")
        given = [(r1.ident, "read", 3.0), (d.ident, "kstat_delete", 2.0), (r2.ident, "read", 4.25)]
        text = wait_report(chain, kid, given, 1.5, reading={me: kid})
        lines = text.splitlines()
        assert text.endswith("\n")
        assert lines[0] == (f"deadman: kstat_delete has waited 2.0 s for the hold of dm:0:k (kid {kid}; "
                            "threshold 1.5 s, kstatd --deadman-seconds)")  # fmt: skip
        waiters = [ln for ln in lines if ln.startswith("  waiter: ")]
        # kstat_delete first, then the longest wait first.
        assert waiters == [
            f"  waiter: thread 0x{d.ident:x} (deleter): kstat_delete(dm:0:k), waiting 2.0 s",
            f"  waiter: thread 0x{r2.ident:x} (reader-2): read(dm:0:k), waiting 4.2 s",
            f"  waiter: thread 0x{r1.ident:x} (reader-1): read(dm:0:k), waiting 3.0 s",
        ]
        # Each waiter's stack follows its line: it waits in the chain's hold.
        at = lines.index(waiters[0])
        assert lines[at + 1].startswith("        ") and any("genunix:_hold+0x" in ln for ln in lines[at + 1 : at + 15])
        holder = [ln for ln in lines if ln.startswith("  holder: ")]
        name = threading.current_thread().name
        assert holder == [
            f"  holder: thread 0x{me:x} ({name}): a reader in ks_update of kid {kid}, holding the hold of dm:0:k"
        ]
        blocked = lines[lines.index(holder[0]) + 1]
        # The holder's innermost frame outside kstatpy and the standard library: this test.
        assert blocked.startswith(
            "        blocked at test_mutants_deadman:test_the_report_orders_its_waiters_and_names_kstatds_reader_as_the_holder+0x"
        ), blocked
        assert ", in " not in blocked  # on no mutex, no hold
        assert not any("deadlock" in ln for ln in lines)
        # Not kstatd's reader: a holder. A waiter the caller did not pass (it joined after the
        # scan) is shown too, with its own wait.
        text = wait_report(chain, kid, [(d.ident, "kstat_delete", 2.0)], 1.5, reading={me + 1: kid})
        assert f"  holder: thread 0x{me:x} ({name}): holder, holding the hold of dm:0:k" in text
        assert text.count("  waiter: ") == 3 and "(reader-1): read(dm:0:k), waiting " in text
        # A late waiter's wait is counted from its start in chain.waits: make reader-1's
        # start a third of the clock's value (a wait long ago; no sleeping), and the
        # report says how long: `now - since`, between the clock before and after.
        with chain.lock:
            ksp, why, since = chain.waits[r1.ident]
            since = since / 3
            chain.waits[r1.ident] = (ksp, why, since)
        before = time.monotonic()
        text = wait_report(chain, kid, [(d.ident, "kstat_delete", 2.0)], 1.5)
        after = time.monotonic()
        found = re.search(r"\(reader-1\): read\(dm:0:k\), waiting ([0-9.]+) s\n", text)
        assert found is not None, text
        assert before - since - 0.05 <= float(found.group(1)) <= after - since + 0.05, (text, before, after, since)
        assert "holder, holding" in wait_report(chain, kid, given, 1.5)
        chain.kstat_rele(k)


def test_a_kstat_deleted_before_the_report_is_named_by_its_kid() -> None:
    chain = Chain()
    k = _kstat(chain, "k")
    kid = k.ks_kid
    me = threading.get_ident()
    chain.kstat_delete(k)
    text = wait_report(chain, kid, [(me, "read", 12.0)], 10.0)
    assert text.splitlines()[0] == (f"deadman: read has waited 12.0 s for the hold of kid {kid} (kid {kid}; "
                                    "threshold 10 s, kstatd --deadman-seconds)")  # fmt: skip
    assert "holder" not in text  # no kstat, no holder to follow


def _hold_then_wait(chain: Chain, mine: Any, other: Any, holding: threading.Event, go: threading.Event) -> None:
    # Hold `mine`, say so, then (when told) wait for `other`'s hold.
    _hold(chain, mine)
    holding.set()
    wait(go, 30, "the test's go")
    _hold_and_let_go(chain, other.ks_kid, "read")  # `mine` is the test's to release (then deleted)


def _hold_then_delete(chain: Chain, mine: Any, victim: Any, holding: threading.Event) -> None:
    _hold(chain, mine)
    holding.set()
    chain.kstat_delete(victim)
    chain.kstat_rele(mine)


def test_a_holder_waiting_for_another_hold_is_followed_to_the_cycle() -> None:
    # Holds only, no mutex: T1 holds k1 and waits for k2's hold; T2 holds k2 and waits in
    # kstat_delete(k1). The report on k1 follows T1 to its wait for k2, held by T2, the
    # waiter it started from: a deadlock. The test breaks it at the end by releasing k1.
    chain = Chain()
    k1, k2 = _kstat(chain, "k1"), _kstat(chain, "k2")
    h1, h2, go = threading.Event(), threading.Event(), threading.Event()
    t1 = threading.Thread(target=_hold_then_wait, args=(chain, k1, k2, h1, go), name="t1", daemon=True)
    t2 = threading.Thread(target=_hold_then_delete, args=(chain, k2, k1, h2), name="t2", daemon=True)
    try:
        t1.start()
        wait(h1, 30, "t1 holding k1")
        t2.start()
        wait(h2, 30, "t2 holding k2")
        _until(lambda: t2.ident in chain.waits, "t2 waiting in kstat_delete(k1)")
        go.set()
        _until(lambda: t1.ident in chain.waits, "t1 waiting for k2")
        stuck = stuck_waits(chain, 0.0)
        assert list(stuck) == [k1.ks_kid, k2.ks_kid]
        text = wait_report(chain, k1.ks_kid, stuck[k1.ks_kid], 0.5)
        lines = text.splitlines()
        assert lines[0].startswith("deadman: kstat_delete has waited ")
        assert f"  holder: thread 0x{t1.ident:x} (t1): holder, holding the hold of dm:0:k1" in lines
        blocked = lines[lines.index(f"  holder: thread 0x{t1.ident:x} (t1): holder, holding the hold of dm:0:k1") + 1]
        assert blocked.startswith("        blocked at test_mutants_deadman:_hold_and_let_go+0x"), blocked
        assert blocked.endswith(f", in read: the hold of dm:0:k2, held by thread 0x{t2.ident:x} (t2)"), blocked
        assert lines.count(blocked) == 1 and text.count("  holder: ") == 1  # t2 is a waiter: not followed again
        assert text.count("  waiter: ") == 1  # t1 waits too, but for k2: not a waiter of k1
        assert (f"  deadlock: thread 0x{t2.ident:x} (t2) waits for the hold of dm:0:k1 while holding the hold of "
                f"dm:0:k2, which thread 0x{t1.ident:x} (t1) waits for: the waits form a cycle and never end "
                "(illumos 8149: ") in text  # fmt: skip
        # From k2's side: t1 waits, t2 holds and waits in kstat_delete(k1), held by t1.
        other = wait_report(chain, k2.ks_kid, stuck[k2.ks_kid], 0.5)
        assert f", in kstat_delete: the hold of dm:0:k1, held by thread 0x{t1.ident:x} (t1)" in other
        assert (
            f"  deadlock: thread 0x{t1.ident:x} (t1) waits for the hold of dm:0:k2 while holding the hold of dm:0:k1"
            in other
        )
    finally:
        go.set()
        if k1.e_owner == t1.ident:
            chain.kstat_rele(k1)  # t2's kstat_delete goes on, then t2 lets k2 go, then t1 gets it
        join(t2, 30, "t2 after k1 was released")
        join(t1, 30, "t1 after k2 was released")


def _chain_of_holds(chain: Chain, mine: Any, nxt: Any, holding: threading.Event, go: threading.Event) -> None:
    _hold(chain, mine)
    holding.set()
    wait(go, 30, "the test's go")
    _hold_and_let_go(chain, nxt.ks_kid, "read")
    chain.kstat_rele(mine)


def test_a_kstat_deleted_while_the_report_is_written_does_not_trap_the_report() -> None:
    # The report copies chain.waits under the chain lock and follows the holders after it
    # lets the lock go: the kstat a holder waits for may be deleted and freed meanwhile
    # (its wait ended). Naming it must not touch its freed memory (a BAD TRAP: kstatd's
    # deadman then wrote "scan failed" and no report). Here it is deleted while the report
    # looks the holder up in kstatd's reading table.
    chain = Chain()
    k1, k2 = _kstat(chain, "k1"), _kstat(chain, "k2")
    k2_kid = k2.ks_kid
    _hold(chain, k2)
    h1, go, finish = threading.Event(), threading.Event(), threading.Event()

    def holder() -> None:  # holds k1, waits for k2 (deleted meanwhile), keeps k1 till told
        _hold(chain, k1)
        h1.set()
        wait(go, 30, "the test's go")
        _hold_and_let_go(chain, k2_kid, "read")
        wait(finish, 30, "the test's finish")
        chain.kstat_rele(k1)

    class Reading(dict):  # kstatd's reading table; the first look-up deletes k2
        deleted = False

        def __contains__(self, tid: object) -> bool:
            if not self.deleted:
                self.deleted = True
                chain.kstat_rele(k2)
                chain.kstat_delete(k2)  # returns once k2 is freed
            return super().__contains__(tid)

    h = threading.Thread(target=holder, name="holder", daemon=True)
    try:
        h.start()
        wait(h1, 30, "the holder holding k1")
        go.set()
        _until(lambda: h.ident in chain.waits, "the holder waiting for k2")
        with _waiters(chain) as start:
            try:
                r = start("reader", _hold_and_let_go, chain, k1.ks_kid, "read")
                reading = Reading()
                text = wait_report(chain, k1.ks_kid, [(r.ident, "read", 5.0)], 1.0, reading)
                assert reading.deleted and chain.kstat_lookup_kid(k2_kid) is None
                assert f"  holder: thread 0x{h.ident:x} (holder): holder, holding the hold of dm:0:k1" in text
                assert ", in read: the hold of a kstat deleted meanwhile, held by nobody\n" in text, text
            finally:
                finish.set()  # the holder lets k1 go: the reader ends
    finally:
        go.set()
        finish.set()
        if chain.kstat_lookup_kid(k2_kid) is not None and k2.e_owner == threading.get_ident():
            chain.kstat_rele(k2)
        join(h, 30, "the holder")


def update_stats(chain: Any, ksp: Any, m: Any, holding: threading.Event, done: threading.Event) -> None:
    # A provider function that holds its own KMutex `m` and a hold, blocked on something else.
    with m:
        _hold(chain, ksp)
        holding.set()
        done.wait(30)  # blocked on an event, in this frame
        chain.kstat_rele(ksp)


def _wait_on_semaphore(chain: Any, ksp: Any, sem: threading.Semaphore, holding: threading.Event) -> None:
    _hold(chain, ksp)
    holding.set()
    sem.acquire(timeout=30)  # blocked in threading.Semaphore.acquire, a Python frame
    chain.kstat_rele(ksp)


def test_only_a_kmutex_being_entered_is_what_the_holder_is_blocked_on() -> None:
    # A holder blocked elsewhere (an event) while a frame of its keeps a KMutex in a local
    # `m`, or blocked in another lock's Python-level acquire (a Semaphore): no mutex is
    # named, and nothing fails on a lock that is not a KMutex.
    chain = Chain()
    k, s = _kstat(chain, "k"), _kstat(chain, "s")
    m = KMutex("provider_lock")
    sem = threading.Semaphore(0)
    holding, holding2, done = threading.Event(), threading.Event(), threading.Event()
    t = threading.Thread(target=update_stats, args=(chain, k, m, holding, done), name="updater", daemon=True)
    u = threading.Thread(target=_wait_on_semaphore, args=(chain, s, sem, holding2), name="sem-waiter", daemon=True)
    try:
        t.start()
        u.start()
        wait(holding, 30, "the updater holding k")
        wait(holding2, 30, "the semaphore waiter holding s")
        with _waiters(chain) as start:
            try:
                r = start("reader", _hold_and_let_go, chain, k.ks_kid, "read")
                r2 = start("reader-s", _hold_and_let_go, chain, s.ks_kid, "read")
                lines = wait_report(chain, k.ks_kid, [(r.ident, "read", 5.0)], 1.0).splitlines()
                holder = f"  holder: thread 0x{t.ident:x} (updater): holder, holding the hold of dm:0:k"
                blocked = lines[lines.index(holder) + 1]
                assert blocked.startswith("        blocked at test_mutants_deadman:update_stats+0x"), blocked
                assert ", in " not in blocked, blocked  # not "in mutex_enter(provider_lock)"
                lines = wait_report(chain, s.ks_kid, [(r2.ident, "read", 5.0)], 1.0).splitlines()
                holder = f"  holder: thread 0x{u.ident:x} (sem-waiter): holder, holding the hold of dm:0:s"
                blocked = lines[lines.index(holder) + 1]
                assert blocked.startswith("        blocked at test_mutants_deadman:_wait_on_semaphore+0x"), blocked
                assert ", in " not in blocked, blocked
            finally:
                done.set()
                sem.release()
    finally:
        done.set()
        sem.release()
        join(t, 30, "the updater")
        join(u, 30, "the semaphore waiter")


def test_the_report_follows_at_most_eight_holders() -> None:
    # Ten threads in a line: t_i holds k_i and waits for k_{i+1}; the test holds k_10.
    # A waiter on k_0 is reported; the holders are followed eight hops, not further.
    chain = Chain()
    ks = [_kstat(chain, f"k{i}") for i in range(11)]
    _hold(chain, ks[10])
    go = threading.Event()
    threads = []
    try:
        for i in range(10):
            holding = threading.Event()
            t = threading.Thread(target=_chain_of_holds, args=(chain, ks[i], ks[i + 1], holding, go), name=f"t{i}",
                                 daemon=True)  # fmt: skip
            t.start()
            threads.append(t)
            wait(holding, 30, f"t{i} holding k{i}")
        go.set()
        for t in threads:
            _until(lambda t=t: t.ident in chain.waits, f"{t.name} waiting")
        text = wait_report(chain, ks[1].ks_kid, [(threads[0].ident, "read", 5.0)], 1.0)
        holders = [ln.split(" (")[1].split(")")[0] for ln in text.splitlines() if ln.startswith("  holder: ")]
        assert holders == [f"t{i}" for i in range(1, 9)]
        assert "deadlock" not in text
        # Nine hops would reach the test's own thread (holder of k10): fewer threads, to the end.
        text = wait_report(chain, ks[4].ks_kid, [(threads[3].ident, "read", 5.0)], 1.0)
        holders = [ln.split(" (")[1].split(")")[0] for ln in text.splitlines() if ln.startswith("  holder: ")]
        assert holders == [*(f"t{i}" for i in range(4, 10)), threading.current_thread().name]
    finally:
        go.set()
        chain.kstat_rele(ks[10])
        for t in threads:
            join(t, 30, f"{t.name} after the line of holds was released")


# --- the Deadman thread -------------------------------------------------------------------------


def test_a_wait_that_ends_and_comes_back_is_reported_again() -> None:
    chain = Chain()
    k = _kstat(chain, "k")
    reports: list[str] = []
    dm = Deadman(chain, 0.0, reports.append)
    assert dm.scan() == 0 and dm.reports == 0
    for n in (1, 2):
        _hold(chain, k)
        with _waiters(chain) as start:
            start(f"reader-{n}", _hold_and_let_go, chain, k.ks_kid, "read")
            assert dm.scan() == 1 and dm.scan() == 0  # once per stuck kstat and holder
            chain.kstat_rele(k)
        assert dm.scan() == 0  # nothing stuck now: forgotten, so a new wait is news
        assert dm.reports == n and len(reports) == n
    assert all(r.startswith("deadman: read has waited ") for r in reports)
    assert "(reader-1): read(dm:0:k)" in reports[0] and "(reader-2): read(dm:0:k)" in reports[1]
    # An explicit `now` before the wait began: not stuck yet.
    _hold(chain, k)
    with _waiters(chain) as start:
        t = start("reader-3", _hold_and_let_go, chain, k.ks_kid, "read")
        since = chain.waits[t.ident][2]
        assert Deadman(chain, 1.0, reports.append).scan(since + 0.5) == 0
        assert Deadman(chain, 1.0, reports.append).scan(since + 2.0) == 1
        chain.kstat_rele(k)


def test_a_kstat_newly_stuck_after_one_already_reported_is_reported() -> None:
    chain = Chain()
    a, b = _kstat(chain, "a"), _kstat(chain, "b")
    reports: list[str] = []
    dm = Deadman(chain, 0.0, reports.append)
    _hold(chain, a)
    _hold(chain, b)
    with _waiters(chain) as start:
        start("reader-a", _hold_and_let_go, chain, a.ks_kid, "read")
        assert dm.scan() == 1
        start("reader-b", _hold_and_let_go, chain, b.ks_kid, "read")
        assert dm.scan() == 1 and dm.reports == 2  # a is skipped (reported), b is news
        assert "for the hold of dm:0:a " in reports[0] and "for the hold of dm:0:b " in reports[1]
        chain.kstat_rele(a)
        chain.kstat_rele(b)


def test_the_default_threshold_is_kstatds() -> None:
    # DEFAULT_DEADMAN_SECONDS is the default of `kstatd --deadman-seconds` and of ServerConfig.
    from kstatpy.cli.kstatd import main
    from kstatpy.server import ServerConfig

    (option,) = [p for p in main.params if p.name == "deadman_seconds"]
    assert deadman.DEFAULT_DEADMAN_SECONDS == option.default == ServerConfig(socket="unused").deadman_seconds == 10.0


def test_the_deadman_reports_a_new_holder_of_the_same_kstat() -> None:
    chain = Chain()
    k = _kstat(chain, "k")
    reports: list[str] = []
    dm = Deadman(chain, 0.0, reports.append, reading={})
    got = threading.Event()
    done = threading.Event()

    def hold_then_keep() -> None:
        _hold(chain, k)
        got.set()
        wait(done, 30, "the test's done")
        chain.kstat_rele(k)

    _hold(chain, k)
    with _waiters(chain) as start:
        start("reader", _hold_and_let_go, chain, k.ks_kid, "read")
        keeper = start("keeper", hold_then_keep)
        assert dm.scan() == 1
        chain.kstat_rele(k)  # the reader (first in line) takes it and lets it go; the keeper keeps it
        wait(got, 30, "the keeper holding k")
        start("reader-2", _hold_and_let_go, chain, k.ks_kid, "read")
        assert dm.scan() == 1 and dm.reports == 2  # the same kstat, another holder: news
        assert f"  holder: thread 0x{keeper.ident:x} (keeper): holder" in reports[1]
        done.set()


def test_the_thread_ticks_a_quarter_threshold_within_bounds_and_reports_a_failed_scan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ticks: list[float] = []
    monkeypatch.setattr(deadman, "time", SimpleNamespace(sleep=ticks.append, monotonic=time.monotonic))
    for threshold, tick in ((10.0, 1.0), (2.0, 0.5), (0.4, 0.1), (0.1, 0.05), (100.0, 1.0)):
        reports: list[str] = []
        answers = iter([False, False, True])
        dm = Deadman(None, threshold, reports.append)  # no chain: every scan fails
        dm.run(lambda answers=answers: next(answers))
        assert ticks == [tick, tick], (threshold, ticks)
        assert len(reports) == 2 and reports[0].startswith("deadman: scan failed: AttributeError(")
        assert reports[0].endswith(")\n") and dm.reports == 0
        ticks.clear()
    # A chain with nothing stuck: scans that find nothing report nothing.
    reports = []
    answers = iter([False, True])
    Deadman(Chain(), 0.0, reports.append).run(lambda: next(answers))
    assert reports == [] and ticks == [0.05]
