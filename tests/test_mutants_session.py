"""kstatpy.session at its edges (issue 23: session.py's survivors).

The entry-by-entry reply encoder (DESCRIBE, and READ_MANY of plain results) must make the
bytes msgpack makes of the whole reply, with a safe point before each entry; the receive
timeout takes any value below a second; and a real kstatd told to stop does not wait for
idle clients or for clients that do not read (the session phases tell them apart).
"""

from __future__ import annotations

import errno
import socket
import struct
import time

import msgpack
import pytest
from kstatd_fixture import rpc
from kstatd_fixture import running_kstatd

from kstatpy.session import pack_read_many_reply
from kstatpy.session import set_recv_timeout

READ, DESCRIBE = 0x4B02, 0x4B13
BASIC = ("tests.providers_fixture.basic",)


def test_entry_by_entry_reply_is_the_whole_reply_with_a_safe_point_per_entry() -> None:
    shared = {"kid": 1, "module": "m", "data": [["a", 1, 2]]}  # one object twice: packed once
    result = {
        "kcid": 7,
        "results": [[0, shared], [errno.ENXIO, None], [0, {"kid": 2}], [0, shared]],
        "truncated": False,  # a key after "results" in sort order: packed as a value
    }
    pauses = []
    frame = pack_read_many_reply(42, result, msgpack.Packer(use_bin_type=True), lambda: pauses.append(1))
    (length,) = struct.unpack(">I", frame[:4])
    assert length == len(frame) - 4
    assert msgpack.unpackb(frame[4:], raw=False) == [42, 0, result]
    assert frame[4:] == msgpack.packb([42, 0, result], use_bin_type=True)
    assert len(pauses) == 4
    # without a pause callable: the same bytes
    assert pack_read_many_reply(42, result, msgpack.Packer(use_bin_type=True)) == frame


def test_describe_through_kstatd_lists_every_kid_asked_even_twice(tmp_path) -> None:
    with running_kstatd(tmp_path, plugins=BASIC) as kd:
        _seq, code, chain = rpc(kd.socket, READ, {"kid": 0})
        assert code == 0, chain
        kids = [h["kid"] for h in chain["kstat"]["data"]][:3]
        seq, code, result = rpc(kd.socket, DESCRIBE, {"kids": [*kids, 999_999, kids[0]]}, seq=9)
        assert (seq, code) == (9, 0), result
        entries = result["results"]
        assert [e[0] for e in entries] == [0, 0, 0, errno.ENXIO, 0]
        assert entries[0] == entries[-1] and entries[3][1] is None


@pytest.mark.parametrize("seconds", [0.9999995, 0.5, 1.0000004])
def test_a_receive_timeout_just_under_or_over_a_second_is_accepted(seconds: float) -> None:
    # usec must stay below 10**6 (EDOM otherwise) whatever the fraction's rounding.
    a, b = socket.socketpair()
    with a, b:
        set_recv_timeout(a, seconds)
        sec, usec = struct.unpack("@ll", a.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.calcsize("@ll")))
        assert 0.49 < sec + usec / 1e6 < 1.1 and 0 <= usec < 1_000_000


def test_sigterm_does_not_wait_for_idle_clients_or_clients_that_do_not_read(tmp_path) -> None:
    # --read-timeout 30: shutdown would give a request being dispatched 31 s. An idle
    # connection is READING and a reply a client does not read is SENDING: neither is
    # waited for beyond the send grace (0.5 s).
    with running_kstatd(tmp_path, plugins=BASIC, args=["--read-timeout", "30", "--frame-timeout", "60"]) as kd:
        idle = socket.socket(socket.AF_UNIX)
        idle.settimeout(10)
        idle.connect(kd.socket)
        rpc(kd.socket, READ, {"kid": 0})  # kstatd serves: the idle connection is accepted by now
        stuck = socket.socket(socket.AF_UNIX)
        stuck.settimeout(10)
        stuck.connect(kd.socket)
        stuck.setblocking(False)
        body = msgpack.packb([READ, 1, {"kid": 0}], use_bin_type=True)
        req = (struct.pack(">I", len(body)) + body) * 256
        try:
            while True:
                stuck.send(req)
        except BlockingIOError:
            pass
        t0 = time.monotonic()
        status = kd.stop(timeout=60)
        elapsed = time.monotonic() - t0
        idle.close()
        stuck.close()
    assert status == 0, kd.stderr
    assert elapsed < 15, f"SIGTERM took {elapsed:.1f} s: kstatd waited for clients that were not dispatching"
