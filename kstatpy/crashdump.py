"""The crash dump: a panic's state as a structured file, written by kstatd, read by ``kstatpy-mdb``.

illumos saves a panicking kernel's memory (``vmcore.N``) for mdb; kstatd saves what
mdb's kstat and kmem dcmds need, as one JSON document next to the human-readable
panic report (``kstatd.crash.<pid>.<n>``, unchanged): ``kstatd.vmcore.<pid>.<n>.json``
(illumos: ``unix.N`` and ``vmcore.N``; :func:`dump_path_for` maps one to the other).

Format (``"format": "kstatpy-crashdump"``, ``"version": 1``; readers ignore unknown keys)
    ``panic``
        ``message`` (the panic line after ``panic[cpu0]/thread=...: ``), ``trap``
        (``what``: the access, ``addr``: the faulting address, ``kind``:
        ``"page fault"``, ``"double free"`` or ``"kmem audit"``), ``pid``,
        ``thread``, ``time`` (Unix seconds), ``hostname``, ``software``.
    ``stack``
        innermost first: ``frame`` (fake kernel stack address), ``symbol``
        (``module:function+0xOFF``), ``args`` (the function's arguments as mdb's
        ``$C`` shows them: heap objects by address, integers in hex, other values
        by type name).
    ``kstat``
        the address of the kstat being read at the trap (0: none).
    ``audit``
        for a kmem audit trap: the buffer's address and every ``{kstat, field}``
        pointing into it; else null.
    ``lockorder``
        for a lock-order trap (``kind`` ``"lock order"``): ``cycle``, the edges,
        the closing one first, each ``from``, ``to`` (lock class names), ``held``,
        ``what``, ``thread``, ``thread_name``, ``kstat`` (address, 0: none) and
        ``stack`` (where the edge was first seen, innermost first); else absent.
    ``kstats``
        every kstat in the chain (installed, INVALID, lingering, dormant): the
        header of :func:`kstatpy.panic.kstat_t` plus ``zones`` and ``created``
        (the creation stack).
    ``kmem``
        ``buffers``: the heap's buffers by address: ``addr``, ``size``, ``type``,
        ``cache``, ``state`` (``"allocated"``/``"freed"``), ``alloc_stack``,
        ``alloc_time``, ``alloc_thread``, and for freed ones ``free_stack``,
        ``free_time``, ``free_thread``. Every allocated buffer is there; of the
        freed ones the :data:`FREED_IN_DUMP` most recent, plus every one that a
        kstat or the trap points into. ``freed_omitted`` counts the others.
    ``report``
        the human-readable panic report (``::msgbuf``).

Numbers are JSON integers (addresses included); times are ns of the monotonic
clock unless said otherwise. Loading checks the format and version and raises
:class:`CrashDumpError` with a one-line message.
"""

from __future__ import annotations

import bisect
import errno
import json
import os
import platform
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from kstatpy.kmem import BadTrap
from kstatpy.kmem import FreeWhileReferenced
from kstatpy.kmem import KmemBuf
from kstatpy.kmem import kmem_addr
from kstatpy.panic import kstat_t
from kstatpy.panic import panic_frames
from kstatpy.panic import stack_frame_addr
from kstatpy.safefile import FileTooLargeError
from kstatpy.safefile import read_capped
from kstatpy.safefile import write_new

if TYPE_CHECKING:
    from kstatpy.chain import Chain

__all__ = [
    "DUMP_FORMAT",
    "DUMP_VERSION",
    "FREED_IN_DUMP",
    "CrashDump",
    "CrashDumpError",
    "build_dump",
    "dump_path_for",
    "load_dump",
    "write_dump",
]

DUMP_FORMAT = "kstatpy-crashdump"
DUMP_VERSION = 1
#: The largest dump kstatpy-mdb reads (bytes); a dump holds a chain and a bounded kmem history.
MAX_DUMP_BYTES = 256 << 20
#: The most recent freed buffers kept in a dump (those a kstat points into are always kept).
FREED_IN_DUMP = 4096


class CrashDumpError(Exception):
    """A file that is not a readable kstatpy crash dump; the message is one line."""



def _arg(value: Any) -> str:
    # An argument as $C shows it.
    addr = kmem_addr(value)
    if addr:
        return f"{addr:x}"
    if value is None or value is False:
        return "0"
    if value is True:
        return "1"
    if type(value) is int:
        return f"{value:x}" if value >= 0 else f"-{-value:x}"
    if type(value) is str and len(value) <= 32:
        return f'"{value}"'
    name = getattr(value, "__name__", None)
    if callable(value) and isinstance(name, str):
        return name
    return f"<{type(value).__name__}>"


