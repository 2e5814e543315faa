"""Issue 13, faults 1 and 9a-b: no user or zone holds every connection slot, or a slot forever.

Real kstatd subprocesses; the second user is nobody (tests/nobody.py). Timeouts are made
short with kstatd's options; waiting for a timeout to fire is the behaviour under test.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import time

import msgpack
from bounded import within
from kstatd_fixture import REPO
from kstatd_fixture import hello
from kstatd_fixture import read_reply
from kstatd_fixture import recv_exact
from kstatd_fixture import rpc
from kstatd_fixture import running_kstatd
from nobody import popen_as_nobody
from nobody import shared_dir

from kstatpy.client import kstat_open

HELLO = 0x4B10
READ = 0x4B02
BASIC = ("tests.providers_fixture.basic",)


def frame(cmd: int, seq: int, arg=None) -> bytes:
    body = msgpack.packb([cmd, seq, arg], use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def connect(path: str, timeout: float = 10.0) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    return s


# --- timeouts -------------------------------------------------------------------------


def test_idle_connection_is_told_etimedout_and_closed(tmp_path):
    with running_kstatd(tmp_path, args=["--idle-timeout", "0.3"]) as kd:
        s = connect(kd.socket)
        s.sendall(frame(HELLO, 1))
        assert read_reply(s)[:2] == [1, 0]
        t0 = time.monotonic()
        seq, code, result = read_reply(s)  # blocks until kstatd gives up on us
        assert (seq, code) == (0, errno.ETIMEDOUT) and "--idle-timeout" in result["error"]
        assert s.recv(1) == b""
        assert 0.25 <= time.monotonic() - t0 < 5
        limits = hello(kd.socket)["limits"]
        assert limits["idle_timeout_ms"] == 300 and limits["frame_timeout_ms"] == 10000


def test_one_byte_per_tick_half_frame_is_cut_at_the_frame_timeout(tmp_path):
    with running_kstatd(tmp_path, args=["--frame-timeout", "0.5", "--idle-timeout", "60"]) as kd:
        s = connect(kd.socket)
        data = struct.pack(">I", 1000) + b"\xc0" * 196  # a 1000-byte body that never completes
        t0 = time.monotonic()
        closed = False
        for byte in data:  # one byte every 50 ms
            try:
                s.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            if select.select([s], [], [], 0.05)[0]:
                closed = True
                break
        assert closed, "kstatd kept a trickling half frame"
        seq, code, result = read_reply(s)
        assert (seq, code) == (0, errno.ETIMEDOUT) and "--frame-timeout" in result["error"]
        assert time.monotonic() - t0 < 5
        assert hello(kd.socket)["protocol"] == 1


def test_a_client_that_does_not_read_its_replies_loses_its_slot(tmp_path):
    with running_kstatd(tmp_path, plugins=BASIC, args=["--frame-timeout", "0.5"]) as kd:
        s = connect(kd.socket)
        s.setblocking(False)
        sent = 0
        req = frame(READ, 1, {"kid": 0}) * 64
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # fill both socket buffers, never read
            try:
                sent += s.send(req)
            except BlockingIOError:
                if not select.select([], [s], [], 1.0)[1]:
                    break
            except OSError:
                break
        current = [None]

        def slot_freed():
            current[0] = next(v for n, _t, v in rpc(kd.socket, READ, {"kid": kid_of(kd.socket, "connections")})[2]
                              ["kstat"]["data"] if n == "current")  # fmt: skip
            return current[0] == 1  # only the reading connection itself

        poll(slot_freed, "the non-reading connection to be dropped")
        assert sent > 0


def kid_of(path: str, name: str) -> int:
    hdrs = rpc(path, READ, {"kid": 0})[2]["kstat"]["data"]
    return next(h["kid"] for h in hdrs if h["module"] == "kstatpy" and h["name"] == name)


def poll(pred, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)  # polling with a deadline


READ_MANY = 0x4B11


def _current_connections(path: str, kid: int) -> int:
    return next(v for n, _t, v in rpc(path, READ, {"kid": kid})[2]["kstat"]["data"] if n == "current")


def test_a_client_that_reads_a_byte_at_a_time_loses_its_slot_at_the_frame_timeout(tmp_path):
    # The rest of a reply that did not fit the socket buffer goes by one sendall bounded
    # by --frame-timeout in all (kstatpy.session.send_reply), not per byte read.
    with running_kstatd(tmp_path, plugins=BASIC, args=["--frame-timeout", "1"]) as kd:
        conns = kid_of(kd.socket, "connections")
        s = connect(kd.socket)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(frame(READ_MANY, 1, {"kids": [0] * 2000}))
        (length,) = struct.unpack(">I", recv_exact(s, 4))
        got, t0 = 0, time.monotonic()
        while _current_connections(kd.socket, conns) != 1:  # only the one asking
            assert time.monotonic() - t0 < 15, "kstatd kept a trickling reader past --frame-timeout"
            got += len(s.recv(1))
            select.select([], [], [], 0.05)  # the slow reader's pace
        while chunk := s.recv(1 << 20):
            got += len(chunk)
        assert got < length, "the reply was not cut off"
        assert hello(kd.socket)["protocol"] == 1


def test_after_a_reply_that_did_not_fit_the_idle_timeout_still_applies(tmp_path):
    # send_reply's timed fallback hands the socket back blocking, with SO_RCVTIMEO: the
    # connection is then told ETIMEDOUT at the idle timeout (a socket left with a Python
    # timeout would close without the frame; one left without SO_RCVTIMEO never would).
    with running_kstatd(tmp_path, plugins=BASIC, args=["--idle-timeout", "1", "--frame-timeout", "30"]) as kd:
        s = connect(kd.socket)
        s.sendall(frame(READ_MANY, 1, {"kids": [0] * 2000}))
        (length,) = struct.unpack(">I", recv_exact(s, 4))
        assert length > 1 << 20  # far more than a socket buffer: the timed sendall sends the rest
        assert msgpack.unpackb(recv_exact(s, length))[:2] == [1, 0]
        seq, code, result = read_reply(s)
        assert (seq, code) == (0, errno.ETIMEDOUT) and "--idle-timeout" in result["error"]
        assert s.recv(1) == b""


def test_the_client_reconnects_after_an_idle_close(tmp_path):
    with running_kstatd(tmp_path, plugins=BASIC, args=["--idle-timeout", "0.2"]) as kd:
        kc = kstat_open(kd.socket)
        before = kc.kc_chain_id
        sock = kc.kc_kd._sock
        assert select.select([sock], [], [], 10)[0]  # the goodbye frame has arrived
        assert kc.chain_update() in (0, before) and kc.kc_kd._sock is not sock
        ksp = kc.lookup(name="named")
        kc.read(ksp)
        kc.close()


def test_kstat_interval_longer_than_the_idle_timeout(tmp_path):
    with running_kstatd(tmp_path, plugins=BASIC, args=["--idle-timeout", "0.3"]) as kd:
        r = subprocess.run([sys.executable, "-m", "kstatpy.cli.kstat", "--socket", kd.socket, "-p",
                            "kstatpy:0:errors:ETIMEDOUT", "1", "3"], capture_output=True, timeout=60)  # fmt: skip
        assert r.returncode == 0, r.stderr
        values = [int(line.split(b"\t")[1]) for line in r.stdout.splitlines() if line]
        assert len(values) == 3 and values[-1] >= 2  # kstatd closed it twice; kstat carried on


def test_vmmctl_hold_survives_the_idle_timeout(tmp_path):
    vmm = ("kstatpy_providers.vmm.provider",)
    # 1 s, not less: hold's keepalive (a third of it) must get the CPU in time on a busy host.
    with running_kstatd(tmp_path, plugins=vmm, args=["--idle-timeout", "1"]) as kd:
        assert rpc(kd.socket, 0x564D01, {"name": "web"})[1] == 0
        hold = subprocess.Popen([sys.executable, "-m", "kstatpy_providers.vmm.vmmctl", "hold", "web",
                                 "--socket", kd.socket], stderr=subprocess.PIPE)  # fmt: skip
        try:
            assert b"holding VM" in within(30, "vmmctl hold's first line", hold.stderr.readline)  # after its last set-up request
            # Two idle periods pass (the behaviour under test): kstatd cuts a silent
            # connection, opened after that line, twice.
            for _ in range(2):
                idle = connect(kd.socket, timeout=60)
                idle.sendall(frame(HELLO, 1))
                assert read_reply(idle)[:2] == [1, 0]
                assert read_reply(idle)[:2] == [0, errno.ETIMEDOUT]  # blocks until kstatd gives up on it
                idle.close()
            assert hold.poll() is None
            vms = rpc(kd.socket, 0x564DF3)[2]["vms"]
            assert vms[0]["open"] == 1
        finally:
            hold.send_signal(signal.SIGINT)
            assert hold.wait(10) == 0


# --- quotas ---------------------------------------------------------------------------

HOLDER = """
import json, socket, struct, sys
import msgpack
path, n = sys.argv[1], int(sys.argv[2])
held, out = [], []
for i in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    body = msgpack.packb([0x4B10, 1, None])
    try:
        s.sendall(struct.pack(">I", len(body)) + body)
    except OSError:
        pass  # refused: the EBUSY reply waits to be read
    hdr = s.recv(4, socket.MSG_WAITALL)
    seq, code, res = msgpack.unpackb(s.recv(struct.unpack(">I", hdr)[0], socket.MSG_WAITALL))
    out.append([code, res.get("error", "")])
    held.append(s)
