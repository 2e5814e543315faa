"""libkstat finds and trusts kstatd as the client contract says (docs/PROTOCOL.md,
"Finding and trusting the server"): the server's peer credentials,
KSTAT_TRUST_UID for a named socket, the default path walked by descriptor, and
KSTAT_TIMEOUT's values. The second and third users come from setpriv (tests/nobody.py)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.kstatd_fixture import hello
from tests.libkstat_helpers import Driver
from tests.libkstat_helpers import run_env
from tests.nobody import AS_NOBODY
from tests.nobody import NOBODY_UID
from tests.nobody import nobody_skip
from tests.nobody import popen_as_nobody
from tests.nobody import shared_dir

OTHER_UID = 12345  # a uid that is neither root nor nobody


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
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""  # bounded: it exited
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
        assert answer(run_env(sock, KSTAT_TRUST_UID=str(NOBODY_UID)), "open 0")[0].startswith("ok kcid ")
        assert answer(run_env(sock, KSTAT_TRUST_UID=f"7,{NOBODY_UID}"), "open 0")[0].startswith("ok kcid ")
        assert answer(run_env(sock, KSTAT_TRUST_UID="7"), "open 0")[0] == "err EACCES"
        got, err = answer(run_env(sock, KSTAT_TRUST_UID="nobody"), "open 0")
        assert (got, err) == ("err EINVAL", "KSTAT_TRUST_UID=nobody: not a list of uids (N[,N...], at most 16)\n")
        # the caller's own server is trusted without asking
        assert answer(run_env(sock), "open 0", as_nobody=True)[0].startswith("ok kcid ")


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
            f"{runtime}/kstatpy: the socket's directory is owned by uid {OTHER_UID}, "
            f"not uid 0 or uid {NOBODY_UID}; refusing to use it\n"
        )
        os.chown(f"{runtime}/kstatpy", NOBODY_UID, NOBODY_UID)
        # writable by the group: someone else could replace the socket
        os.chmod(f"{runtime}/kstatpy", 0o775)
        got, err = answer(env, "open 0", as_nobody=True)
        assert got == "err EACCES" and "writable by others (mode 0775)" in err, err
        os.chmod(f"{runtime}/kstatpy", 0o755)
        # a symbolic link anywhere on the way
        os.symlink(runtime, f"{nobody_dir}/link")
        got, err = answer(dict(env, XDG_RUNTIME_DIR=f"{nobody_dir}/link"), "open 0", as_nobody=True)
        assert (got, err) == (
            "err EACCES",
            f"{nobody_dir}/link: a symbolic link on the way to the socket; refusing to use it\n",
        )
        # KSTAT_TRUST_UID does not apply to the default path (nothing to trust here but the walk)
        assert answer(dict(env, KSTAT_TRUST_UID="1"), "open 0", as_nobody=True)[0].startswith("ok kcid ")
    # nothing listening at the default path: ECONNREFUSED (a stale socket file) or ENOENT
    assert answer(env, "open 0", as_nobody=True)[0] in ("err ECONNREFUSED", "err ENOENT")


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "86401", "abc", "1s"])
def test_bad_kstat_timeout_is_einval(tmp_path, value: str) -> None:
    got, err = answer(run_env(str(tmp_path / "kstat.sock"), KSTAT_TIMEOUT=value), "open 0")
    assert (got, err) == ("err EINVAL", f"KSTAT_TIMEOUT={value}: not a number of seconds > 0 and <= 86400\n")


def test_default_timeout_agrees_with_the_python_client() -> None:
    # The contract's 10 s, in C (impl.h) and, once it has one, in kstatpy.transport.
    from tests.libkstat_helpers import installed

    installed()
    impl = (sys.modules["kstatpy"].__path__[0]) + "/libkstat/impl.h"
    with open(impl) as f:
        c_default = next(float(line.split()[2]) for line in f if line.startswith("#define LK_DEFAULT_TIMEOUT"))
    import kstatpy.transport as transport

    assert c_default == getattr(transport, "DEFAULT_TIMEOUT", 10.0) == 10.0
