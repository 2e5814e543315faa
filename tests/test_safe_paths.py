"""Issue 13, fault 5 and 8: socket paths another user controls, and silent fall backs.

Clients (kstat, vmmctl, kstat_open) and kstatd check the socket's directory
(kstatpy.safepath) before trusting or creating anything; the second user is nobody.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import time

import pytest
from kstatd_fixture import REPO
from kstatd_fixture import hello
from kstatd_fixture import kstatd_env
from kstatd_fixture import running_kstatd
from nobody import NOBODY_UID
from nobody import as_victim
from nobody import popen_as_nobody
from nobody import run_as
from nobody import run_as_nobody
from nobody import shared_dir

from kstatpy.client import kstat_open
from kstatpy.errors import KstatError
from kstatpy.errors import UntrustedServerError
from kstatpy.safepath import UnsafePathError
from kstatpy.safepath import check_socket_dir
from kstatpy.safepath import default_socket_path

KSTAT = [sys.executable, "-m", "kstatpy.cli.kstat"]
KSTATD = [sys.executable, "-m", "kstatpy.cli.kstatd"]
VMMCTL = [sys.executable, "-m", "kstatpy_providers.vmm.vmmctl"]


def env_with(**kw: str | None) -> dict[str, str]:
    env = kstatd_env()
    env.pop("KSTAT_SOCKET", None)
    for k, v in kw.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, cwd=str(REPO), env=env, capture_output=True, timeout=60)


@pytest.fixture
def nobody_kstatd():
    """A kstatd run by nobody at $XDG/kstatpy/kstat.sock, $XDG world-writable and sticky."""
    with shared_dir(0o1777) as xdg:
        sock = os.path.join(xdg, "kstatpy", "kstat.sock")
        proc = popen_as_nobody(["-m", "kstatpy.cli.kstatd", "--socket", sock], stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    hello(sock)
                    break
                except (OSError, EOFError):
                    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""  # bounded: it exited
                    assert time.monotonic() < deadline, "nobody's kstatd did not start"
                    time.sleep(0.02)  # polling for readiness with a deadline
            assert os.stat(os.path.dirname(sock)).st_uid == NOBODY_UID
            yield xdg, sock
        finally:
            proc.terminate()
            proc.wait(10)


def test_default_path_without_xdg_is_per_uid():
    assert default_socket_path({}, euid=1000) == f"/tmp/kstatpy-{os.getuid()}/kstat.sock"
    assert default_socket_path({"XDG_RUNTIME_DIR": ""}, euid=1000) == f"/tmp/kstatpy-{os.getuid()}/kstat.sock"
    # Root's default is its privileged listener in a root-only directory (§9.7), whatever the environment.
    assert default_socket_path({"XDG_RUNTIME_DIR": "/tmp/x"}, euid=0) == "/run/kstatpy/priv/kstat.sock"


def test_vmmctl_refuses_a_default_socket_nobody_controls(nobody_kstatd):
    # The victim is a non-root user: root's default is /run/kstatpy/priv, never $XDG_RUNTIME_DIR.
    xdg, _sock = nobody_kstatd
    r = run_as(as_victim(), ["-m", "kstatpy_providers.vmm.vmmctl", "list"], env_with(XDG_RUNTIME_DIR=xdg))
    err = r.stderr.decode()
    assert r.returncode == 3, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert xdg in err and f"owned by uid {NOBODY_UID}" in err
    assert r.stdout == b""  # nothing from nobody's daemon
    # Root's vmmctl never looks there: its default is /run/kstatpy/priv/kstat.sock (where a
    # root kstatd may well run on a shared machine: then it answers, nobody's never does).
    r = run([*VMMCTL, "list"], env_with(XDG_RUNTIME_DIR=xdg))
    assert xdg.encode() not in r.stderr and xdg.encode() not in r.stdout
    priv = default_socket_path(euid=0)  # /run/kstatpy/priv/kstat.sock, or the suite's $KSTATPY_RUNDIR
    if not os.path.exists(priv):
        assert r.returncode == 3 and priv.encode() in r.stderr


def test_kstat_reads_in_process_when_nobody_squats_the_default(nobody_kstatd):
    # Neither spoofed (nobody's daemon is never asked) nor silenced (the squat does
    # not stop the victim's kstat): one line on stderr, then the host read in-process.
    xdg, _sock = nobody_kstatd
    env = env_with(XDG_RUNTIME_DIR=xdg, KSTATPY_DISABLE_PLUGIN_AUTOLOAD=None, KSTATPY_CACHE_DIR=xdg + "/victim-cache")
    r = run_as(as_victim(), ["-m", "kstatpy.cli.kstat", "-p", "unix:0:system_misc:ncpus", "kstatpy:::"], env)
    err = r.stderr.decode()
    assert r.returncode == 0, err
    assert err.count("\n") == 1 and "Traceback" not in err and "reading in-process" in err
    assert xdg in err and f"owned by uid {NOBODY_UID}" in err
    assert r.stdout.startswith(b"unix:0:system_misc:ncpus\t")
    assert b"kstatpy:0:" not in r.stdout  # nobody's daemon kstats never reached us


def test_kstat_open_refuses_a_default_socket_nobody_controls(nobody_kstatd):
    xdg, _sock = nobody_kstatd
    code = (
        "import errno\n"
        "from kstatpy.client import kstat_open\n"
        "from kstatpy.safepath import UnsafePathError\n"
        "try:\n    kstat_open()\n"
        "except UnsafePathError as exc:\n    print(exc.errno == errno.EACCES)\n"
    )
    r = run_as(as_victim(), ["-c", code], env_with(XDG_RUNTIME_DIR=xdg))
    assert r.stdout == b"True\n", r.stderr


def test_a_named_socket_of_another_user_needs_an_opt_in(nobody_kstatd):
    # §9.7 step 3: a server run by neither root nor the caller is refused, named or not,
    # unless the user who named it opts in (--trust-uid, $KSTAT_TRUST_UID).
    _xdg, sock = nobody_kstatd
    argv = [*KSTAT, "--socket", sock, "-p", "kstatpy:0:connections:current"]
    r = run(argv, env_with())
    assert (r.returncode, r.stdout) == (3, b"")
    assert r.stderr.decode() == (
        f"kstat_open: {sock}: the server runs as uid {NOBODY_UID}, not root or uid 0; "
        f"refusing it (KSTAT_TRUST_UID={NOBODY_UID} to trust it)\n"
    )
    r = run([*VMMCTL, "list", "--socket", sock], env_with())
    assert r.returncode == 3 and f"runs as uid {NOBODY_UID}" in r.stderr.decode() and r.stderr.count(b"\n") == 1
    with pytest.raises(UntrustedServerError) as info:
        kstat_open(sock)
    assert info.value.errno == errno.EACCES
    r = run([*KSTAT, "--socket", sock, "--trust-uid", str(NOBODY_UID), *argv[3:]], env_with())
    assert r.returncode == 0, r.stderr
    r = run(argv, env_with(KSTAT_TRUST_UID=f"7,{NOBODY_UID}"))
    assert r.returncode == 0, r.stderr
    r = run([*VMMCTL, "list", "--socket", sock, "--trust-uid", str(NOBODY_UID)], env_with())
    assert b"vmm provider is not loaded" in r.stderr, r.stderr  # it asked nobody's kstatd
    kstat_open(sock, trust=[NOBODY_UID]).close()
    # The opt-in never applies to a default path: nobody cannot be trusted there by accident.
    r = run_as(as_victim(), ["-m", "kstatpy.cli.kstat", "-p", "kstatpy:::"],
               env_with(XDG_RUNTIME_DIR=_xdg, KSTAT_TRUST_UID=str(NOBODY_UID)))
    assert b"kstatpy:0:" not in r.stdout


def test_kstatd_refuses_a_planted_symlink_and_touches_nothing_in_its_target():
    with shared_dir(0o1777) as xdg, shared_dir(0o755) as target:
        planted = os.path.join(xdg, "kstatpy")
        assert run_as_nobody(["-c", f"import os; os.symlink({target!r}, {planted!r})"]).returncode == 0
        r = run([*KSTATD, "--plugin", "tests.providers_fixture.basic", "--socket", os.path.join(planted, "kstat.sock")], env_with())
        err = r.stderr.decode()
        assert r.returncode == 3, err
        assert err.count("\n") == 1 and "symbolic link" in err and planted in err
        assert os.listdir(target) == []
        # Clients refuse it too, named or not.
        r = run([*KSTAT, "--socket", os.path.join(planted, "kstat.sock")], env_with())
        assert r.returncode == 3 and b"symbolic link" in r.stderr


def test_a_group_writable_directory_is_refused_by_both_ends(tmp_path):
    d = tmp_path / "gw"
    d.mkdir()
    os.chmod(d, 0o775)
    sock = str(d / "kstat.sock")
    r = run([*KSTATD, "--socket", sock], env_with())
    assert r.returncode == 3 and b"writable by others (mode 0775)" in r.stderr, r.stderr
    with pytest.raises(UnsafePathError, match="writable by others"):
        check_socket_dir(sock, None)
    r = run([*KSTAT, "--socket", sock], env_with())
    assert r.returncode == 3 and b"writable by others" in r.stderr and b"Traceback" not in r.stderr


def test_kstatd_removes_its_files_in_the_directory_it_checked(tmp_path):
    # The directory is swapped for a symlink while kstatd runs: shutdown unlinks
    # through its descriptor of the original directory, never in the link's target.
    real = tmp_path / "real"
    real.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    with running_kstatd(tmp_path, socket=str(real / "kstat.sock")) as kd:
        moved = tmp_path / "moved"
        os.rename(real, moved)
        os.symlink(target, real)
        (target / "kstat.sock").write_text("root's file")
        (target / "kstat.sock.lock").write_text("root's file")
        assert kd.stop() == 0
    assert sorted(os.listdir(target)) == ["kstat.sock", "kstat.sock.lock"]
    assert os.listdir(moved) == []


def test_kstatd_cannot_create_the_socket_directory_one_line():
    with shared_dir(0o755) as root_dir:
        r = run_as_nobody(["-m", "kstatpy.cli.kstatd", "--socket", os.path.join(root_dir, "sub", "kstat.sock")],
                          capture_output=True, timeout=60)  # fmt: skip
    err = r.stderr.decode()
    assert r.returncode == 3, err
    assert err.count("\n") == 1 and "Permission denied" in err and "Traceback" not in err


# --- fault 8: no silent fall back ------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [*KSTAT, "--socket="],
        [*KSTAT, "--socket", ""],
        [*KSTAT, "-p", "kstatpy", "--socket", "/nonexistent/kstat.sock"],
        [*KSTAT, "kstatpy", "--socket=/nonexistent/kstat.sock"],
        [*KSTATD, "--socket", ""],
        [*KSTATD, "--socket="],
        [*VMMCTL, "list", "--socket", ""],
    ],
)
def test_empty_or_misplaced_socket_is_a_usage_error(tmp_path, argv):
    r = run(argv, env_with(XDG_RUNTIME_DIR=str(tmp_path)))
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert "socket" in err and "Traceback" not in err
    assert r.stdout == b""
    assert os.listdir(tmp_path) == []  # nothing was started or created at the default


def test_kstat_open_empty_path_is_einval():
    with pytest.raises(KstatError) as info:
        kstat_open("")
    assert info.value.errno == errno.EINVAL


def test_empty_kstat_socket_variable_means_unset(tmp_path):
    # $KSTAT_SOCKET="" is "not set" (as click treats it): the default, then embedded.
    r = run([*KSTAT, "-p", "unix:0:kstat_types"], env_with(XDG_RUNTIME_DIR=str(tmp_path), KSTAT_SOCKET=""))
    assert r.returncode in (0, 1) and b"Traceback" not in r.stderr
    shutil.rmtree(tmp_path / "kstatpy", ignore_errors=True)
