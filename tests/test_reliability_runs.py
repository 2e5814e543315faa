"""Short versions of RELIABILITY.md's long runs (bench/reliability.py), and the log
flood the fuzz run found: a failing provider ioctl repeated by any caller used to log a
traceback per request until kstatd's stderr pipe filled and every thread blocked.
"""

from __future__ import annotations

import errno
import socket
import struct
import sys

import msgpack
from kstatd_fixture import REPO
from kstatd_fixture import read_reply
from kstatd_fixture import running_kstatd

sys.path.insert(0, str(REPO / "bench"))
import reliability


def test_connections_short():
    report = reliability.connections(300)
    assert report["ok"], report


def test_pipelined_flood_short():
    report = reliability.flood(20_000)
    assert report["ok"], report


def test_sigkill_and_restart_over_the_stale_socket_short():
    report = reliability.restart(3)
    assert report["ok"], report


def test_sigterm_under_load_short():
    report = reliability.sigterm(8, seconds=1.0)
    assert report["ok"], report


def test_fuzz_short():
    report = reliability.fuzz(3000)
    assert report["ok"], report
    assert report["replies_by_errno"].get(errno.EPROTO, 0) > 0  # the fuzz reached the decoder


def test_a_repeated_failing_ioctl_does_not_flood_the_log(tmp_path):
    # running_kstatd reads kstatd's stderr only at stop: a pipe nobody drains meanwhile.
    with running_kstatd(tmp_path, plugins=("tests.providers_fixture.basic",)) as kd:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect(kd.socket)
            for seq in range(1, 3001):
                body = msgpack.packb([0x7E5702, seq, None])
                s.sendall(struct.pack(">I", len(body)) + body)
                assert read_reply(s)[:2] == [seq, errno.EIO]
        assert kd.stop() == 0
    assert kd.stderr.count("ioctl 0x7e5702 failed") <= 5, kd.stderr[-500:]