print(json.dumps(out), flush=True)
sys.stdin.read()
"""


class Holder:
    """A process (as nobody, or as root) holding ``n`` connections until closed."""

    def __init__(self, path: str, n: int, as_nobody: bool = True) -> None:
        argv = ["-c", HOLDER, path, str(n)]
        kw = dict(stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        if as_nobody:
            self.proc = popen_as_nobody(argv, **kw)
        else:
            self.proc = subprocess.Popen([sys.executable, *argv], cwd=str(REPO), **kw)
        line = within(60, "the holder's connections", self.proc.stdout.readline)
        assert line, "the holder died"
        self.results = json.loads(line)

    def codes(self) -> list[int]:
        return [c for c, _ in self.results]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)


def test_nobody_cannot_lock_root_out_with_idle_sockets():
    # The reproducer: 256 idle sockets by nobody against the default limits.
    with shared_dir() as d, running_kstatd(d, plugins=BASIC) as kd:
        h = Holder(kd.socket, 256)
        try:
            assert h.codes().count(0) == 64  # --max-per-uid: a quarter of --max-connections
            refused = [msg for code, msg in h.results if code]
            assert len(refused) == 192 and all(c == errno.EBUSY for c in h.codes() if c)
            assert "--max-per-uid 64" in refused[0]
            r = subprocess.run([sys.executable, "-m", "kstatpy.cli.kstat", "--socket", kd.socket, "-p",
                                "kstatpy:0:connections:current"], capture_output=True, timeout=60)  # fmt: skip
            assert r.returncode == 0, r.stderr
        finally:
            h.close()


def test_a_zone_socket_cannot_lock_out_the_global_zone(tmp_path):
    zsock = str(tmp_path / "z1.sock")
    with running_kstatd(tmp_path, zones=[("z1", zsock)], args=["--max-connections", "16"]) as kd:
        h = Holder(zsock, 16, as_nobody=False)  # root, but on a zone socket
        try:
            assert h.codes().count(0) == 4
            assert "zone z1 (kstatd --max-per-zone 4)" in h.results[-1][1]
            assert hello(kd.socket)["zone"] == "global"
        finally:
            h.close()


def test_root_keeps_its_reserve_when_other_users_fill_the_rest():
    with shared_dir() as d:
        args = ["--max-connections", "8", "--max-per-uid", "100", "--reserved-connections", "3"]
        with running_kstatd(d, args=args) as kd:
            h = Holder(kd.socket, 8)
            try:
                assert h.codes() == [0] * 5 + [errno.EBUSY] * 3
                assert "--reserved-connections" in h.results[-1][1]
                held = Holder(kd.socket, 4, as_nobody=False)
                assert held.codes() == [0, 0, 0, errno.EBUSY]  # the reserve, then the cap
                assert "--max-connections 8" in held.results[-1][1]
                held.close()
            finally:
                h.close()


def test_every_refusal_counts_in_errors_ebusy_and_connections_refused():
    # A per-uid refusal is an EBUSY reply like a --max-connections one: both counters see it.
    def counts(path: str) -> dict[str, int]:
        r = subprocess.run([sys.executable, "-m", "kstatpy.cli.kstat", "--socket", path, "-p",
                            "kstatpy:0:errors:EBUSY", "kstatpy:0:connections:refused"],
                           capture_output=True, timeout=60, check=True)  # fmt: skip
        return {line.split()[0].rsplit(":", 1)[1]: int(line.split()[1]) for line in r.stdout.decode().splitlines()}

    with shared_dir() as d, running_kstatd(d, args=["--max-per-uid", "2"]) as kd:
        assert counts(kd.socket) == {"EBUSY": 0, "refused": 0}
        h = Holder(kd.socket, 5)
        try:
            assert h.codes() == [0, 0] + [errno.EBUSY] * 3
            assert "--max-per-uid 2" in h.results[-1][1]
            assert counts(kd.socket) == {"EBUSY": 3, "refused": 3}
        finally:
            h.close()


# --- the file-descriptor limit ----------------------------------------------------------


def test_clients_beyond_the_fd_limit_are_told_ebusy_and_the_log_stays_quiet(tmp_path):
    def low_fd_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    path = str(tmp_path / "kstat.sock")
    cmd = [sys.executable, "-m", "kstatpy.cli.kstatd", "--socket", path, "--max-connections", "1000"]
    env = dict(os.environ, PYTHONPATH=str(REPO), KSTATPY_DISABLE_PLUGIN_AUTOLOAD="1")
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, preexec_fn=low_fd_limit)
    try:
        poll(lambda: os.path.exists(path) and _answers(path), "kstatd to start")
        h = Holder(path, 120, as_nobody=False)
        try:
            codes = h.codes()
            assert codes.count(0) >= 30 and codes.count(errno.EBUSY) >= 50, codes
            assert set(codes) == {0, errno.EBUSY}
            busy = [m for c, m in h.results if c]
            assert all("out of file descriptors" in m for m in busy)
        finally:
            h.close()
        poll(lambda: _answers(path), "kstatd to serve again")
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert err.decode().count("accept on") <= 2, err.decode()


def _answers(path: str) -> bool:
    try:
        return hello(path)["protocol"] == 1
    except (OSError, EOFError):
        return False


# --- SIGTERM while clients do not read ----------------------------------------------------


def test_sigterm_is_prompt_when_clients_do_not_read(tmp_path):
    with running_kstatd(tmp_path, plugins=BASIC, args=["--frame-timeout", "60"]) as kd:
        socks = []
        for _ in range(4):
            s = connect(kd.socket)
            s.setblocking(False)
            req = frame(READ, 1, {"kid": 0}) * 256
            try:
                while True:
                    s.send(req)
            except BlockingIOError:
                pass
            socks.append(s)
        t0 = time.monotonic()
        assert kd.stop() == 0, kd.stderr
        elapsed = time.monotonic() - t0
        for s in socks:
            s.close()
    assert elapsed < 3.0, f"SIGTERM took {elapsed:.1f} s"
