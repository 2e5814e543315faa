"""The panic report: what illumos prints when a provider faults on freed memory.

A :class:`~kstatpy.kmem.BadTrap` raised inside ``ks_update`` or ``ks_snapshot`` is a
kernel panic (docs/KMEM.md §4). :func:`format_panic` renders it as illumos would show it
in the console and in mdb: the ``BAD TRAP`` line, the stack innermost first as
``module:function+offset`` lines, ``::print kstat_t`` of the kstat being read and
``::whatis`` of its ``ks_private``. The reference audit's trap
(:class:`~kstatpy.kmem.FreeWhileReferenced`, a free that live kstats still point
into) has no kstat being read: its report gives the free's stack, the kstats that
point into the buffer with the field and their creation stacks, ``::print kstat_t``
of the first and ``::whatis`` of the buffer. The daemon decides what happens next
(``--on-panic``); this module only formats and writes files.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from kstatpy.kmem import BadTrap
from kstatpy.kmem import FreeWhileReferenced
from kstatpy.kmem import Kmem
from kstatpy.kmem import frame_symbol
from kstatpy.kmem import kmem_addr
from kstatpy.safefile import write_new

__all__ = [
    "KSTAT_T_MEMBERS",
    "format_panic",
    "kstat_t",
    "kstat_t_member",
    "lockorder_lines",
    "panic_frames",
    "panic_stack",
    "print_kstat_t",
    "stack_frame_addr",
    "write_crash_file",
]

_STACK_TOP = 0xFFFFFE007AE3DF00  # fake kernel stack addresses, as in the seed report



def panic_frames(trap: BaseException) -> list[tuple[str, Any]]:
    """The stack of ``trap``, innermost first: ``(symbol, frame)`` pairs.

    ``symbol`` is ``module:function+0xOFF``; the trap handler shows as illumos'
    ``unix:trap`` and ``unix:_cmntrap`` (frame None for the latter). pluggy's
    frames are left out: hook plumbing says nothing.
    """
    frames = []
    tb = trap.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    out: list[tuple[str, Any]] = []
    for frame in reversed(frames):
        if frame.f_globals.get("__name__", "").startswith("pluggy"):
            continue
        if frame.f_code.co_name.startswith("_trap_"):
            out += [(f"unix:trap+0x{frame.f_lasti:x}", frame), ("unix:_cmntrap+0x1cd", None)]
        else:
            out.append((frame_symbol(frame), frame))
    return out


def panic_stack(trap: BaseException) -> list[str]:
    """The stack of ``trap``, innermost first, as ``module:function+0xOFF`` symbols."""
    return [sym for sym, _ in panic_frames(trap)]


def stack_frame_addr(depth: int) -> int:
    """The fake kernel stack address of the frame ``depth`` levels out from the trap."""
    return _STACK_TOP - 0x700 + depth * 0x40


def _fn_name(fn: Any) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


#: The members of kstat_t in declaration order (sys/kstat.h), as ``::print kstat_t`` shows them.
KSTAT_T_MEMBERS = (
    "ks_crtime", "ks_next", "ks_kid", "ks_module", "ks_resv", "ks_instance", "ks_name", "ks_type",
    "ks_class", "ks_flags", "ks_data", "ks_ndata", "ks_data_size", "ks_snaptime", "ks_update",
    "ks_private", "ks_snapshot", "ks_lock",
)  # fmt: skip
_STRINGS = frozenset({"ks_module", "ks_name", "ks_class"})
_SYMBOLS = frozenset({"ks_update", "ks_snapshot"})


def kstat_t(ksp: Any) -> dict[str, Any]:
    """A kstat's header as plain values: ``addr`` and every member of ``KSTAT_T_MEMBERS``.

    Pointers are heap addresses (0: NULL or not on the heap; ``ks_private_type`` and
    ``ks_lock_type`` name what a non-NULL one is); ``ks_update``/``ks_snapshot`` are
    function names. The caller must know ``ksp`` is live (held, or in the chain).
    """
    addr = kmem_addr(ksp)
    data = ksp.ks_data
    data_addr = kmem_addr(data) or (addr + 0x110 if data is not None else 0)  # data follows the header
    return {
        "addr": addr,
        "ks_crtime": ksp.ks_crtime,
        "ks_next": 0,
        "ks_kid": ksp.ks_kid,
        "ks_module": ksp.ks_module,
        "ks_resv": 0,
        "ks_instance": ksp.ks_instance,
        "ks_name": ksp.ks_name,
        "ks_type": int(ksp.ks_type),
        "ks_class": ksp.ks_class,
        "ks_flags": int(ksp.ks_flags),
        "ks_data": data_addr,
        "ks_ndata": ksp.ks_ndata,
        "ks_data_size": ksp.ks_data_size,
        "ks_snaptime": ksp.ks_snaptime,
        "ks_update": _fn_name(ksp.ks_update),
        "ks_private": kmem_addr(ksp.ks_private),
        "ks_private_type": None if ksp.ks_private is None else type(ksp.ks_private).__name__,
        "ks_snapshot": _fn_name(ksp.ks_snapshot),
        "ks_lock": kmem_addr(ksp.ks_lock),
        "ks_lock_type": None if ksp.ks_lock is None else type(ksp.ks_lock).__name__,
    }


def kstat_t_member(hdr: dict[str, Any], member: str) -> str:
    """One line of ``::print kstat_t``: ``member = value`` as mdb shows it."""
    value = hdr[member]
    if member in _STRINGS:
        text = f'[ "{value}" ]'
    elif member in _SYMBOLS:
        text = str(value)
    elif member == "ks_private":
        text = f"0x{value:x}"
    elif member == "ks_lock":
        text = f"0x{value:x}" if hdr.get("ks_lock_type") is not None else "0"
    elif value == 0 and member in ("ks_next", "ks_resv", "ks_flags"):
        text = "0"
    else:
        text = f"0x{value:x}"
    return f"{member} = {text}"


def print_kstat_t(hdr: dict[str, Any], members: tuple[str, ...] | list[str] = KSTAT_T_MEMBERS) -> list[str]:
    """``::print kstat_t [MEMBER ...]`` of a header made by :func:`kstat_t`."""
    return [f"    {kstat_t_member(hdr, m)}" for m in members]


def _print_kstat(ksp: Any, addr: int) -> list[str]:
    # ::print kstat_t. ksp is held by the faulting reader, so it is live.
    return [f"> {addr:x}::print kstat_t", *print_kstat_t(kstat_t(ksp))]


def _audit_lines(trap: FreeWhileReferenced) -> list[str]:
    # The kstats that still point into the buffer, then their creation stacks,
    # grouped (a VM's 33 kstats share one).
    lines = [
        "kstats still pointing into the buffer:",
        f"{'ADDR':>16} {'MODULE':<12} {'INST':>5} {'NAME':<30} FIELD",
    ]
    stacks: dict[tuple[str, ...], int] = {}
    for ref in trap.refs:
        ksp = ref.holder
        buf = object.__getattribute__(ksp, "_kmem_buf")
        lines.append(f"{buf.addr:16x} {ksp.ks_module:<12} {ksp.ks_instance:>5} {ksp.ks_name:<30} {ref.field}")
        stacks[buf.alloc_stack] = stacks.get(buf.alloc_stack, 0) + 1
    for stack, n in stacks.items():
        lines.append(f"created (kstat_create) at, {n} kstat(s):")
        lines += [f"                 {sym}" for sym in stack]
    lines.append("")
    return lines


def format_panic(trap: BadTrap, kmem: Kmem) -> str:
    """The full panic report for ``trap`` (docs/KMEM.md §4), ending with a newline."""
    pid = os.getpid()
    thread = threading.get_ident()
    stack = panic_stack(trap)
    if isinstance(trap, FreeWhileReferenced):
        return _format_audit_panic(trap, kmem, pid, thread, stack)
    if hasattr(trap, "cycle"):  # kstatpy.lockorder.LockOrderViolation (imported lazily: it imports kmem)
        return _format_lockorder_panic(trap, pid, thread, stack)
    pc = 0xFFFFFFFFF7DC0000 + (hash(stack[0]) & 0xFFFF if stack else 0)
    rp = _STACK_TOP - 0x5F0
    lines = [
        f"panic[cpu0]/thread=0x{thread:x}: BAD TRAP: type=e (#pf Page fault) rp=0x{rp:x} addr=0x{trap.addr:x}",
        "",
        "#pf Page fault",
        f"Bad kernel fault at addr=0x{trap.addr:x} ({trap.what})",
        f"pid={pid}, pc=0x{pc:x}, sp=0x{rp + 0xF0:x}, eflags=0x10286",
        "",
    ]
    for i, sym in enumerate(stack):
        lines.append(f"{stack_frame_addr(i):x} {sym} ()")
    lines.append("")
    ksp = trap.ksp
    if ksp is not None:
        addr = kmem_addr(ksp)
        lines += _print_kstat(ksp, addr)
        private = kmem_addr(ksp.ks_private)
        lines.append(f"> {addr:x}::print kstat_t ks_private | ::whatis")
        lines.append(kmem.whatis(private) if private else "ks_private is NULL")
    lines.append(f"> {trap.addr:x}::whatis")
    lines.append(kmem.whatis(trap.addr))
    return "\n".join(lines) + "\n"


def _format_audit_panic(trap: FreeWhileReferenced, kmem: Kmem, pid: int, thread: int, stack: list[str]) -> str:
    buf = trap.buf
    assert buf is not None
    lines = [
        f"panic[cpu0]/thread=0x{thread:x}: kernel memory allocator: buffer freed while referenced: "
        f"kmem_free(0x{buf.addr:x}, {buf.size}) (kmem audit)",
        "",
        f"{trap.what}: {buf.type_name} at 0x{buf.addr:x} ({buf.cache})",
        f"pid={pid}",
        "",
    ]
    if not stack:  # not raised through a traceback yet: the stack the free recorded
        stack = list(trap.free_stack)
    for i, sym in enumerate(stack):
        lines.append(f"{stack_frame_addr(i):x} {sym} ()")
    lines.append("")
    try:  # the kstats named may be deleted meanwhile by other threads: never trap here
        lines += _audit_lines(trap)
        first = trap.refs[0].holder
        lines += _print_kstat(first, kmem_addr(first))
    except BadTrap as again:
        lines.append(f"(a kstat named above was deleted while this report was written: {again})")
    lines.append(f"> {buf.addr:x}::whatis")
    lines.append(kmem.whatis(buf.addr))
    return "\n".join(lines) + "\n"


def lockorder_lines(cycle: list[Any]) -> list[str]:
    """The cycle of a lock-order report: each edge, who made it first, and where.

    ``cycle`` holds :class:`kstatpy.lockorder.Edge` objects or their crash-dump
    records (``as_json``); the first edge is the one that closed the cycle.
    """
    rec = [e if isinstance(e, dict) else e.as_json() for e in cycle]
    lines = [f"lock order cycle ({len(rec)} lock classes):"]
    lines += [f"  {r['from']} -> {r['to']}" for r in rec]
    lines.append("")
    for i, r in enumerate(rec, start=1):
        when = "now (the call that closed the cycle)" if i == 1 else "first seen"
        lines.append(f"edge {i}: {r['from']} -> {r['to']}, {when}:")
        lines.append(f"  thread 0x{r['thread']:x} ({r['thread_name']}): {r['what']} while holding {r['held']}")
        lines += [f"                 {sym}" for sym in r["stack"]]
    lines.append("")
    return lines


def _format_lockorder_panic(trap: Any, pid: int, thread: int, stack: list[str]) -> str:
    lines = [f"panic[cpu0]/thread=0x{thread:x}: deadlock: {trap.what} (lock order checker)", ""]
    lines += lockorder_lines(trap.cycle)
    lines += [f"pid={pid}", ""]
    if not stack:  # not raised through a traceback yet: the closing edge's stack
        stack = list(trap.cycle[0].stack)
    for i, sym in enumerate(stack):
        lines.append(f"{stack_frame_addr(i):x} {sym} ()")
    lines.append("")
    ksp = trap.ksp
    if ksp is not None:
        try:
            lines += _print_kstat(ksp, kmem_addr(ksp))
        except BadTrap as again:
            lines.append(f"(the kstat was deleted while this report was written: {again})")
    return "\n".join(lines) + "\n"


def write_crash_file(report: str, crash_dir: str | os.PathLike[str]) -> Path:
    """Write ``report`` to a new ``kstatd.crash.<pid>.<n>`` in ``crash_dir``; return its path.

    Whole or not at all (:func:`kstatpy.safefile.write_new`): a full disk leaves nothing.
    """
    directory = Path(crash_dir)
    directory.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    return Path(write_new(directory, lambda n: f"kstatd.crash.{pid}.{n}", report.encode("utf-8", "backslashreplace")))
