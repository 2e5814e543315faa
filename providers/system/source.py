"""Reading the host: every /proc and /sys access of the system provider goes through here.

Contract
    A :class:`SysRoot` names the tree the provider reads (``/`` on a live host, a
    fake tree in tests). Paths are relative to it. No value is cached: each call
    reads the file again, so a kstat's ``ks_update`` costs exactly the files it
    names. The files stay open and are re-read with ``os.pread`` at offset 0
    (procfs and sysfs build a file's content at offset 0; one pread sees one
    consistent generation), which saves the open/close of every read.

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
import threading
import time
from collections.abc import Collection
from collections.abc import Mapping
from collections.abc import Sequence

from kstatpy_providers.system.meta import system_kstat_init
from kstatpy_providers.system.parse import find_ints
from kstatpy_providers.system.parse import parse_cpu_list
from kstatpy_providers.system.sysfile import CHUNKED
from kstatpy_providers.system.sysfile import SysFile

from kstatpy.constants import KSTAT_TYPE_NAMED
from kstatpy.constants import KSTAT_TYPE_RAW
from kstatpy.constants import KSTAT_WRITE
from kstatpy.constants import KstatDataType
from kstatpy.constants import KstatFlag
from kstatpy.kstat import default_kstat_update
from kstatpy.metadata import StatMeta
from kstatpy.metadata import kstat_set_meta
from kstatpy.metadata import no_source
from kstatpy.records import kstat_named_init
from kstatpy.records import kstat_named_setstr

TYPE_CHECKING = False  # not typing's: kept off the embedded kstat's start-up path
if TYPE_CHECKING:
    from typing import Any
    from typing import Protocol

    from kstatpy.chain import Chain
    from kstatpy.kstat import Kstat
    from kstatpy.raw import Layout

__all__ = [
    "CHUNKED",
    "ROOT_CONFIG_KEY",
    "ROOT_ENV",
    "SysFile",
    "SysRoot",
    "boot_origin",
    "create_named",
    "create_raw",
    "date_kstat",
    "find_ints",
    "mark_absent",
    "named_update",
    "parse_cpu_list",
    "root_for",
]

#: ``chain.config`` key naming the tree to read (wins over the environment).
ROOT_CONFIG_KEY = "system_root"
#: Environment variable naming the tree to read when the config does not.
ROOT_ENV = "KSTATPY_SYSTEM_ROOT"


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
    """A tree shaped like ``/`` (``proc/``, ``sys/``) and the only way the provider reads it.

    Files read through :meth:`read` stay open (see :class:`SysFile`) until
    :meth:`forget` (a device left) or :meth:`close` (detach).
    """

    __slots__ = ("_files", "_lock", "path", "real")

    def __init__(self, path: str) -> None:
        self.path = path
        #: the host's own root: procfs and sysfs, where files are never replaced
        self.real = os.path.realpath(path) == "/"
        self._files: dict[str, SysFile] = {}
        self._lock = threading.Lock()  # guards inserts into and removals from _files

    def join(self, rel: str) -> str:
        return os.path.join(self.path, rel)

    def file(self, rel: str) -> SysFile:
        """The kept-open :class:`SysFile` for ``rel``."""
        f = self._files.get(rel)
        if f is None:
            with self._lock:
                f = self._files.get(rel)
                if f is None:
                    f = self._files[rel] = SysFile(self.join(rel), not self.real)
        return f

    def read_bytes(self, rel: str) -> bytes:
        """The whole file ``rel``."""
        return self.file(rel).read()

    def read(self, rel: str) -> str:
        """The whole file ``rel``, decoded as UTF-8 (surrogateescape)."""
        return self.file(rel).read().decode("utf-8", "surrogateescape")

    def read_int(self, rel: str) -> int:
        return int(self.file(rel).read())

    def read_int_or(self, rel: str, default: int | None) -> int | None:
        """The integer in ``rel``, or ``default`` when the kernel refuses (EINVAL) or has none."""
        try:
            return int(self.file(rel).read())
        except (OSError, ValueError):
            return default

    def forget(self, prefix: str) -> None:
        """Close the files under ``prefix`` (a device's directory, after its kstat is deleted)."""
        with self._lock:
            gone = [rel for rel in self._files if rel.startswith(prefix)]
            files = [self._files.pop(rel) for rel in gone]
        for f in files:
            f.close()

    def close(self) -> None:
        """Close every kept-open file."""
        with self._lock:
            files = list(self._files.values())
            self._files.clear()
        for f in files:
            f.close()

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


if TYPE_CHECKING:

    class NamedSource(Protocol):
        """A kstat's source: ``values()`` reads it now, as a new dict (never one it keeps and
        changes: raw_update compares it with the last one it packed)."""

        def values(self) -> dict[str, Any]: ...


def create_named(
    chain: Chain,
    module: str,
    instance: int,
    name: str,
    ks_class: str,
    fields: Sequence[tuple[str, int]],
    source: NamedSource,
    crtime: int | None = None,
    meta: Mapping[str, StatMeta] | None = None,
    absent: Collection[str] = (),
) -> Kstat:
    """Create and install a read-only NAMED kstat fed by ``source.values()`` at each read.

    ``crtime``: when the kstat's counters started (ns, monotonic); None for now.
    ``meta``: metadata for statistics that ``meta.py``'s table does not declare.
    ``absent``: statistics of ``fields`` with no source here: they stay 0 (a STRING the
    empty string, never NULL: C readers print it unchecked), ``values()`` need not name
    them, their metadata is marked (:func:`mark_absent`).
    """
    ksp = chain.kstat_create(module, instance, name, ks_class, KSTAT_TYPE_NAMED, len(fields), 0)
    for knp, (field, data_type) in zip(ksp.ks_data, fields, strict=True):
        kstat_named_init(knp, field, data_type)
        if field in absent and data_type == KstatDataType.STRING:
            kstat_named_setstr(knp, "")
    date_kstat(ksp, crtime)
    if meta:
        declared = ksp.ks_meta or {}
        kstat_set_meta(ksp, {stat: m for stat, m in meta.items() if stat not in declared})
    if absent:
        mark_absent(ksp, absent)
    ksp.ks_private = (source, _plan(ksp, absent))  # named_update's source and per-record plan
    ksp.ks_update = named_update
    return install_or_delete(chain, ksp)


def mark_absent(ksp: Kstat, absent: Collection[str]) -> None:
    """Mark ``absent`` statistics of ``ksp`` no source (kstatpy.metadata.no_source; undeclared
    ones become counts). Call before kstat_install."""
    declared, what, out = ksp.ks_meta or {}, f"illumos {ksp.ks_module}:{ksp.ks_name}", {}
    for s in absent:
        m = declared.get(s)
        out[s] = m if m is not None and m.no_source else no_source(m, f"{what} {s}: no Linux source")
    kstat_set_meta(ksp, out)


def date_kstat(ksp: Kstat, crtime: int | None) -> None:
    """Declare ``ksp``'s metadata (``meta.system_kstat_init``) and set its crtime.

    ``crtime``: when its counters started, in ns of ``snaptime``'s clock: the boot
    origin for counters from boot (:func:`boot_origin`), a device's discovery for
    one that came later; None: the kstat's creation (gauges, tunables). Call
    between kstat_create and kstat_install.
    """
    created = ksp.ks_crtime
    system_kstat_init(ksp)
    ksp.ks_crtime = ksp.ks_snaptime = created if crtime is None else crtime


def create_raw(
    chain: Chain,
    module: str,
    instance: int,
    name: str,
    ks_class: str,
    layout: Layout,
    source: NamedSource,
    crtime: int | None = None,
) -> Kstat:
    """Create and install a read-only RAW kstat: ``layout`` packed from ``source.values()``."""
    ksp = chain.kstat_create(module, instance, name, ks_class, KSTAT_TYPE_RAW, layout.size, 0)
    date_kstat(ksp, crtime)
    ksp.ks_private = (layout, source, [None])  # [the values ks_data was last packed from]
    ksp.ks_update = raw_update
    return install_or_delete(chain, ksp)


def raw_update(ksp: Kstat, rw: int) -> int:
    """ks_update of every RAW system kstat: pack the source's values into ``ks_data``.

    Values equal to the last ones packed leave ``ks_data`` as it is (packing is a pure
    function of them, and only this function writes a read-only RAW kstat's data).
    """
    if rw == KSTAT_WRITE:
        return errno.EACCES
    layout, source, last = ksp.ks_private
    try:
        values = source.values()
    except OSError as exc:
        return os_errno(exc)
    if values != last[0]:
        ksp.ks_data[:] = layout.pack(values)
        last[0] = values
    return 0


def boot_origin(root: SysRoot) -> int:
    """The boot of ``root``'s host on the clock of ``snaptime`` (``time.monotonic_ns``).

    The host's own root: 0, CLOCK_MONOTONIC's origin is the boot. Another tree:
    now minus its ``proc/uptime``, so a fake host booted that long ago.
    """
    if root.real:
        return 0
    uptime_ns = int(float(root.read("proc/uptime").split()[0]) * 1e9)
    return max(0, time.monotonic_ns() - uptime_ns)


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
    source, plan = ksp.ks_private
    try:
        values = source.values()
    except OSError as exc:
        return os_errno(exc)
    resized = False
    for knp, name, kind, mask in plan:
        value = values[name]
        if kind == _MASKED:
            knp.value = value & mask
        elif kind == _PLAIN:
            knp.value = value
        elif kind == _STR:
            if knp.value != value:  # only a changed string moves ks_data_size
                kstat_named_setstr(knp, value)
                resized = True
        else:
            knp.value = value.encode()[:16] if isinstance(value, str) else bytes(value)[:16]
    return default_kstat_update(ksp, rw) if resized and ksp.ks_flags & _RESIZES else 0


_PLAIN, _MASKED, _STR, _CHR = 0, 1, 2, 3
_RESIZES = KstatFlag.VAR_SIZE | KstatFlag.LONGSTRINGS


def _plan(ksp: Kstat, absent: Collection[str] = ()) -> list[tuple[Any, str, int, int]]:
    # (record, name, how to store, mask) for each record with a source: the types never
    # change; records without one keep the 0 kstat_named_init gave them.
    plan = []
    for knp in ksp.ks_data:
        if knp.name in absent:
            continue
        t = knp.data_type
        if t == KstatDataType.STRING:
            plan.append((knp, knp.name, _STR, 0))
        elif t == KstatDataType.CHAR:
            plan.append((knp, knp.name, _CHR, 0))
        elif t in _MASK:
            plan.append((knp, knp.name, _MASKED, _MASK[t]))
        else:
            plan.append((knp, knp.name, _PLAIN, 0))
    return plan
