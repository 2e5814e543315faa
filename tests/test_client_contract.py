"""Issue 21: the client connection contract (docs/PROTOCOL.md §9.7) against real servers.

Which socket (root's privileged default), the descriptor walk, SO_PEERCRED, the
whole-request timeout and "not a socket"; the attacker is ``nobody`` (setpriv), the
victim of the default-path race a second unprivileged uid (root's default is in /run,
which nobody cannot touch at all).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kstatd_fixture import REPO
from kstatd_fixture import hello
from kstatd_fixture import kstatd_env
from kstatd_fixture import running_kstatd
from nobody import AS_NOBODY
from nobody import NOBODY_UID
from nobody import as_victim
from nobody import nobody_skip
from nobody import popen_as_nobody
from nobody import run_as
from nobody import run_as_nobody
from nobody import shared_dir
from test_hostile_server import one_request_server

from kstatpy.client import kstat_open
from kstatpy.errors import KstatError
from kstatpy.errors import RequestTimeoutError
from kstatpy.errors import ServerUnavailableError
from kstatpy.protocol import pack_frame
from kstatpy.safepath import PRIV_SOCKET
from kstatpy.safepath import PUBLIC_SOCKET
from kstatpy.safepath import UnsafePathError
from kstatpy.safepath import open_socket_dir
from kstatpy.safepath import root_run_dir
from kstatpy.transport import DEFAULT_REQUEST_TIMEOUT
from kstatpy.transport import request_timeout

PY = sys.executable
KSTAT = [PY, "-m", "kstatpy.cli.kstat"]
KSTATD = [PY, "-m", "kstatpy.cli.kstatd"]
VMMCTL = [PY, "-m", "kstatpy_providers.vmm.vmmctl"]
BASIC = "tests.providers_fixture.basic"


def env_with(**kw: str | None) -> dict[str, str]:
    env = kstatd_env()
    env.pop("KSTAT_SOCKET", None)
    env.pop("KSTAT_TIMEOUT", None)
    env.pop("KSTAT_TRUST_UID", None)
    for k, v in kw.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def run(argv: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, cwd=str(REPO), env=env, capture_output=True, timeout=timeout)


def wait_for(path: str, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            hello(path)
            return
        except (OSError, EOFError):
            assert proc.poll() is None, f"{what} exited: {proc.stderr.read() if proc.stderr else ''}"  # bounded: it exited
            assert time.monotonic() < deadline, f"{what} did not start"
            time.sleep(0.02)  # polling for readiness with a deadline


# --- 1. which socket: root's privileged default ------------------------------------------


RUN = root_run_dir()  # /run/kstatpy, or the suite's own $KSTATPY_RUNDIR (tests/conftest.py)
PUBLIC = os.path.join(RUN, "kstat.sock")
PRIV = os.path.join(RUN, "priv", "kstat.sock")


def test_root_run_dir_is_run_kstatpy_unless_named():
    assert (PUBLIC_SOCKET, PRIV_SOCKET) == ("/run/kstatpy/kstat.sock", "/run/kstatpy/priv/kstat.sock")
    assert root_run_dir({}) == "/run/kstatpy"
    assert root_run_dir({"KSTATPY_RUNDIR": "relative/dir"}) == "/run/kstatpy"  # only an absolute path
    assert root_run_dir({"KSTATPY_RUNDIR": "/srv/k"}) == "/srv/k"


def test_a_run_dir_another_user_owns_is_refused():
    # $KSTATPY_RUNDIR (kept by "sudo -E") naming nobody's directory: the walk refuses it.
    nobody_skip()
    with shared_dir(0o755) as d:
        os.chown(d, NOBODY_UID, -1)
        code = "from kstatpy.client import kstat_open\nkstat_open()\n"
        r = run([PY, "-c", code], env_with(KSTATPY_RUNDIR=d))
        assert b"UnsafePathError" in r.stderr and f"owned by uid {NOBODY_UID}".encode() in r.stderr


@contextlib.contextmanager
def root_kstatd_at_the_default() -> Iterator[subprocess.Popen[bytes]]:
    """kstatd as root with no --socket: RUN/kstat.sock and RUN/priv/kstat.sock."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    lock = PUBLIC + ".lock"
    if os.path.exists(lock):
        with open(lock) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(f, fcntl.LOCK_UN)
            except BlockingIOError:
                pytest.skip("another kstatd serves /run/kstatpy on this machine")
    created = not os.path.exists(RUN)
    proc = subprocess.Popen([*KSTATD, "--plugin", BASIC], cwd=str(REPO), env=env_with(), stderr=subprocess.PIPE)
    try:
        wait_for(PRIV, proc, "root's kstatd")
        yield proc
    finally:
        proc.terminate()
        proc.wait(20)
        if created:
            shutil.rmtree(RUN, ignore_errors=True)


