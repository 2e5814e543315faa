"""``cpu_info:N:cpu_infoN`` and ``cpu:N:sys`` for each present CPU.

cpu_info (class misc). Identity that never changes while a CPU exists is taken once,
when the kstat is created, from ``proc/cpuinfo`` (x86 key in parentheses): brand
(model name), vendor_id (vendor_id), family (cpu family), model (model), stepping
(stepping), ncpu_per_chip (siblings), ncore_per_chip (cpu cores); a record whose key
this host's cpuinfo lacks is left out. Each read takes the rest:
    state         "on-line"/"off-line": ``sys/devices/system/cpu/online``
    state_begin   epoch seconds the state began: boot time for a CPU on-line when
                  the provider attached, else when the provider first saw the state
    chip_id       ``cpuN/topology/physical_package_id``
    core_id       lowest CPU id of ``cpuN/topology/thread_siblings_list`` (unique
                  across chips, as illumos' core_id)
    pkg_core_id   ``cpuN/topology/core_id`` (the core's id within its chip)
    clock_MHz     ``cpuN/cpufreq/cpuinfo_max_freq`` / 1000, else cpuinfo's MHz at creation
    current_clock_Hz  ``cpuN/cpufreq/scaling_cur_freq`` x 1000, else cpuinfo's MHz now
    Topology a kernel does not report reads as -1.
On x86 (a cpuinfo block with ``vendor_id``), what illumos' x86 cpu_info always has and
psrinfo -v reads without checking: cpu_type ``i386`` and fpu_type ``i387 compatible``
(illumos' names on every x86 machine, amd64 included); implementation, illumos' line
``x86 (chipid 0xC VENDOR SIGNATURE family F model M step S clock N MHz)`` with the cpuid
signature rebuilt from family, model and stepping; socket_type ``""``, marked no source
(Linux does not report the socket's package type).

    Topology is read until it is known, then kept (it cannot change while the CPU
    exists). ``crtime``: the boot for a CPU present at attach (its ``state_begin``
    counts from there), else the kstat's creation.

cpu:N:sys, cpu:N:vm and cpu_stat are in ``cpustat``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from kstatpy_providers.system.source import SysRoot
from kstatpy_providers.system.source import create_named
from kstatpy_providers.system.source import parse_cpu_list
from kstatpy_providers.system.unix import boot_time

from kstatpy.constants import KSTAT_DATA_CHAR
from kstatpy.constants import KSTAT_DATA_INT32
from kstatpy.constants import KSTAT_DATA_LONG
from kstatpy.constants import KSTAT_DATA_STRING
from kstatpy.constants import KSTAT_DATA_UINT64

TYPE_CHECKING = False  # not typing's: kept off the embedded kstat's start-up path
if TYPE_CHECKING:
    from typing import Any

    from kstatpy.chain import Chain
    from kstatpy.kstat import Kstat

__all__ = ["CpuInfoSource", "create_cpu_info", "parse_cpuinfo"]

# illumos record, type, cpuinfo key, converter: identity fixed at creation.
_IDENTITY: tuple[tuple[str, int, str, Callable[[str], Any]], ...] = (
    ("brand", KSTAT_DATA_STRING, "model name", str),
    ("vendor_id", KSTAT_DATA_STRING, "vendor_id", str),
    ("family", KSTAT_DATA_INT32, "cpu family", int),
    ("model", KSTAT_DATA_INT32, "model", int),
    ("stepping", KSTAT_DATA_INT32, "stepping", int),
    ("ncpu_per_chip", KSTAT_DATA_INT32, "siblings", int),
    ("ncore_per_chip", KSTAT_DATA_INT32, "cpu cores", int),
)


def cpuid_signature(family: int, model: int, stepping: int) -> int:
    """CPUID leaf 1's EAX from the decoded family, model and stepping (Intel SDM vol. 2A,
    CPUID: extended family over 15, extended model in bits 16-19)."""
    base_family = min(family, 15)
    ext_family = family - 15 if family >= 15 else 0
    return (ext_family << 20) | ((model >> 4) << 16) | (base_family << 8) | ((model & 0xF) << 4) | (stepping & 0xF)


def implementation(identity: dict[str, Any], chip_id: int, mhz: int) -> str:
    """illumos' x86 cpu_info ``implementation`` line for this CPU."""
    family, model, step = identity.get("family", 0), identity.get("model", 0), identity.get("stepping", 0)
    sig = cpuid_signature(family, model, step)
    return (f"x86 (chipid {chip_id:#x} {identity.get('vendor_id', '')} {sig:X} family {family} model {model} "
            f"step {step} clock {mhz} MHz)")  # fmt: skip


def parse_cpuinfo(text: str) -> dict[int, dict[str, str]]:
    """``/proc/cpuinfo`` as {processor id: {key: value}}."""
    out: dict[int, dict[str, str]] = {}
    block: dict[str, str] = {}
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if "processor" in block and block["processor"].isdigit():
                out[int(block["processor"])] = block
            block = {}
            continue
        key, _, value = line.partition(":")
        block[key.strip()] = value.strip()
    return out


def _cpu_mhz(data: bytes, cpu: int) -> float:
    """"cpu MHz" of ``cpu``'s block of ``/proc/cpuinfo`` (0.0 when it has none)."""
    start = data.find(b"processor\t: %d\n" % cpu)
    if start < 0:
        return 0.0
    end = data.find(b"\n\n", start)
    at = data.find(b"cpu MHz", start, end if end >= 0 else len(data))
    if at < 0:
        return 0.0
    try:
        return float(data[at : data.find(b"\n", at)].partition(b":")[2])
    except ValueError:
        return 0.0


