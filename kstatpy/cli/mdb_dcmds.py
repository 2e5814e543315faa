"""kstatpy-mdb's command language and dcmds over a :class:`~kstatpy.crashdump.CrashDump`.

Syntax (a subset of mdb(1))
    A command line is one or more commands separated by ``;`` or newlines. A
    command is ``[ADDR]::dcmd [ARG ...]`` or ``[ADDR]$c`` (``$C``, ``$q``); ADDR
    is hexadecimal with or without ``0x``, or decimal after ``0t``. ``A | B``
    runs B once for every value A produces, as its ADDR (mdb's pipe).

dcmds
    ``$C``/``$c``                 the panic stack with frame addresses and arguments
    ``::status``                  what the dump is and the panic message
    ``::msgbuf``                  the human-readable panic report
    ``ADDR::print kstat_t [M..]`` a kstat header, or some of its members; pipes the members' values
    ``ADDR::whatis``              which heap buffer holds ADDR, allocated or freed, by whom
    ``::kstat [-d]``              every kstat (address, module, instance, name, ks_private);
                                  ``-d``: only those whose ks_private points into freed memory
    ``::walk kstat``              the kstats' addresses, one a line (pipes them)
    ``::lockorder``               a lock-order panic's cycle: each edge, its thread, call and stack
    ``::help``, ``::dcmds``       this list;  ``$q``, ``::quit``: leave

Errors raise :class:`MdbError` with mdb-like one-line messages; :func:`run_line`
returns the output text. No printing here: the CLI (``kstatpy.cli.mdb``) prints.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field

from kstatpy.crashdump import CrashDump
from kstatpy.kmem import whatis_text
from kstatpy.panic import KSTAT_T_MEMBERS
from kstatpy.panic import lockorder_lines
from kstatpy.panic import print_kstat_t

__all__ = ["HELP", "MdbError", "Quit", "run_line"]

HELP = """\
$C, $c                    print the panic stack (frame, function+offset, arguments)
::status                  print what this dump is and the panic message
::msgbuf                  print the panic report as kstatd wrote it
ADDR::print kstat_t [M..] print a kstat header, or members M of it
ADDR::whatis              print which kmem buffer holds ADDR, allocated or freed, and by whom
::kstat [-d]              list the kstats (-d: those whose ks_private points into freed memory)
::walk kstat              print every kstat's address (for pipes)
::lockorder               print a lock-order panic's cycle (each edge's thread, call and first stack)
A | B                     run B on every value A prints
::help, ::dcmds           print this list
$q, ::quit                quit"""

_COMMAND = re.compile(r"^\s*(?P<addr>[^:$\s]*)\s*(?P<verb>::[A-Za-z_]+|\$[A-Za-z<>?])(?P<args>.*)$")


class MdbError(Exception):
    """A command that cannot run; the message is one line, as mdb prints it."""


class Quit(Exception):
    """``$q``: leave."""


@dataclass
class Output:
    """What a command printed, and the values it hands to a pipe."""

    lines: list[str] = field(default_factory=list)
    values: list[int] = field(default_factory=list)


def parse_addr(text: str) -> int:
    """mdb's number syntax: hex (``0x`` optional), ``0t`` decimal."""
    t = text.strip().lower()
    try:
        if t.startswith("0t"):
            return int(t[2:], 10)
        return int(t[2:] if t.startswith("0x") else t, 16)
    except ValueError:
        raise MdbError(f"failed to parse address '{text}'") from None


def run_line(dump: CrashDump, line: str) -> str:
    """Run one command line (``;``-separated commands, ``|`` pipes); the output text.

    :raises MdbError: a bad command; :raises Quit: ``$q``.
    """
    out: list[str] = []
    for command in re.split(r"[;\n]", line):
        if command.strip():
            out += _pipeline(dump, command)
    return "\n".join(out)


def _pipeline(dump: CrashDump, command: str) -> list[str]:
    stages = command.split("|")
    values: list[int | None] = [None]
    result = Output()
    for stage in stages:
        result = Output()
        for value in values:
            step = _one(dump, stage, value)
            result.lines += step.lines
            result.values += step.values
        values = list(result.values)
    return result.lines


def _one(dump: CrashDump, text: str, piped: int | None) -> Output:
    m = _COMMAND.match(text)
    if m is None:
        raise MdbError(f"syntax error near '{text.strip()}' (try ::help)")
    verb = m["verb"]
    args = m["args"].split()
    addr: int | None = parse_addr(m["addr"]) if m["addr"] else piped
    fn = _DCMDS.get(verb)
    if fn is None:
        raise MdbError(f"dcmd '{verb}' not supported by kstatpy-mdb (try ::help)")
    return fn(dump, addr, args)


