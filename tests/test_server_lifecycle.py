"""kstatd's life cycle: start over live/stale sockets, shutdown, connection cap, hangs, panics."""

from __future__ import annotations

import errno
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time

import msgpack
import pytest

from kstatpy.client import kstat_open
from kstatpy.errors import KstatError
from kstatpy.errors import ServerUnavailableError
from tests.kstatd_fixture import REPO
from tests.kstatd_fixture import hello
from tests.kstatd_fixture import kstatd_env
from tests.kstatd_fixture import read_reply
from tests.kstatd_fixture import rpc
from tests.kstatd_fixture import running_kstatd

READ, HELLO, CHAIN_ID = 0x4B02, 0x4B10, 0x4B01
ECHO, RELEASE, FREE = 0x7E5701, 0x7E5710, 0x7E5720
BASIC = "tests.providers_fixture.basic"


def poll(predicate, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def named(path, module, name):
    """{record: value} of module:0:name, read through a fresh client."""
    with kstat_open(path) as kc:
        ksp = kc.lookup(module, 0, name)
        kc.read(ksp)
        return {r.name: r.value for r in ksp.ks_data}


class InFlight:
    """Counts kstatd's READs (kstatpy:0:requests) to see when a pending read has arrived."""

    def __init__(self, path):
        self.path = path
        with kstat_open(path) as kc:
            self.kid = kc.lookup("kstatpy", 0, "requests").ks_kid
        self.base = self._reads()  # this read itself is counted

    def _reads(self):
        data = rpc(self.path, READ, {"kid": self.kid})[2]["kstat"]["data"]
        return next(v for n, _, v in data if n == "read")

    def wait(self, extra_reads=1):
        """Wait until ``extra_reads`` READs besides ours arrived since construction."""
        polls = [0]

        def arrived():
            polls[0] += 1
            return self._reads() >= self.base + polls[0] + extra_reads

        poll(arrived, "the read to reach kstatd")


def send(s, cmd, seq, arg=None):
    body = msgpack.packb([cmd, seq, arg], use_bin_type=True)
    s.sendall(struct.pack(">I", len(body)) + body)


def connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    return s


# --- start ------------------------------------------------------------------------------


def test_socket_dir_and_mode(tmp_path):
    path = tmp_path / "new" / "dir" / "kstat.sock"
    with running_kstatd(tmp_path, socket=str(path)) as kd:
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o755
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666
        assert os.stat(path.parent).st_uid == os.getuid()
        assert kd.stop() == 0


def test_unsafe_socket_dir_is_refused(tmp_path):
    unsafe = tmp_path / "open"
    unsafe.mkdir()
    os.chmod(unsafe, 0o777)  # anyone could replace the socket
    proc = subprocess.run(
        [sys.executable, "-m", "kstatpy.cli.kstatd", "--socket", str(unsafe / "kstat.sock")],
        cwd=REPO,
        env=kstatd_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 3 and str(unsafe) in proc.stderr and "writable by others" in proc.stderr
    assert list(unsafe.iterdir()) == []


def test_stale_socket_is_replaced(tmp_path):
    path = str(tmp_path / "kstat.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()  # the file stays, nobody listens
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    with running_kstatd(tmp_path, socket=path) as kd:
        assert hello(kd.socket)["protocol"] == 1


def test_live_socket_is_refused(tmp_path):
    with running_kstatd(tmp_path, plugins=[BASIC]) as first:
        second = subprocess.run(
            [sys.executable, "-m", "kstatpy.cli.kstatd", "--socket", first.socket, "--plugin", BASIC],
            cwd=REPO, env=kstatd_env(), capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert second.returncode == 3, second.stderr
        assert first.socket in second.stderr and "kstatd" in second.stderr
        assert hello(first.socket)["protocol"] == 1  # the first one is untouched
        assert rpc(first.socket, CHAIN_ID)[1] == 0


def test_non_socket_path_is_refused(tmp_path):
    path = tmp_path / "kstat.sock"
    path.write_text("precious")
    proc = subprocess.run(
        [sys.executable, "-m", "kstatpy.cli.kstatd", "--socket", str(path)],
        cwd=REPO, env=kstatd_env(), capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 3 and str(path) in proc.stderr and "not a socket" in proc.stderr
    assert path.read_text() == "precious"


def test_failing_provider_is_named_and_others_serve(tmp_path):
    plugins = ["tests.providers_fixture.broken", "tests.providers_fixture.no_such_module", BASIC]
    with running_kstatd(tmp_path, plugins=plugins, args=["--vmm-teardown", "pre-14281"]) as kd:
        res = rpc(kd.socket, ECHO)[2]
        assert res["vmm_teardown"] == "pre-14281"
        assert kd.stop() == 0
    assert "tests.providers_fixture.broken" in kd.stderr and "attach" in kd.stderr
    assert "tests.providers_fixture.no_such_module" in kd.stderr and "load" in kd.stderr


@pytest.mark.parametrize(
    "args, why",
    [
        (["--zone", "nopath"], "NAME=PATH"),
        (["--zone", "global=/tmp/x.sock"], "NAME=PATH"),
        (["--allow-write", "no-such-user-kstatpy"], "no such user"),
        (["--allow-write", "@no-such-group-kstatpy"], "no such group"),
        (["--on-panic", "explode"], "explode"),
    ],
)
def test_usage_errors_exit_2(tmp_path, args, why):
    from click.testing import CliRunner

    from kstatpy.cli.kstatd import main

    result = CliRunner().invoke(main, ["--socket", str(tmp_path / "k.sock"), *args])
    assert result.exit_code == 2, result.output
    assert why in result.output
    assert not (tmp_path / "k.sock").exists()


def test_same_path_twice_is_a_usage_error(tmp_path):
    from click.testing import CliRunner

    from kstatpy.cli.kstatd import main

    path = str(tmp_path / "k.sock")
    result = CliRunner().invoke(main, ["--socket", path, "--zone", f"z1={path}"])
    assert result.exit_code == 2 and "differ" in result.output


# --- shutdown ----------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_graceful_shutdown(tmp_path, sig):
    detach_file = tmp_path / "detached"
    with running_kstatd(tmp_path, plugins=[BASIC], env={"KSTATPY_TEST_DETACH_FILE": str(detach_file)}) as kd:
        idle = connect(kd.socket)  # an idle client must not keep the daemon up
        send(idle, HELLO, 1)
        assert read_reply(idle)[1] == 0
        assert kd.stop(sig) == 0, kd.stderr
        assert idle.recv(1) == b""  # closed by the daemon
        idle.close()
    assert not os.path.exists(kd.socket)
    assert not os.path.exists(kd.socket + ".lock")
    assert detach_file.read_text() == "detached\n"


def test_in_flight_read_is_answered_during_shutdown(tmp_path):
    plugins = ["tests.providers_fixture.hang", BASIC]
    with running_kstatd(tmp_path, plugins=plugins, args=["--read-timeout", "0.5"]) as kd:
        with kstat_open(kd.socket) as kc:
            hang_kid = kc.lookup("test", 0, "hang").ks_kid
        s = connect(kd.socket)
        in_flight = InFlight(kd.socket)
        send(s, READ, 9, {"kid": hang_kid})
        in_flight.wait()  # bounded: poll()'s deadline
        kd.proc.send_signal(signal.SIGTERM)
        seq, code, res = read_reply(s)
        assert (seq, code) == (9, errno.EAGAIN) and "read-timeout" in res["error"]
        assert kd.stop() == 0, kd.stderr
        s.close()


# --- connection cap ------------------------------------------------------------------------


def test_connection_cap(tmp_path):
    with running_kstatd(tmp_path, args=["--max-connections", "2"]) as kd:
        held = []

        def admit_one():  # the fixture's own HELLO connection frees its slot asynchronously
            s = connect(kd.socket)
            try:
                send(s, HELLO, 1)
                if read_reply(s)[1] == 0:
                    held.append(s)
                    return True
            except (OSError, EOFError):
                pass
            s.close()
            return False

        poll(admit_one, "a first connection")
        poll(admit_one, "a second connection")
        a, b = held
        c = connect(kd.socket)
        seq, code, res = read_reply(c)
        assert (seq, code) == (0, errno.EBUSY) and "max-connections" in res["error"]
        assert c.recv(1) == b""
        c.close()
        with pytest.raises(ServerUnavailableError) as ei:
            kstat_open(kd.socket)
        assert ei.value.errno == errno.EBUSY
        a.close()

        def admitted():
            try:
                return hello(kd.socket)["protocol"] == 1
            except (OSError, EOFError):
                return False

        poll(admitted, "a free connection slot")
        b.close()
        refused = []

        def stats_read():
            try:
                refused.append(named(kd.socket, "kstatpy", "connections")["refused"])
            except ServerUnavailableError:  # the slots free up asynchronously
                return False
            return True

        poll(stats_read, "a connection to read the statistics")
        assert refused[-1] >= 2


# --- a hung ks_update -----------------------------------------------------------------------


def test_hung_update_blocks_only_its_readers(tmp_path):
    plugins = ["tests.providers_fixture.hang"]
    with running_kstatd(tmp_path, plugins=plugins, args=["--read-timeout", "1.0"]) as kd:
        with kstat_open(kd.socket) as kc:
            hang_kid = kc.lookup("test", 0, "hang").ks_kid
            ok_kid = kc.lookup("test", 0, "ok").ks_kid
        s = connect(kd.socket)
        in_flight = InFlight(kd.socket)
        send(s, READ, 1, {"kid": hang_kid})
        send(s, READ, 2, {"kid": ok_kid})  # pipelined behind the hung read, on the same connection
        got = []
        reader = threading.Thread(target=lambda: got.extend([read_reply(s), read_reply(s)]))
        reader.start()
        in_flight.wait()  # bounded: poll()'s deadline
        # Other clients and kstats are served while the hung read is pending.
        for _ in range(20):
            _seq, code, res = rpc(kd.socket, READ, {"kid": ok_kid})
            assert code == 0 and res["kstat"]["data"] == [["value", 4, 42]]
        assert reader.is_alive()
        reader.join(10)
        assert [r[:2] for r in got] == [[1, errno.EAGAIN], [2, 0]]
        # The kstat is known stuck: a new reader is answered at once, and counted.
        _seq, code, res = rpc(kd.socket, READ, {"kid": hang_kid})
        assert code == errno.EAGAIN and "stuck" in res["error"]
        daemon = named(kd.socket, "kstatpy", "daemon")
        assert daemon["stuck_readers"] == 1 and daemon["stuck_readers_total"] == 1
        assert rpc(kd.socket, RELEASE)[1] == 0
        poll(lambda: named(kd.socket, "kstatpy", "daemon")["stuck_readers"] == 0, "the stuck reader to return")
        assert rpc(kd.socket, READ, {"kid": hang_kid})[1] == 0
        s.close()
        assert kd.stop() == 0, kd.stderr


def test_wedged_provider_costs_a_clean_exit_not_the_exit(tmp_path):
    """A ks_update that never returns: kstatd still serves, and still exits on SIGTERM."""
    args = ["--read-timeout", "0.3", "--detach-timeout", "0.5"]
    with running_kstatd(tmp_path, plugins=["tests.providers_fixture.wedged"], args=args) as kd:
        with kstat_open(kd.socket) as kc:
            wedged = kc.lookup("test", 0, "wedged")
            with pytest.raises(KstatError) as info:
                kc.read(wedged, timeout=0)
            assert info.value.errno == errno.EAGAIN
            assert kc.chain_update() == 0  # the daemon still answers
        started = time.monotonic()
        status = kd.stop(timeout=15)
        assert status == 75, kd.stderr
        assert time.monotonic() - started < 10
        assert "provider 'tests.providers_fixture.wedged' did not detach within 0.5 s" in kd.stderr
        assert not os.path.exists(kd.socket)


# --- panics -----------------------------------------------------------------------------------


def test_panic_halts_by_default(tmp_path):
    detach_file = tmp_path / "detached"
    plugins = ["tests.providers_fixture.uaf", BASIC]
    with running_kstatd(tmp_path, plugins=plugins, env={"KSTATPY_TEST_DETACH_FILE": str(detach_file)}) as kd:
        with kstat_open(kd.socket) as kc:
            uaf = kc.lookup("test", 0, "uaf")
            kc.read(uaf)
            assert uaf.data_lookup("count").value == 1
            kc.ioctl(FREE)
            with pytest.raises(ServerUnavailableError):
                kc.read(uaf)
        assert kd.wait(timeout=30) == 70, kd.stderr
    assert "BAD TRAP" in kd.stderr and "uaf_kstat_update" in kd.stderr
    crashes = list(tmp_path.glob(f"kstatd.crash.{kd.proc.pid}.*"))
    assert len(crashes) == 1 and "BAD TRAP" in crashes[0].read_text()
    assert "freed" in crashes[0].read_text()
    assert not os.path.exists(kd.socket)
    assert not detach_file.exists()  # a panicking kernel runs no teardown


def test_panic_continue_answers_efault(tmp_path):
    crash_dir = tmp_path / "crashes"
    crash_dir.mkdir()  # --crash-dir must exist (issue 13: never created silently)
    plugins = ["tests.providers_fixture.uaf", BASIC]
    with running_kstatd(tmp_path, plugins=plugins, args=["--on-panic=continue", "--crash-dir", str(crash_dir)]) as kd:
        with kstat_open(kd.socket) as kc:
            uaf = kc.lookup("test", 0, "uaf")
            kc.ioctl(FREE)
            for _ in range(2):
                _seq, code, res = rpc(kd.socket, READ, {"kid": uaf.ks_kid})
                assert code == errno.EFAULT and "BAD TRAP" in res["error"]
            raw = kc.lookup("test", 0, "raw")
            kc.read(raw)
            assert raw.ks_data == bytes(range(16))
        assert named(kd.socket, "kstatpy", "daemon")["panics"] == 2
        assert named(kd.socket, "kstatpy", "errors")["EFAULT"] == 2
        assert len(list(crash_dir.glob("kstatd.crash.*"))) == 2
        assert kd.stop() == 0, kd.stderr
    assert kd.stderr.count("BAD TRAP") >= 2
