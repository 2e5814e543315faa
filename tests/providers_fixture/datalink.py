"""A datalink provider with the lock orders of illumos 8149, wrong and fixed.

Links are ``dls:<id>:link`` (``ks_update`` takes the provider's mutex ``dls_lock``,
as a datalink's kstat update takes the datalink's lock) and ``dls:<id>:summary``.
Both kstats of a link share one ``ks_lock`` (``dls_stats_lock``). Created and
deleted by ioctls (``LINK_CREATE``, ``LINK_DELETE`` with ``{"name": ...}``) or by
:func:`create` / :func:`delete` in-process.

``chain.config["dls_order"]`` (in kstatd: ``$DLS_ORDER``)
    ``"8149"``: delete calls ``kstat_delete(link)`` holding ``dls_lock``, while a
    reader of the link holds it and waits in ``ks_update`` for ``dls_lock``
    (``dladm delete-etherstub``'s deadlock).
    ``"kslock"``: delete calls ``kstat_delete(summary)`` holding ``dls_lock``; a
    reader of ``link`` holds ``dls_stats_lock`` (ks_lock) and waits for
    ``dls_lock``; a reader of ``summary`` holds its kstat and waits for
    ``dls_stats_lock``: a cycle through the shared ks_lock (three threads).
    ``"fixed"`` (default): the table changes under ``dls_lock``; the kstats are
    deleted after it is dropped.

``{"name": ..., "wait_reader": SECONDS}`` makes LINK_DELETE, holding ``dls_lock``,
wait until a reader has entered that link's ``ks_update`` (so a test can make the
real race happen without sleeping; not for controlled schedules, whose threads
must block only at the framework's synchronisation points). ``"wait_summary": SECONDS``
then waits, still holding ``dls_lock``, until a reader holds the link's summary kstat
(the "kslock" shape in kstatd), and ``LINK_ENTERED`` ``{"name": ...}`` answers
``{"entered": bool}``: whether a reader has entered the ``ks_update`` of a link being
deleted (so a test starts the summary's reader only then).
"""

from __future__ import annotations

import errno
import os
import threading
import time
from typing import Any

from kstatpy import KSTAT_DATA_UINT64
from kstatpy import KSTAT_TYPE_NAMED
from kstatpy import KMutex
from kstatpy import hookimpl
from kstatpy import kstat_named_init
from kstatpy.errors import KstatError
from kstatpy.kmem import KmemObject

LINK_CREATE = 0x7E8149
LINK_DELETE = 0x7E814A
LINK_ENTERED = 0x7E814B
KEY = "dls"


class DlsLink(KmemObject):
    __slots__ = ("entered", "linkid", "name", "reads", "stats")
    kmem_size = 256

    def __init__(self, name: str, linkid: int) -> None:
        self.name = name
        self.linkid = linkid
        self.reads = 0
        self.stats: list[Any] = []  # [link kstat, summary kstat]
        self.entered = threading.Event()  # a reader entered this link's ks_update


class Dls:
    """The provider's soft state: ``lock`` (dls_lock) guards ``links`` and each link's counters."""

    def __init__(self, chain: Any) -> None:
        self.chain = chain
        self.order = chain.config.get("dls_order", os.environ.get("DLS_ORDER", "fixed"))
        self.lock = KMutex("dls_lock")
        self.stats_lock = KMutex("dls_stats_lock")  # ks_lock of every dls kstat
        self.links: dict[str, DlsLink] = {}
        self.deleting: dict[str, DlsLink] = {}  # read without dls_lock by LINK_ENTERED (an Event)
        self.creating: set[str] = set()  # names whose kstats are being made
        self.next_id = 1

    def link_update(self, ksp: Any, rw: int) -> int:
        link = ksp.ks_private
        link.entered.set()
        with self.lock:  # 8149: the update takes the datalink's lock
            link.reads += 1
            ksp.ks_data[0].value = link.reads
        return 0

    def create(self, name: str) -> None:
        chain = self.chain
        with self.lock:  # the name is reserved; the link is published once its kstats are installed
            if name in self.links or name in self.creating:
                raise KstatError(errno.EEXIST, f"link {name!r} exists")
            self.creating.add(name)
            linkid = self.next_id
            self.next_id += 1
        link = chain.kmem.zalloc(DlsLink, name, linkid)
        for kname, update in (("link", self.link_update), ("summary", None)):
            ksp = chain.kstat_create("dls", link.linkid, kname, "net", KSTAT_TYPE_NAMED, 1)
            kstat_named_init(ksp.ks_data[0], "reads", KSTAT_DATA_UINT64)
            ksp.ks_private = link
            ksp.ks_lock = self.stats_lock
            if update is not None:
                ksp.ks_update = update
            chain.kstat_install(ksp)
            link.stats.append(ksp)
        with self.lock:
            self.creating.discard(name)
            self.links[name] = link

    def delete(self, name: str, wait_reader: float = 0.0, then: Any = None, wait_summary: float = 0.0) -> None:
        chain = self.chain
        with self.lock:
            link = self.links.pop(name, None)
            if link is None:
                raise KstatError(errno.ENOENT, f"no link {name!r}")
            if wait_reader:  # a reader that enters ks_update from now on finds dls_lock held
                link.entered.clear()
                self.deleting[name] = link
                link.entered.wait(wait_reader)
            if wait_summary:  # kstatd's "kslock" test: a reader of summary holds it now
                deadline = time.monotonic() + wait_summary
                while link.stats[1].e_owner is None and time.monotonic() < deadline:
                    time.sleep(0.005)  # polling with a deadline
            if then is not None:  # in-process tests: one more thing to wait for, dls_lock held
                then()
            rest = list(link.stats)
            if self.order == "8149":
                chain.kstat_delete(rest.pop(0))  # the bug: kstat_delete(link) under dls_lock
            elif self.order == "kslock":
                chain.kstat_delete(rest.pop(1))  # the bug: kstat_delete(summary) under dls_lock
        for ksp in rest:
            chain.kstat_delete(ksp)
        self.deleting.pop(name, None)
        chain.kmem.free(link)


@hookimpl
def kstatpy_attach(chain: Any) -> None:
    chain.provider_data[KEY] = Dls(chain)


@hookimpl
def kstatpy_detach(chain: Any) -> None:
    dls = chain.provider_data.pop(KEY)
    dls.order = "fixed"
    for name in list(dls.links):
        dls.delete(name)


@hookimpl
def kstatpy_ioctl(chain: Any, conn: Any, cmd: int, arg: Any) -> Any:
    dls = chain.provider_data[KEY]
    if cmd == LINK_CREATE:
        dls.create(arg["name"])
        return 0, {}
    if cmd == LINK_DELETE:
        dls.delete(arg["name"], float(arg.get("wait_reader", 0.0)), wait_summary=float(arg.get("wait_summary", 0.0)))
        return 0, {}
    if cmd == LINK_ENTERED:
        link = dls.deleting.get(arg["name"])
        return 0, {"entered": link is not None and link.entered.is_set()}
    return None