def _stack(dump: CrashDump, addr: int | None, args: list[str]) -> Output:
    out = Output()
    for f in dump.doc["stack"]:
        sym = f["symbol"].split(":", 1)[-1]
        out.lines.append(f"{f['frame']:x} {sym}({', '.join(f.get('args', []))})")
        out.values.append(f["frame"])
    return out


def _status(dump: CrashDump, addr: int | None, args: list[str]) -> Output:
    p = dump.panic
    bufs = dump.buffers
    freed = sum(1 for b in bufs if b.freed)
    return Output(
        [
            f"debugging crash dump {dump.path} (64-bit) from {p.get('hostname', '?')}",
            f"operating system: {p.get('software', 'kstatpy')}",
            f"panic message: {p['message']}",
            f"panicking pid: {p.get('pid', 0)}, thread: 0x{p.get('thread', 0):x}",
            f"dump content: {len(dump.kstats)} kstat headers, {len(bufs) - freed} allocated and {freed} freed "
            f"kmem buffers ({dump.doc['kmem'].get('freed_omitted', 0)} older freed buffers omitted)",
        ]
    )


def _msgbuf(dump: CrashDump, addr: int | None, args: list[str]) -> Output:
    return Output(dump.doc.get("report", "").rstrip("\n").split("\n"))


def _print(dump: CrashDump, addr: int | None, args: list[str]) -> Output:
    if not args:
        raise MdbError("::print: expected a type name (kstat_t)")
    if args[0] not in ("kstat_t", "struct kstat", "kstat"):
        raise MdbError(f"::print: failed to look up type {args[0]}: this dump knows kstat_t only")
    if addr is None:
        raise MdbError("::print: an address is required (ADDR::print kstat_t)")
    hdr = dump.by_addr.get(addr)
    if hdr is None:
        raise MdbError(f"::print: {addr:x} is not the address of a kstat_t in this dump (see ::kstat)")
    members = args[1:] or list(KSTAT_T_MEMBERS)
    bad = [m for m in members if m not in KSTAT_T_MEMBERS]
    if bad:
        raise MdbError(f"::print: failed to find member {bad[0]} of kstat_t")
    lines = print_kstat_t(hdr, members)
    if args[1:]:  # members asked for by name print without the indent, as mdb does
        lines = [line.strip() for line in lines]
    values = [v for m in members if isinstance(v := hdr[m], int)]
    return Output(lines, values)


def _whatis(dump: CrashDump, addr: int | None, args: list[str]) -> Output:
    if addr is None:
        raise MdbError("::whatis: an address is required (ADDR::whatis)")
    return Output(whatis_text(addr, dump.lookup(addr)).split("\n"))


def _kstat(dump: CrashDump, addr: int | None, args: list[str]) -> Output:
    dangling = "-d" in args
    unknown = [a for a in args if a != "-d"]
    if unknown:
        raise MdbError(f"::kstat: unknown option {unknown[0]} (only -d)")
    out = Output([f"{'ADDR':>16} {'MODULE':<16} {'INST':>5} {'NAME':<30} {'KS_PRIVATE':>16}"])
    for k in dump.kstats:
        private = k["ks_private"]
        if dangling:
            buf = dump.lookup(private) if private else None
            if buf is None or not buf.freed:
                continue
        out.lines.append(f"{k['addr']:16x} {k['ks_module']:<16} {k['ks_instance']:>5} {k['ks_name']:<30} {private:16x}")
        out.values.append(k["addr"])
    return out


def _walk(dump: CrashDump, addr: int | None, args: list[str]) -> Output:
    if args != ["kstat"]:
        raise MdbError(f"::walk: unknown walker {' '.join(args) or '(none)'} (this dump has: kstat)")
    return Output([f"{k['addr']:x}" for k in dump.kstats], [k["addr"] for k in dump.kstats])


def _lockorder(dump: CrashDump, addr: int | None, args: list[str]) -> Output:
    section = dump.doc.get("lockorder")
    if not section:
        raise MdbError("::lockorder: this dump is not of a lock-order panic (see ::status)")
    return Output(lockorder_lines(section["cycle"])[:-1])


def _help(dump: CrashDump, addr: int | None, args: list[str]) -> Output:
    return Output(HELP.split("\n"))


def _quit(dump: CrashDump, addr: int | None, args: list[str]) -> Output:
    raise Quit


_DCMDS: dict[str, Callable[[CrashDump, int | None, list[str]], Output]] = {
    "$C": _stack,
    "$c": _stack,
    "::stack": _stack,
    "::status": _status,
    "::msgbuf": _msgbuf,
    "::print": _print,
    "::whatis": _whatis,
    "::kstat": _kstat,
    "::walk": _walk,
    "::lockorder": _lockorder,
    "::help": _help,
    "::dcmds": _help,
    "$q": _quit,
    "::quit": _quit,
}