def test_root_clients_find_roots_privileged_listener_with_no_option():
    with root_kstatd_at_the_default():
        for d, mode in ((RUN, 0o755), (os.path.dirname(PRIV), 0o700)):
            st = os.lstat(d)
            assert (st.st_uid, st.st_mode & 0o7777) == (0, mode), d
        # kstat, vmmctl and kstat_open, no --socket and no $KSTAT_SOCKET: root's kstatd
        # (the embedded default would have no "test" module: autoload is off).
        r = run([*KSTAT, "-l", "test:0:strings"], env_with(XDG_RUNTIME_DIR="/nonexistent"))
        assert (r.returncode, r.stderr) == (0, b"") and r.stdout.startswith(b"test:0:strings:"), r
        r = run([*VMMCTL, "list"], env_with())
        assert b"cannot connect" not in r.stderr, r.stderr
        kc = kstat_open()
        try:
            assert kc.kc_kd.path == PRIV
        finally:
            kc.close()
        # Everyone else gets the public socket; the privileged one is root's alone.
        nobody_skip()
        code = (
            "import socket, sys\n"
            "for p in sys.argv[1:]:\n"
            "    s = socket.socket(socket.AF_UNIX)\n"
            "    try:\n        s.connect(p); print('ok')\n"
            "    except OSError as e:\n        print(e.errno)\n"
        )
        r = run_as_nobody(["-c", code, PUBLIC, PRIV], capture_output=True, timeout=60)
        assert r.stdout.decode().split() == ["ok", str(errno.EACCES)], r.stderr
        # The squats of issue 21 need a directory nobody may write: /run is root's.
        r = run_as_nobody(["-c", "import os; os.mkdir('/run/kstatpy-squat')"], capture_output=True, timeout=60)
        assert r.returncode == 1 and b"Permission denied" in r.stderr
    assert not os.path.exists(PRIV)


def test_each_zone_gets_an_admin_socket_in_a_0700_directory(tmp_path):
    zsock = str(tmp_path / "z1" / "kstat.sock")
    with running_kstatd(tmp_path, plugins=[BASIC], zones=[("z1", zsock)]) as kd:
        zpriv = str(tmp_path / "z1" / "priv" / "kstat.sock")
        gpriv = str(tmp_path / "priv" / "kstat.sock")
        for p in (zpriv, gpriv):
            st = os.stat(os.path.dirname(p))
            assert (st.st_uid, st.st_mode & 0o777) == (0, 0o700)
        assert hello(zpriv)["zone"] == "z1" and hello(zsock)["zone"] == "z1"
        assert hello(gpriv)["zone"] == "global" and hello(kd.socket)["zone"] == "global"
        r = run([*KSTAT, "--socket", zpriv, "-l", "test:0:strings"], env_with())
        assert r.returncode in (0, 1) and r.stderr == b"", r.stderr  # what zone z1 sees
        assert kd.stop() == 0
    assert not os.path.exists(tmp_path / "z1" / "priv") and not os.path.exists(tmp_path / "priv")


# --- 2. the descriptor walk -------------------------------------------------------------


