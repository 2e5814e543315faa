"""Issue 13, faults 6, 7, 9: every console script fails in one line with the right status.

Each of kstat, kstatd and vmmctl is driven through the kinds of failure: its output
cannot be written (ENOSPC: /dev/full; EPIPE: a pipe nobody reads), permission (as
nobody), encoding (argv bytes that are not UTF-8), and a daemon lost mid-run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from bounded import within
from kstatd_fixture import REPO
from kstatd_fixture import kstatd_env
from kstatd_fixture import rpc
from kstatd_fixture import running_kstatd
from nobody import run_as_nobody

PY = sys.executable
KSTAT = [PY, "-m", "kstatpy.cli.kstat"]
KSTATD = [PY, "-m", "kstatpy.cli.kstatd"]
VMMCTL = [PY, "-m", "kstatpy_providers.vmm.vmmctl"]
VMM = ("kstatpy_providers.vmm.provider",)
#: kstat(8)'s fatal status, for every command (issue 21).
FATAL = {"kstat": 3, "kstatd": 3, "vmmctl": 3}


def env(tmp_path) -> dict[str, str]:
    e = kstatd_env()
    e.pop("KSTAT_SOCKET", None)
    e["XDG_RUNTIME_DIR"] = str(tmp_path / "xdg")
    return e


def one_line(err: bytes) -> str:
    text = err.decode("utf-8", "replace")
    assert "Traceback" not in text and "Exception ignored" not in text, text
    assert text.count("\n") == 1, text
    return text


@pytest.fixture(scope="module")
def kd(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kd")
    with running_kstatd(tmp, plugins=VMM) as kd:
        yield kd


def commands(sock: str) -> dict[str, list[str]]:
    return {
        "kstat": [*KSTAT, "--socket", sock, "-p"],
        "kstatd": [*KSTATD, "--help"],
        "vmmctl": [*VMMCTL, "list", "--socket", sock],
    }


# --- ENOSPC and EPIPE -------------------------------------------------------------------


@pytest.mark.parametrize("prog", ["kstat", "kstatd", "vmmctl"])
def test_output_to_a_full_disk_is_one_line_and_fatal(kd, tmp_path, prog):
    with open("/dev/full", "wb") as full:
        r = subprocess.run(commands(kd.socket)[prog], stdout=full, stderr=subprocess.PIPE, env=env(tmp_path),
                           cwd=str(REPO), timeout=60)  # fmt: skip
    assert r.returncode == FATAL[prog]
    assert one_line(r.stderr) == f"{prog}: write error: No space left on device\n"


@pytest.mark.parametrize("prog", ["kstat", "kstatd", "vmmctl"])
@pytest.mark.parametrize("unbuffered", ["1", None])
def test_output_and_errors_to_a_full_disk_exit_fatal_in_silence(kd, tmp_path, prog, unbuffered):
    # With and without PYTHONUNBUFFERED (a user's shell has none): buffered, the error line
    # that stderr could not take stayed in its buffer, and the interpreter's last flush
    # made the exit status 120.
    e = env(tmp_path)
    e.pop("PYTHONUNBUFFERED", None)
    if unbuffered:
        e["PYTHONUNBUFFERED"] = unbuffered
    with open("/dev/full", "wb") as full:
        r = subprocess.run(commands(kd.socket)[prog], stdout=full, stderr=full, env=e,
                           cwd=str(REPO), timeout=60)  # fmt: skip
    assert r.returncode == FATAL[prog]


@pytest.mark.parametrize("prog", ["kstat", "kstatd", "vmmctl"])
def test_output_to_a_closed_pipe(kd, tmp_path, prog):
    r_fd, w_fd = os.pipe()
    os.close(r_fd)
    try:
        r = subprocess.run(commands(kd.socket)[prog], stdout=w_fd, stderr=subprocess.PIPE, env=env(tmp_path),
                           cwd=str(REPO), timeout=60)  # fmt: skip
    finally:
        os.close(w_fd)
    assert b"Traceback" not in r.stderr and b"Exception ignored" not in r.stderr
    if prog == "kstat":
        assert r.returncode == -signal.SIGPIPE and r.stderr == b""  # as the C command
    else:
        assert r.returncode == 3 and r.stderr == b""  # click's EPIPE handling, fatal as kstat(8)


# --- permission -------------------------------------------------------------------------


@pytest.mark.parametrize("prog", ["kstat", "vmmctl"])
def test_a_socket_nobody_may_not_reach(kd, prog):
    # The module's kstatd lives under pytest's 0700 directory: nobody gets EACCES.
    argv = commands(kd.socket)[prog][1:]
    r = run_as_nobody(argv, capture_output=True, timeout=60)
    err = one_line(r.stderr)
    assert r.returncode == 3 and "Permission denied" in err


def test_kstatd_as_nobody_where_it_may_not_create_anything(tmp_path):
    r = run_as_nobody(["-m", "kstatpy.cli.kstatd", "--socket", "/kstatpy-i13-no/kstat.sock"],
                      capture_output=True, timeout=60)  # fmt: skip
    err = one_line(r.stderr)
    assert r.returncode == 3 and "Permission denied" in err and "/kstatpy-i13-no" in err
    assert not os.path.exists("/kstatpy-i13-no")


# --- encoding ---------------------------------------------------------------------------


def test_non_utf8_arguments(kd, tmp_path):
    e = env(tmp_path)
    bad = b"bad\xffname"
    r = subprocess.run([*VMMCTL, "create", bad, "--socket", kd.socket], capture_output=True, env=e, timeout=60)
    assert r.returncode == 2 and one_line(r.stderr) == "vmmctl: create: VM name 'bad\\xffname' is not valid UTF-8\n"
    assert rpc(kd.socket, 0x564DF3)[2]["vms"] == []
    r = subprocess.run([*KSTAT, "--socket", kd.socket, "-p", b"vmm:" + bad], capture_output=True, env=e, timeout=60)
    assert r.returncode == 1 and r.stderr == b""  # a pattern that matches nothing
    r = subprocess.run([*KSTAT, "--socket", b"/nonexistent/\xff.sock"], capture_output=True, env=e, timeout=60)
    assert r.returncode == 3 and "kstat_open" in one_line(r.stderr)
    r = subprocess.run([*KSTATD, "--socket", str(tmp_path / "k.sock"), "--zone", b"z\xff=" + str(tmp_path / "z").encode()],
                       capture_output=True, env=e, timeout=60)  # fmt: skip
    assert r.returncode == 2 and b"not valid UTF-8" in r.stderr and b"Traceback" not in r.stderr


# --- a daemon lost while kstat runs ---------------------------------------------------------


def test_kstatd_lost_during_interval_mode_is_one_line_and_exit_3(tmp_path):
    with running_kstatd(tmp_path, plugins=("tests.providers_fixture.basic",)) as kd:
        proc = subprocess.Popen([*KSTAT, "--socket", kd.socket, "-p", "test:0:named:u64", "1", "5"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(tmp_path))  # fmt: skip
        assert within(30, "kstat's first report", proc.stdout.readline).startswith(b"test:0:named:u64")  # connected
        kd.proc.kill()
        kd.proc.wait(10)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 3, (proc.returncode, err)  # not 1 ("nothing matched"), not SIGPIPE's -13
    assert one_line(err).startswith("kstat: lost kstatd at ")


# --- kstatd's smaller faults ------------------------------------------------------------------


def test_crash_dir_must_exist_and_is_never_created(tmp_path):
    where = tmp_path / "no" / "such" / "dir"
    r = subprocess.run([*KSTATD, "--socket", str(tmp_path / "k.sock"), "--crash-dir", str(where)],
                       capture_output=True, env=env(tmp_path), timeout=60)  # fmt: skip
    assert r.returncode == 2 and b"does not exist" in r.stderr and b"Traceback" not in r.stderr
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize(("owner", "mode", "why"), [
    ("nobody", 0o755, b"owned by uid "),  # another user's directory
    ("root", 0o777, b"writable by others without the sticky bit (mode 0777)"),
])  # fmt: skip
def test_crash_dir_of_another_user_or_open_to_all_is_refused(tmp_path, owner, mode, why):
    # The socket directory's rule (kstatpy.safepath): root's or kstatd's, not writable by
    # others unless sticky. CI runs as root.
    import pwd

    if os.geteuid() != 0:
        pytest.skip("needs root to chown the directory")
    where = tmp_path / "crashes"
    where.mkdir()
    os.chown(where, pwd.getpwnam(owner).pw_uid, -1)
    os.chmod(where, mode)
    r = subprocess.run([*KSTATD, "--socket", str(tmp_path / "k.sock"), "--crash-dir", str(where)],
                       capture_output=True, env=env(tmp_path), timeout=60)  # fmt: skip
    assert r.returncode == 2 and why in r.stderr and str(where).encode() in r.stderr, r.stderr
    assert b"Traceback" not in r.stderr


def test_a_sticky_shared_crash_dir_is_accepted(tmp_path):
    where = tmp_path / "crashes"
    where.mkdir()
    os.chmod(where, 0o1777)  # as /tmp
    with running_kstatd(tmp_path, plugins=["tests.providers_fixture.basic"], args=["--crash-dir", str(where)]) as kd:
        assert kd.stop() == 0, kd.stderr


def test_provider_failures_are_printed_once(tmp_path):
    plugins = ("tests.providers_fixture.broken", "kstatpy_test_no_such_module")
    with running_kstatd(tmp_path, plugins=plugins) as kd:
        assert kd.stop() == 0
    assert kd.stderr.count("failed to attach") == 1, kd.stderr
    assert kd.stderr.count("failed to load") == 1, kd.stderr
    assert kd.stderr.count("\n") == 3 and kd.stderr.count("kstatd: ready: ") == 1, kd.stderr  # + the ready line
