"""The panic report: what illumos prints when a provider faults on freed memory.

A :class:`~kstatpy.kmem.BadTrap` raised inside ``ks_update`` or ``ks_snapshot`` is a
kernel panic (VMM.md §4). :func:`format_panic` renders it as illumos would show it
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

__all__ = ["format_panic", "panic_stack", "write_crash_file"]

_STACK_TOP = 0xFFFFFE007AE3DF00  # fake kernel stack addresses, as in the seed report


def _addr_of(obj: Any) -> int:
    # The heap address of obj without touching it through a possibly poisoned class.
    try:
        buf = object.__getattribute__(obj, "_kmem_buf")
    except (AttributeError, TypeError):
        return 0
    return buf.addr if buf is not None else 0


def panic_stack(trap: BaseException) -> list[str]:
    """The stack of ``trap``, innermost first, as ``module:function+0xOFF`` symbols."""
    frames = []
    tb = trap.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    symbols = []
    for frame in reversed(frames):
        if frame.f_globals.get("__name__", "").startswith("pluggy"):  # hook plumbing says nothing
            continue
        if frame.f_code.co_name.startswith("_trap_"):
            symbols += [f"unix:trap+0x{frame.f_lasti:x}", "unix:_cmntrap+0x1cd"]
        else:
            symbols.append(frame_symbol(frame))
    return symbols


def _fn_name(fn: Any) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def _print_kstat(ksp: Any, addr: int) -> list[str]:
    # ::print kstat_t. ksp is held by the faulting reader, so it is live.
    def s(v: str) -> str:
        return f'[ "{v}" ]'

    data_addr = addr + 0x110 if ksp.ks_data is not None else 0
    return [
        f"> {addr:x}::print kstat_t",
        f"    ks_crtime = 0x{ksp.ks_crtime:x}",
        "    ks_next = 0",
        f"    ks_kid = 0x{ksp.ks_kid:x}",
        f"    ks_module = {s(ksp.ks_module)}",
        "    ks_resv = 0",
        f"    ks_instance = 0x{ksp.ks_instance:x}",
        f"    ks_name = {s(ksp.ks_name)}",
        f"    ks_type = 0x{int(ksp.ks_type):x}",
        f"    ks_class = {s(ksp.ks_class)}",
        f"    ks_flags = 0x{int(ksp.ks_flags):x}" if ksp.ks_flags else "    ks_flags = 0",
        f"    ks_data = 0x{data_addr:x}",
        f"    ks_ndata = 0x{ksp.ks_ndata:x}",
        f"    ks_data_size = 0x{ksp.ks_data_size:x}",
        f"    ks_snaptime = 0x{ksp.ks_snaptime:x}",
        f"    ks_update = {_fn_name(ksp.ks_update)}",
        f"    ks_private = 0x{_addr_of(ksp.ks_private):x}",
        f"    ks_snapshot = {_fn_name(ksp.ks_snapshot)}",
        f"    ks_lock = 0x{_addr_of(ksp.ks_lock):x}" if ksp.ks_lock is not None else "    ks_lock = 0",
    ]


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
    """The full panic report for ``trap`` (VMM.md §4), ending with a newline."""
    pid = os.getpid()
    thread = threading.get_ident()
    stack = panic_stack(trap)
    if isinstance(trap, FreeWhileReferenced):
        return _format_audit_panic(trap, kmem, pid, thread, stack)
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
        lines.append(f"{_STACK_TOP - 0x700 + i * 0x40:x} {sym} ()")
    lines.append("")
    ksp = trap.ksp
    if ksp is not None:
        addr = _addr_of(ksp)
        lines += _print_kstat(ksp, addr)
        private = _addr_of(ksp.ks_private)
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
        lines.append(f"{_STACK_TOP - 0x700 + i * 0x40:x} {sym} ()")
    lines.append("")
    lines += _audit_lines(trap)
    first = trap.refs[0].holder
    addr = _addr_of(first)
    lines += _print_kstat(first, addr)
    lines.append(f"> {buf.addr:x}::whatis")
    lines.append(kmem.whatis(buf.addr))
    return "\n".join(lines) + "\n"


def write_crash_file(report: str, crash_dir: str | os.PathLike[str]) -> Path:
    """Write ``report`` to a new ``kstatd.crash.<pid>.<n>`` in ``crash_dir``; return its path."""
    directory = Path(crash_dir)
    directory.mkdir(parents=True, exist_ok=True)
    n = 0
    while True:
        path = directory / f"kstatd.crash.{os.getpid()}.{n}"
        try:
            with open(path, "x", encoding="utf-8") as f:
                f.write(report)
            return path
        except FileExistsError:
            n += 1
