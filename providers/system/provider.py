"""The system provider's life cycle: attach, refresh (hotplug), detach, per chain.

Per-chain state
    Everything the provider knows about one chain lives in a :class:`SystemProvider`
    anchored on that chain as ``chain.provider_data["system"]``, set by attach and
    popped by detach. The module keeps no state, so two chains in one process never
    share anything.

Locking
    ``SystemProvider.lock`` serialises refresh and detach (the maps of kstats and
    every create/delete). It is never taken in ``ks_update``: a refresh holding it
    may wait in ``kstat_delete`` for a reader's hold, and that reader must be able
    to finish.

Refresh
    ``kstatpy_refresh`` compares what exists (the ``present`` CPU list, the entries
    of ``sys/class/net`` and ``sys/block``: one small file and two directory
    listings) with the kstats it has, and creates or deletes the difference; the
    chain id moves only then.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from collections.abc import Iterable
from typing import TYPE_CHECKING
from typing import Any

from kstatpy_providers.system.cpu import create_cpu_info
from kstatpy_providers.system.cpu import create_cpu_sys
from kstatpy_providers.system.cpu import parse_cpuinfo
from kstatpy_providers.system.disk import create_disk
from kstatpy_providers.system.disk import disk_names
from kstatpy_providers.system.link import create_link
from kstatpy_providers.system.link import link_names
from kstatpy_providers.system.source import SysRoot
from kstatpy_providers.system.source import root_for
from kstatpy_providers.system.unix import create_system_misc
from kstatpy_providers.system.unix import create_system_pages
from kstatpy_providers.system.unix import present_cpus

from kstatpy.errors import KstatError
from kstatpy.hookspecs import hookimpl

if TYPE_CHECKING:
    from kstatpy.chain import Chain
    from kstatpy.kstat import Kstat

__all__ = ["SystemProvider", "kstatpy_attach", "kstatpy_detach", "kstatpy_refresh", "provider_for"]

log = logging.getLogger(__name__)

PROVIDER_NAME = "system"


class SystemProvider:
    """One chain's system kstats; ``lock`` guards every field after construction."""

    def __init__(self, root: SysRoot) -> None:
        self.root = root
        self.lock = threading.Lock()
        self.misc: Kstat | None = None
        self.pages: Kstat | None = None
        self.cpu_info: dict[int, Kstat] = {}
        self.cpu_sys: dict[int, Kstat] = {}
        self.links: dict[str, Kstat] = {}
        self.disks: dict[str, Kstat] = {}
        self.detached = False

    def attach(self, chain: Chain) -> None:
        """Create every kstat (caller holds ``lock``); on failure delete what was made."""
        self.misc = create_system_misc(chain, self.root)
        try:
            self.pages = create_system_pages(chain, self.root)
            self.reconcile(chain, attaching=True)
        except BaseException:
            self.delete_all(chain)
            raise

    def reconcile(self, chain: Chain, attaching: bool = False) -> None:
        """Create and delete kstats so they match the host (caller holds ``lock``)."""
        root = self.root
        cpus = present_cpus(root)
        if set(cpus) != self.cpu_info.keys() or set(cpus) != self.cpu_sys.keys():
            try:
                info = parse_cpuinfo(root.read("proc/cpuinfo"))
            except FileNotFoundError:
                info = {}
            self._sync(
                chain, "cpu_info", self.cpu_info, cpus,
                lambda c: create_cpu_info(chain, root, c, info.get(c, {}), since_boot=attaching),
            )  # fmt: skip
            self._sync(chain, "cpu", self.cpu_sys, cpus, lambda c: create_cpu_sys(chain, root, c))
        self._sync(chain, "link", self.links, link_names(root), lambda n: create_link(chain, root, n))
        self._sync(chain, "disk", self.disks, disk_names(root), lambda n: create_disk(chain, root, n))

    @staticmethod
    def _sync(
        chain: Chain, what: str, have: dict[Any, Kstat], want: Iterable[Any], create: Callable[[Any], Kstat]
    ) -> None:
        want = set(want)
        if want == have.keys():
            return
        for key in sorted(have.keys() - want):
            chain.kstat_delete(have.pop(key))
        for key in sorted(want - have.keys()):
            try:
                have[key] = create(key)
            except (KstatError, OSError, ValueError) as exc:
                # One device that vanished mid-probe or collides costs only its kstat.
                log.warning("system: no kstat for %s %s: %r", what, key, exc)

    def delete_all(self, chain: Chain) -> None:
        """Delete every kstat, the anchor last (caller holds ``lock``)."""
        for have in (self.disks, self.links, self.cpu_sys, self.cpu_info):
            while have:
                chain.kstat_delete(have.popitem()[1])
        if self.pages is not None:
            chain.kstat_delete(self.pages)
            self.pages = None
        self.detached = True
        if self.misc is not None:
            misc, self.misc = self.misc, None
            chain.kstat_delete(misc)


def provider_for(chain: Chain) -> SystemProvider | None:
    """The system provider state attached to ``chain``, or None."""
    return chain.provider_data.get(PROVIDER_NAME)


@hookimpl
def kstatpy_attach(chain: Chain) -> None:
    """Create the system kstats under the root ``chain.config['system_root']`` names."""
    provider = SystemProvider(SysRoot(root_for(chain)))
    with provider.lock:
        provider.attach(chain)
        chain.provider_data[PROVIDER_NAME] = provider


@hookimpl
def kstatpy_refresh(chain: Chain) -> None:
    """Create and delete CPU, link and disk kstats that came or went."""
    provider = provider_for(chain)
    if provider is None:
        return
    with provider.lock:
        if not provider.detached:
            provider.reconcile(chain)


@hookimpl
def kstatpy_detach(chain: Chain) -> None:
    """Delete every kstat the provider created on ``chain``."""
    provider = chain.provider_data.pop(PROVIDER_NAME, None)
    if provider is None:
        return
    with provider.lock:
        if not provider.detached:
            provider.delete_all(chain)