def test_the_walk_checks_every_ancestor():
    nobody_skip()
    with shared_dir(0o755) as base:
        os.chown(base, NOBODY_UID, -1)  # an ancestor another user owns (and may rename under us)
        os.makedirs(os.path.join(base, "a", "kstatpy"))
        with pytest.raises(UnsafePathError, match=f"owned by uid {NOBODY_UID}") as info:
            open_socket_dir(os.path.join(base, "a", "kstatpy", "kstat.sock"), frozenset({0}))
        assert info.value.errno == errno.EACCES and info.value.path == base
    with shared_dir(0o755) as base:
        os.makedirs(os.path.join(base, "real", "kstatpy"))
        os.symlink(os.path.join(base, "real"), os.path.join(base, "link"))
        with pytest.raises(UnsafePathError, match="symbolic link"):
            open_socket_dir(os.path.join(base, "link", "kstatpy", "kstat.sock"), frozenset({0}))
        os.chmod(os.path.join(base, "real"), 0o777)
        with pytest.raises(UnsafePathError, match=r"writable by others \(mode 0777\)"):
            open_socket_dir(os.path.join(base, "real", "kstatpy", "kstat.sock"), frozenset({0}))
        os.chmod(os.path.join(base, "real"), 0o1777)  # sticky: fine as an ancestor
        os.close(open_socket_dir(os.path.join(base, "real", "kstatpy", "kstat.sock"), frozenset({0})))
        # Under a sticky LAST directory, the socket itself must be a socket of ours.
        planted = os.path.join(base, "real", "kstat.sock")
        s = socket.socket(socket.AF_UNIX)
        s.bind(planted)
        os.chown(planted, NOBODY_UID, -1, follow_symlinks=False)
        with pytest.raises(UnsafePathError, match=f"the socket is owned by uid {NOBODY_UID}"):
            open_socket_dir(planted, frozenset({0}))
        s.close()
        with pytest.raises(FileNotFoundError):
            open_socket_dir(os.path.join(base, "missing", "kstat.sock"), frozenset({0}))


RACE_VICTIM = r"""
import collections, json, os, sys
from kstatpy.client import kstat_open
seen = collections.Counter()
for _ in range(int(sys.argv[1])):
    try:
        kc = kstat_open(read_chain=False)
    except Exception as exc:
        seen[type(exc).__name__] += 1
    else:
        seen["spoofed"] += 1
        kc.close()
print(json.dumps(seen))
"""

RACE_RENAMER = r"""
import os, sys, time
a, b, stop = sys.argv[1], sys.argv[2], time.monotonic() + float(sys.argv[3])
while time.monotonic() < stop:
    try:
        os.rename(a, b)
        os.rename(b, a)
    except OSError:
        pass
"""


def test_raced_spoof_of_the_default_path_never_reaches_the_victim():
    # Issue 21: nobody renames its own directory, a kstatd of its own inside, in and out
    # of the victim's default path (/tmp/kstatpy-UID); the victim opens it 1,000 times.
    # Before: the directory was checked by path, then connected by path, and nobody
    # answered some of them. Now: walked by descriptor, connected through it, and the
    # server's uid checked: never nobody's.
    nobody_skip()
    uid = 40000 + os.getpid() % 20000
    default_dir = f"/tmp/kstatpy-{uid}"
    lair = f"/tmp/kstatpy-lair-{uid}"
    for d in (default_dir, lair):
        shutil.rmtree(d, ignore_errors=True)
    fake = popen_as_nobody(["-m", "kstatpy.cli.kstatd", "--socket", f"{lair}/kstat.sock"], stderr=subprocess.PIPE)
    renamer = None
    try:
        wait_for(f"{lair}/kstat.sock", fake, "nobody's kstatd")
        renamer = popen_as_nobody(["-c", RACE_RENAMER, lair, default_dir, "120"])
        env = env_with(XDG_RUNTIME_DIR=None, KSTAT_TIMEOUT="5")
        r = run_as(as_victim(uid), ["-c", RACE_VICTIM, "1000"], env, timeout=300)
        assert r.returncode == 0, r.stderr
        seen = json.loads(r.stdout)
        assert sum(seen.values()) == 1000
        assert "spoofed" not in seen, seen
        assert set(seen) <= {"UnsafePathError", "ServerUnavailableError", "UntrustedServerError"}, seen
    finally:
        if renamer is not None:
            renamer.kill()
            renamer.wait(10)
        fake.terminate()
        fake.wait(20)
        for d in (default_dir, lair):
            shutil.rmtree(d, ignore_errors=True)


# --- 3. SO_PEERCRED: covered with the opt-in in tests/test_safe_paths.py ----------------


# --- 4. timeouts --------------------------------------------------------------------------


