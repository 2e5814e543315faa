"""A hand-rolled device provider (no ``kstatpy.instance``), right or deliberately wrong.

``DevProvider(mistake)`` keeps devices ``dev:<minor>:stats`` whose ``ks_private`` is
the device's soft state on the debug heap and whose ``ks_update`` reads it. Devices are
created, opened, closed and destroyed by calling its methods (the harness's
operations); destroy while open defers the teardown to the last close, as bhyve does.

``mistake``
    None: kstat_delete, then free, on every path (correct).
    ``"free-before-delete"``: destroy frees the soft state, then deletes the kstat
    (14281's second bug).
    ``"no-fini-on-last-close"``: the last close of a destroyed device frees the soft
    state and forgets the kstat (14281's first bug: it lingers).
    ``"leak"``: destroy forgets the kstat and the soft state altogether.
"""

from __future__ import annotations

import errno
import threading
from typing import Any

from kstatpy import KSTAT_DATA_UINT64
from kstatpy import KSTAT_TYPE_NAMED
from kstatpy import hookimpl
from kstatpy import kstat_named_init
from kstatpy.errors import KstatError
from kstatpy.kmem import KmemObject

MISTAKES = (None, "free-before-delete", "no-fini-on-last-close", "leak")


class DevSoftc(KmemObject):
    __slots__ = ("minor", "name", "opens", "reads")
    kmem_size = 512

    def __init__(self, name: str, minor: int) -> None:
        self.name = name
        self.minor = minor
        self.opens = 0
        self.reads = 0


def dev_kstat_update(ksp: Any, rw: int) -> int:
    sc = ksp.ks_private
    sc.reads += 1
    ksp.ks_data[0].value = sc.reads
    ksp.ks_data[1].value = sc.opens
    return 0


class DevProvider:
    """The provider; ``lock`` guards the tables (never held across kstat_delete)."""

    def __init__(self, mistake: str | None = None) -> None:
        assert mistake in MISTAKES
        self.mistake = mistake
        self.lock = threading.Lock()
        self.chain: Any = None
        self.live: dict[str, tuple[DevSoftc, Any]] = {}
        self.doomed: dict[int, tuple[DevSoftc, Any]] = {}  # destroyed while open, by minor
        self.next_minor = 1

    @hookimpl
    def kstatpy_attach(self, chain: Any) -> None:
        self.chain = chain

    @hookimpl
    def kstatpy_detach(self, chain: Any) -> None:
        with self.lock:
            devs = [*self.live.values(), *self.doomed.values()]
            self.live.clear()
            self.doomed.clear()
        for sc, ksp in devs:
            self._teardown(sc, ksp, mistake=None)

    def create(self, name: str) -> None:
        chain = self.chain
        with self.lock:
            if name in self.live:
                raise KstatError(errno.EEXIST, f"device {name!r} exists")
            minor = self.next_minor
            self.next_minor += 1
            sc = chain.kmem.zalloc(DevSoftc, name, minor)
            ksp = chain.kstat_create("dev", minor, "stats", "misc", KSTAT_TYPE_NAMED, 2)
            kstat_named_init(ksp.ks_data[0], "reads", KSTAT_DATA_UINT64)
            kstat_named_init(ksp.ks_data[1], "opens", KSTAT_DATA_UINT64)
            ksp.ks_private = sc
            ksp.ks_update = dev_kstat_update
            # Installed before it is published: once in ``live`` another thread's
            # destroy may delete (and free) it, so nothing here touches it after.
            chain.kstat_install(ksp)
            self.live[name] = (sc, ksp)

    def open(self, name: str) -> DevSoftc:
        with self.lock:
            if name not in self.live:
                raise KstatError(errno.ENOENT, f"no device {name!r}")
            sc = self.live[name][0]
            sc.opens += 1
            return sc

    def close(self, sc: DevSoftc) -> None:
        with self.lock:
            sc.opens -= 1
            if sc.opens or sc.minor not in self.doomed:
                return
            _, ksp = self.doomed.pop(sc.minor)
        self._teardown(sc, ksp, self.mistake, last_close=True)

    def destroy(self, name: str) -> None:
        with self.lock:
            if name not in self.live:
                raise KstatError(errno.ENOENT, f"no device {name!r}")
            sc, ksp = self.live.pop(name)
            if sc.opens:
                self.doomed[sc.minor] = (sc, ksp)
                return
        self._teardown(sc, ksp, self.mistake)

    def _teardown(self, sc: DevSoftc, ksp: Any, mistake: str | None, last_close: bool = False) -> None:
        kmem = self.chain.kmem
        if mistake == "leak":
            return
        if mistake == "free-before-delete" and not last_close:
            kmem.free(sc)
            self.chain.kstat_delete(ksp)
        elif mistake == "no-fini-on-last-close" and last_close:
            kmem.free(sc)
        else:
            self.chain.kstat_delete(ksp)
            kmem.free(sc)


NAMES = ("a", "b", "c")


def operations(prov: DevProvider) -> dict[str, Any]:
    """The harness's operations on ``prov``: create, open, close, destroy of a few names."""

    def create(ctx: Any) -> None:
        prov.create(ctx.rng.choice(NAMES))

    def open_(ctx: Any) -> None:
        ctx.state.setdefault("open", []).append(prov.open(ctx.rng.choice(NAMES)))

    def close(ctx: Any) -> None:
        handles = ctx.state.get("open")
        if handles:
            prov.close(handles.pop(ctx.rng.randrange(len(handles))))

    def destroy(ctx: Any) -> None:
        prov.destroy(ctx.rng.choice(NAMES))

    return {"create": create, "open": open_, "close": close, "destroy": destroy}


def cleanup(prov: DevProvider) -> Any:
    """Close what the workers left open (their handles are in-process), destroy everything."""

    def run(ctx: Any) -> None:
        for name in NAMES:
            try:
                prov.destroy(name)
            except KstatError:
                pass
        with prov.lock:
            doomed = list(prov.doomed.values())
        for sc, _ in doomed:
            for _ in range(sc.opens):  # the last close frees sc: count first
                prov.close(sc)

    return run
