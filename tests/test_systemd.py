"""kstatd under systemd (kstatpy.systemd, kstatpy/units/, issue 22), tested with systemd's
own tools: ``systemd-analyze verify`` and ``security`` on the shipped units, and
``systemd-socket-activate`` starting a real kstatd on sockets it bound, which ``kstat -p``
then reads; readiness arrives as READY=1 on a NOTIFY_SOCKET receiver.

Needs systemd's tools (``.ci/run`` installs them); skipped, saying so, without them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kstatd_fixture import REPO
from kstatd_fixture import hello
from kstatd_fixture import kstatd_env

from kstatpy.systemd import notify

UNITS = REPO / "kstatpy" / "units"
BIN = Path(sys.executable).parent
ANALYZE = shutil.which("systemd-analyze")
ACTIVATE = shutil.which("systemd-socket-activate")
KSTATD = [sys.executable, "-m", "kstatpy.cli.kstatd"]


def units_in(tmp: Path) -> list[Path]:
    # The shipped units with ExecStart= pointing at this venv's kstatd (verify checks it exists).
    out = []
    for name in ("kstatd.socket", "kstatd.service"):
        text = (UNITS / name).read_text(encoding="utf-8")
        if name.endswith(".service"):
            assert "ExecStart=/usr/local/bin/kstatd " in text
            text = text.replace("/usr/local/bin/kstatd", str(BIN / "kstatd"))
        (tmp / name).write_text(text, encoding="utf-8")
        out.append(tmp / name)
    return out


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed (.ci/run installs systemd)")
def test_the_units_verify(tmp_path: Path) -> None:
    assert ANALYZE is not None
    paths = [str(p) for p in units_in(tmp_path)]
    # Documentation=man:kstatd(8) is checked too: the repository's generated pages.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAN", "LC_", "LANG"))}
    env.update(MANPATH=str(REPO / "man"), LANG="C")
    r = subprocess.run([ANALYZE, "verify", *paths], capture_output=True, text=True, env=env, timeout=120)
    assert (r.returncode, r.stderr) == (0, ""), r.stderr


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed (.ci/run installs systemd)")
def test_the_service_is_hardened(tmp_path: Path) -> None:
    # Exposure 2.2 ("OK") when written; more than 3.0 means hardening was dropped.
    assert ANALYZE is not None
    service = str(units_in(tmp_path)[1])
    r = subprocess.run([ANALYZE, "security", "--offline=yes", "--threshold=30", service],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    text = (UNITS / "kstatd.service").read_text()
    for line in ("Type=notify", "ProtectSystem=strict", "RuntimeDirectory=kstatpy", "NoNewPrivileges=yes"):
        assert f"\n{line}\n" in text, line
    assert "\nListenStream=/run/kstatpy/kstat.sock\n" in (UNITS / "kstatd.socket").read_text()


def notify_receiver(path: Path | str) -> socket.socket:
    r = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    r.bind(str(path))
    r.settimeout(60)
    return r


@pytest.mark.skipif(ACTIVATE is None, reason="systemd-socket-activate is not installed (.ci/run installs systemd)")
def test_socket_activated_kstatd_serves_kstat(tmp_path: Path) -> None:
    assert ACTIVATE is not None
    g, web, db = (str(tmp_path / f"{n}.sock") for n in ("global", "web", "db"))
    receiver = notify_receiver(tmp_path / "notify")
    env = kstatd_env()
    pass_env = [f"-E{k}={env[k]}" for k in ("PYTHONPATH", "KSTATPY_DISABLE_PLUGIN_AUTOLOAD", "PATH")]
    cmd = [ACTIVATE, "-l", g, "-l", web, "--fdname=global:web", *pass_env, f"-ENOTIFY_SOCKET={tmp_path}/notify",
           str(BIN / "kstatd"), "--socket", g, "--zone", f"web={web}", "--zone", f"db={db}",
           "--plugin", "tests.providers_fixture.basic"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(web):  # systemd-socket-activate has bound both (kstatd not yet run)
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate(timeout=30)
            time.sleep(0.02)  # polling for the binding with a deadline
        # The first connection starts kstatd, on the sockets systemd-socket-activate bound.
        kenv = {k: v for k, v in os.environ.items() if k != "KSTAT_SOCKET"}
        r = subprocess.run([str(BIN / "kstat"), "--socket", g, "-p", "test:0:named:i32"], env=kenv,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
        assert (r.returncode, r.stdout) == (0, "test:0:named:i32\t-5\n"), r.stderr
        ready = receiver.recv(4096).decode()
        fields = dict(line.split("=", 1) for line in ready.splitlines())
        assert fields["READY"] == "1" and fields["MAINPID"] == str(proc.pid), ready  # exec'd: the same pid
        assert fields["STATUS"].startswith(f"ready: listening on {g} (passed by systemd), zones web={web}, db={db}")
        assert hello(web)["zone"] == "web" and hello(db)["zone"] == "db"  # db: bound by kstatd itself
    finally:
        receiver.close()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert err.count("kstatd: ready: ") == 1 and "Traceback" not in err, err
    # systemd's sockets stay (the socket unit keeps listening); kstatd's own is removed.
    assert os.path.exists(g) and os.path.exists(web) and not os.path.exists(db)


def run_with_fd3(tmp_path: Path, fd: int, listen_pid: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    """kstatd with ``fd`` as descriptor 3 and LISTEN_FDS=1 (LISTEN_PID: its own pid, or given)."""
    setpid = "os.getpid()" if listen_pid is None else repr(listen_pid)
    shim = (f"import os, sys; os.dup2({fd}, 3); os.environ.update(LISTEN_FDS='1', LISTEN_PID=str({setpid})); "
            "os.execv(sys.executable, [sys.executable, '-m', 'kstatpy.cli.kstatd', *sys.argv[1:]])")  # fmt: skip
    return subprocess.run([sys.executable, "-c", shim, "--socket", str(tmp_path / "k.sock"), *args], pass_fds=(fd,),
                          cwd=str(REPO), env=kstatd_env(), capture_output=True, text=True, timeout=60)  # fmt: skip


@pytest.mark.parametrize("what", ["file", "unlistened", "datagram", "tcp", "elsewhere"])
def test_a_passed_descriptor_that_is_not_our_listening_socket_is_refused(tmp_path: Path, what: str) -> None:
    sock: socket.socket | None = None
    if what == "file":
        fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
        why = "passed descriptor 3 (unknown): not a socket: Socket operation on non-socket"
    else:
        if what == "tcp":
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
        else:
            kind = socket.SOCK_DGRAM if what == "datagram" else socket.SOCK_STREAM
            sock = socket.socket(socket.AF_UNIX, kind)
            sock.bind(str(tmp_path / "other.sock"))
        if what in ("tcp", "elsewhere"):
            sock.listen()
        fd = sock.fileno()
        why = "passed descriptor 3 (unknown): not a listening AF_UNIX stream socket"
        if what == "elsewhere":
            why = f"passed socket {tmp_path}/other.sock (unknown) is none of kstatd's sockets ({tmp_path}/k.sock)"
    try:
        r = run_with_fd3(tmp_path, fd, None)
    finally:
        os.close(fd) if sock is None else sock.close()
    assert r.returncode == 3 and r.stderr.startswith(f"kstatd: {why}") and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "k.sock").exists()


def test_listen_fds_for_another_pid_are_not_ours(tmp_path: Path) -> None:
    # Inherited from a parent that was activated: kstatd binds its own socket.
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    proc = None
    try:
        shim = ("import os, sys; os.dup2(int(sys.argv[1]), 3); os.environ.update(LISTEN_FDS='1', LISTEN_PID='1'); "
                "os.execv(sys.executable, [sys.executable, '-m', 'kstatpy.cli.kstatd', *sys.argv[2:]])")  # fmt: skip
        sock = str(tmp_path / "k.sock")
        proc = subprocess.Popen([sys.executable, "-c", shim, str(fd), "--socket", sock], pass_fds=(fd,),
                                cwd=str(REPO), env=kstatd_env(), stderr=subprocess.PIPE, text=True)  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                assert hello(sock)["zone"] == "global"
                break
            except (OSError, EOFError):
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate(timeout=30)
                time.sleep(0.02)  # polling for readiness with a deadline
    finally:
        os.close(fd)
        if proc is not None:
            proc.terminate()
            err = proc.communicate(timeout=30)[1]
            assert proc.returncode == 0 and f"listening on {sock}, zones" in err, err


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_notify_reaches_a_path_or_an_abstract_socket(tmp_path: Path, abstract: bool) -> None:
    name = f"@kstatpy-test-{os.getpid()}-{tmp_path.name}" if abstract else str(tmp_path / "n")
    with notify_receiver("\0" + name[1:] if abstract else name) as r:
        assert notify("READY=1\nSTATUS=ok", {"NOTIFY_SOCKET": name})
        assert r.recv(100) == b"READY=1\nSTATUS=ok"
    assert not notify("READY=1", {})
    assert not notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")})
