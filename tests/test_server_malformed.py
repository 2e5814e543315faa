"""Bad input of every kind never kills kstatd nor changes the chain; peer credentials decide writes."""

from __future__ import annotations

import errno
import os
import random
import select
import shutil
import signal
import socket
import struct
import tempfile
import time

import msgpack
import pytest

from tests.kstatd_fixture import hello
from tests.kstatd_fixture import rpc
from tests.kstatd_fixture import running_kstatd

READ, WRITE, CHAIN_ID, READ_MANY, HELLO = 0x4B02, 0x4B03, 0x4B01, 0x4B11, 0x4B10


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def req(cmd, seq, arg) -> bytes:
    return frame(msgpack.packb([cmd, seq, arg], use_bin_type=True))


def deep(n):
    obj = []
    for _ in range(n):
        obj = [obj]
    return obj


DEEP = b"\x91" * 100000 + b"\x90"  # [[[...]]] nested 100,000 deep: deeper than any unpacker stack


def battery():
    rng = random.Random(14281)
    yield b""  # connect and hang up
    for n in (1, 3, 50, 4096):
        yield bytes(rng.randrange(256) for _ in range(n))
    yield b"\x00\x00"  # truncated length
    yield struct.pack(">I", 100) + b"\x93\x01"  # truncated body, then hang up
    yield b"\x00\x00\x00\x00"
    yield struct.pack(">I", 2**32 - 1)
    yield struct.pack(">I", (1 << 20) + 1) + b"\x00" * 1000
    yield frame(b"\xc1")
    yield frame(b"\xd9\xff")  # str of 255 bytes, truncated
    yield frame(DEEP)
    yield frame(msgpack.packb({"cmd": READ}))
    yield frame(msgpack.packb([READ, 1]))
    yield frame(msgpack.packb([READ, 1, None, None]))
    yield frame(msgpack.packb([READ, 1, [1]]))
    yield frame(msgpack.packb([READ, 1, {1: 1}]))
    yield frame(msgpack.packb([READ, 1, {b"kid": 2}]))
    yield frame(msgpack.packb([READ, "1", None]))
    yield frame(msgpack.packb([2**64 - 1, 1, None]))
    yield frame(msgpack.packb([-1, 1, None]))
    yield frame(msgpack.packb([READ, 2**32, None]))
    yield frame(msgpack.packb([READ, 1, msgpack.ExtType(1, b"x")]))
    yield frame(msgpack.packb(3.5))
    for kid in (2**64 - 1, -1, -(2**63), 2**63, "0", b"0", None, [], {}, 1.5, True, msgpack.ExtType(5, b"")):
        yield req(READ, 2, {"kid": kid})
        yield req(READ, 3, {"kid": 0, "data_size": kid})
        yield req(READ_MANY, 4, {"kids": [kid, kid]})
        yield req(WRITE, 5, {"kid": kid, "ndata": kid, "data": kid})
    for arg in (
        {"kid": 2, "ndata": 3, "data": deep(500)},
        {"\u2603" * 1000: "\udcff".encode("utf-8", "surrogatepass")},
    ):
        yield req(WRITE, 6, arg)
    yield req(WRITE, 7, {"kid": 2, "ndata": 3, "data": [["u64", 4, -(2**63)], ["i32", 1, 2**63], ["ch", 0, b""]]})
    yield req(WRITE, 7, {"kid": 2, "ndata": 3, "data": [["u64", 4, "1"], ["i32", 1, None], ["ch", 0, "str"]]})
    yield req(WRITE, 7, {"kid": 0, "ndata": 0, "data": []})
    yield req(WRITE, 7, {"kid": 1, "ndata": 5, "data": [["raw", 4, 1]] * 5})
    yield req(HELLO, 8, {"protocol": "\u00e9" * 10000})
    yield req(READ, 9, {"kid": 0, "module": "\x00" * 100})
    yield frame(msgpack.packb([READ, 1, None])) + frame(b"\xc1")  # good then bad


@pytest.fixture(scope="module")
def kd(tmp_path_factory):
    with running_kstatd(tmp_path_factory.mktemp("kstatd"), plugins=["tests.providers_fixture.basic"]) as kd:
        yield kd


def snapshot(path):
    _seq, code, res = rpc(path, READ, {"kid": 0})
    assert code == 0, res
    headers = [{k: v for k, v in h.items() if k != "snaptime"} for h in res["kstat"]["data"]]
    kcid = rpc(path, CHAIN_ID)[2]["kcid"]
    named = rpc(path, READ, {"kid": next(h["kid"] for h in headers if h["name"] == "named")})[2]["kstat"]["data"]
    return kcid, [h for h in headers if h["module"] != "kstatpy"], named


