"""The installed ``kstat`` script against a real kstatd, the embedded default, and the
fatal ``kstat_open`` errors. kstatd runs ``tests/cli_provider.py`` (the known chain)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cli_chain import build_chain
from cli_chain import run_kstat
from console_scripts import console_script
from console_scripts import missing_script
from kstatd_fixture import REPO
from kstatd_fixture import kstatd_env
from kstatd_fixture import running_kstatd

from kstatpy.chain import Chain
from kstatpy.client import kstat_open_chain

TESTS = Path(__file__).resolve().parent
KSTAT = console_script("kstat")
PROVIDER_ENV = {"PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)])}


def kstat_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KSTAT_SOCKET",)}
    env["XDG_RUNTIME_DIR"] = str(tmp_path / "runtime")  # no daemon at the default path
    env["KSTATPY_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    env.update(extra)
    return env


def kstat(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[bytes]:
    assert KSTAT, missing_script("kstat")
    return subprocess.run([KSTAT, *argv], env=env, capture_output=True, timeout=60)


def untimed(out: bytes) -> bytes:
    # crtime/snaptime differ between the daemon's chain and this process's.
    return re.sub(rb"\d+\.\d{9}", b"T", out)


@pytest.fixture(scope="module")
def kd(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("kstatd")
    with running_kstatd(tmp, plugins=("cli_provider",), env=PROVIDER_ENV) as kd:
        yield kd


# kstatd publishes its own kstatpy:* kstats: leave module "kstatpy" out.
NOT_KSTATPY = "/^[^k]/"


@pytest.mark.parametrize(
    "argv",
    [[NOT_KSTATPY], ["-p", NOT_KSTATPY], ["-j", NOT_KSTATPY], ["-l", NOT_KSTATPY], ["-C", "strs"],
     ["-p", NOT_KSTATPY + ":::/a/", "sd"]],
)  # fmt: skip
def test_daemon_and_in_process_give_identical_output(kd, tmp_path: Path, argv: list[str]) -> None:
    got = kstat(kstat_env(tmp_path), "--socket", kd.socket, *argv)
    assert got.returncode == 0, got.stderr
    code, want, err = run_kstat(kstat_open_chain(build_chain(Chain())), *argv)
    assert (code, err) == (0, b"")
    assert untimed(got.stdout) == untimed(want)
    assert got.stderr == b""


def test_kstat_socket_env_and_default_path(kd, tmp_path: Path) -> None:
    by_env = kstat(kstat_env(tmp_path, KSTAT_SOCKET=kd.socket), "-p", "strs:::question")
    assert (by_env.returncode, by_env.stdout) == (0, b"strs:0:strings:question\twhat?\n"), by_env.stderr
    # The default path is tried before the embedded chain: root's is /run/kstatpy/priv/kstat.sock
    # (docs/PROTOCOL.md §9.7), tested with a kstatd at the real default in tests/test_client_contract.py.


def test_named_socket_that_does_not_answer_is_fatal(tmp_path: Path) -> None:
    missing = str(tmp_path / "nothing.sock")
    got = kstat(kstat_env(tmp_path), "--socket", missing, "-p")
    assert (got.returncode, got.stdout, got.stderr) == (3, b"", f"kstat_open: {missing}: No such file or directory\n".encode())
    got = kstat(kstat_env(tmp_path, KSTAT_SOCKET=missing), "-p")
    assert (got.returncode, got.stderr) == (3, f"kstat_open: {missing}: No such file or directory\n".encode())
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(stale))  # bound, never listening: connect is refused
    try:
        got = kstat(kstat_env(tmp_path), f"--socket={stale}")
    finally:
        s.close()
    assert (got.returncode, got.stderr) == (3, f"kstat_open: {stale}: Connection refused\n".encode())


def test_usage_errors_need_no_daemon(tmp_path: Path) -> None:
    got = kstat(kstat_env(tmp_path), "--socket", str(tmp_path / "nothing.sock"), "0")
    assert got.returncode == 2 and got.stderr.startswith(b"Interval must be an integer >= 1Usage:\n")


def test_embedded_default_matches_daemon_with_the_same_providers(tmp_path: Path) -> None:
    # Real built-in providers (autoload on) both ways: the statistic names must agree.
    env = kstat_env(tmp_path, KSTATPY_DISABLE_PLUGIN_AUTOLOAD="")
    embedded = kstat(env, "-l", "unix:0:system_misc")
    assert embedded.returncode == 0, embedded.stderr
    assert b"unix:0:system_misc:ncpus\n" in embedded.stdout
    with running_kstatd(tmp_path, env={"KSTATPY_DISABLE_PLUGIN_AUTOLOAD": ""}) as kd:
        daemon = kstat(env, "--socket", kd.socket, "-l", "unix:0:system_misc")
    assert daemon.returncode == 0, daemon.stderr
    assert daemon.stdout == embedded.stdout


def test_embedded_with_no_providers_matches_nothing(tmp_path: Path) -> None:
    got = kstat(kstat_env(tmp_path), "-j")
    assert (got.returncode, got.stdout, got.stderr) == (1, b"[]\n", b"")


def test_daemon_path_imports_no_provider_machinery(kd) -> None:
    code = (
        "import io, sys\n"
        "from kstatpy.cli.kstat import run\n"
        f"rc = run(['--socket', {kd.socket!r}, '-p', 'unix:::ncpus'], io.BytesIO(), io.BytesIO())\n"
        "heavy = sorted(m for m in sys.modules if m in ('pluggy', 'kstatpy.chain', 'kstatpy.plugins', 'click')"
        " or m.startswith('providers'))\n"
        "print(rc, heavy)\n"
    )
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60, cwd=str(REPO))
    assert got.stdout == b"0 []\n", got.stderr


@pytest.mark.parametrize("option", ["--read-timeout", "--idle-timeout", "--frame-timeout", "--detach-timeout"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400", "1e30"])
def test_kstatd_timeouts_must_be_finite(tmp_path, option: str, value: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "kstatpy.cli.kstatd", "--socket", str(tmp_path / "s"), f"{option}={value}"],
        env=kstatd_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and option in r.stderr
