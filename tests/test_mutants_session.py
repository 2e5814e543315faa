"""kstatpy.session at its edges (issue 23: session.py's survivors).

The entry-by-entry reply encoder (DESCRIBE, and READ_MANY of plain results) must make the
bytes msgpack makes of the whole reply, with a safe point before each entry; the receive
timeout takes any value below a second; and a real kstatd told to stop does not wait for
idle clients or for clients that do not read (the session phases tell them apart).
"""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
import threading
import time

import msgpack
import pytest
from kstatd_fixture import read_reply
from kstatd_fixture import rpc
from kstatd_fixture import running_kstatd

from kstatpy.chain import Chain
from kstatpy.packed import PackedResults
from kstatpy.protocol import pack_request
from kstatpy.server import Kstatd
from kstatpy.server import ServerConfig
from kstatpy.session import pack_packed_reply
from kstatpy.session import pack_read_many_reply
from kstatpy.session import send_reply
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


def test_a_reply_sent_into_a_full_buffer_arrives_whole() -> None:
    # The non-blocking first send() sends nothing (the buffer is full): the timed
    # sendall must then send all of it, from its first byte.
    a, b = socket.socketpair()
    filler = 0
    a.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        while True:
            filler += a.send(b"\0" * 4096)
    data = bytes(range(256)) * 64
    got = bytearray()

    def reader() -> None:
        while len(got) < filler + len(data):
            chunk = b.recv(1 << 16)
            if not chunk:
                return
            got.extend(chunk)

    with a, b:
        set_recv_timeout(a, 5)  # blocking again, as kstatd's sockets are
        b.settimeout(30)
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        send_reply(a, data, 30.0)
        t.join(30)
        assert not t.is_alive(), "the reader did not get the reply within 30 s"
    assert bytes(got[filler:]) == data


def test_a_privileged_session_counts_for_privfirst_from_its_accept_to_its_first_reply(tmp_path) -> None:
    # Session.busy starts False: the accept's begin() is then counted once, and the
    # first reply's end() takes it off (a session born busy would skip both halves wrong).
    kd = Kstatd(Chain(), None, ServerConfig(socket=str(tmp_path / "k.sock"), priv_sockets=True, deadman_seconds=0))
    kd.start()
    try:
        assert kd.priv_paths, "no privileged socket"
        with socket.socket(socket.AF_UNIX) as pub:  # a public session is not privileged, nor counted
            pub.settimeout(10)
            pub.connect(kd.config.socket)
            pub.sendall(pack_request(0x4B10, 1, {"protocol": 1}))
            assert read_reply(pub)[:2] == [1, 0]
            with kd._sessions_cv:
                assert [x.priv for x in kd._sessions] == [False] and kd.first.busy == 0
        with kd._sessions_cv:
            assert kd._sessions_cv.wait_for(lambda: not kd._sessions, timeout=10), "the public session did not close"
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(kd.priv_paths[0])
            with kd._sessions_cv:  # _admit does not notify: look every 10 ms, 10 s at most
                assert any(kd._sessions_cv.wait_for(lambda: any(x.priv for x in kd._sessions), timeout=0.01)
                           for _ in range(1000)), "the privileged session was not admitted within 10 s"
            assert kd.first.busy == 1
            s.sendall(pack_request(0x4B10, 1, {"protocol": 1}))
            assert read_reply(s)[:2] == [1, 0]
            with kd.first._cv:
                assert kd.first._cv.wait_for(lambda: not kd.first.busy, timeout=10), "still counted after its reply"
    finally:
        kd.stop()
        kd.shutdown(grace=1.0)


def test_every_reply_frames_length_word_is_its_body_length() -> None:
    # _frame_done fills the length word of a frame built in place: for bodies of every
    # length modulo 8 (a length whose bit 2 is set cannot tell `- 4` from `^ 4`), a
    # reader that trusts the word (every client) gets exactly the reply, from both encoders.
    lengths = set()
    for pad in range(16):
        entry = {"kid": 1, "module": "m", "data": [["a", 1, "x" * pad]]}
        result = {"kcid": 7, "results": [[0, entry], [errno.ENXIO, None]]}
        packed = PackedResults()
        for e in result["results"]:
            packed.append(e)
        frames = (
            pack_read_many_reply(3, result, msgpack.Packer(use_bin_type=True)),
            pack_packed_reply(3, {"kcid": 7, "results": packed}, msgpack.Packer(use_bin_type=True)),
        )
        for frame in frames:
            (length,) = struct.unpack(">I", frame[:4])
            assert length == len(frame) - 4, (pad, len(frame))
            assert msgpack.unpackb(frame[4 : 4 + length], raw=False) == [3, 0, result]
            lengths.add(length % 8)
    assert lengths == set(range(8))
