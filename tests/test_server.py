"""kstatd against docs/PROTOCOL.md §3-7: every ioctl and error code, on a real daemon subprocess."""

from __future__ import annotations

import errno
import socket
import struct
import time

import msgpack
import pytest

from kstatpy.client import kstat_open
from tests.kstatd_fixture import read_reply
from tests.kstatd_fixture import rpc
from tests.kstatd_fixture import running_kstatd

CHAIN_ID, READ, WRITE, HELLO, READ_MANY = 0x4B01, 0x4B02, 0x4B03, 0x4B10, 0x4B11
ECHO, RAISES, GARBAGE = 0x7E5701, 0x7E5702, 0x7E5703
HEADER_KEYS = {
    "kid",
    "module",
    "instance",
    "name",
    "class",
    "type",
    "flags",
    "ndata",
    "data_size",
    "crtime",
    "snaptime",
}


@pytest.fixture(scope="module")
def kd(tmp_path_factory):
    d = tmp_path_factory.mktemp("kstatd")
    with running_kstatd(d, plugins=["tests.providers_fixture.basic"], zones=[("z1", str(d / "z1.sock"))]) as kd:
        kd.zone_socket = str(d / "z1.sock")
        yield kd


@pytest.fixture(scope="module")
def kids(kd):
    _seq, code, result = rpc(kd.socket, READ, {"kid": 0})
    assert code == 0, result
    return {(h["module"], h["name"]): h["kid"] for h in result["kstat"]["data"]}


def ok(path, cmd, arg=None):
    _seq, code, result = rpc(path, cmd, arg)
    assert code == 0, result
    return result


def err(path, cmd, arg=None):
    seq, code, result = rpc(path, cmd, arg, seq=77)
    assert seq == 77
    assert code != 0, result
    assert isinstance(result["error"], str) and result["error"]
    return code, result