def test_default_timeout_and_its_validation(monkeypatch):
    monkeypatch.delenv("KSTAT_TIMEOUT", raising=False)
    assert request_timeout() == DEFAULT_REQUEST_TIMEOUT == 10.0
    monkeypatch.setenv("KSTAT_TIMEOUT", "")
    assert request_timeout() == 10.0  # empty = unset
    monkeypatch.setenv("KSTAT_TIMEOUT", "2.5")
    assert request_timeout() == 2.5
    assert request_timeout(7) == 7.0
    for bad in ("nan", "inf", "-inf", "0", "-1", "86401", "1e400", "abc", " "):
        monkeypatch.setenv("KSTAT_TIMEOUT", bad)
        with pytest.raises(KstatError, match="KSTAT_TIMEOUT") as info:
            request_timeout()
        assert info.value.errno == errno.EINVAL
    for bad_arg in (float("nan"), float("inf"), 0, -3):
        with pytest.raises(KstatError) as info:
            request_timeout(bad_arg)
        assert info.value.errno == errno.EINVAL



def test_kstat_timeout_takes_what_libkstat_takes(monkeypatch):
    # float() alone accepts these; libkstat's strtod refuses them (EINVAL): one contract.
    for bad in ("1_0", "\uff15", "\u0665"):
        monkeypatch.setenv("KSTAT_TIMEOUT", bad)
        with pytest.raises(KstatError, match="KSTAT_TIMEOUT") as info:
            request_timeout()
        assert info.value.errno == errno.EINVAL
    monkeypatch.setenv("KSTAT_TIMEOUT", " 5 ")
    assert request_timeout() == 5.0

# "1_0" and non-ASCII digits: float() takes them, KSTAT_TIMEOUT (and libkstat) do not.
@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1", "86401", "x", "1_0", "\uff15", "\u0665"])
def test_timeout_options_are_finite_and_bounded(tmp_path, value):
    sock = str(tmp_path / "none.sock")
    r = run([*KSTAT, "--socket", sock, "--timeout", value, "-p"], env_with())
    assert r.returncode == 2 and b"--timeout" in r.stderr and b"Traceback" not in r.stderr
    r = run([*VMMCTL, "--timeout", value, "list", "--socket", sock], env_with())
    assert r.returncode == 2 and b"--timeout" in r.stderr and b"Traceback" not in r.stderr
    r = run([*KSTAT, "--socket", sock, "-p"], env_with(KSTAT_TIMEOUT=value))
    assert r.returncode == 3 and r.stderr.count(b"\n") == 1 and b"KSTAT_TIMEOUT" in r.stderr


def test_a_stopped_kstatd_is_a_timeout_not_a_hang(tmp_path):
    with running_kstatd(tmp_path, plugins=[BASIC]) as kd:
        os.kill(kd.proc.pid, signal.SIGSTOP)
        try:
            line = f"{kd.socket}: no reply from kstatd within 1 s (KSTAT_TIMEOUT)"
            for argv, env in (
                ([*KSTAT, "--socket", kd.socket, "--timeout", "1", "-p", "strs:::"], env_with()),
                ([*KSTAT, "--socket", kd.socket, "-p", "strs:::", "1", "3"], env_with(KSTAT_TIMEOUT="1")),
                ([*VMMCTL, "--timeout", "1", "list", "--socket", kd.socket], env_with()),
                ([*VMMCTL, "create", "x", "--socket", kd.socket], env_with(KSTAT_TIMEOUT="1")),
            ):
                t0 = time.monotonic()
                r = run(argv, env, timeout=30)
                err = r.stderr.decode()
                assert r.returncode == 3, (argv, err)
                assert err.count("\n") == 1 and line in err, err
                assert time.monotonic() - t0 < 15
            t0 = time.monotonic()
            with pytest.raises(RequestTimeoutError) as info:
                kstat_open(kd.socket, timeout=1)
            assert info.value.errno == errno.ETIMEDOUT and info.value.message == line
            assert time.monotonic() - t0 < 10
        finally:
            os.kill(kd.proc.pid, signal.SIGCONT)