class CpuInfoSource:
    """cpu_info for one CPU; ``state``/``state_begin`` change only under the kstat's hold."""

    def __init__(self, root: SysRoot, cpu: int, identity: dict[str, Any], since_boot: bool,
                 max_freq: bool, cur_freq: bool, mhz: float) -> None:  # fmt: skip
        self.root = root
        self.cpu = cpu
        self.identity = identity
        self.since_boot = since_boot  # on-line when the provider attached: began at boot
        self.max_freq = max_freq
        self.cur_freq = cur_freq
        self.mhz = mhz
        self.state: str | None = None
        self.state_begin = 0
        self.topology: tuple[int, int, int] | None = None
        self.online: tuple[bytes, frozenset[int]] = (b"", frozenset())

    def _state(self) -> str:
        try:
            text = self.root.read_bytes("sys/devices/system/cpu/online")
        except FileNotFoundError:
            return "on-line"
        if text != self.online[0]:  # parse only when the on-line set changed
            self.online = (text, frozenset(parse_cpu_list(text.decode())))
        return "on-line" if self.cpu in self.online[1] else "off-line"

    def _topology(self) -> tuple[int, int, int]:
        # (chip_id, core_id, pkg_core_id): kept once the kernel has reported all three.
        if self.topology is not None:
            return self.topology
        root = self.root
        topo = f"sys/devices/system/cpu/cpu{self.cpu}/topology/"
        try:
            siblings = parse_cpu_list(root.read(topo + "thread_siblings_list"))
        except (OSError, ValueError):
            siblings = []
        chip = root.read_int_or(topo + "physical_package_id", -1)
        core = root.read_int_or(topo + "core_id", -1)
        found = (chip if chip is not None else -1, siblings[0] if siblings else -1, core if core is not None else -1)
        if -1 not in found:
            self.topology = found
        return found

    def values(self) -> dict[str, Any]:
        root = self.root
        state = self._state()
        if state != self.state:
            if self.state is None and self.since_boot and state == "on-line":
                self.state_begin = boot_time(root)
            else:
                self.state_begin = int(time.time())
            self.state = state
        chip_id, core_id, pkg_core_id = self._topology()
        freq = f"sys/devices/system/cpu/cpu{self.cpu}/cpufreq/"
        max_khz = root.read_int_or(freq + "cpuinfo_max_freq", None) if self.max_freq else None
        cur_khz = root.read_int_or(freq + "scaling_cur_freq", None) if self.cur_freq else None
        if cur_khz is not None:
            cur_hz = cur_khz * 1000
        else:
            cur_hz = round(_cpu_mhz(root.read_bytes("proc/cpuinfo"), self.cpu) * 1e6)
        out = dict(self.identity)
        if "cpu_type" in out:
            out["implementation"] = implementation(out, chip_id, max_khz // 1000 if max_khz is not None else round(self.mhz))
        out.update(
            state=state,
            state_begin=self.state_begin,
            chip_id=chip_id,
            core_id=core_id,
            pkg_core_id=pkg_core_id,
            clock_MHz=max_khz // 1000 if max_khz is not None else round(self.mhz),
            current_clock_Hz=cur_hz,
        )
        return out


def create_cpu_info(
    chain: Chain, root: SysRoot, cpu: int, info: dict[str, str], since_boot: bool, origin: int | None = None
) -> Kstat:
    """cpu_info:N:cpu_infoN; ``info`` is the CPU's cpuinfo block (empty if it is off-line).

    ``origin``: the crtime (the boot, for a CPU present at attach); None for now.
    """
    identity: dict[str, Any] = {}
    fields: list[tuple[str, int]] = [("state", KSTAT_DATA_CHAR), ("state_begin", KSTAT_DATA_LONG)]
    x86 = "vendor_id" in info
    if x86:
        identity.update(cpu_type="i386", fpu_type="i387 compatible")
        fields += [("cpu_type", KSTAT_DATA_CHAR), ("fpu_type", KSTAT_DATA_STRING)]
    fields += [("clock_MHz", KSTAT_DATA_LONG), ("chip_id", KSTAT_DATA_LONG)]
    if x86:
        fields.append(("implementation", KSTAT_DATA_STRING))
    for name, data_type, key, conv in _IDENTITY[:1]:
        if key in info:
            identity[name] = conv(info[key])
            fields.append((name, data_type))
    fields += [("core_id", KSTAT_DATA_LONG), ("current_clock_Hz", KSTAT_DATA_UINT64)]
    for name, data_type, key, conv in _IDENTITY[1:]:
        try:
            identity[name] = conv(info[key])
        except (KeyError, ValueError):
            continue
        fields.append((name, data_type))
    fields.append(("pkg_core_id", KSTAT_DATA_LONG))
    if x86:
        fields.append(("socket_type", KSTAT_DATA_STRING))
    freq = f"sys/devices/system/cpu/cpu{cpu}/cpufreq/"
    source = CpuInfoSource(
        root, cpu, identity, since_boot,
        max_freq=root.exists(freq + "cpuinfo_max_freq"),
        cur_freq=root.exists(freq + "scaling_cur_freq"),
        mhz=float(info.get("cpu MHz", 0.0) or 0.0),
    )  # fmt: skip
    absent = ("socket_type",) if x86 else ()
    return create_named(chain, "cpu_info", cpu, f"cpu_info{cpu}", "misc", fields, source, crtime=origin, absent=absent)