class Conn:
    """A raw protocol connection for pipelining and framing tests."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(10)
        self.s.connect(path)

    def send(self, cmd, seq, arg=None):
        body = msgpack.packb([cmd, seq, arg], use_bin_type=True)
        self.s.sendall(struct.pack(">I", len(body)) + body)

    def call(self, cmd, seq, arg=None):
        self.send(cmd, seq, arg)
        return read_reply(self.s)

    def closed_by_peer(self):
        return self.s.recv(1) == b""

    def close(self):
        self.s.close()


# --- KSTAT_IOC_CHAIN_ID and KID 0 -------------------------------------------------


def test_chain_id_and_kid0_headers(kd, kids):
    kcid = ok(kd.socket, CHAIN_ID)["kcid"]
    assert isinstance(kcid, int) and kcid > 0
    res = ok(kd.socket, READ, {"kid": 0})
    assert res["kcid"] == kcid
    headers = res["kstat"]["data"]
    assert [h["kid"] for h in headers] == sorted(h["kid"] for h in headers)
    assert headers[0]["kid"] == 0 and headers[0]["name"] == "kstat_headers"
    assert all(set(h) == HEADER_KEYS for h in headers)
    assert ("test", "invalid") not in kids  # INVALID kstats are not listed
    assert ("test", "zoned") not in kids  # another zone's kstat is not listed in the global zone
    assert ("kstatpy", "requests") in kids


# --- KSTAT_IOC_READ -----------------------------------------------------------------


def test_read_every_type(kd, kids):
    named = ok(kd.socket, READ, {"kid": kids["test", "named"]})["kstat"]
    assert HEADER_KEYS <= set(named)
    assert named["data"] == [["u64", 4, 2**64 - 1], ["i32", 1, -5], ["ch", 0, b"abc"]]
    strings = ok(kd.socket, READ, {"kid": kids["test", "strings"]})["kstat"]
    assert strings["data"] == [["s", 9, "h\u00e9llo \u2603"], ["n", 3, -(2**63)]]
    assert strings["data_size"] == 2 * 48 + len("h\u00e9llo \u2603".encode()) + 1
    raw = ok(kd.socket, READ, {"kid": kids["test", "raw"]})["kstat"]
    assert raw["data"] == bytes(range(16)) and raw["type"] == 0
    intr = ok(kd.socket, READ, {"kid": kids["test", "intr"]})["kstat"]
    assert intr["data"] == {"hard": 1, "soft": 2, "watchdog": 3, "spurious": 4, "multiple_service": 5}
    io = ok(kd.socket, READ, {"kid": kids["test", "io"]})["kstat"]
    assert io["data"]["nread"] == 4096 and len(io["data"]) == 12
    timer = ok(kd.socket, READ, {"kid": kids["test", "timer"]})["kstat"]
    assert [t["name"] for t in timer["data"]] == ["t0", "t1"]
    types = ok(kd.socket, READ, {"kid": 1})["kstat"]
    assert types["name"] == "kstat_types" and ["raw", 4, 0] in types["data"]  # ULONG read as UINT64


@pytest.mark.parametrize("kid", [999999, 2**64 - 1, -1, -(2**63)])
def test_read_missing_kid_is_enxio(kd, kid):
    assert err(kd.socket, READ, {"kid": kid})[0] == errno.ENXIO


def test_read_invalid_kstat_is_eagain(kd, kids):
    invalid = kids["test", "timer"] + 1  # created between timer and upderr, never installed
    assert invalid not in kids.values()
    assert err(kd.socket, READ, {"kid": invalid})[0] == errno.EAGAIN


def test_read_enomem_reports_needed_size(kd, kids):
    code, res = err(kd.socket, READ, {"kid": kids["test", "named"], "data_size": 10})
    assert code == errno.ENOMEM
    assert res["data_size"] == 3 * 48 and res["ndata"] == 3 and res["flags"] & 0x04
    assert isinstance(res["snaptime"], int)
    full = ok(kd.socket, READ, {"kid": kids["test", "named"], "data_size": 3 * 48})
    assert len(full["kstat"]["data"]) == 3
    code, res = err(kd.socket, READ, {"kid": 0, "data_size": 0})  # KID 0 is VAR_SIZE: 0 always fails
    assert code == errno.ENOMEM and res["data_size"] == res["ndata"] * 184


def test_read_provider_errors(kd, kids):
    assert err(kd.socket, READ, {"kid": kids["test", "upderr"]})[0] == errno.ENOTTY
    code, res = err(kd.socket, READ, {"kid": kids["test", "raises"]})
    assert code == errno.EIO and "provider bug" in res["error"]
    assert ok(kd.socket, HELLO)["protocol"] == 1  # still serving


@pytest.mark.parametrize(
    "arg",
    [None, {}, {"kid": "2"}, {"kid": True}, {"kid": 1.0}, {"kid": None}, {"kid": [2]}, {"kid": 2, "data_size": -1},
     {"kid": 2, "data_size": "big"}],
)  # fmt: skip
def test_read_bad_arguments_are_einval(kd, arg):
    assert err(kd.socket, READ, arg)[0] == errno.EINVAL


def test_unknown_arg_keys_are_ignored(kd, kids):
    assert ok(kd.socket, READ, {"kid": kids["test", "raw"], "future": [1, {"x": None}]})["kstat"]["ndata"] == 16


# --- KSTAT_IOC_WRITE ----------------------------------------------------------------


def test_write_and_read_back(kd, kids):
    kid = kids["test", "named"]
    new = [["u64", 4, 12345], ["i32", 1, -(2**31)], ["ch", 0, b"xyz"]]
    res = ok(kd.socket, WRITE, {"kid": kid, "ndata": 3, "data": new})
    assert isinstance(res["kcid"], int)
    assert ok(kd.socket, READ, {"kid": kid})["kstat"]["data"] == new


@pytest.mark.parametrize(
    "name, ndata, data, code",
    [
        ("strings", 2, [["s", 9, "x"], ["n", 3, 1]], errno.EACCES),
        ("named", 2, [["u64", 4, 1], ["i32", 1, 1]], errno.EINVAL),
        ("named", 3, [["u64", 4, 1], ["i32", 1, 1], ["nope", 0, b""]], errno.EINVAL),
        ("named", 3, [["u64", 3, 1], ["i32", 1, 1], ["ch", 0, b""]], errno.EINVAL),
        ("named", 3, [["u64", 4, -1], ["i32", 1, 1], ["ch", 0, b""]], errno.EINVAL),
        ("named", 3, [["u64", 4, 1], ["i32", 1, 2**31], ["ch", 0, b""]], errno.EINVAL),
        ("named", 3, [["u64", 4, 1], ["i32", 1, 1], ["ch", 0, b"x" * 17]], errno.EINVAL),
        ("named", 3, "garbage", errno.EINVAL),
        ("named", 3, None, errno.EINVAL),
    ],
)
def test_write_errors(kd, kids, name, ndata, data, code):
    assert err(kd.socket, WRITE, {"kid": kids["test", name], "ndata": ndata, "data": data})[0] == code


def test_write_missing_and_invalid(kd, kids):
    assert err(kd.socket, WRITE, {"kid": 999999, "ndata": 0, "data": []})[0] == errno.ENXIO
    invalid = kids["test", "timer"] + 1
    assert err(kd.socket, WRITE, {"kid": invalid, "ndata": 0, "data": []})[0] == errno.EAGAIN
    assert err(kd.socket, WRITE, {"kid": "x", "ndata": 0})[0] == errno.EINVAL


def test_write_from_a_zone_is_eperm_first(kd, kids):
    # EPERM precedes everything, even a malformed argument (illumos `io/kstat.c` write_kstat_data).
    assert err(kd.zone_socket, WRITE, {"kid": kids["test", "named"], "ndata": 3, "data": []})[0] == errno.EPERM
    assert err(kd.zone_socket, WRITE, None)[0] == errno.EPERM


# --- HELLO, READ_MANY, unknown and provider ioctls -----------------------------------


def test_hello(kd):
    res = ok(kd.socket, HELLO, {"protocol": 1})
    assert res["protocol"] == 1 and res["zone"] == "global" and res["privileged"] is True
    assert "kstatd" in res["server"]
    assert ok(kd.socket, HELLO, None)["protocol"] == 1
    zres = ok(kd.zone_socket, HELLO)
    assert zres["zone"] == "z1" and zres["privileged"] is False


def test_read_many(kd, kids):
    want = [kids["test", "raw"], 999999, kids["test", "upderr"], kids["test", "intr"], "x"]
    res = ok(kd.socket, READ_MANY, {"kids": want})
    codes = [c for c, _ in res["results"]]
    assert codes == [0, errno.ENXIO, errno.ENOTTY, 0, errno.EINVAL]
    assert res["results"][0][1]["data"] == bytes(range(16))
    assert res["results"][1][1] is None
    assert res["results"][3][1] == ok(kd.socket, READ, {"kid": kids["test", "intr"]})["kstat"] | {
        "snaptime": res["results"][3][1]["snaptime"]
    }


def test_read_many_limit(kd):
    res = ok(kd.socket, READ_MANY, {"kids": [999999] * 65536})
    assert len(res["results"]) == 65536 and res["results"][-1] == [errno.ENXIO, None]
    assert err(kd.socket, READ_MANY, {"kids": [1] * 65537})[0] == errno.E2BIG
    assert err(kd.socket, READ_MANY, {"kids": 5})[0] == errno.EINVAL
    assert err(kd.socket, READ_MANY, None)[0] == errno.EINVAL


def test_unknown_kstat_ioctl_is_einval_and_connection_stays(kd):
    c = Conn(kd.socket)
    try:
        for cmd in (0x4B00, 0x4B04, 0x4BFF, 0x4B12):
            seq, code, res = c.call(cmd, 5)
            assert (seq, code) == (5, errno.EINVAL) and res["error"]
        assert c.call(HELLO, 6)[1] == 0
    finally:
        c.close()


def test_provider_ioctls(kd):
    res = ok(kd.socket, ECHO, {"hi": [1, 2]})
    assert res["arg"] == {"hi": [1, 2]} and res["zone"] == "global" and res["zoneid"] == 0
    zres = ok(kd.zone_socket, ECHO)
    assert zres["zone"] == "z1" and zres["zoneid"] == 1 and zres["privileged"] is False
    assert err(kd.socket, 0x123456)[0] == errno.EINVAL  # nobody claims it
    assert err(kd.socket, 2**64 - 1)[0] == errno.EINVAL
    code, res = err(kd.socket, RAISES)
    assert code == errno.EIO and "provider ioctl bug" in res["error"]
    assert err(kd.socket, GARBAGE)[0] == errno.EIO
    assert ok(kd.socket, HELLO)["protocol"] == 1


def test_conn_close_reaches_providers(kd, kids):
    def closed():
        data = ok(kd.socket, READ, {"kid": kids["test", "conns"]})["kstat"]["data"]
        return data[0][2], data[1][2]

    opened0, closed0 = closed()
    c = Conn(kd.socket)
    assert c.call(ECHO, 1)[1] == 0
    assert closed() == (opened0 + 1, closed0)
    c.close()
    deadline = time.monotonic() + 10
    while closed() != (opened0 + 1, closed0 + 1):
        assert time.monotonic() < deadline, closed()
        time.sleep(0.01)


def test_refresh_before_chain_id_and_kid0_reads(kd, kids):
    def refreshes():
        return ok(kd.socket, READ, {"kid": kids["test", "conns"]})["kstat"]["data"][2][2]

    n = refreshes()
    assert refreshes() == n  # a plain read does not refresh
    ok(kd.socket, CHAIN_ID)
    assert refreshes() == n + 1
    ok(kd.socket, READ, {"kid": 0})
    assert refreshes() == n + 2
    ok(kd.socket, READ_MANY, {"kids": [0, 1]})
    assert refreshes() == n + 3


# --- pipelining and framing ------------------------------------------------------------


def test_pipelined_replies_come_in_order(kd, kids):
    c = Conn(kd.socket)
    try:
        cmds = [(READ, {"kid": kids["test", "raw"]}), (CHAIN_ID, None), (0x4B7F, None), (READ, {"kid": 999999}),
                (HELLO, None), (READ_MANY, {"kids": [0]})] * 20  # fmt: skip
        frames = b""
        for seq, (cmd, arg) in enumerate(cmds):
            body = msgpack.packb([cmd, seq + 1000, arg], use_bin_type=True)
            frames += struct.pack(">I", len(body)) + body
        c.s.sendall(frames)
        replies = [read_reply(c.s) for _ in cmds]
        assert [r[0] for r in replies] == [seq + 1000 for seq in range(len(cmds))]
        assert [r[1] for r in replies[:6]] == [0, 0, errno.EINVAL, errno.ENXIO, 0, 0]
    finally:
        c.close()


def _raw_exchange(path, payload):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    try:
        s.sendall(payload)
        reply = read_reply(s)
        assert s.recv(1) == b"", "the connection must be closed after a framing error"
        return reply
    finally:
        s.close()


def test_zero_length_frame(kd):
    seq, code, res = _raw_exchange(kd.socket, b"\x00\x00\x00\x00")
    assert (seq, code) == (0, errno.EPROTO) and res["error"]


def test_oversized_frame(kd):
    seq, code, res = _raw_exchange(kd.socket, struct.pack(">I", (1 << 20) + 1))
    assert (seq, code) == (0, errno.E2BIG) and "1048576" in res["error"]


def test_bad_msgpack_and_shapes(kd):
    body = b"\xc1\xc1"
    assert _raw_exchange(kd.socket, struct.pack(">I", len(body)) + body)[:2] == [0, errno.EPROTO]
    body = msgpack.packb([READ, 42, [1, 2]])
    assert _raw_exchange(kd.socket, struct.pack(">I", len(body)) + body)[:2] == [42, errno.EPROTO]
    body = msgpack.packb([READ, 42, None]) + b"\x01"  # trailing bytes inside the frame
    assert _raw_exchange(kd.socket, struct.pack(">I", len(body)) + body)[:2] == [0, errno.EPROTO]


def test_pipelined_requests_before_a_bad_frame_are_answered(kd):
    good = msgpack.packb([HELLO, 1, None])
    payload = struct.pack(">I", len(good)) + good + b"\x00\x00\x00\x00"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(kd.socket)
    try:
        s.sendall(payload)
        assert read_reply(s)[:2] == [1, 0]
        assert read_reply(s)[:2] == [0, errno.EPROTO]
        assert s.recv(1) == b""
    finally:
        s.close()


# --- zones ---------------------------------------------------------------------------


def test_zone_isolation(kd, kids):
    zheaders = ok(kd.zone_socket, READ, {"kid": 0})["kstat"]["data"]
    znames = {(h["module"], h["name"]) for h in zheaders}
    assert ("test", "zoned") in znames and ("test", "raw") in znames
    zoned = next(h["kid"] for h in zheaders if h["name"] == "zoned")
    assert err(kd.socket, READ, {"kid": zoned})[0] == errno.ENXIO
    assert ok(kd.zone_socket, READ, {"kid": zoned})["kstat"]["name"] == "zoned"
    assert ok(kd.socket, READ_MANY, {"kids": [zoned]})["results"] == [[errno.ENXIO, None]]
    assert ok(kd.socket, CHAIN_ID)["kcid"] == ok(kd.zone_socket, CHAIN_ID)["kcid"]  # the chain id is global


# --- the daemon's own kstats -------------------------------------------------------------


def test_daemon_kstats_count_requests_and_errors(kd):
    with kstat_open(kd.socket) as kc:
        req = kc.lookup("kstatpy", 0, "requests")
        errs = kc.lookup("kstatpy", 0, "errors")
        conns = kc.lookup("kstatpy", 0, "connections")
        kc.read(req)
        kc.read(errs)
        before_hello = req.data_lookup("hello").value
        before_enxio = errs.data_lookup("ENXIO").value
        rpc(kd.socket, HELLO)
        rpc(kd.socket, READ, {"kid": 999999})
        kc.read(req)
        kc.read(errs)
        kc.read(conns)
        assert req.data_lookup("hello").value == before_hello + 1
        assert errs.data_lookup("ENXIO").value == before_enxio + 1
        assert conns.data_lookup("current").value >= 1
        assert conns.data_lookup("total").value >= 3
        daemon = kc.lookup("kstatpy", 0, "daemon")
        kc.read(daemon)
        assert daemon.data_lookup("read_timeout_ms").value == 5000
