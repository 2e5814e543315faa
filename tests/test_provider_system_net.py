"""MIB-II kstats, Ethernet link counters and disk error kstats: fake host (exact) and live host."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_provider_system import add_link
from test_provider_system import attach
from test_provider_system import build_fake_tree
from test_provider_system import disk_for
from test_provider_system import named
from test_provider_system import read
from test_provider_system import types
from test_provider_system import write

from kstatpy.constants import KstatDataType

SNMP = """Ip: Forwarding DefaultTTL InReceives InHdrErrors InAddrErrors ForwDatagrams InUnknownProtos InDiscards InDelivers OutRequests OutDiscards OutNoRoutes ReasmTimeout ReasmReqds ReasmOKs ReasmFails FragOKs FragFails FragCreates OutTransmits
Ip: 2 64 8028 1 2 3 4 5 8000 4637 6 7 8 9 10 11 12 13 14 4637
Icmp: InMsgs InErrors InCsumErrors InDestUnreachs InTimeExcds InParmProbs InSrcQuenchs InRedirects InEchos InEchoReps InTimestamps InTimestampReps InAddrMasks InAddrMaskReps OutMsgs OutErrors OutRateLimitGlobal OutRateLimitHost OutDestUnreachs OutTimeExcds OutParmProbs OutSrcQuenchs OutRedirects OutEchos OutEchoReps OutTimestamps OutTimestampReps OutAddrMasks OutAddrMaskReps
Icmp: 21 1 2 3 0 0 0 0 4 5 0 0 0 0 22 0 0 0 6 0 0 0 0 7 8 0 0 0 0
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors
Tcp: 1 200 120000 -1 234 101 2 3 4 5000000000 7861 9 0 242 0
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 267 11 12 300 13 14 15 0 0
"""
NETSTAT = """TcpExt: SyncookiesSent DelayedACKs ListenOverflows TCPTimeouts TCPFastRetrans
TcpExt: 0 31 32 33 34
IpExt: InNoRoutes InCsumErrors
IpExt: 0 41
"""
SNMP6 = "Ip6InReceives 1\nUdp6InDatagrams 100\nUdp6NoPorts 1\nUdp6InErrors 2\nUdp6OutDatagrams 200\n"


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    root = build_fake_tree(tmp_path / "root")
    write(root, "proc/net/snmp", SNMP)
    write(root, "proc/net/netstat", NETSTAT)
    write(root, "proc/net/snmp6", SNMP6)
    return root


def test_mib2_exact(fake: Path) -> None:
    chain, _ = attach(fake)
    tcp = read(chain, "tcp", 0, "tcp")
    assert tcp["class"] == "mib2"
    t = named(tcp)
    assert (t["rtoAlgorithm"], t["rtoMin"], t["rtoMax"], t["maxConn"]) == (1, 200, 120000, -1)
    assert (t["activeOpens"], t["passiveOpens"], t["currEstab"], t["outRsts"], t["retransSegs"]) == (234, 101, 4, 242, 9)
    assert t["inSegs"] == 5000000000 and types(tcp)["inSegs"] == KstatDataType.UINT64  # an HC counter
    assert (t["outAckDelayed"], t["listenDrop"], t["timRetrans"], t["outFastRetrans"]) == (31, 32, 33, 34)
    udp = named(read(chain, "udp", 0, "udp"))  # IPv4 + IPv6, as illumos counts
    assert udp == {"inDatagrams": 367, "inErrors": 14, "outDatagrams": 500, "outErrors": 14}
    ip = named(read(chain, "ip", 0, "ip"))
    assert (ip["forwarding"], ip["defaultTTL"], ip["inReceives"], ip["inDelivers"], ip["fragCreates"]) == (
        2, 64, 8028, 8000, 14,
    )  # fmt: skip
    # IPv4 only, as illumos' ip_kstat_update: snmp6's Udp6NoPorts is not added
    assert (ip["noPorts"], ip["inCksumErrs"], ip["udpInCksumErrs"], ip["udpInOverflows"]) == (11, 41, 15, 13)
    ip_types = types(read(chain, "ip", 0, "ip"))
    assert ip_types["inReceives"] == ip_types["outRequests"] == KstatDataType.UINT64  # as illumos' ip.c
    assert ip_types["forwarding"] == ip_types["defaultTTL"] == KstatDataType.UINT32
    assert "reasmTimeout" not in ip  # illumos': the timeout in seconds; Linux's: a count of timeouts
    icmp = named(read(chain, "ip", 0, "icmp"))
    assert (icmp["inMsgs"], icmp["inChksumErrs"], icmp["inEchos"], icmp["outEchoReps"], icmp["outMsgs"]) == (
        21, 2, 4, 8, 22,
    )  # fmt: skip
    assert "outRateLimitGlobal" not in icmp  # no illumos name
    assert chain.kstat_lookup_name("tcp", 0, "tcp").ks_crtime == chain.kstat_lookup_name("cpu", 0, "sys").ks_crtime


def test_mib2_left_out_without_sources(tmp_path: Path) -> None:
    chain, _ = attach(build_fake_tree(tmp_path / "root"))
    assert not [k for k in chain.kstats() if k.ks_class == "mib2"]


def test_mib2_live_matches_proc_net() -> None:
    chain, _ = attach()

    def tcp_line() -> dict[str, int]:
        lines = [ln.split() for ln in Path("/proc/net/snmp").read_text().splitlines() if ln.startswith("Tcp:")]
        return dict(zip(lines[0][1:], map(int, lines[1][1:]), strict=True))

    before = tcp_line()
    t = named(read(chain, "tcp", 0, "tcp"))
    after = tcp_line()
    assert before["InSegs"] <= t["inSegs"] <= after["InSegs"]
    assert before["ActiveOpens"] <= t["activeOpens"] <= after["ActiveOpens"]
    assert t["maxConn"] == -1 or t["maxConn"] == before["MaxConn"]
    assert {"ip", "icmp"} <= {k.ks_name for k in chain.kstats() if k.ks_module == "ip" and k.ks_class == "mib2"}


def test_link_ethernet_counters(fake: Path) -> None:
    add_link(fake, "eth1", {"rx_crc_errors": 3, "rx_frame_errors": 4, "tx_carrier_errors": 5,
                            "tx_aborted_errors": 6, "tx_window_errors": 7})  # fmt: skip
    chain, _ = attach(fake)
    eth1 = read(chain, "link", 0, "eth1")
    v = named(eth1)
    assert (v["fcs_errors"], v["align_errors"], v["carrier_errors"], v["ex_collisions"], v["tx_late_collisions"]) == (
        3, 4, 5, 6, 7,
    )  # fmt: skip
    assert types(eth1)["fcs_errors"] == KstatDataType.UINT32
    assert "sqe_errors" not in v  # this interface's driver keeps no tx_heartbeat_errors


def test_disk_error_kstat_names_the_linux_device(fake: Path) -> None:
    chain, _ = attach(fake)
    err = read(chain, "sderr", 0, "sd0,err")
    assert err["class"] == "device_error"
    zero = dict.fromkeys(("Soft Errors", "Hard Errors", "Transport Errors", "Media Error", "Device Not Ready",
                          "No Device", "Recoverable", "Illegal Request", "Predictive Failure Analysis"), 0)
    sd = named(err)
    assert sd == {
        **zero, "Device Name": "sda", "Vendor": b"ATA", "Product": b"FAKE DISK 1000GB", "Size": 2048 * 512,
        "Hard Errors": 2, "Revision": b"", "Serial No": b"",
    }  # fmt: skip
    # illumos sd's order: iostat -e takes the first three by position (soft, hard, transport)
    assert list(sd)[:3] == ["Soft Errors", "Hard Errors", "Transport Errors"] and list(sd.values())[:3] == [0, 2, 0]
    assert list(sd)[3:8] == ["Vendor", "Product", "Revision", "Serial No", "Size"]
    assert list(sd)[-1] == "Device Name"
    meta = chain.kstat_lookup_name("sderr", 0, "sd0,err").ks_meta
    assert {s for s, m in meta.items() if m.no_source} == set(zero) - {"Hard Errors"} | {"Revision", "Serial No"}
    nvme = named(read(chain, "blkdeverr", 0, "blkdev0,err"))
    # blkdev's layout (STRING identity records); this NVMe disk's sysfs names no model nor vendor
    assert nvme == {**zero, "Device Name": "nvme0n1", "Size": 2048 * 512, "Vendor": "", "Product": "",
                    "Revision": "", "Serial No": ""}  # fmt: skip
    assert chain.kstat_lookup_name("blkdeverr", 0, "blkdev0,err").ks_meta["Hard Errors"].no_source
    assert disk_for(chain, "nvme0n1") == ("blkdev", 0, "blkdev0")


def test_live_disks_are_named_module_instance() -> None:
    chain, _ = attach()
    disks = [k for k in chain.kstats() if k.ks_class == "disk"]
    assert disks
    for ksp in disks:
        assert ksp.ks_name == f"{ksp.ks_module}{ksp.ks_instance}"
        err = named(read(chain, ksp.ks_module + "err", ksp.ks_instance, ksp.ks_name + ",err"))
        dev = err["Device Name"]
        assert Path(f"/sys/block/{dev}").exists()
        assert err["Size"] == int(Path(f"/sys/block/{dev}/size").read_text()) * 512


def test_every_statistic_on_the_fake_host_declares_metadata(fake: Path) -> None:
    """The fake host has what this one lacks (schedstat, mib2 files, disk identity): all declared.

    OpenZFS's SPL kstats are the exception: their statistics are OpenZFS's, not ours.
    """
    from test_provider_system_spl import build_spl

    from kstatpy.describe import describe_kstat
    from kstatpy.metadata import KINDS

    build_spl(fake)
    chain, _ = attach(fake)
    missing = []
    for ksp in chain.kstats():
        if ksp.ks_type != 1 or ksp.ks_module.startswith(("zfs", "kstat")) or ksp.ks_name.startswith("kstat_"):
            continue
        for st in describe_kstat(chain, ksp.ks_kid, 0)["stats"]:
            if st["kind"] not in KINDS or not st["description"]:
                missing.append(f"{ksp.ks_module}:{ksp.ks_instance}:{ksp.ks_name}:{st['name']}")
    assert not missing
