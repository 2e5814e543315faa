"""The MIB-II statistics table (data only, so ``meta`` can read it without ``mib2``'s imports).

See ``mib2`` for the mapping's rules.
"""

from __future__ import annotations

from kstatpy.constants import KSTAT_DATA_INT32
from kstatpy.constants import KSTAT_DATA_UINT32
from kstatpy.constants import KSTAT_DATA_UINT64

__all__ = ["MIB2"]

I32, U32, U64 = KSTAT_DATA_INT32, KSTAT_DATA_UINT32, KSTAT_DATA_UINT64


def _same(group: str, keys: str, dtype: int = U32) -> list[tuple[str, int, tuple[str, ...]]]:
    # Statistics whose illumos name is the Linux key with its first letter lower-cased.
    return [(k[0].lower() + k[1:], dtype, (f"snmp:{group}:{k}",)) for k in keys.split()]


#: (module, name) -> [(statistic, KSTAT_DATA_*, (source, ...))], statistics in illumos order.
MIB2: dict[tuple[str, str], list[tuple[str, int, tuple[str, ...]]]] = {
    # IPv4 only: illumos' ip_kstat_update sums the IPv4 interfaces' MIBs (ILL_START_WALK_V4).
    ("ip", "ip"): [
        *_same("Ip", "Forwarding DefaultTTL"),
        *_same("Ip", "InReceives", U64),
        *_same("Ip", "InHdrErrors InAddrErrors"),
        *_same("Ip", "ForwDatagrams", U64),
        *_same("Ip", "InUnknownProtos InDiscards"),
        *_same("Ip", "InDelivers OutRequests", U64),
        # reasmTimeout left out: illumos' is the reassembly timeout (s), Linux's counts timeouts.
        *_same("Ip", "OutDiscards OutNoRoutes ReasmReqds ReasmOKs ReasmFails FragOKs FragFails FragCreates"),
        ("noPorts", U32, ("snmp:Udp:NoPorts",)),
        ("inCksumErrs", U32, ("netstat:IpExt:InCsumErrors",)),
        ("udpInCksumErrs", U32, ("snmp:Udp:InCsumErrors",)),
        ("udpInOverflows", U32, ("snmp:Udp:RcvbufErrors",)),
    ],
    ("ip", "icmp"): [
        *_same(
            "Icmp",
            "InMsgs InErrors InDestUnreachs InTimeExcds InParmProbs InSrcQuenchs "
            "InRedirects InEchos InEchoReps InTimestamps InTimestampReps InAddrMasks "
            "InAddrMaskReps OutMsgs OutErrors OutDestUnreachs OutTimeExcds OutParmProbs "
            "OutSrcQuenchs OutRedirects OutEchos OutEchoReps OutTimestamps OutTimestampReps "
            "OutAddrMasks OutAddrMaskReps",
        ),
        ("inChksumErrs", U32, ("snmp:Icmp:InCsumErrors",)),
    ],
    ("tcp", "tcp"): [
        *_same("Tcp", "RtoAlgorithm RtoMin RtoMax MaxConn", I32),
        *_same("Tcp", "ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab"),
        *_same("Tcp", "InSegs OutSegs", U64),
        *_same("Tcp", "RetransSegs OutRsts"),
        ("outAckDelayed", U32, ("netstat:TcpExt:DelayedACKs",)),
        ("outFastRetrans", U32, ("netstat:TcpExt:TCPFastRetrans",)),
        ("timRetrans", U32, ("netstat:TcpExt:TCPTimeouts",)),
        ("listenDrop", U32, ("netstat:TcpExt:ListenOverflows",)),
        # nicstat -t reads these; Linux counts segments and no data bytes: 0, marked no source.
        *((name, U32, ()) for name in (
            "inDataInorderSegs", "inDataInorderBytes", "inDataUnorderSegs", "inDataUnorderBytes",
            "outDataSegs", "outDataBytes", "retransBytes", "halfOpenDrop", "listenDropQ0")),
    ],
    # IPv4 and IPv6: illumos keeps one UDP MIB per stack for both (udp_stats.c), Linux two.
    ("udp", "udp"): [
        ("inDatagrams", U64, ("snmp:Udp:InDatagrams", "snmp6:Udp6InDatagrams")),
        ("inErrors", U32, ("snmp:Udp:InErrors", "snmp6:Udp6InErrors")),
        ("outDatagrams", U64, ("snmp:Udp:OutDatagrams", "snmp6:Udp6OutDatagrams")),
        ("outErrors", U32, ("snmp:Udp:SndbufErrors", "snmp6:Udp6SndbufErrors")),
    ],
}
