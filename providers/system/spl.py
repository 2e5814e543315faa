"""OpenZFS's kstats on Linux: every file under ``proc/spl/kstat/``, with OpenZFS's own
module, name, type and data types.

The SPL (OpenZFS's Solaris Porting Layer, module/os/linux/spl/spl-kstat.c) shows
each kstat as ``proc/spl/kstat/MODULE/NAME``; MODULE may hold a slash (a pool's
kstats: ``zfs/tank/io``, module ``zfs/tank``). Instance: 0 (the file does not say).
Each file is text:

    line 1   ``kid type flags ndata data_size crtime snaptime`` (flags in hex,
             crtime/snaptime in ns of the SPL's gethrtime)
    NAMED    a line ``name type data``, then one ``NAME TYPE VALUE`` line per record;
             TYPE is KSTAT_DATA_* (0 char, 1 int32, 2 uint32, 3 int64, 4 uint64,
             5 long, 6 ulong, 9 string)
    IO       a header line ``nread nwritten reads writes wtime wlentime wupdate rtime
             rlentime rupdate wcnt rcnt``, then one line of values
    INTR     a header line ``hard soft watchdog spurious multiple_service``, then values
    RAW      free text, published as the RAW kstat's bytes (kstat(8) has no decoder
             for them, so the command does not show them; a client reads the text)

The kstat is created from the file found at attach or refresh (class ``misc``:
the file does not say), with ``crtime`` the header's crtime (the SPL's clock is
CLOCK_MONOTONIC_RAW: it can drift from ``snaptime``'s CLOCK_MONOTONIC by the NTP
frequency correction, parts per million). Each read parses the file again; a NAMED
record that was not there at creation is ignored, one that went away keeps its last
value; a FLOAT or DOUBLE record (no kstat(8) rendering) is left out. TIMER kstats
and kstats whose header does not parse are skipped.
"""

from __future__ import annotations

import errno
import os

from kstatpy_providers.system.source import SysRoot
from kstatpy_providers.system.source import create_named
from kstatpy_providers.system.source import date_kstat
from kstatpy_providers.system.source import install_or_delete
from kstatpy_providers.system.source import os_errno

from kstatpy.constants import KSTAT_FLAG_VAR_SIZE
from kstatpy.constants import KSTAT_FLAG_VIRTUAL
from kstatpy.constants import KSTAT_TYPE_INTR
from kstatpy.constants import KSTAT_TYPE_IO
from kstatpy.constants import KSTAT_TYPE_NAMED
from kstatpy.constants import KSTAT_TYPE_RAW
from kstatpy.constants import KSTAT_WRITE
from kstatpy.kstat import KMutex
from kstatpy.metadata import gauge
from kstatpy.metadata import text

TYPE_CHECKING = False  # not typing's: kept off the embedded kstat's start-up path
if TYPE_CHECKING:
    from typing import Any

    from kstatpy.chain import Chain
    from kstatpy.kstat import Kstat

__all__ = ["SPL_ROOT", "SplHeader", "create_spl", "parse_header", "parse_named", "spl_kstats"]

SPL_ROOT = "proc/spl/kstat"
_CHAR, _STRING = 0, 9
_NAMED_TYPES = frozenset((0, 1, 2, 3, 4, 5, 6, 9))
_TEXT_TYPES = frozenset((0, 9))  # KSTAT_DATA_CHAR, KSTAT_DATA_STRING
_IO_NAMES = {"wupdate": "wlastupdate", "rupdate": "rlastupdate"}
_IO_FIELDS = ("nread", "nwritten", "reads", "writes", "wtime", "wlentime", "wlastupdate",
              "rtime", "rlentime", "rlastupdate", "wcnt", "rcnt")  # fmt: skip
_INTR_FIELDS = ("hard", "soft", "watchdog", "spurious", "multiple_service")


class SplHeader:
    """The first line of an SPL kstat file."""

    __slots__ = ("crtime", "data_size", "flags", "kid", "ndata", "snaptime", "type")

    def __init__(self, words: list[bytes]) -> None:
        self.kid = int(words[0])
        self.type = int(words[1])
        self.flags = int(words[2], 16)
        self.ndata = int(words[3])
        self.data_size = int(words[4])
        self.crtime = int(words[5])
        self.snaptime = int(words[6])


def parse_header(data: bytes) -> tuple[SplHeader, bytes]:
    """(header, the rest of the file). :raises ValueError: not an SPL kstat file."""
    first, _, rest = data.partition(b"\n")
    words = first.split()
    if len(words) != 7:
        raise ValueError(f"SPL kstat header has {len(words)} fields, not 7")
    return SplHeader(words), rest


def _value(dtype: int, text: bytes) -> Any:
    if dtype == _STRING:
        return text.decode("utf-8", "surrogateescape")
    if dtype == _CHAR:
        return text[:16]
    if dtype not in _NAMED_TYPES:  # FLOAT, DOUBLE
        return float(text)
    return int(text)