def test_a_full_backlog_is_waited_for_until_the_deadline(tmp_path):
    # A server that never accepts: the connect waits (it is not failed at once with
    # EAGAIN, which made every library client with a timeout fail under churn).
    path = str(tmp_path / "full.sock")
    lsock = socket.socket(socket.AF_UNIX)
    lsock.bind(path)
    lsock.listen(0)
    fillers = []
    try:
        while True:
            s = socket.socket(socket.AF_UNIX)
            s.setblocking(False)
            try:
                s.connect(path)
            except BlockingIOError:
                s.close()
                break
            fillers.append(s)
        t0 = time.monotonic()
        with pytest.raises(RequestTimeoutError) as info:
            kstat_open(path, timeout=1)
        assert 0.8 <= time.monotonic() - t0 < 8
        assert info.value.errno == errno.ETIMEDOUT
        # Room in the backlog is taken as soon as it frees, within the same deadline.
        def drain() -> None:  # accept and close whatever comes, for 3 s
            lsock.settimeout(0.05)
            stop = time.monotonic() + 3
            while time.monotonic() < stop:
                try:
                    lsock.accept()[0].close()
                except (TimeoutError, BlockingIOError):
                    continue
                except OSError:  # closed by the test: done
                    return

        threading.Timer(0.3, drain).start()
        t0 = time.monotonic()
        with pytest.raises(ServerUnavailableError) as unavailable:  # connected, then closed by us
            kstat_open(path, timeout=5)
        assert unavailable.value.errno != errno.ETIMEDOUT and time.monotonic() - t0 < 4.5
    finally:
        for s in fillers:
            s.close()
        lsock.close()


def test_the_deadline_covers_the_whole_reply_not_each_recv(tmp_path):
    # A server that trickles its reply one byte every 0.2 s: a per-recv timeout never fires.
    def send(conn: socket.socket, seq: int, done: threading.Event) -> None:
        for b in pack_frame([seq, 0, {"kcid": 1, "pad": "x" * 64}]):
            if done.wait(0.2):
                return
            conn.sendall(bytes([b]))

    with one_request_server(tmp_path, send) as path:
        t0 = time.monotonic()
        with pytest.raises(RequestTimeoutError):
            kstat_open(path, timeout=1, read_chain=False)
        assert time.monotonic() - t0 < 5


# --- 5. messages -------------------------------------------------------------------------


def test_a_regular_file_as_socket_says_not_a_socket(tmp_path):
    f = tmp_path / "file"
    f.write_text("not a socket")
    r = run([*KSTAT, "--socket", str(f), "-p"], env_with())
    assert (r.returncode, r.stderr) == (3, f"kstat_open: {f}: not a socket\n".encode())
    r = run([*VMMCTL, "list", "--socket", str(f)], env_with())
    assert r.returncode == 3 and r.stderr.decode() == f"vmmctl: list: cannot connect to kstatd at {f}: not a socket\n"


def test_the_trust_uid_options_are_validated(tmp_path):
    sock = str(tmp_path / "none.sock")
    r = run([*KSTAT, "--socket", sock, "--trust-uid", "x", "-p"], env_with())
    assert r.returncode == 2 and b"--trust-uid" in r.stderr
    r = run([*KSTAT, "--socket", sock, "-p"], env_with(KSTAT_TRUST_UID="1,zz"))
    assert r.returncode == 3 and b"KSTAT_TRUST_UID" in r.stderr and r.stderr.count(b"\n") == 1


def test_nobody_cannot_reach_the_privileged_socket_of_a_named_kstatd():
    nobody_skip()
    with shared_dir(0o755) as d, running_kstatd(d, plugins=[BASIC]) as kd:
        priv = os.path.join(d, "priv", "kstat.sock")
        r = run_as(AS_NOBODY, ["-m", "kstatpy.cli.kstat", "--socket", priv, "-p"], env_with())
        assert r.returncode == 3 and b"Permission denied" in r.stderr, r.stderr
        r = run_as(AS_NOBODY, ["-m", "kstatpy.cli.kstat", "--socket", kd.socket, "-l", "test:0:strings"], env_with())
        assert r.returncode == 0 and r.stdout.startswith(b"test:0:strings:"), r.stderr
    assert Path(d).exists() is False or not os.path.exists(priv)


def test_a_squatted_priv_directory_does_not_stop_roots_kstatd():
    # Beside a --socket in a shared sticky directory, nobody may create priv/ first: root's
    # kstatd then serves the public socket without the privileged one, and says so once.
    nobody_skip()
    with shared_dir(0o1777) as d:
        assert run_as_nobody(["-c", f"import os; os.mkdir({os.path.join(d, 'priv')!r})"]).returncode == 0
        with running_kstatd(d, plugins=[BASIC]) as kd:
            r = run([*KSTAT, "--socket", kd.socket, "-l", "test:0:strings"], env_with())
            assert r.returncode == 0, r.stderr
            assert kd.stop() == 0
        assert kd.stderr.count("privileged socket not served") == 1, kd.stderr
        assert f"owned by uid {NOBODY_UID}" in kd.stderr
