"""Device interrupts as illumos' INTR kstats, for ``vmstat -i`` and ``kstat -c controller``.

illumos drivers count their interrupts in a ``KSTAT_TYPE_INTR`` kstat of class
``controller`` (``kstat_intr_t``: five ``uint_t`` counters); ``vmstat -i`` walks the
chain for every INTR kstat and prints its name, the sum of its counters and their
rate. Linux counts per IRQ line, not per driver, so there is one kstat per line a
device has claimed:

    irq:N:ACTIONS     module ``irq`` (no illumos module has that name), instance the
                      Linux IRQ number N, name the line's actions as
                      ``sys/kernel/irq/N/actions`` lists them (comma-separated device
                      names, e.g. ``virtio2-input.0``), each ':', space or
                      other non-printable character made '_'
                      (``ACPI:Ged`` is ``ACPI_Ged``: kstat -p splits on ':'), cut to
                      KSTAT_STRLEN - 1 bytes; class ``controller``.

Sources, per read of one kstat (no whole ``/proc/interrupts`` per kstat):

    hard              the sum of ``sys/kernel/irq/N/per_cpu_count`` (what
                      /proc/interrupts shows on that line), modulo 2**32 as a uint_t
    spurious          ``unhandled`` of ``proc/irq/N/spurious`` (interrupts no handler
                      claimed); no source where the file is absent
    soft, watchdog,   no source (0, marked): Linux counts soft interrupts per kind,
    multiple_service  not per device, and has no interrupt watchdog or multiple-service
                      count per line

Lines with no action (no device), and the architecture's own rows of
/proc/interrupts (NMI, LOC, RES, ...), get no kstat; the clock is ``vmstat -i``'s
first row from ``unix:0:system_misc:clk_intr``. The set follows the host: a refresh
lists ``sys/kernel/irq`` and reads ``actions`` only for a line not yet seen with
actions (a driver that binds later is picked up; a line whose actions change is
re-created under its new name). ``sys/kernel/irq`` needs Linux 4.17 or newer; without
it there are no INTR kstats.
"""

from __future__ import annotations

import errno
import os

from kstatpy_providers.system.source import SysRoot
from kstatpy_providers.system.source import date_kstat
from kstatpy_providers.system.source import install_or_delete

from kstatpy.chain import Chain
from kstatpy.constants import KSTAT_STRLEN
from kstatpy.constants import KSTAT_TYPE_INTR
from kstatpy.constants import KSTAT_WRITE
from kstatpy.kstat import Kstat
from kstatpy.metadata import INTR_META
from kstatpy.metadata import kstat_set_meta
from kstatpy.metadata import no_source

__all__ = ["IRQ_ROOT", "MODULE", "IrqLines", "create_intr"]

MODULE = "irq"
IRQ_ROOT = "sys/kernel/irq"
_U32 = 2**32 - 1
_NO_SOURCE = ("soft", "watchdog", "multiple_service")
_SPURIOUS_MAX = 4096  # proc/irq/N/spurious is three short lines


def _kstat_name(actions: str) -> str:
    # A ':' (ACPI:Ged, ahci[0000:00:1f.2]) or white space would split kstat -p's
    # module:instance:name:statistic, a control character (a netdev name may hold an
    # ESC: the kernel refuses only '/', ':' and white space) reach a terminal: each
    # becomes '_'.
    name = "".join("_" if c == ":" or c.isspace() or not c.isprintable() else c for c in actions.strip())
    return name.encode("utf-8", "surrogateescape")[: KSTAT_STRLEN - 1].decode("utf-8", "ignore")


class IrqLines:
    """The IRQ lines with actions: ``lines()`` -> {(irq, kstat name)} (caller holds the provider's lock)."""

    def __init__(self, root: SysRoot) -> None:
        self.root = root
        self.named: dict[int, str] = {}  # irq -> kstat name, once it had actions

    def lines(self) -> set[tuple[int, str]]:
        present = {int(n) for n in self.root.listdir(IRQ_ROOT) if n.isdigit()}  # only directories there
        self.named = {irq: name for irq, name in self.named.items() if irq in present}
        for irq in present - self.named.keys():
            try:
                name = _kstat_name(self.root.read(f"{IRQ_ROOT}/{irq}/actions"))
            except OSError:  # the line went between the listing and the read
                continue
            if name:
                self.named[irq] = name
        return set(self.named.items())


class _IrqSource:
    __slots__ = ("irq", "root", "spurious")

    def __init__(self, root: SysRoot, irq: int, spurious: bool) -> None:
        self.root = root
        self.irq = irq
        self.spurious = spurious

    def unhandled(self) -> int:
        # Opened per read (not kept open): the file is under proc/irq/N/, which a
        # deleted line's forget() would not cover.
        with open(self.root.join(f"proc/irq/{self.irq}/spurious"), "rb") as f:
            for line in f.read(_SPURIOUS_MAX).splitlines():
                key, _, value = line.partition(b" ")
                if key == b"unhandled":
                    return int(value)
        raise ValueError("no unhandled line")


def _intr_update(ksp: Kstat, rw: int) -> int:
    if rw == KSTAT_WRITE:
        return errno.EACCES
    src: _IrqSource = ksp.ks_private
    try:
        counts = src.root.file(f"{IRQ_ROOT}/{src.irq}/per_cpu_count").read()
        hard = sum(int(c) for c in counts.split(b",")) & _U32
        spurious = src.unhandled() & _U32 if src.spurious else 0
    except OSError as exc:
        return exc.errno or errno.EIO
    except ValueError:  # a malformed source is an error for the reader, not a zero
        return errno.EIO
    ksp.ks_data[0].intrs[:] = [hard, 0, 0, spurious, 0]
    return 0


def create_intr(chain: Chain, root: SysRoot, irq: int, name: str, origin: int | None) -> Kstat:
    """``irq:IRQ:NAME`` (class controller), its counters read at each ``ks_update``.

    ``origin``: crtime for a line present at attach (its counts run from boot); None
    for one that appeared later.
    """
    spurious = os.path.exists(root.join(f"proc/irq/{irq}/spurious"))
    ksp = chain.kstat_create(MODULE, irq, name, "controller", KSTAT_TYPE_INTR, 1, 0)
    date_kstat(ksp, origin)
    absent = _NO_SOURCE if spurious else (*_NO_SOURCE, "spurious")
    kstat_set_meta(ksp, {f: no_source(INTR_META[f]) for f in absent})
    ksp.ks_private = _IrqSource(root, irq, spurious)
    ksp.ks_update = _intr_update
    return install_or_delete(chain, ksp)
