"""MIB-II kstats (class mib2) from ``proc/net/snmp``, ``proc/net/snmp6`` and ``proc/net/netstat``.

``ip:0:ip``, ``ip:0:icmp``, ``tcp:0:tcp`` and ``udp:0:udp`` under illumos' statistic
names (RFC 1213 object names without the ``ip``/``icmp``/``tcp``/``udp`` prefix, first
letter lower-case; illumos' ``ip.c``, ``tcp_stats.c``, ``udp_stats.c``). Each statistic
is the sum of its Linux counters, named in ``mib2_table`` as ``FILE:Group:Key`` (snmp:
``/proc/net/snmp``, netstat: ``/proc/net/netstat``, snmp6: ``/proc/net/snmp6``).

Address families as illumos counts them: ``ip:0:ip`` and ``ip:0:icmp`` IPv4 only
(``ip_kstat_update`` walks the IPv4 interfaces), ``tcp:0:tcp`` and ``udp:0:udp`` IPv4 and
IPv6 (one MIB per stack); Linux splits only UDP, so udp adds snmp6's Udp6 counters.
illumos has no kstat of the IPv6 or ICMPv6 MIB (they go out through the MIB-II STREAMS
interface only) and its ``ip:0:ip6stat`` counts input-path steps Linux does not count:
the rest of snmp6 is left out, under no invented name.

Types as illumos declares them: ip inReceives, forwDatagrams, inDelivers, outRequests,
tcp inSegs/outSegs and udp in/outDatagrams UINT64 (the HC counters); rtoAlgorithm,
rtoMin, rtoMax and maxConn INT32 (maxConn -1: no limit); the rest UINT32 (wrapping). A
kstat none of whose counters this host's files have is left out; in one that is
made, a statistic none of whose counters the host has reads 0, marked no source
(decided at attach). nicstat's TCP statistics (inDataInorderSegs, inDataInorderBytes,
inDataUnorderSegs, inDataUnorderBytes, outDataSegs, outDataBytes, retransBytes,
halfOpenDrop, listenDropQ0) have no Linux counter (Linux counts all segments, never
data bytes): published as 0, marked no source. Counters count from boot (the network namespace's creation): crtime is the boot.

Left out (no honest Linux counter): ip reasmTimeout (illumos: the timeout in seconds;
Linux: a count of timeouts), inErrs (illumos: IPv4 TCP; Linux: both families),
addrEntrySize, routeEntrySize, netToMediaEntrySize, routingDiscards, reasmDuplicates,
reasmPartDups, forwProhibits, rawipInOverflows, ipsec*, memberEntrySize, inIPv6,
outIPv6, outSwitchIPv6; icmp inUnknowns, inFragNeeded, outFragNeeded, outDrops,
inOverFlows, inBadRedirects; tcp connTableSize, connTableSize6, outDataSegs,
outDataBytes, retransBytes, outAck, outUrg, outWinUpdate, outWinProbe, outControl,
inAck*, inData*, inWin*, inClosed, rtt*, timKeepalive*, listenDropQ0, halfOpenDrop,
outSackRetransSegs; udp entrySize, entry6Size.
"""

from __future__ import annotations

from kstatpy_providers.system.mib2_table import MIB2
from kstatpy_providers.system.source import SysRoot
from kstatpy_providers.system.source import create_named
from kstatpy_providers.system.source import find_ints

TYPE_CHECKING = False  # not typing's: kept off the embedded kstat's start-up path
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from kstatpy.chain import Chain
    from kstatpy.kstat import Kstat

__all__ = ["Mib2Source", "create_mib2", "parse_snmp", "parse_snmp6"]

_FILES = {"snmp": "proc/net/snmp", "netstat": "proc/net/netstat", "snmp6": "proc/net/snmp6"}


def parse_snmp(data: bytes) -> dict[str, int]:
    """``/proc/net/snmp`` or ``/proc/net/netstat`` (header line, value line) as {"Group:Key": n}."""
    out: dict[str, int] = {}
    lines = data.split(b"\n")
    for head, vals in zip(lines[::2], lines[1::2], strict=False):
        names, values = head.split(), vals.split()
        if not names or not values or names[0] != values[0]:
            continue
        group = names[0][:-1].decode()
        for k, v in zip(names[1:], values[1:], strict=False):
            out[f"{group}:{k.decode()}"] = int(v)
    return out


def parse_snmp6(data: bytes) -> dict[str, int]:
    """``/proc/net/snmp6`` ("Key value" lines) as {"Key": n}."""
    it = iter(data.split())
    return {k.decode(): int(v) for k, v in zip(it, it, strict=False)}