def parse_named(body: bytes) -> list[tuple[str, int, Any]]:
    """A NAMED kstat's records after the header: [(name, KSTAT_DATA_*, value)]."""
    out = []
    lines = body.split(b"\n")
    for line in lines[1:]:  # lines[0] is "name type data"
        parts = line.split(None, 2)
        if len(parts) < 2:
            continue
        dtype = int(parts[1])
        out.append(
            (parts[0].decode("utf-8", "surrogateescape"), dtype, _value(dtype, parts[2] if len(parts) > 2 else b""))
        )
    return out


def _columns(body: bytes) -> dict[str, int]:
    lines = body.split(b"\n")
    names = [n.decode() for n in lines[0].split()]
    values = [int(v) for v in lines[1].split()] if len(lines) > 1 else []
    return {_IO_NAMES.get(n, n): v for n, v in zip(names, values, strict=False)}


def spl_kstats(root: SysRoot) -> list[tuple[str, str]]:
    """(module, name) of every file under ``proc/spl/kstat`` (module: the directory path)."""
    base = root.join(SPL_ROOT)
    out: list[tuple[str, str]] = []
    for dirpath, _, files in os.walk(base):
        module = os.path.relpath(dirpath, base)
        if module == ".":
            continue
        out.extend((module.replace(os.sep, "/"), name) for name in files)
    return sorted(out)


class SplNamedSource:
    def __init__(self, root: SysRoot, rel: str, records: list[tuple[str, int, Any]]) -> None:
        self.root = root
        self.rel = rel
        self.last = {name: value for name, _, value in records}

    def values(self) -> dict[str, Any]:
        _, body = parse_header(self.root.read_bytes(self.rel))
        last = self.last
        for name, _, value in parse_named(body):
            if name in last:
                last[name] = value
        return last


def _spl_update(ksp: Kstat, rw: int) -> int:
    # ks_update of the IO, INTR and RAW SPL kstats.
    if rw == KSTAT_WRITE:
        return errno.EACCES
    root, rel = ksp.ks_private
    try:
        _, body = parse_header(root.read_bytes(rel))
    except OSError as exc:
        return os_errno(exc)
    except ValueError:
        return errno.EIO
    t = ksp.ks_type
    if t == KSTAT_TYPE_RAW:  # under ks_lock (VAR_SIZE): the snapshot copies this
        ksp.ks_data = bytes(body)
        ksp.ks_data_size = len(body)
    elif t == KSTAT_TYPE_IO:
        cols = _columns(body)
        kiop = ksp.ks_data[0]
        for f in _IO_FIELDS:
            setattr(kiop, f, cols.get(f, 0))
    else:
        cols = _columns(body)
        ksp.ks_data[0].intrs[:] = [cols.get(f, 0) for f in _INTR_FIELDS]
    return 0


def create_spl(chain: Chain, root: SysRoot, module: str, name: str) -> list[Kstat]:
    """The kstat of ``proc/spl/kstat/MODULE/NAME``; [] for a TIMER or unreadable one."""
    rel = f"{SPL_ROOT}/{module}/{name}"
    try:
        header, body = parse_header(root.read_bytes(rel))
    except (OSError, ValueError):
        return []
    if header.type == KSTAT_TYPE_NAMED:
        records = [r for r in parse_named(body) if r[1] in _NAMED_TYPES]  # FLOAT/DOUBLE: left out
        fields = [(n, t) for n, t, _ in records]
        # The SPL text names a field and its data type, never its kind or unit: text
        # for CHAR/STRING, else a gauge (no rate is computed from a field that may
        # not be a counter).
        meta = {
            n: text(f"OpenZFS {module}:{name} text field") if t in _TEXT_TYPES
            else gauge("", f"OpenZFS {module}:{name} field (OpenZFS gives no unit or kind)")
            for n, t in fields
        }  # fmt: skip
        ksp = create_named(chain, module, 0, name, "misc", fields, SplNamedSource(root, rel, records),
                           crtime=header.crtime, meta=meta)  # fmt: skip
        return [ksp]
    if header.type == KSTAT_TYPE_RAW:
        # The text's length changes from read to read: a variable-size virtual kstat.
        ksp = chain.kstat_create(module, 0, name, "misc", KSTAT_TYPE_RAW, 1, KSTAT_FLAG_VIRTUAL | KSTAT_FLAG_VAR_SIZE)
        ksp.ks_lock = KMutex()
        ksp.ks_data = bytes(body)
        ksp.ks_data_size = len(body)
    elif header.type in (KSTAT_TYPE_IO, KSTAT_TYPE_INTR):
        ksp = chain.kstat_create(module, 0, name, "misc", header.type, 1, 0)
    else:
        return []
    ksp.ks_private = (root, rel)
    ksp.ks_update = _spl_update
    date_kstat(ksp, header.crtime)
    return [install_or_delete(chain, ksp)]
