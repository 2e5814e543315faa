"""Parsers of the kernel's text formats shared by the system provider's sources.

Pure functions of the bytes or text read (:mod:`kstatpy_providers.system.source` reads
the files and re-exports these).
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: kept off the embedded kstat's start-up path
if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["find_ints", "interrupts_column", "parse_cpu_list", "schedstat_cpu", "vmstat"]

_XCALL_LINE = b"CAL:"
_SUBCOUNT_LINES = (b"TLB:",)  # counts of work done inside interrupts another line counts


def find_ints(data: bytes, keys: Iterable[bytes]) -> dict[bytes, int]:
    """The first integer after each of ``keys`` where one starts a line of ``data``.

    For "key value" files (``/proc/meminfo`` with keys like ``b"MemTotal:"``,
    ``/proc/vmstat`` and ``/proc/net/snmp6`` with ``b"pgpgin "``): a search per
    key instead of a parse of every line. A key the file lacks is left out.
    """
    data = b"\n" + data
    out = {}
    for key in keys:
        at = data.find(b"\n" + key)
        if at < 0:
            continue
        at += len(key) + 1
        end = data.find(b"\n", at)
        out[key] = int(data[at : end if end >= 0 else None].split(None, 1)[0])
    return out


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


def schedstat_cpu(data: bytes, cpu: int) -> list[int] | None:
    """The ``cpuN`` line of ``/proc/schedstat`` (9 counters), or None."""
    key = b"\ncpu%d " % cpu
    at = data.find(key)
    if at < 0:
        return None
    end = data.find(b"\n", at + 1)
    return [int(x) for x in data[at + len(key) : end if end > 0 else None].split()]


def vmstat(data: bytes) -> dict[bytes, int]:
    """``/proc/vmstat`` as {key: count}."""
    it = iter(data.split())
    return {k: int(v) for k, v in zip(it, it, strict=False)}


def interrupts_column(data: bytes, cpu: int) -> tuple[int, int] | None:
    """(sum, CAL) of CPU ``cpu``'s column of ``/proc/interrupts`` or ``/proc/softirqs``.

    The header names the on-line CPUs' columns; lines with fewer counts (ERR, MIS)
    are machine-wide totals and are skipped, and so is TLB (flushes counted inside
    CAL's interrupts). None: the CPU has no column (off-line).
    """
    lines = data.split(b"\n")
    header = lines[0].split()
    try:
        col = header.index(b"CPU%d" % cpu) + 1
    except ValueError:
        return None
    need = len(header) + 1
    total = xcalls = 0
    for line in lines[1:]:
        parts = line.split(None, need)
        if len(parts) >= need:
            if parts[0] in _SUBCOUNT_LINES:
                continue
            v = int(parts[col])
            total += v
            if parts[0] == _XCALL_LINE:
                xcalls = v
    return total, xcalls
