"""The deadman (kstatpy.deadman) follows a wait hop by hop: the three-thread cycle through a shared ks_lock.

Real threads, checker off (``Kmem()``): a delete holding ``dls_lock`` waits in
``kstat_delete(summary)`` for the reader holding ``summary``, which waits for
``dls_stats_lock`` (the ``ks_lock`` both kstats share), held by the reader of ``link``,
which waits in ``ks_update`` for ``dls_lock``. The threads stay wedged (daemon
threads, as in a production deadlock); the report must name all three and the cycle.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from kstatpy.chain import Chain
from kstatpy.constants import ALL_ZONES
from kstatpy.deadman import Deadman
from kstatpy.deadman import stuck_waits
from kstatpy.driver import read_kstat_data
from kstatpy.kmem import Kmem
from tests.providers_fixture import datalink


def _until(pred: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)  # polling with a deadline


def test_the_deadman_follows_a_three_thread_cycle_through_a_shared_ks_lock() -> None:
    chain = Chain(kmem=Kmem(), config={"dls_order": "kslock"})
    datalink.kstatpy_attach(chain)
    dls = chain.provider_data["dls"]
    dls.create("e0")
    link, summary = dls.links["e0"].stats

    def read(ksp: Any) -> Any:
        return threading.Thread(target=read_kstat_data, args=(chain, ksp.ks_kid, ALL_ZONES, None), daemon=True)

    reader_b = read(summary)
    reader_b.name = "reader-of-summary"

    def then() -> None:  # dls_lock held, reader A in link's ks_update: now B takes summary's hold
        reader_b.start()
        _until(lambda: summary.e_owner is not None)

    deleter = threading.Thread(target=dls.delete, args=("e0", 30.0, then), name="deleter", daemon=True)
    deleter.start()
    reader_a = read(link)
    reader_a.name = "reader-of-link"
    reader_a.start()
    _until(lambda: stuck_waits(chain, 0.5))
    reports: list[str] = []
    deadman = Deadman(chain, 0.5, reports.append)
    assert deadman.scan() == 1
    assert deadman.scan() == 0 and len(reports) == 1  # one report per stuck kstat and holder, however long
    report = reports[0]
    assert report.startswith("deadman: kstat_delete has waited "), report
    assert "for the hold of dls:1:summary" in report
    assert "  waiter: thread 0x" in report and "(deleter): kstat_delete(dls:1:summary)" in report
    assert "(reader-of-summary): holder, holding the hold of dls:1:summary" in report
    assert "in mutex_enter(dls_stats_lock), held by thread 0x" in report
    assert "(reader-of-link): holder, holding mutex dls_stats_lock" in report
    assert "blocked at datalink:link_update+0x" in report and "in mutex_enter(dls_lock), held by thread 0x" in report
    assert "  deadlock: thread 0x" in report and "(deleter) waits for the hold of dls:1:summary while holding mutex dls_lock" in report
    assert deleter.is_alive() and reader_a.is_alive() and reader_b.is_alive()  # nothing was broken
