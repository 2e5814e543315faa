"""libkstat finds and trusts kstatd as the client contract says (docs/PROTOCOL.md §9.7):
the server's peer credentials, KSTAT_TRUST_UID for a named socket, the default path
walked by descriptor, KSTAT_TIMEOUT's values. Each refusal is compared with what the
Python client (kstatpy.transport) says in the same situation: the two implement one
contract. The second and third users come from setpriv (tests/nobody.py)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.bounded import within
from tests.kstatd_fixture import hello
from tests.libkstat_helpers import Driver
from tests.libkstat_helpers import run_env
from tests.nobody import AS_NOBODY
from tests.nobody import NOBODY_UID
from tests.nobody import nobody_skip
from tests.nobody import popen_as_nobody
from tests.nobody import run_as
from tests.nobody import shared_dir

OTHER_UID = 12345  # a uid that is neither root nor nobody
OPENS = 1000  # the raced test's kstat_open calls


@contextlib.contextmanager
def kstatd_as_nobody(sock: str) -> Iterator[subprocess.Popen[bytes]]:
    """kstatd run by nobody, serving ``sock`` (its directory must be nobody's)."""
    proc = popen_as_nobody(
        ["-m", "kstatpy.cli.kstatd", "--socket", sock, "--plugin", "tests.providers_fixture.basic"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                hello(sock)
                break
            except (OSError, EOFError):
                assert proc.poll() is None, proc.communicate(timeout=30)[1]
                assert time.monotonic() < deadline, "kstatd (nobody) did not start"
                time.sleep(0.05)  # readiness poll with a deadline
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


@pytest.fixture
def nobody_dir() -> Iterator[str]:
    """A directory owned by nobody (mode 0755) under /tmp."""
    nobody_skip()
    with shared_dir() as d:
        os.chown(d, NOBODY_UID, NOBODY_UID)
        yield d


def python_says(env: dict[str, str], as_nobody: bool = False) -> tuple[int, str]:
    """(errno, message) of the Python client's kstat_open() in ``env``."""
    code = (
        "from kstatpy.client import kstat_open\n"
        "from kstatpy.errors import KstatError\n"
        "try:\n    kstat_open().close(); print(0); print('')\n"
        "except KstatError as e:\n    print(e.errno); print(e.message)\n"
    )
    if as_nobody:  # from the world-readable copy: nobody may not read the checkout
        out = run_as(AS_NOBODY, ["-c", code], env, timeout=120, text=True)
    else:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    errno_, message = out.stdout.split("\n", 1)
    return int(errno_), message.rstrip("\n")


def answer(env: dict[str, str], line: str, as_nobody: bool = False) -> tuple[str, str]:
    """One command in a fresh lkt: (its answer, lkt's stderr)."""
    with Driver(env, argv_prefix=tuple(AS_NOBODY) if as_nobody else ()) as d:
        got = d.one(line)
        code, err = d.close()
    assert code == 0, err
    return got, err


def test_a_server_of_another_uid_is_refused_unless_trusted(nobody_dir: str) -> None:
    sock = f"{nobody_dir}/kstat.sock"
    with kstatd_as_nobody(sock):
        got, err = answer(run_env(sock), "open 0")
        assert got == "err EACCES"
        assert err == (
            f"{sock}: the server runs as uid {NOBODY_UID}, not root or uid 0; "
            f"refusing it (KSTAT_TRUST_UID={NOBODY_UID} to trust it)\n"
        )
        assert python_says(run_env(sock)) == (13, err.rstrip("\n"))
        assert answer(run_env(sock, KSTAT_TRUST_UID=str(NOBODY_UID)), "open 0")[0].startswith("ok kcid ")
        assert answer(run_env(sock, KSTAT_TRUST_UID=f"7,{NOBODY_UID}"), "open 0")[0].startswith("ok kcid ")
        assert answer(run_env(sock, KSTAT_TRUST_UID="7"), "open 0")[0] == "err EACCES"
        got, err = answer(run_env(sock, KSTAT_TRUST_UID="nobody"), "open 0")
        assert (got, err) == ("err EINVAL", "KSTAT_TRUST_UID: 'nobody' is not a uid\n")
        assert python_says(run_env(sock, KSTAT_TRUST_UID="nobody"))[0] == 22
        assert answer(run_env(sock, KSTAT_TRUST_UID=f" ,{NOBODY_UID}, "), "open 0")[0].startswith("ok kcid ")
        # the caller's own server is trusted without asking
        assert answer(run_env(sock), "open 0", as_nobody=True)[0].startswith("ok kcid ")


def test_a_long_kstat_trust_uid_is_read_whole_not_cut(nobody_dir: str) -> None:
    # 1018 commas then 655340 (1024 bytes): a 1024-byte buffer kept "...,65534" and
    # trusted nobody, a uid the user never named; the Python client reads it whole.
    sock = f"{nobody_dir}/kstat.sock"
    trust = "," * 1018 + f"{NOBODY_UID}0"
    with kstatd_as_nobody(sock):
        got, err = answer(run_env(sock, KSTAT_TRUST_UID=trust), "open 0")
        assert got == "err EACCES", err
        assert python_says(run_env(sock, KSTAT_TRUST_UID=trust)) == (13, err.rstrip("\n"))
        assert answer(run_env(sock, KSTAT_TRUST_UID=trust + f",{NOBODY_UID}"), "open 0")[0].startswith("ok kcid ")

def test_default_path_is_walked_and_checked(nobody_dir: str) -> None:
    # nobody's default socket: $XDG_RUNTIME_DIR/kstatpy/kstat.sock
    runtime = f"{nobody_dir}/run"
    os.mkdir(runtime, 0o755)
    os.mkdir(f"{runtime}/kstatpy", 0o755)
    for d in (runtime, f"{runtime}/kstatpy"):
        os.chown(d, NOBODY_UID, NOBODY_UID)
    sock = f"{runtime}/kstatpy/kstat.sock"
    env = run_env(None, XDG_RUNTIME_DIR=runtime)
    env.pop("KSTAT_SOCKET", None)
    with kstatd_as_nobody(sock):
        assert answer(env, "open 0", as_nobody=True)[0].startswith("ok kcid ")
        # a directory of a third user on the way: refused before connecting
        os.chown(f"{runtime}/kstatpy", OTHER_UID, OTHER_UID)
        got, err = answer(env, "open 0", as_nobody=True)
        assert got == "err EACCES"
        assert err == (
            f"{runtime}/kstatpy: a directory on the socket's path is owned by uid {OTHER_UID}, "
            f"not uid 0 or uid {NOBODY_UID}; refusing to use it\n"
        )
        assert python_says(env, as_nobody=True) == (13, err.rstrip("\n"))
        os.chown(f"{runtime}/kstatpy", NOBODY_UID, NOBODY_UID)
        # writable by the group: someone else could replace the socket
        os.chmod(f"{runtime}/kstatpy", 0o775)
        got, err = answer(env, "open 0", as_nobody=True)
        assert got == "err EACCES" and "writable by others (mode 0775)" in err, err
        assert python_says(env, as_nobody=True) == (13, err.rstrip("\n"))
        os.chmod(f"{runtime}/kstatpy", 0o755)
        # a symbolic link anywhere on the way
        os.symlink(runtime, f"{nobody_dir}/link")
        linked = dict(env, XDG_RUNTIME_DIR=f"{nobody_dir}/link")
        got, err = answer(linked, "open 0", as_nobody=True)
        assert (got, err) == (
            "err EACCES",
            f"{nobody_dir}/link: a directory on the socket's path is a symbolic link; refusing to use it\n",
        )
        assert python_says(linked, as_nobody=True) == (13, err.rstrip("\n"))
    # nothing listening at the default path: ECONNREFUSED (a stale socket file) or ENOENT
    assert answer(env, "open 0", as_nobody=True)[0] in ("err ECONNREFUSED", "err ENOENT")


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "86401", "abc", "1s", "0x10"])
def test_bad_kstat_timeout_is_einval(tmp_path, value: str) -> None:
    env = run_env(str(tmp_path / "kstat.sock"), KSTAT_TIMEOUT=value)
    got, err = answer(env, "open 0")
    assert (got, err) == ("err EINVAL", f"KSTAT_TIMEOUT: '{value}' is not a number of seconds > 0 and <= 86400\n")
    assert python_says(env) == (22, err.rstrip("\n"))


def test_a_named_path_that_is_not_a_socket(tmp_path) -> None:
    (tmp_path / "file").write_text("")
    env = run_env(str(tmp_path / "file"))
    assert answer(env, "open 0") == ("err ENOTSOCK", "")
    assert python_says(env)[0] == 88  # ENOTSOCK


def test_default_timeout_agrees_with_the_python_client() -> None:
    # The contract's 10 s, in C (impl.h) and in kstatpy.transport.
    from tests.libkstat_helpers import installed

    installed()
    impl = (sys.modules["kstatpy"].__path__[0]) + "/libkstat/impl.h"
    with open(impl) as f:
        c_default = next(float(line.split()[2]) for line in f if line.startswith("#define LK_DEFAULT_TIMEOUT"))
    import kstatpy.transport as transport

    assert c_default == transport.DEFAULT_REQUEST_TIMEOUT == 10.0


def test_kstat_trust_uid_is_ignored_for_the_default_path(nobody_dir: str, tmp_path) -> None:
    # A server run by a third user whose socket sits in nobody's own default directory
    # (bound elsewhere, then moved there and handed to nobody by root): the walk passes,
    # SO_PEERCRED shows uid 12345, and KSTAT_TRUST_UID=12345 does not help, because the
    # user did not name this socket (docs/PROTOCOL.md §9.7 step 3).
    runtime = f"{nobody_dir}/run"
    os.makedirs(f"{runtime}/kstatpy", 0o755)
    for d in (runtime, f"{runtime}/kstatpy"):
        os.chown(d, NOBODY_UID, NOBODY_UID)
    other = f"{nobody_dir}/other"
    os.mkdir(other, 0o755)
    os.chown(other, OTHER_UID, OTHER_UID)
    server = (
        "import socket, sys, time\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        f"s.bind({other + '/kstat.sock'!r}); s.listen(8); print('ready', flush=True)\n"
        "while True:\n    c, _ = s.accept(); time.sleep(30)\n"
    )
    as_other = ["setpriv", "--reuid", str(OTHER_UID), "--regid", str(OTHER_UID), "--clear-groups"]
    proc = subprocess.Popen([*as_other, sys.executable, "-c", server], stdout=subprocess.PIPE, text=True)
    try:
        assert within(60, "the third user's server", proc.stdout.readline).strip() == "ready"  # type: ignore[union-attr]
        sock = f"{runtime}/kstatpy/kstat.sock"
        os.rename(f"{other}/kstat.sock", sock)
        os.chown(sock, NOBODY_UID, NOBODY_UID, follow_symlinks=False)
        env = run_env(None, XDG_RUNTIME_DIR=runtime, KSTAT_TRUST_UID=str(OTHER_UID))
        env.pop("KSTAT_SOCKET", None)
        got, err = answer(env, "open 0", as_nobody=True)
        assert got == "err EACCES"
        assert err == (
            f"{sock}: the server runs as uid {OTHER_UID}, not root or uid {NOBODY_UID}; "
            f"refusing it (KSTAT_TRUST_UID={OTHER_UID} to trust it)\n"
        )
        assert python_says(env, as_nobody=True) == (13, err.rstrip("\n"))
        # the same socket named: the opt-in applies, and the silent server times out
        named = dict(env, KSTAT_SOCKET=sock, KSTAT_TIMEOUT="0.5")
        assert answer(named, "open 0", as_nobody=True) == (
            "err ETIMEDOUT",
            f"{sock}: no reply from kstatd within 0.5 s (KSTAT_TIMEOUT)\n",
        )
    finally:
        proc.kill()
        proc.wait(30)


def test_a_sticky_shared_last_directory_checks_the_socket(nobody_dir: str) -> None:
    # The last directory writable by others but sticky (as /tmp): only the socket's
    # owner may replace it, so the socket itself must be root's or the caller's.
    runtime = f"{nobody_dir}/run"
    os.makedirs(f"{runtime}/kstatpy")
    os.chown(runtime, NOBODY_UID, NOBODY_UID)
    os.chown(f"{runtime}/kstatpy", NOBODY_UID, NOBODY_UID)
    os.chmod(f"{runtime}/kstatpy", 0o1777)
    sock = f"{runtime}/kstatpy/kstat.sock"
    env = run_env(None, XDG_RUNTIME_DIR=runtime)
    env.pop("KSTAT_SOCKET", None)
    with kstatd_as_nobody(sock):
        assert answer(env, "open 0", as_nobody=True)[0].startswith("ok kcid ")
        os.chown(sock, OTHER_UID, OTHER_UID, follow_symlinks=False)
        got, err = answer(env, "open 0", as_nobody=True)
        assert (got, err) == (
            "err EACCES",
            f"{sock}: the socket is owned by uid {OTHER_UID}, not uid 0 or uid {NOBODY_UID}; refusing to use it\n",
        )
        assert python_says(env, as_nobody=True) == (13, err.rstrip("\n"))
        os.rename(sock, f"{sock}.real")
        os.symlink(f"{sock}.real", sock)
        got, err = answer(env, "open 0", as_nobody=True)
        assert (got, err) == ("err EACCES", f"{sock}: not a socket in a shared directory; refusing to use it\n")
        assert python_says(env, as_nobody=True) == (13, err.rstrip("\n"))


def test_raced_spoof_of_the_default_path_never_reaches_the_victim() -> None:
    # As tests/test_client_contract.py does for the Python client: nobody renames its own
    # directory, with a kstatd of its own inside, in and out of the victim's default path
    # (/tmp/kstatpy-UID; there half of the time) while the victim's C program opens it
    # 1,000 times. The walk by
    # descriptor, the connect through it and SO_PEERCRED leave nobody no opening.
    nobody_skip()
    uid = 40000 + os.getpid() % 20000
    default_dir, lair = f"/tmp/kstatpy-{uid}", f"/tmp/kstatpy-lair-{uid}"
    for d in (default_dir, lair):
        shutil.rmtree(d, ignore_errors=True)
    renamer_code = (
        "import os, sys, time\n"
        "a, b, stop = sys.argv[1], sys.argv[2], time.monotonic() + float(sys.argv[3])\n"
        "while time.monotonic() < stop:\n"
        "    try:\n        os.rename(a, b); time.sleep(0.001); os.rename(b, a); time.sleep(0.001)\n"
        "    except OSError:\n        pass\n"
    )
    with kstatd_as_nobody(f"{lair}/kstat.sock"):
        renamer = popen_as_nobody(["-c", renamer_code, lair, default_dir, "120"])
        try:
            env = run_env(None, KSTAT_TIMEOUT="5")
            for name in ("KSTAT_SOCKET", "XDG_RUNTIME_DIR"):
                env.pop(name, None)
            victim = ("setpriv", "--reuid", str(uid), "--regid", str(uid), "--clear-groups")
            deadline = time.monotonic() + 60
            while not os.path.exists(default_dir):  # the renamer is at work
                assert time.monotonic() < deadline and renamer.poll() is None, "the renamer did not start"
                time.sleep(0.01)  # readiness poll with a deadline
            with Driver(env, argv_prefix=victim) as d:
                got = d.cmd(f"opens 0 {OPENS}", timeout=280)
                d.close()
        finally:
            renamer.kill()
            renamer.wait(10)
            for d_ in (default_dir, lair):
                shutil.rmtree(d_, ignore_errors=True)
    counts = {k: int(v) for k, v in (line.split() for line in got)}
    assert counts["ok"] == 0, got  # never nobody's kstatd
    assert sum(counts.values()) == OPENS, got
    assert set(counts) <= {"ok", "EACCES", "ENOENT", "ECONNREFUSED"}, got
    assert counts.get("EACCES", 0) > 0, got  # the race was run: nobody's directory was seen and refused


def test_a_thousand_refusals_in_one_command_do_not_block_the_driver() -> None:
    # Each refused open says one line on stderr (about 130 bytes): a thousand are twice a
    # pipe's 64 KiB. The raced test above meets that count whenever the renamer leaves
    # nobody's directory in place longer (under load); lkt then blocked on its stderr
    # while the test waited for its answer (280 s). Here every open is refused, at once.
    nobody_skip()
    uid = 40000 + (os.getpid() + 1) % 20000
    default_dir = f"/tmp/kstatpy-{uid}"
    shutil.rmtree(default_dir, ignore_errors=True)
    os.mkdir(default_dir, 0o700)
    try:
        os.chown(default_dir, NOBODY_UID, NOBODY_UID)
        env = run_env(None)
        for name in ("KSTAT_SOCKET", "XDG_RUNTIME_DIR"):
            env.pop(name, None)
        victim = ("setpriv", "--reuid", str(uid), "--regid", str(uid), "--clear-groups")
        with Driver(env, argv_prefix=victim) as d:
            got = d.cmd(f"opens 0 {OPENS}", timeout=60)
            code, err = d.close()
    finally:
        shutil.rmtree(default_dir, ignore_errors=True)
    assert got == ["ok 0", f"EACCES {OPENS}"] and code == 0, got
    lines = err.splitlines()
    assert len(lines) == OPENS and len(err) > 65536, len(err)
    assert all("owned by uid" in line and line.startswith(default_dir) for line in lines), lines[0]


def test_roots_default_follows_kstatpy_rundir_as_the_python_client_does(tmp_path) -> None:
    # Root's default is $KSTATPY_RUNDIR/priv/kstat.sock (kstatpy.safepath.root_run_dir) in C too.
    if os.geteuid() != 0:
        pytest.fail("this test needs root: the default path under test is root's")
    from kstatpy.safepath import default_socket_path
    from tests.kstatd_fixture import running_kstatd

    run = tmp_path / "run"
    run.mkdir(mode=0o755)
    env = run_env(None, KSTATPY_RUNDIR=str(run))
    env.pop("KSTAT_SOCKET", None)
    assert default_socket_path(env) == str(run / "priv" / "kstat.sock")
    with running_kstatd(tmp_path, plugins=("tests.providers_fixture.basic",), socket=str(run / "kstat.sock")):
        with Driver(env) as d:
            assert d.one("open 0").startswith("ok kcid ")
            assert d.one("close 0") == "ok 0"
    # Without a kstatd there, the default is not silently somewhere else.
    assert answer(env, "open 0")[0] in ("err ENOENT", "err ECONNREFUSED")
