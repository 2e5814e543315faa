"""Reading the host: every /proc and /sys access of the system provider goes through here.

Contract
    A :class:`SysRoot` names the tree the provider reads (``/`` on a live host, a
    fake tree in tests). Paths are relative to it. Nothing is cached: each call
    reads the file again, so a kstat's ``ks_update`` costs exactly the files it
    names. Files are read with ``os.open``/``os.read`` until EOF (procfs builds a
    file when it is opened; one read loop sees one consistent generation).

Named kstats
    :func:`create_named` builds a NAMED kstat whose ``ks_private`` is a source
    object with ``values() -> dict[name, value]``; :func:`named_update` is its
    ``ks_update``. A source raising ``OSError`` costs the reader ENXIO (the file
    is gone: the device went away and the next refresh deletes the kstat) or EIO.
    The kstats are read-only: a write gets EACCES from the chain before any update.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any
from typing import Protocol

from kstatpy_providers.system.meta import system_kstat_init

from kstatpy.constants import KSTAT_TYPE_NAMED
from kstatpy.constants import KSTAT_WRITE
from kstatpy.constants import KstatDataType
from kstatpy.kstat import default_kstat_update
from kstatpy.records import kstat_named_init
from kstatpy.records import kstat_named_setstr

if TYPE_CHECKING:
    from kstatpy.chain import Chain
    from kstatpy.kstat import Kstat

__all__ = [
    "ROOT_CONFIG_KEY",
    "ROOT_ENV",
    "NamedSource",
    "SysRoot",
    "create_named",
    "named_update",
    "parse_cpu_list",
    "root_for",
]

#: ``chain.config`` key naming the tree to read (wins over the environment).
ROOT_CONFIG_KEY = "system_root"
#: Environment variable naming the tree to read when the config does not.
ROOT_ENV = "KSTATPY_SYSTEM_ROOT"

_READ_CHUNK = 65536
_MASK = {
    KstatDataType.UINT32: 2**32 - 1,
    KstatDataType.UINT64: 2**64 - 1,
    KstatDataType.ULONG: 2**64 - 1,
}


def root_for(chain: Chain) -> str:
    """The root the provider reads for ``chain``: config, then $KSTATPY_SYSTEM_ROOT, then ``/``."""
    root = chain.config.get(ROOT_CONFIG_KEY) or os.environ.get(ROOT_ENV) or "/"
    return os.fspath(root)


class SysRoot:
    """A tree shaped like ``/`` (``proc/``, ``sys/``) and the only way the provider reads it."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path

    def join(self, rel: str) -> str:
        return os.path.join(self.path, rel)

    def read(self, rel: str) -> str:
        """The whole file ``rel``, decoded as UTF-8 (surrogateescape)."""
        fd = os.open(self.join(rel), os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks = []
            while True:
                chunk = os.read(fd, _READ_CHUNK)
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            os.close(fd)
        return b"".join(chunks).decode("utf-8", "surrogateescape")

    def read_int(self, rel: str) -> int:
        return int(self.read(rel).strip())

    def read_int_or(self, rel: str, default: int | None) -> int | None:
        """The integer in ``rel``, or ``default`` when the kernel refuses (EINVAL) or has none."""
        try:
            return self.read_int(rel)
        except (OSError, ValueError):
            return default

    def listdir(self, rel: str) -> list[str]:
        """Entry names of directory ``rel``; empty when it does not exist."""
        try:
            return os.listdir(self.join(rel))
        except FileNotFoundError:
            return []

    def subdirs(self, rel: str) -> list[str]:
        """Names of the directories (or links to them) in ``rel``; empty when it does not exist.

        ``sys/class/net`` may hold plain files too (``bonding_masters``).
        """
        try:
            with os.scandir(self.join(rel)) as it:
                return [e.name for e in it if not e.name.startswith(".") and e.is_dir()]
        except FileNotFoundError:
            return []

    def exists(self, rel: str) -> bool:
        return os.path.exists(self.join(rel))


def parse_cpu_list(text: str) -> list[int]:
    """The kernel's cpulist format (``0-3,8,10-11``) as a sorted list."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return sorted(cpus)


class NamedSource(Protocol):
    def values(self) -> dict[str, Any]: ...


def create_named(
    chain: Chain,
    module: str,
    instance: int,
    name: str,
    ks_class: str,
    fields: Sequence[tuple[str, int]],
    source: NamedSource,
) -> Kstat:
    """Create and install a read-only NAMED kstat fed by ``source.values()`` at each read."""
    ksp = chain.kstat_create(module, instance, name, ks_class, KSTAT_TYPE_NAMED, len(fields), 0)
    for knp, (field, data_type) in zip(ksp.ks_data, fields, strict=True):
        kstat_named_init(knp, field, data_type)
    system_kstat_init(ksp)
    ksp.ks_private = source
    ksp.ks_update = named_update
    return install_or_delete(chain, ksp)


def install_or_delete(chain: Chain, ksp: Kstat) -> Kstat:
    """kstat_install ``ksp``; if that fails, delete it (nothing leaks) and re-raise."""
    try:
        chain.kstat_install(ksp)
    except BaseException:
        chain.kstat_delete(ksp)
        raise
    return ksp


def os_errno(exc: OSError) -> int:
    """ENXIO when the source is gone (its device left), EIO for any other failure."""
    return errno.ENXIO if exc.errno in (errno.ENOENT, errno.ENODEV, errno.ENXIO) else errno.EIO


def named_update(ksp: Kstat, rw: int) -> int:
    """ks_update of every NAMED system kstat: copy ``ks_private.values()`` into ``ks_data``.

    Runs under the reader's hold; takes no provider lock (a refresh may be waiting
    in ``kstat_delete`` for this very hold).
    """
    if rw == KSTAT_WRITE:
        return errno.EACCES
    try:
        values = ksp.ks_private.values()
    except OSError as exc:
        return os_errno(exc)
    for knp in ksp.ks_data:
        value = values[knp.name]
        t = knp.data_type
        if t == KstatDataType.STRING:
            kstat_named_setstr(knp, value)
        elif t == KstatDataType.CHAR:
            knp.value = value.encode()[:16] if isinstance(value, str) else bytes(value)[:16]
        else:
            mask = _MASK.get(t)
            knp.value = value & mask if mask is not None else value
    return default_kstat_update(ksp, rw)