def _read(root: SysRoot, which: str) -> dict[str, int]:
    data = root.read_bytes(_FILES[which])
    return parse_snmp6(data) if which == "snmp6" else parse_snmp(data)


def _group_values(data: bytes, group: bytes) -> list[bytes]:
    # The value line of ``group`` (the second line starting "Group: "), split.
    head = data.find(b"\n" + group + b": ")
    at = data.find(b"\n" + group + b": ", head + 1) if head >= 0 else -1
    if at < 0:
        return []
    end = data.find(b"\n", at + 1)
    return data[at + 1 : end if end >= 0 else None].split()


class Mib2Source:
    """One MIB-II kstat: reads only the files its statistics name.

    Column positions are found once, at creation (a running kernel's MIB files do
    not change their columns); each read splits only the value lines it needs.
    """

    def __init__(self, root: SysRoot, stats: list[tuple[str, tuple[tuple[str, str], ...]]]) -> None:
        self.root = root
        self.stats = stats
        self.files = sorted({which for _, srcs in stats for which, _ in srcs})
        # which -> group -> key -> column (snmp, netstat); snmp6: keys with their separator
        self.columns: dict[str, dict[bytes, dict[str, int]]] = {}
        for which in self.files:
            if which == "snmp6":
                continue
            data = b"\n" + root.read_bytes(_FILES[which])
            groups: dict[bytes, dict[str, int]] = {}
            for _, srcs in stats:
                for w, gk in srcs:
                    if w == which:
                        group, key = gk.split(":")
                        at = data.find(b"\n" + group.encode() + b": ")
                        names = [n.decode() for n in data[at + 1 : data.find(b"\n", at + 1)].split()]
                        groups.setdefault(group.encode(), {})[key] = names.index(key)
            self.columns[which] = groups
        # values()' plan: per file, (group, [(column, statistic)]) or, for snmp6, keys
        self.names = [name for name, _ in stats]
        self.snmp6_stats: dict[bytes, list[str]] = {}
        self.plan: list[tuple[str, Any]] = []
        for which in self.files:
            if which == "snmp6":
                for name, srcs in stats:
                    for w, key in srcs:
                        if w == "snmp6":
                            self.snmp6_stats.setdefault(key.encode() + b" ", []).append(name)
                self.plan.append((which, list(self.snmp6_stats)))
                continue
            groups_plan = []
            for gb, cols in self.columns[which].items():
                g = gb.decode()
                pairs = [(i, name) for name, srcs in stats for w, gk in srcs if w == which
                         for k, i in cols.items() if gk == f"{g}:{k}"]  # fmt: skip
                groups_plan.append((gb, pairs))
            self.plan.append((which, groups_plan))

    def values(self) -> dict[str, Any]:
        out = dict.fromkeys(self.names, 0)
        for which, plan in self.plan:
            data = self.root.read_bytes(_FILES[which])
            if which == "snmp6":
                for key, v in find_ints(data, plan).items():
                    for stat in self.snmp6_stats[key]:
                        out[stat] += v
                continue
            data = b"\n" + data
            for group, cols in plan:
                vals = _group_values(data, group)
                for i, stat in cols:
                    if i < len(vals):
                        out[stat] += int(vals[i])
        return out


def create_mib2(chain: Chain, root: SysRoot, origin: int, want: Callable[[str], bool] | None = None) -> list[Kstat]:
    """Every MIB-II kstat with at least one statistic this host has a counter for.

    ``want``: a predicate over module names; the kstats of modules it fails are not made.
    """
    wanted = {key: specs for key, specs in MIB2.items() if want is None or want(key[0])}
    if not wanted:
        return []
    have: dict[str, dict[str, int]] = {}
    for which, rel in _FILES.items():
        if root.exists(rel):
            have[which] = _read(root, which)
    made: list[Kstat] = []
    for (module, name), specs in wanted.items():
        fields: list[tuple[str, int]] = []
        stats: list[tuple[str, tuple[tuple[str, str], ...]]] = []
        absent: list[str] = []
        for stat, dtype, sources in specs:
            srcs = tuple((w, k) for w, k in (s.split(":", 1) for s in sources) if k in have.get(w, {}))
            if srcs:
                fields.append((stat, dtype))
                stats.append((stat, srcs))
            else:  # no counter (anywhere, or in this host's files): published for its readers, marked
                fields.append((stat, dtype))
                absent.append(stat)
        if stats:
            made.append(create_named(chain, module, 0, name, "mib2", fields, Mib2Source(root, stats), crtime=origin,
                                     absent=absent))  # fmt: skip
    return made
