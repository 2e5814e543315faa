"""kstatpy.protocol: framing, limits and request shapes of docs/PROTOCOL.md §2-3, without sockets."""

from __future__ import annotations

import errno
import struct

import msgpack
import pytest

from kstatpy.constants import Errno
from kstatpy.protocol import DEFAULT_MAX_REQUEST
from kstatpy.protocol import ERRNO_NAMES
from kstatpy.protocol import FrameDecoder
from kstatpy.protocol import FrameError
from kstatpy.protocol import check_reply
from kstatpy.protocol import check_request
from kstatpy.protocol import default_socket_path
from kstatpy.protocol import errno_name
from kstatpy.protocol import pack_reply
from kstatpy.protocol import pack_request
from kstatpy.protocol import unpack_body


def test_errno_table_is_protocol_md():
    expected = {
        "EPERM": 1, "ENOENT": 2, "EINTR": 4, "EIO": 5, "ENXIO": 6, "E2BIG": 7, "EBADF": 9,
        "EAGAIN": 11, "ENOMEM": 12, "EACCES": 13, "EFAULT": 14, "EBUSY": 16, "EEXIST": 17,
        "EINVAL": 22, "ENOTTY": 25, "ENAMETOOLONG": 36, "EPROTO": 71, "EOVERFLOW": 75,
        "ETIMEDOUT": 110,  # docs/PROTOCOL.md §9.4
    }  # fmt: skip
    assert {name: int(Errno[name]) for name in expected} == expected
    assert {v: k for k, v in expected.items()} == ERRNO_NAMES
    assert errno_name(5) == "EIO"
    assert errno_name(123) == "errno 123"


def test_request_frame_is_length_prefixed_msgpack():
    frame = pack_request(0x4B02, 7, {"kid": 3, "name": "é", "raw": b"\x00"})
    (length,) = struct.unpack(">I", frame[:4])
    assert length == len(frame) - 4
    body = frame[4:]
    assert msgpack.unpackb(body, raw=False) == [0x4B02, 7, {"kid": 3, "name": "é", "raw": b"\x00"}]
    assert b"\xc4\x01\x00" in body  # bytes go out as bin (use_bin_type=True)


def test_reply_frame_roundtrip():
    frame = pack_reply(9, 0, {"kcid": 2**64 - 1})
    assert check_reply(unpack_body(frame[4:])) == (9, 0, {"kcid": 2**64 - 1})


def test_decoder_splits_pipelined_and_partial_frames():
    frames = [pack_request(0x4B01, i, None) for i in range(3)]
    stream = b"".join(frames)
    dec = FrameDecoder()
    bodies = []
    for i in range(len(stream)):  # one byte at a time
        dec.feed(stream[i : i + 1])
        body = dec.next_body()
        if body is not None:
            bodies.append(body)
    assert [check_request(unpack_body(b))[1] for b in bodies] == [0, 1, 2]
    assert dec.pending() == 0


def test_decoder_zero_length_is_eproto():
    dec = FrameDecoder()
    dec.feed(b"\x00\x00\x00\x00")
    with pytest.raises(FrameError) as ei:
        dec.next_body()
    assert ei.value.errno == errno.EPROTO


def test_decoder_oversized_is_e2big_before_the_body_arrives():
    dec = FrameDecoder(DEFAULT_MAX_REQUEST)
    dec.feed(struct.pack(">I", DEFAULT_MAX_REQUEST + 1))
    with pytest.raises(FrameError) as ei:
        dec.next_body()
    assert ei.value.errno == errno.E2BIG
    ok = FrameDecoder(DEFAULT_MAX_REQUEST)
    ok.feed(struct.pack(">I", DEFAULT_MAX_REQUEST))
    assert ok.next_body() is None  # at the limit: accepted, waiting for the body


@pytest.mark.parametrize(
    "obj, seq",
    [
        ({"cmd": 1}, 0),
        ([0x4B01, 1], 0),
        ([0x4B01, 1, None, 4], 0),
        ([-1, 5, None], 5),
        (["x", 5, None], 5),
        ([0x4B01, -1, None], 0),
        ([0x4B01, 2**32, None], 0),
        ([0x4B01, "1", None], 0),
        ([0x4B01, 6, [1, 2]], 6),
        ([0x4B01, 6, 3], 6),
        ([0x4B01, 6, {1: 2}], 6),
        ([1.5, 6, None], 6),
        ([True, 6, None], 6),
    ],
)
def test_bad_request_shapes_are_eproto_with_seq_when_known(obj, seq):
    with pytest.raises(FrameError) as ei:
        check_request(obj)
    assert ei.value.errno == errno.EPROTO
    assert ei.value.seq == seq


def test_good_request_shapes():
    assert check_request([0x4B01, 0, None]) == (0x4B01, 0, None)
    assert check_request([0x564D01, 2**32 - 1, {"name": "vm"}]) == (0x564D01, 2**32 - 1, {"name": "vm"})


@pytest.mark.parametrize("body", [b"\xc1", b"\x93\x01", b"\x01\x02", b"\xd9\x05ab"])
def test_bad_msgpack_is_eproto(body):
    with pytest.raises(FrameError) as ei:
        unpack_body(body)
    assert ei.value.errno == errno.EPROTO


def test_default_socket_path(monkeypatch):
    monkeypatch.delenv("KSTATPY_RUNDIR", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/7")
    assert default_socket_path(euid=7) == "/run/user/7/kstatpy/kstat.sock"
    assert default_socket_path(euid=0) == "/run/kstatpy/priv/kstat.sock"  # root: its privileged listener
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    import os

    assert default_socket_path(euid=7) == f"/tmp/kstatpy-{os.getuid()}/kstat.sock"
