"""MIB-II and IPv6: which kstats count IPv6 (udp, tcp) and which do not (ip, icmp), as illumos.

Through the real ``kstat`` command: embedded on a fake root (exact values) and through
a real kstatd on this host (invariants, with IPv6 datagrams sent on ``::1`` between two
reads).
"""

from __future__ import annotations

import json
import os
import socket
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from kstatd_fixture import REPO
from kstatd_fixture import running_kstatd
from test_provider_system import build_fake_tree
from test_provider_system import write
from test_provider_system_e2e import kstat
from test_provider_system_net import NETSTAT
from test_provider_system_net import SNMP

from kstatpy.constants import KstatDataType

# Every /proc/net/snmp6 key illumos has no kstat for, with values that would show if read.
SNMP6 = """Ip6InReceives                   	9001
Ip6InHdrErrors                  	9002
Ip6InDelivers                   	9003
Ip6OutRequests                  	9004
Ip6OutNoRoutes                  	9005
Ip6InOctets                     	9006
Icmp6InMsgs                     	9007
Icmp6InErrors                   	9008
Icmp6OutMsgs                    	9009
Icmp6InCsumErrors               	9010
Icmp6InEchos                    	9011
Icmp6OutEchoReplies             	9012
Icmp6InType128                  	9013
Udp6InDatagrams                 	100
Udp6NoPorts                     	9014
Udp6InErrors                    	2
Udp6OutDatagrams                	200
Udp6RcvbufErrors                	9015
Udp6SndbufErrors                	7
Udp6InCsumErrors                	9016
Udp6IgnoredMulti                	9017
Udp6MemErrors                   	9018
UdpLite6InDatagrams             	9019
UdpLite6OutDatagrams            	9020
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    root = build_fake_tree(tmp_path / "root")
    write(root, "proc/net/snmp", SNMP)
    write(root, "proc/net/netstat", NETSTAT)
    write(root, "proc/net/snmp6", SNMP6)
    e = {k: v for k, v in os.environ.items() if k not in ("KSTAT_SOCKET", "KSTATPY_DISABLE_PLUGIN_AUTOLOAD")}
    others = {ep.name for ep in entry_points(group="kstatpy.providers")} - {"system"}
    e.update(KSTATPY_SYSTEM_ROOT=str(root), XDG_RUNTIME_DIR=str(tmp_path), PYTHONPATH=str(REPO),
             KSTATPY_DISABLED_PROVIDERS=",".join(sorted(others)))  # fmt: skip
    return e


def values(stdout: str) -> dict[str, str]:
    return dict(line.split("\t", 1) for line in stdout.splitlines())


def test_udp_counts_ipv6_and_ip_icmp_do_not(env: dict[str, str]) -> None:
    got = kstat(["-p", "-c", "mib2"], env)
    assert got.returncode == 0, got.stderr
    v = values(got.stdout)
    # udp: the Udp: line + snmp6's Udp6 counters (IPv4 267/12/300/14 + IPv6 100/2/200/7)
    assert {k: v[f"udp:0:udp:{k}"] for k in ("inDatagrams", "inErrors", "outDatagrams", "outErrors")} == {
        "inDatagrams": "367", "inErrors": "14", "outDatagrams": "500", "outErrors": "21",
    }  # fmt: skip
    # ip: IPv4 only, as illumos' ip_kstat_update (Udp6NoPorts, RcvbufErrors, InCsumErrors not added)
    assert (v["ip:0:ip:noPorts"], v["ip:0:ip:udpInOverflows"], v["ip:0:ip:udpInCksumErrs"]) == ("11", "13", "15")
    assert v["ip:0:ip:inReceives"] == "8028" and v["ip:0:icmp:inMsgs"] == "21"
    assert v["ip:0:icmp:inChksumErrs"] == "2"  # illumos' spelling
    # no snmp6 value other than udp's four reaches any kstat, under any name
    unread = {str(9000 + i) for i in range(1, 21)}  # SNMP6's values for keys with no illumos kstat
    everything = kstat(["-p"], env)
    assert everything.returncode == 0, everything.stderr
    assert not [ln for ln in everything.stdout.splitlines() if ln.split("\t", 1)[1] in unread]
    assert not [ln for ln in everything.stdout.splitlines() if "ip6" in ln.lower().split("\t")[0]]
    # the kstats illumos has and Linux cannot fill are absent, not zero
    for stat in ("ip:0:ip:reasmTimeout", "ip:0:ip:inErrs", "ip:0:icmp:inCksumErrs", "udp:0:udp:entry6Size"):
        assert stat not in v


def test_udp_metadata_names_both_families(env: dict[str, str]) -> None:
    got = kstat(["--describe", "-j", "udp:0:udp:inDatagrams", "ip:0:ip:noPorts"], env)
    assert got.returncode == 0, got.stderr
    text = json.dumps(json.loads(got.stdout))
    assert "Udp6InDatagrams" in text and "Udp6NoPorts" not in text
    meta = {s["name"]: s for k in json.loads(got.stdout) for s in k["stats"]}
    assert meta["inDatagrams"]["kind"] == "counter" and meta["inDatagrams"]["unit"] == "count"
    assert meta["inDatagrams"]["data_type"] == KstatDataType.UINT64
    assert meta["noPorts"]["data_type"] == KstatDataType.UINT32
    assert meta["noPorts"]["description"] == "ipNoPorts (Linux snmp Udp NoPorts)"


def _proc_udp() -> dict[str, int]:
    # udp:0:udp's four statistics as illumos counts them: IPv4 (snmp) + IPv6 (snmp6).
    lines = [ln.split() for ln in Path("/proc/net/snmp").read_text().splitlines() if ln.startswith("Udp:")]
    v4 = dict(zip(lines[0][1:], map(int, lines[1][1:]), strict=True))
    v6 = {k: int(n) for k, n in (ln.split() for ln in Path("/proc/net/snmp6").read_text().splitlines() if ln)}
    return {
        "inDatagrams": v4["InDatagrams"] + v6["Udp6InDatagrams"],
        "inErrors": v4["InErrors"] + v6["Udp6InErrors"],
        "outDatagrams": v4["OutDatagrams"] + v6["Udp6OutDatagrams"],
        "outErrors": v4["SndbufErrors"] + v6["Udp6SndbufErrors"],
    }


def _send_ipv6_datagrams(n: int) -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as rx, socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as tx:
        rx.bind(("::1", 0))
        rx.settimeout(10)
        for i in range(n):
            tx.sendto(b"%d" % i, rx.getsockname())
        for _ in range(n):
            rx.recv(64)


MIB2 = ("ip:0:ip", "ip:0:icmp", "tcp:0:tcp", "udp:0:udp")
GAUGES = {"forwarding", "defaultTTL", "rtoAlgorithm", "rtoMin", "rtoMax", "maxConn", "currEstab"}


def test_live_udp_counts_ipv6_through_kstatd(tmp_path: Path) -> None:
    assert Path("/proc/net/snmp6").exists(), "this host has no IPv6 MIB file"
    n = 50
    env = {k: v for k, v in os.environ.items() if k != "KSTAT_SOCKET"}
    env["PYTHONPATH"] = str(REPO)
    with running_kstatd(tmp_path, plugins=("kstatpy_providers.system",)) as kd:
        before = _proc_udp()
        first = kstat(["--socket", kd.socket, "-p", *MIB2, "cpu:0:sys:crtime"], env)
        _send_ipv6_datagrams(n)
        second = kstat(["--socket", kd.socket, "-p", *MIB2], env)
        after = _proc_udp()
        assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    k1, k2 = values(first.stdout), values(second.stdout)
    for stat, lo in before.items():
        a, b = int(k1[f"udp:0:udp:{stat}"]), int(k2[f"udp:0:udp:{stat}"])
        assert lo <= a <= b <= after[stat], stat
    # the IPv6 datagrams sent and received on ::1 between the reads are in udp's counters
    assert int(k2["udp:0:udp:inDatagrams"]) - int(k1["udp:0:udp:inDatagrams"]) >= n
    assert int(k2["udp:0:udp:outDatagrams"]) - int(k1["udp:0:udp:outDatagrams"]) >= n
    # every counter of every mib2 kstat is non-decreasing across the two reads
    stats = [s for s in k1 if s.split(":")[3] not in GAUGES | {"class", "crtime", "snaptime"} and s in k2]
    assert len(stats) > 40
    assert not [s for s in stats if int(k2[s]) < int(k1[s])]
    # counted from boot: crtime at the boot origin, as cpu:N:sys
    crtimes = {k1[f"{ks}:crtime"] for ks in MIB2}
    assert crtimes == {k1["cpu:0:sys:crtime"]}
    assert float(k1["udp:0:udp:snaptime"]) > float(k1["udp:0:udp:crtime"])
