"""Issue 21: output complete or an error, with or without buffering, for every console script.

A short write is forced two ways: ``RLIMIT_FSIZE`` on a regular file (the kernel writes up
to the limit, then EFBIG; SIGXFSZ ignored, as a shell's ``ulimit -f`` leaves it for a
program that ignores it) and a full tmpfs (a partial write, then ENOSPC). Each command must
then exit non-zero with one line on stderr, never 0 with a truncated file.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from kstatd_fixture import REPO
from kstatd_fixture import kstatd_env

SCRIPTS = sorted(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"])
#: The fatal status of a command's own output failing: kstat(8)'s 3, for every one (issue 21).
FATAL = 3
MODES = ["PYTHONUNBUFFERED=1", "python -u", "buffered"]


def _limit_fsize(limit: int):
    def pre() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return pre


def _argv_env(script: str, mode: str, args: list[str]) -> tuple[list[str], dict[str, str]]:
    exe = shutil.which(script, path=os.path.dirname(sys.executable)) or shutil.which(script)
    assert exe, f"console script {script} is not installed next to {sys.executable} (pip install -e .)"
    env = kstatd_env()
    env.pop("PYTHONUNBUFFERED", None)
    argv = [exe, *args]
    if mode == "PYTHONUNBUFFERED=1":
        env["PYTHONUNBUFFERED"] = "1"
    elif mode == "python -u":
        argv = [sys.executable, "-u", exe, *args]
    return argv, env


def one_line(stderr: bytes) -> str:
    text = stderr.decode(errors="replace")
    assert text.count("\n") == 1 and "Traceback" not in text and "Exception ignored" not in text, text
    return text


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("script", SCRIPTS)
def test_no_console_script_ends_a_short_write_with_exit_0(tmp_path, script, mode):
    # --help is the one output every console script has: cut it after 64 bytes.
    argv, env = _argv_env(script, mode, ["--help"])
    out = tmp_path / "out"
    with open(out, "wb") as f:
        r = subprocess.run(argv, stdout=f, stderr=subprocess.PIPE, env=env, cwd=str(REPO), timeout=120,
                           preexec_fn=_limit_fsize(64))  # fmt: skip
    assert r.returncode != 0, f"{script} ({mode}) exited 0 after a short write: {out.read_bytes()!r}"
    assert r.returncode == FATAL, r.stderr
    assert "write error" in one_line(r.stderr)


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_console_script_on_a_closed_pipe_is_fatal(tmp_path, script):
    # EPIPE: kstat dies of SIGPIPE as the C command; the others exit 3 in silence
    # (click's own handling exited 1).
    argv, env = _argv_env(script, "buffered", ["--help"])
    r_fd, w_fd = os.pipe()
    os.close(r_fd)
    try:
        r = subprocess.run(argv, stdout=w_fd, stderr=subprocess.PIPE, env=env, cwd=str(REPO), timeout=120)
    finally:
        os.close(w_fd)
    assert (r.returncode, r.stderr) == ((-signal.SIGPIPE if script == "kstat" else FATAL), b"")


@contextlib.contextmanager
def full_tmpfs(path: Path) -> Iterator[Path]:
    """A 4 KiB tmpfs: the first write of more than a page is cut short, the next is ENOSPC."""
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(path)], capture_output=True, timeout=60)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=60)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("args", [["-j"], ["-p"], ["--ndjson"], ["--describe"], ["-j", "--describe"]])
def test_kstat_to_a_full_disk_is_an_error(tmp_path, mode, args):
    argv, env = _argv_env("kstat", mode, args)
    env.pop("KSTATPY_DISABLE_PLUGIN_AUTOLOAD")
    env.pop("KSTAT_SOCKET", None)
    env["KSTATPY_DISABLED_PROVIDERS"] = "vmm"
    env["XDG_RUNTIME_DIR"] = str(tmp_path / "none")
    with full_tmpfs(tmp_path / "disk") as disk:
        with open(disk / "out", "wb") as f:
            r = subprocess.run(argv, stdout=f, stderr=subprocess.PIPE, env=env, cwd=str(REPO), timeout=120)
        size = (disk / "out").stat().st_size
    assert (r.returncode, one_line(r.stderr)) == (3, "kstat: write error: No space left on device\n"), size