def _frame_args(frame: Any) -> list[str]:
    if frame is None:
        return []
    code = frame.f_code
    names = code.co_varnames[: code.co_argcount]
    local = frame.f_locals
    # A method's self is left out (C has none), unless it is a heap object (the trap's).
    return [_arg(local.get(n)) for n in names if n != "self" or kmem_addr(local.get(n))]


def _trap_kind(trap: BadTrap) -> str:
    if isinstance(trap, FreeWhileReferenced):
        return "kmem audit"
    if hasattr(trap, "cycle"):  # kstatpy.lockorder.LockOrderViolation
        return "lock order"
    return "double free" if trap.what == "double free" else "page fault"


def _buf_json(buf: KmemBuf) -> dict[str, Any]:
    out: dict[str, Any] = {
        "addr": buf.addr,
        "size": buf.size,
        "type": buf.type_name,
        "cache": buf.cache,
        "state": "freed" if buf.freed else "allocated",
        "alloc_stack": list(buf.alloc_stack),
        "alloc_time": buf.alloc_time,
        "alloc_thread": buf.thread,
    }
    if buf.freed:
        out.update(free_stack=list(buf.free_stack), free_time=buf.free_time, free_thread=buf.free_thread)
    return out


def _kstat_json(ksp: Any) -> dict[str, Any]:
    hdr = kstat_t(ksp)
    hdr["zones"] = list(ksp.e_zones)
    buf = object.__getattribute__(ksp, "_kmem_buf")
    hdr["created"] = list(buf.alloc_stack) if buf is not None else []
    return hdr


def build_dump(trap: BadTrap, chain: Chain, report: str) -> dict[str, Any]:
    """The crash dump of ``trap`` on ``chain`` (see the module docstring)."""
    first = report.split("\n", 1)[0]
    message = first.split(": ", 1)[1] if ": " in first else first
    stack = [
        {"frame": stack_frame_addr(i), "symbol": sym, "args": _frame_args(frame)}
        for i, (sym, frame) in enumerate(panic_frames(trap))
    ]
    if not stack and isinstance(trap, FreeWhileReferenced):
        stack = [{"frame": stack_frame_addr(i), "symbol": s, "args": []} for i, s in enumerate(trap.free_stack)]
    if not stack and hasattr(trap, "cycle"):
        stack = [{"frame": stack_frame_addr(i), "symbol": s, "args": []} for i, s in enumerate(trap.cycle[0].stack)]
    kstats = [_kstat_json(ksp) for ksp in chain.kstats()]
    audit = None
    if isinstance(trap, FreeWhileReferenced):
        audit = {"buffer": trap.addr, "refs": [{"kstat": kmem_addr(r.holder), "field": r.field} for r in trap.refs]}
    pointed = {trap.addr} | {k[f] for k in kstats for f in ("ks_private", "ks_lock", "ks_data") if k[f]}
    buffers = chain.kmem.buffers()  # by address
    starts = [b.addr for b in buffers]
    keep = {id(b) for b in buffers if not b.freed}
    keep |= {id(b) for b in sorted((b for b in buffers if b.freed), key=lambda b: b.free_time)[-FREED_IN_DUMP:]}
    for a in pointed:
        i = bisect.bisect_right(starts, a) - 1
        if i >= 0 and a < buffers[i].addr + max(buffers[i].size, 1):
            keep.add(id(buffers[i]))
    kept = [b for b in buffers if id(b) in keep]
    doc = {
        "format": DUMP_FORMAT,
        "version": DUMP_VERSION,
        "panic": {
            "message": message,
            "trap": {"what": trap.what, "addr": trap.addr, "kind": _trap_kind(trap)},
            "pid": os.getpid(),
            "thread": threading.get_ident(),
            "time": time.time(),
            "hostname": socket.gethostname(),
            "software": f"kstatpy (Python {platform.python_version()}, {platform.system()} {platform.release()})",
        },
        "stack": stack,
        "kstat": kmem_addr(trap.ksp),
        "audit": audit,
        "kstats": kstats,
        "kmem": {"buffers": [_buf_json(b) for b in kept], "freed_omitted": len(buffers) - len(kept)},
        "report": report,
    }
    if hasattr(trap, "cycle"):
        doc["lockorder"] = {"cycle": [e.as_json() for e in trap.cycle]}
    return doc


def dump_path_for(report_path: str | os.PathLike[str]) -> str:
    """The dump's path for a panic report's: ``kstatd.crash.P.N`` -> ``kstatd.vmcore.P.N.json``."""
    p = Path(report_path)
    name = p.name.replace("kstatd.crash.", "kstatd.vmcore.", 1) if p.name.startswith("kstatd.crash.") else p.name
    return str(p.with_name(name + ".json"))