def test_malformed_battery_leaves_daemon_and_chain_intact(kd):
    before = snapshot(kd.socket)
    count = 0
    for payload in battery():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(kd.socket)
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):  # drain whatever kstatd answers until it closes
                pass
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            s.close()
        count += 1
    assert count > 60
    assert hello(kd.socket)["protocol"] == 1
    assert snapshot(kd.socket) == before


def test_each_bad_frame_gets_its_errno(kd):
    cases = [
        (b"\x00\x00\x00\x00", 0, errno.EPROTO),
        (struct.pack(">I", 2**32 - 1), 0, errno.E2BIG),
        (frame(DEEP), 0, errno.EPROTO),
        (frame(msgpack.packb([READ, 1234, "x"])), 1234, errno.EPROTO),
        (frame(msgpack.packb([READ, 1, {1: 1}])), 1, errno.EPROTO),
    ]
    for payload, seq, code in cases:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(kd.socket)
        s.sendall(payload)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        s.close()
        (length,) = struct.unpack(">I", data[:4])
        assert len(data) == 4 + length, "exactly one reply, then close"
        reply = msgpack.unpackb(data[4:], raw=False)
        assert reply[:2] == [seq, code] and reply[2]["error"]


def test_max_request_is_configurable(tmp_path):
    with running_kstatd(tmp_path, args=["--max-request", "64"]) as kd:
        assert rpc(kd.socket, READ, {"kid": 0})[1] == 0
        _seq, code, res = rpc(kd.socket, READ, {"kid": 0, "pad": "x" * 64})
        assert code == errno.E2BIG and "64" in res["error"]


@pytest.fixture
def public_dir():
    """A directory every user can reach (pytest's tmp dirs are 0700 under root)."""
    d = tempfile.mkdtemp(prefix="kstatpy-test-")
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def as_nobody(fn):
    """Run fn() in a forked child that setuid()s to nobody (65534); its msgpack-able result."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setgid(65534)
            os.setuid(65534)
            try:
                out = {"ok": fn()}
            except BaseException as exc:
                out = {"exc": repr(exc)}
            os.write(w, msgpack.packb(out))
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    deadline = time.monotonic() + 60
    while True:
        if not select.select([r], [], [], max(0, deadline - time.monotonic()))[0]:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)  # bounded: SIGKILLed
            raise AssertionError("the child as nobody did not answer within 60 s")
        chunk = os.read(r, 65536)
        if not chunk:
            break
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)  # bounded: its pipe closed, it is exiting
    out = msgpack.unpackb(data, raw=False)
    assert "ok" in out, out
    return out["ok"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_unprivileged_peer_gets_eperm(public_dir):
    with running_kstatd(public_dir, plugins=["tests.providers_fixture.basic"]) as kd:
        kids = {h["name"]: h["kid"] for h in rpc(kd.socket, READ, {"kid": 0})[2]["kstat"]["data"]}
        (hello_code, hello_res), write_code, read_code = as_nobody(
            lambda: [
                rpc(kd.socket, HELLO)[1:],
                rpc(kd.socket, WRITE, {"kid": kids["named"], "ndata": 3, "data": []})[1],
                rpc(kd.socket, READ, {"kid": kids["named"]})[1],
            ]
        )
    assert hello_code == 0 and hello_res["privileged"] is False and hello_res["zone"] == "global"
    assert write_code == errno.EPERM
    assert read_code == 0  # reading is open to all


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
@pytest.mark.parametrize("allow", ["65534", "nobody", "@65534"])
def test_allow_write_privileges_a_user_or_group(public_dir, allow):
    with running_kstatd(public_dir, plugins=["tests.providers_fixture.basic"], args=["--allow-write", allow]) as kd:
        kids = {h["name"]: h["kid"] for h in rpc(kd.socket, READ, {"kid": 0})[2]["kstat"]["data"]}
        data = [["u64", 4, 99], ["i32", 1, 0], ["ch", 0, b""]]
        privileged, code = as_nobody(
            lambda: [
                rpc(kd.socket, HELLO)[2]["privileged"],
                rpc(kd.socket, WRITE, {"kid": kids["named"], "ndata": 3, "data": data})[1],
            ]
        )
        assert privileged is True and code == 0
