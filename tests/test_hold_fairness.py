"""A thread that releases a hold and takes it again goes behind the threads already waiting.

Readers that re-hold a kstat in a loop once starved a waiting ``kstat_delete`` for the
whole 300 s of a stress run (tests/test_lifetime.py): a free hold went to whoever
asked first, and the woken waiter lost every race. With and without the lock-order
checker (the fast path and ``_hold``).
"""

from __future__ import annotations

import threading
import time

import pytest

from kstatpy import constants as c
from kstatpy.chain import Chain
from kstatpy.kmem import Kmem
from tests.bounded import join


def _chain(checker: bool) -> Chain:
    return Chain(kmem=Kmem(audit=True)) if checker else Chain()


@pytest.mark.parametrize("checker", [False, True])
def test_a_re_hold_waits_behind_a_waiting_thread(checker: bool) -> None:
    chain = _chain(checker)
    ksp = chain.kstat_create("fair", 0, "k", "misc", c.KSTAT_TYPE_RAW, 8)
    chain.kstat_install(ksp)
    kid = ksp.ks_kid
    order: list[str] = []

    held = chain.kstat_hold_bykid(kid, 0)
    assert held is ksp

    def waiter() -> None:
        got = chain.kstat_hold_bykid(kid, 0)
        assert got is ksp
        order.append("waiter")
        chain.kstat_rele(got)

    t = threading.Thread(target=waiter)
    t.start()
    deadline = time.monotonic() + 30
    while ksp.e_waiters == 0:  # the waiter is queued on the hold
        assert time.monotonic() < deadline, "the waiter never waited for the hold"
        time.sleep(0.001)
    chain.kstat_rele(held)
    again = chain.kstat_hold_bykid(kid, 0)  # at once, before the waiter has run: it must wait
    order.append("re-hold")
    chain.kstat_rele(again)
    join(t, 30, "the waiter's hold")
    assert order == ["waiter", "re-hold"]
    chain.kstat_delete(ksp)
