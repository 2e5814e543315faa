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
    listings; a poll of ``proc/self/mountinfo`` for fsstat's vopstats, vopstats.py; a
    stat of ``sys/kernel/slab`` for the slab caches, hostwide.SlabCaches, and of
    ``proc/spl/kstat`` for OpenZFS; a listing of ``sys/kernel/irq`` for the interrupt
    kstats, intr.py) with the kstats it has, and creates or deletes the
    difference; the chain id moves only then.
"""

from __future__ import annotations

import errno
import os
import threading

from kstatpy_providers.system.source import SysRoot
from kstatpy_providers.system.source import boot_origin
from kstatpy_providers.system.source import root_for
from kstatpy_providers.system.spl import SPL_ROOT
from kstatpy_providers.system.unix import present_cpus

from kstatpy.errors import KstatError

TYPE_CHECKING = False  # not typing's: kept off the embedded kstat's start-up path
if TYPE_CHECKING:
    from collections.abc import Callable
    from collections.abc import Iterable
    from typing import Any

    from kstatpy.chain import Chain
    from kstatpy.kstat import Kstat

__all__ = [
    "KSTATPY_HOOKS",
    "SystemProvider",
    "SystemRootError",
    "kstatpy_attach",
    "kstatpy_detach",
    "kstatpy_refresh",
    "provider_for",
]

PROVIDER_NAME = "system"

#: The hooks below, declared by name rather than marked ``@hookimpl``: the embedded
#: kstat then calls them without importing pluggy (kstatpy.plain_providers).
KSTATPY_HOOKS = ("kstatpy_attach", "kstatpy_detach", "kstatpy_refresh")

#: ``chain.config`` key a host may set to a predicate over kstat module names
#: (``kstatpy.plugins.WANTS_MODULE``, docs/WRITING-PROVIDERS.md, "Provider hooks"): only the kstats of
#: modules it passes are created. Absent (kstatd): every kstat.
WANTS_MODULE = "wants_module"

#: The kstat modules of each source; spl's are the directories of ``proc/spl/kstat``.
UNIX_MODULES = ("unix",)
HOSTWIDE_MODULES = ("unix", "vmem", "zones")
MIB2_MODULES = ("ip", "tcp", "udp")
CPU_MODULES = ("cpu_info", "cpu", "cpu_stat")
LINK_MODULES = ("link",)
#: disks' IO modules (``disk.disk_module_instance``) and their error kstats' (MODULEerr)
DISK_MODULES = ("sd", "cmdk", "xdf", "lofi", "blkdev")
DISK_MODULES_ALL = (*DISK_MODULES, *(m + "err" for m in DISK_MODULES if m != "lofi"))  # lofi has none


class SystemRootError(OSError):
    """The root names no host tree: it does not exist or has no ``proc/stat``."""

    def __repr__(self) -> str:
        # Shown as-is in "provider 'system' failed to attach: ..." (one line, the root named).
        return str(self.strerror)


def check_root(root: SysRoot) -> None:
    """:raises SystemRootError: with one line naming the root and what is missing."""
    if not os.path.isdir(root.path):
        raise SystemRootError(errno.ENOENT, f"system root {root.path!r} does not exist")
    if not root.exists("proc/stat"):
        raise SystemRootError(errno.ENOENT, f"system root {root.path!r} has no proc/stat")


class SystemProvider:
    """One chain's system kstats; ``lock`` guards every field after construction.

    ``origin`` is the boot on the monotonic clock: the crtime of every kstat whose
    counters count from boot, and of every device kstat present at attach.
    ``wants``: the host's predicate over module names (:data:`WANTS_MODULE`); None
    creates every kstat. A source none of whose modules it passes is not read, and
    its module is not imported.
    """

    def __init__(self, root: SysRoot, wants: Callable[[str], bool] | None = None) -> None:
        self.root = root
        self.wants = wants
        self.lock = threading.Lock()
        self.unix: list[Kstat] = []
        self.cpus: dict[int, list[Kstat]] = {}
        self.links: dict[str, list[Kstat]] = {}
        self.disks: dict[str, list[Kstat]] = {}
        self.namer: Any = None  # disk.DiskNamer, made on the first disk scan
        self.spl: dict[tuple[str, str], list[Kstat]] = {}
        self.vops: dict[str, list[Kstat]] = {}  # fsstat's unix:0:vopstats_* by name
        self.caches: dict[str, list[Kstat]] = {}  # unix:0:CACHE (kmem_cache) by slab cache
        self.intrs: dict[tuple[int, str], list[Kstat]] = {}  # irq:N:ACTIONS by (IRQ, name)
        self.irqs: Any = None  # intr.IrqLines when irq is wanted
        self.slabs: Any = None  # hostwide.SlabCaches when unix is wanted
        self.mounts: Any = None  # vopstats.Mounts when mountinfo exists and unix is wanted
        self.origin = 0
        self.vm_cpu = -1  # the CPU charged with the machine-wide VM counters
        self.detached = False

    def want(self, module: str) -> bool:
        """Whether kstats of ``module`` are to be created."""
        return self.wants is None or bool(self.wants(module))

    def want_any(self, modules: Iterable[str]) -> bool:
        return self.wants is None or any(map(self.wants, modules))

    def attach(self, chain: Chain) -> None:
        """Create every wanted kstat (caller holds ``lock``); on failure delete what was made.

        :raises SystemRootError: the root is no host tree.
        """
        root = self.root
        check_root(root)
        self.origin = origin = boot_origin(root)
        try:
            if self.want_any(UNIX_MODULES):
                from kstatpy_providers.system.unix import create_system_misc
                from kstatpy_providers.system.unix import create_system_pages
                from kstatpy_providers.system.unixraw import create_sysinfo
                from kstatpy_providers.system.unixraw import create_var
                from kstatpy_providers.system.unixraw import create_vminfo

                self.unix.append(create_system_misc(chain, root, origin))
                for made in (
                    create_system_pages(chain, root),
                    create_sysinfo(chain, root, origin),
                    create_vminfo(chain, root, origin),
                    create_var(chain, root),
                ):
                    if made is not None:
                        self.unix.append(made)
            if self.want_any(HOSTWIDE_MODULES):
                from kstatpy_providers.system.hostwide import create_hostwide
                from kstatpy_providers.system.unix import boot_time

                self.unix.extend(create_hostwide(chain, root, origin, boot_time(root), self.want))
                if self.want("unix"):
                    from kstatpy_providers.system.hostwide import SlabCaches

                    self.slabs = SlabCaches(root, {k.ks_name for k in self.unix})
            if self.want_any(MIB2_MODULES):
                from kstatpy_providers.system.mib2 import create_mib2

                self.unix.extend(create_mib2(chain, root, origin, self.want))
            if self.want("irq"):
                from kstatpy_providers.system.intr import IrqLines

                self.irqs = IrqLines(root)
            if self.want("unix") and root.exists("proc/self/mountinfo"):
                from kstatpy_providers.system.vopstats import Mounts

                self.mounts = Mounts(root)
            cpus = present_cpus(root)
            self.vm_cpu = min(cpus) if cpus else -1
            self.reconcile(chain, attaching=True)
        except BaseException:
            self.delete_all(chain)
            raise

    def _create_cpu(self, chain: Chain, cpu: int, info: dict[str, str], attaching: bool) -> list[Kstat]:
        root = self.root
        origin = self.origin if attaching else None
        made: list[Kstat] = []
        try:
            if self.want("cpu_info"):
                from kstatpy_providers.system.cpu import create_cpu_info

                made.append(create_cpu_info(chain, root, cpu, info, since_boot=attaching, origin=origin))
            if not self.want_any(("cpu", "cpu_stat")):
                return made
            from kstatpy_providers.system.cpustat import CpuClock
            from kstatpy_providers.system.cpustat import create_cpu_stat
            from kstatpy_providers.system.cpustat import create_cpu_sys
            from kstatpy_providers.system.cpustat import create_cpu_vm

            # Counters count from boot even for a CPU hot-added later (proc/stat keeps them).
            # One clock for cpu:N:sys and cpu_stat, so the two agree; only they read it.
            clock = CpuClock(root, since_boot=attaching)
            if self.want("cpu"):
                made.append(create_cpu_sys(chain, root, cpu, self.origin, clock, charge=cpu == self.vm_cpu))
                made.append(create_cpu_vm(chain, root, cpu, self.origin, charge=cpu == self.vm_cpu))
            if self.want("cpu_stat"):
                made.append(create_cpu_stat(chain, root, cpu, self.origin, charge=cpu == self.vm_cpu, clock=clock))
        except BaseException:
            for ksp in made:
                chain.kstat_delete(ksp)
            raise
        return made

    def reconcile(self, chain: Chain, attaching: bool = False) -> None:
        """Create and delete wanted kstats so they match the host (caller holds ``lock``)."""
        root = self.root
        if self.want_any(CPU_MODULES):
            cpus = present_cpus(root)
            if set(cpus) != self.cpus.keys():
                from kstatpy_providers.system.cpu import parse_cpuinfo

                try:
                    info = parse_cpuinfo(root.read("proc/cpuinfo")) if self.want("cpu_info") else {}
                except FileNotFoundError:
                    info = {}
                self._sync(
                    chain, "cpu", self.cpus, cpus, lambda c: self._create_cpu(chain, c, info.get(c, {}), attaching)
                )  # fmt: skip
        origin = self.origin if attaching else None
        if self.want_any(LINK_MODULES):
            from kstatpy_providers.system.link import create_link
            from kstatpy_providers.system.link import link_names

            self._sync(
                chain, "link", self.links, link_names(root), lambda n: [create_link(chain, root, n, origin)],
                lambda n: f"sys/class/net/{n}/",
            )  # fmt: skip
        # OpenZFS may be loaded (or unloaded) while the provider runs: one stat a refresh.
        if self.spl or root.exists(SPL_ROOT):
            from kstatpy_providers.system.spl import create_spl
            from kstatpy_providers.system.spl import spl_kstats

            self._sync(
                chain, "spl", self.spl, [k for k in spl_kstats(root) if self.want(k[0])],
                lambda k: create_spl(chain, root, *k), lambda k: f"{SPL_ROOT}/{k[0]}/{k[1]}",
            )  # fmt: skip
        if self.want_any(DISK_MODULES_ALL):
            self._sync_disks(chain, origin)
        if self.slabs is not None:
            self._sync_slab_caches(chain, attaching)
        if self.mounts is not None:
            self._sync_vopstats(chain)
        if self.irqs is not None:
            from kstatpy_providers.system.intr import IRQ_ROOT
            from kstatpy_providers.system.intr import create_intr

            self._sync(chain, "interrupt", self.intrs, self.irqs.lines(),
                       lambda k: [create_intr(chain, root, k[0], k[1], origin)],
                       lambda k: f"{IRQ_ROOT}/{k[0]}/")  # fmt: skip

    def _sync_slab_caches(self, chain: Chain, attaching: bool) -> None:
        from kstatpy_providers.system.hostwide import create_slab_cache

        names = self.slabs.names()
        if names is not None:
            origin = self.origin if attaching else None  # a cache made later counts from then
            self._sync(chain, "slab cache", self.caches, names,
                       lambda c: [create_slab_cache(chain, self.root, c, origin)])  # fmt: skip

    def _sync_vopstats(self, chain: Chain) -> None:
        from kstatpy_providers.system.vopstats import create_vopstats

        try:
            names = self.mounts.kstat_names()
        except OSError:  # mountinfo unreadable this time: keep what there is
            return
        self._sync(chain, "vopstats", self.vops, names, lambda n: create_vopstats(chain, n))

    def _sync_disks(self, chain: Chain, origin: int | None) -> None:
        # Every disk is named (the instance numbering depends on all of them); only
        # the disks whose IO module or error module (MODULEerr) is wanted get kstats.
        from kstatpy_providers.system.disk import DiskNamer
        from kstatpy_providers.system.disk import create_disk
        from kstatpy_providers.system.disk import disk_names

        if self.namer is None:
            self.namer = DiskNamer()
        namer = self.namer
        disks = disk_names(self.root)
        namer.name_all([n for n in disks if n not in self.disks])
        if self.wants is not None:
            disks = [n for n in disks if self._want_disk(namer.instance(n)[0])]

        def create(name: str) -> list[Kstat]:
            module = namer.instance(name)[0]
            return create_disk(chain, self.root, name, origin, namer, io=self.want(module), err=self.want(module + "err"))

        self._sync(chain, "disk", self.disks, disks, create, lambda n: f"sys/block/{n}/")

    def _want_disk(self, module: str) -> bool:
        return self.want(module) or self.want(module + "err")

    def _sync(
        self,
        chain: Chain,
        what: str,
        have: dict[Any, list[Kstat]],
        want: Iterable[Any],
        create: Callable[[Any], list[Kstat]],
        files: Callable[[Any], str] | None = None,
    ) -> None:
        want = set(want)
        if want == have.keys():
            return
        for key in sorted(have.keys() - want):
            for ksp in have.pop(key):
                chain.kstat_delete(ksp)
            if files is not None:  # no reader holds them now: close the device's files
                self.root.forget(files(key))
        for key in sorted(want - have.keys()):
            try:
                have[key] = create(key)
            except (KstatError, OSError, ValueError) as exc:
                # One device that vanished mid-probe or collides costs only its kstats.
                import logging

                logging.getLogger(__name__).warning("system: no kstat for %s %s: %r", what, key, exc)

    def delete_all(self, chain: Chain) -> None:
        """Delete every kstat, ``unix:0:system_misc`` (the first made) last (caller holds ``lock``)."""
        for have in (self.intrs, self.vops, self.caches, self.spl, self.disks, self.links, self.cpus):
            while have:
                for ksp in have.popitem()[1]:
                    chain.kstat_delete(ksp)
        self.detached = True
        if self.mounts is not None:
            self.mounts.close()
        while self.unix:
            chain.kstat_delete(self.unix.pop())
        self.root.close()


def provider_for(chain: Chain) -> SystemProvider | None:
    """The system provider state attached to ``chain``, or None."""
    return chain.provider_data.get(PROVIDER_NAME)


def kstatpy_attach(chain: Chain) -> None:
    """Create the system kstats under the root ``chain.config['system_root']`` names.

    Only those of the modules ``chain.config['wants_module']`` passes, when the host set it.
    """
    provider = SystemProvider(SysRoot(root_for(chain)), chain.config.get(WANTS_MODULE))
    with provider.lock:
        provider.attach(chain)
        chain.provider_data[PROVIDER_NAME] = provider


def kstatpy_refresh(chain: Chain) -> None:
    """Create and delete CPU, link and disk kstats that came or went."""
    provider = provider_for(chain)
    if provider is None:
        return
    with provider.lock:
        if not provider.detached:
            provider.reconcile(chain)


def kstatpy_detach(chain: Chain) -> None:
    """Delete every kstat the provider created on ``chain``."""
    provider = chain.provider_data.pop(PROVIDER_NAME, None)
    if provider is None:
        return
    with provider.lock:
        if not provider.detached:
            provider.delete_all(chain)
