"""Issue 13, faults 2 and 9e: the work and memory one request may cost are bounded.

READ_MANY and DESCRIBE replies have a byte budget (``kstatd --max-reply``; later entries
E2BIG, the client asks again), KID 0 is read once per batch, request decoding has container
limits (E2BIG), and errnos inside READ_MANY count in ``kstatpy:0:errors``.
"""

from __future__ import annotations

import errno
import socket
import struct
import subprocess
import sys
import threading

import msgpack
import pytest
from kstatd_fixture import read_reply
from kstatd_fixture import rpc
from kstatd_fixture import running_kstatd

from kstatpy.client import kstat_open
from kstatpy.describe import kstat_describe
from kstatpy.protocol import MAX_CONTAINERS
from kstatpy.protocol import MAX_MAP_LEN
from kstatpy.protocol import FrameError
from kstatpy.protocol import unpack_body

READ, READ_MANY, DESCRIBE, CREATE = 0x4B02, 0x4B11, 0x4B13, 0x564D01
BASIC = ("tests.providers_fixture.basic",)
VMM = ("kstatpy_providers.vmm.provider",)


def raw_reply(path: str, cmd: int, arg) -> tuple[int, list]:
    """(frame length, decoded reply) of one request."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(60)
        s.connect(path)
        body = msgpack.packb([cmd, 5, arg], use_bin_type=True)
        s.sendall(struct.pack(">I", len(body)) + body)
        (n,) = struct.unpack(">I", s.recv(4, socket.MSG_WAITALL))
        buf = b""
        while len(buf) < n:
            buf += s.recv(n - len(buf))
        return n, msgpack.unpackb(buf, raw=False)


def vm_hwm_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def test_kid0_many_times_is_read_once_and_the_reply_is_bounded(tmp_path):
    budget = 1 << 20
    with running_kstatd(tmp_path, plugins=VMM, args=["--max-reply", str(budget)]) as kd:
        for i in range(20):
            assert rpc(kd.socket, CREATE, {"name": f"vm{i}"})[1] == 0
        one, _reply = raw_reply(kd.socket, READ, {"kid": 0})
        hwm = vm_hwm_kb(kd.proc.pid)
        n, (_seq, code, result) = raw_reply(kd.socket, READ_MANY, {"kids": [0] * 65536})
        assert code == 0
        entries = result["results"]
        read = [k for c, k in entries if c == 0]
        assert 1 <= len(read) and {c for c, _ in entries[len(read) :]} == {errno.E2BIG}
        assert n <= budget + one + 65536 * 4  # the budget, one entry past it, and [E2BIG, nil]s
        assert len({k["snaptime"] for k in read}) == 1  # one read of KID 0 for the whole batch
        assert vm_hwm_kb(kd.proc.pid) - hwm < 100 * 1024  # not the 1.4 GB


def test_the_client_asks_again_for_what_the_budget_left(tmp_path):
    with running_kstatd(tmp_path, plugins=BASIC, args=["--max-reply", "1"]) as kd:
        kc = kstat_open(kd.socket)
        try:
            ksps = [k for k in kc.kc_chain if k.ks_module == "test"]
            got = kc.read_many(ksps)
            assert [k for _, k in got] == ksps
            codes = {k.ks_name: c for c, k in got}
            assert codes["named"] == 0 and codes["timer"] == 0 and codes["raises"] == errno.EIO
            assert all(c != errno.E2BIG for c in codes.values())
        finally:
            kc.close()
        small = subprocess.run([sys.executable, "-m", "kstatpy.cli.kstat", "--socket", kd.socket, "-p", "test"],
                               capture_output=True, timeout=60)  # fmt: skip
    with running_kstatd(tmp_path, plugins=BASIC, socket=str(tmp_path / "b.sock")) as kd:
        big = subprocess.run([sys.executable, "-m", "kstatpy.cli.kstat", "--socket", kd.socket, "-p", "test"],
                             capture_output=True, timeout=60)  # fmt: skip
    strip = lambda out: [ln for ln in out.splitlines() if b"time" not in ln and b":conns:" not in ln]  # noqa: E731
    assert small.returncode == big.returncode == 0
    assert strip(small.stdout) == strip(big.stdout)


def test_describe_of_one_kid_65536_times_stays_within_the_budget(tmp_path):
    # The review's reproducer: [0x4B13, 1, {"kids": [9] * 65536}] made a 231 MB reply.
    budget = 1 << 20
    with running_kstatd(tmp_path, plugins=BASIC, args=["--max-reply", str(budget)]) as kd:
        _seq, _code, res = rpc(kd.socket, READ, {"kid": 0})
        kid = next(h["kid"] for h in res["kstat"]["data"] if (h["module"], h["name"]) == ("kstatpy", "errors"))
        one, (_seq, code, single) = raw_reply(kd.socket, DESCRIBE, {"kids": [kid]})
        assert code == 0 and single["results"][0][0] == 0 and len(single["results"][0][1]["stats"]) > 20
        hwm = vm_hwm_kb(kd.proc.pid)
        n, (_seq, code, result) = raw_reply(kd.socket, DESCRIBE, {"kids": [kid] * 65536})
        assert code == 0
        entries = result["results"]
        done = [d for c, d in entries if c == 0]
        assert 1 <= len(done) < 65536 and {c for c, _ in entries[len(done) :]} == {errno.E2BIG}
        assert all(d == single["results"][0][1] for d in done)  # a normal DESC, unchanged
        assert n <= budget + one + 65536 * 4  # the budget, one entry past it, and [E2BIG, nil]s
        assert n >= budget // 4  # the charge is about the encoded size, not far above it
        assert vm_hwm_kb(kd.proc.pid) - hwm < 100 * 1024  # not the review's 1.2 GB


def test_describe_client_asks_again_for_what_the_budget_left(tmp_path):
    with running_kstatd(tmp_path, plugins=BASIC, args=["--max-reply", "1"]) as kd:
        kc = kstat_open(kd.socket)
        try:
            kids = [k.ks_kid for k in kc.kc_chain]
            _seq, _code, raw = rpc(kd.socket, DESCRIBE, {"kids": kids})
            assert [c for c, _ in raw["results"]] == [0] + [errno.E2BIG] * (len(kids) - 1)
            got = kstat_describe(kc, [*kids, 999999])
            assert [c for c, _ in got] == [0] * len(kids) + [errno.ENXIO]
            assert [d["kid"] for _, d in got[:-1]] == kids
        finally:
            kc.close()


def test_decoding_is_bounded_by_containers():
    assert unpack_body(msgpack.packb([0x4B11, 1, {"kids": [0] * 65536}]))[2]["kids"] == [0] * 65536
    with pytest.raises(FrameError) as info:
        unpack_body(msgpack.packb([1, 2, [{}] * MAX_CONTAINERS]))
    assert info.value.errno == errno.E2BIG
    with pytest.raises(FrameError) as info:
        unpack_body(b"\x93\x01\x02\xc7\x01\x05a")  # an ext type: none is allowed
    assert info.value.errno == errno.EPROTO


def test_small_bodies_keep_every_decode_limit():
    # A body no longer than MAX_CONTAINERS bytes is decoded without the container hooks
    # (it cannot hold more containers than bytes): the other limits still hold there.
    body = msgpack.packb([1, 2, {i: 0 for i in range(MAX_MAP_LEN + 1)}])
    assert len(body) <= MAX_CONTAINERS
    with pytest.raises(FrameError) as info:
        unpack_body(body)
    assert info.value.errno == errno.EPROTO
    # Both sides of the boundary decode the same: MAX_CONTAINERS bytes (no hooks) and
    # more bytes holding exactly MAX_CONTAINERS containers (hooks, at the limit).
    at_limit = msgpack.packb([1, 2, [[]] * (MAX_CONTAINERS - 8)])
    assert len(at_limit) == MAX_CONTAINERS and unpack_body(at_limit)[2] == [[]] * (MAX_CONTAINERS - 8)
    over = msgpack.packb([1, 2, [[]] * (MAX_CONTAINERS - 2)])
    assert len(over) > MAX_CONTAINERS and unpack_body(over)[2] == [[]] * (MAX_CONTAINERS - 2)


def test_32_concurrent_frames_of_a_million_empty_maps(tmp_path):
    # The reproducer: 1 MiB frames holding 10^6 empty maps pushed kstatd to 1.9 GB.
    body = b"\x93\x01\x02\xdd" + struct.pack(">I", 1_048_000) + b"\x80" * 1_048_000
    with running_kstatd(tmp_path, plugins=BASIC, args=["--max-request", str(len(body))]) as kd:
        hwm = vm_hwm_kb(kd.proc.pid)
        replies: list[list] = []

        def send() -> None:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(60)
                s.connect(kd.socket)
                s.sendall(struct.pack(">I", len(body)) + body)
                replies.append(read_reply(s))

        threads = [threading.Thread(target=send) for _ in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert len(replies) == 32 and {r[1] for r in replies} == {errno.E2BIG}
        assert vm_hwm_kb(kd.proc.pid) - hwm < 400 * 1024, "decoding was not bounded"
        assert rpc(kd.socket, 0x4B10)[1] == 0


def test_errnos_inside_read_many_are_counted(tmp_path):
    with running_kstatd(tmp_path, plugins=BASIC) as kd:
        hdrs = rpc(kd.socket, READ, {"kid": 0})[2]["kstat"]["data"]
        kid = {(h["module"], h["name"]): h["kid"] for h in hdrs}

        def errors() -> dict[str, int]:
            data = rpc(kd.socket, READ, {"kid": kid[("kstatpy", "errors")]})[2]["kstat"]["data"]
            return {n: v for n, _t, v in data}

        before = errors()
        res = rpc(kd.socket, READ_MANY, {"kids": [kid[("test", "raises")]] * 3 + [999999] * 2})[2]
        assert [c for c, _ in res["results"]] == [errno.EIO] * 3 + [errno.ENXIO] * 2
        after = errors()
        assert after["EIO"] - before["EIO"] == 3 and after["ENXIO"] - before["ENXIO"] == 2
