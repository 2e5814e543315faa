"""Issue 21: messages that say what happened, and numeric options that are finite and bounded."""

from __future__ import annotations

import subprocess
import sys

import pytest
from kstatd_fixture import REPO
from kstatd_fixture import kstatd_env

PY = sys.executable
KSTAT = [PY, "-m", "kstatpy.cli.kstat"]
KSTATD = [PY, "-m", "kstatpy.cli.kstatd"]
VMMCTL = [PY, "-m", "kstatpy_providers.vmm.vmmctl"]


def run(argv: list[str], **kw) -> subprocess.CompletedProcess[bytes]:
    env = kstatd_env()
    env.pop("KSTAT_SOCKET", None)
    return subprocess.run(argv, cwd=str(REPO), env=env, capture_output=True, timeout=60, **kw)


@pytest.mark.parametrize("option", ["--seconds", "--tick"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400", "-1"])
def test_vmmctl_run_times_are_finite_and_bounded(tmp_path, option, value):
    r = run([*VMMCTL, "run", "web0", option, value, "--socket", str(tmp_path / "none.sock")])
    assert r.returncode == 2 and option.encode() in r.stderr and b"Traceback" not in r.stderr, r


@pytest.mark.parametrize(
    ("option", "value"),
    [("--max-request", "0"), ("--max-request", "99999999999"), ("--max-connections", "0"),
     ("--max-connections", "10000000"), ("--max-reply", "99999999999"), ("--max-per-uid", "10000000"),
     ("--max-per-zone", "0"), ("--reserved-connections", "10000000"), ("--switch-interval", "0"),
     ("--switch-interval", "nan"), ("--switch-interval", "1"), ("--priv-slice", "0.5"), ("--priv-slice", "nan"),
     ("--priv-slice", "-1")],
)  # fmt: skip
def test_kstatd_sizes_and_counts_are_bounded(tmp_path, option, value):
    r = run([*KSTATD, "--socket", str(tmp_path / "k.sock"), option, value])
    assert r.returncode == 2 and option.encode() in r.stderr and b"Traceback" not in r.stderr, r
    assert not (tmp_path / "k.sock").exists()


def test_kstat_with_stdout_closed_says_so_in_process(tmp_path):
    env = kstatd_env({"XDG_RUNTIME_DIR": str(tmp_path / "none")})
    env.pop("KSTAT_SOCKET", None)
    r = subprocess.run([*KSTAT, "-p", "kstatpy:::"], cwd=str(REPO), env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=60, pass_fds=(), close_fds=True,
                       preexec_fn=lambda: __import__("os").close(1))  # fmt: skip
    assert r.returncode == 3
    assert r.stderr == b"kstat: standard output is closed; nothing can be printed\n"