def write_dump(dump: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``dump`` as JSON to ``path`` (created, never overwritten); return the path.

    Written whole to a temporary file and then linked to ``path``
    (:func:`kstatpy.safefile.write_new`): a full disk leaves no partial dump.

    :raises OSError: FileExistsError when ``path`` exists; ENOSPC and the like.
    """
    out = Path(path)
    data = (json.dumps(dump, separators=(",", ":")) + "\n").encode("utf-8", "backslashreplace")
    write_new(out.parent, lambda n: out.name if n == 0 else None, data)
    return out


@dataclass
class CrashDump:
    """A loaded crash dump: the JSON document plus lookups by address."""

    path: str
    doc: dict[str, Any]

    def __post_init__(self) -> None:
        self.kstats: list[dict[str, Any]] = self.doc["kstats"]
        self.by_addr = {k["addr"]: k for k in self.kstats}
        self.buffers = [_buf_of_json(b) for b in self.doc["kmem"]["buffers"]]
        self._starts = [b.addr for b in self.buffers]

    @property
    def panic(self) -> dict[str, Any]:
        """The ``panic`` section."""
        return self.doc["panic"]

    def lookup(self, addr: int) -> KmemBuf | None:
        """The dumped buffer that holds ``addr``, or None (``::whatis``)."""
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0:
            buf = self.buffers[i]
            if buf.addr <= addr < buf.addr + max(buf.size, 1):
                return buf
        return None


def _buf_of_json(b: dict[str, Any]) -> KmemBuf:
    return KmemBuf(
        addr=b["addr"],
        size=b["size"],
        type_name=b["type"],
        alloc_stack=tuple(b.get("alloc_stack", ())),
        alloc_time=b.get("alloc_time", 0),
        thread=b.get("alloc_thread", 0),
        freed=b.get("state") == "freed",
        free_stack=tuple(b.get("free_stack", ())),
        free_time=b.get("free_time", 0),
        free_thread=b.get("free_thread", 0),
        cache=b.get("cache", ""),
    )


def load_dump(path: str | os.PathLike[str]) -> CrashDump:
    """Read a crash dump; a panic report's path finds its dump beside it.

    :raises CrashDumpError: missing or unreadable file, not JSON, not a kstatpy
        crash dump, or a newer format version.
    """
    p = Path(path)
    if not p.name.startswith("kstatd.vmcore.") and os.path.lexists(dump_path_for(p)):
        dump = Path(dump_path_for(p))
        # Only the dump its report's writer left: in a shared crash directory another
        # user could have planted one (kstatd's own write then fails, O_EXCL). lstat:
        # a planted symbolic link is judged by its own owner, and never followed.
        try:
            report_uid, dump_uid = os.lstat(p).st_uid, os.lstat(dump).st_uid
        except OSError as exc:
            raise CrashDumpError(f"{path}: cannot read: {exc.strerror or exc}") from None
        if report_uid != dump_uid:
            raise CrashDumpError(
                f"{dump}: owned by uid {dump_uid}, not by the report's uid {report_uid}; "
                "name the dump itself if you trust it"
            )
        p = dump
    try:
        raw = read_capped(p, MAX_DUMP_BYTES)
    except FileNotFoundError:
        raise CrashDumpError(f"{path}: no such file") from None
    except FileTooLargeError:
        raise CrashDumpError(f"{path}: larger than {MAX_DUMP_BYTES >> 20} MiB; not a kstatpy crash dump") from None
    except OSError as exc:
        why = "a symbolic link (name the file it points to)" if exc.errno == errno.ELOOP else exc.strerror or exc
        raise CrashDumpError(f"{path}: cannot read: {why}") from None
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise CrashDumpError(f"{path}: not a kstatpy crash dump (not UTF-8: {exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise CrashDumpError(f"{path}: not a kstatpy crash dump (not JSON: {exc.msg}, line {exc.lineno})") from None
    except RecursionError:
        raise CrashDumpError(f"{path}: not a kstatpy crash dump (JSON nested too deeply)") from None
    except ValueError as exc:  # an integer of more digits than Python converts, and the like
        raise CrashDumpError(f"{path}: not a kstatpy crash dump ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != DUMP_FORMAT:
        raise CrashDumpError(f"{path}: not a kstatpy crash dump (no \"format\": \"{DUMP_FORMAT}\")")
    version = doc.get("version")
    if not isinstance(version, int) or version > DUMP_VERSION:
        raise CrashDumpError(f"{path}: crash dump version {version!r}; this kstatpy-mdb reads version {DUMP_VERSION}")
    try:
        return CrashDump(str(p), doc)
    except (KeyError, TypeError, AttributeError, ValueError, IndexError, RecursionError) as exc:
        raise CrashDumpError(f"{path}: damaged crash dump (missing {exc})") from None
