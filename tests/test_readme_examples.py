"""Every ``sh`` block of the README's "Examples" runs, as a user would paste it.

Each block runs in its own ``bash -e -o pipefail``, with the directory of the
interpreter running the tests first on ``PATH`` (its ``kstat``, ``kstatd``, ``python3``),
and a private ``XDG_RUNTIME_DIR`` and ``/tmp`` names, so no block reads another's
daemon. A block fails the test on a non-zero exit, on no output, or on time.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```sh\n(.*?)^```\n", re.S | re.M)
# What each example must print: a line of its real output, so a block that runs but
# reads nothing (an empty grep, a kstat that matched nothing) still fails.
EXPECT = [
    (r"^unix:0:system_misc:ncpus\t[1-9]", r"^unix:0:system_misc:avenrun_1min\t\d", r"^cpu:0:sys:cpu_nsec_user\t\d"),
    (r"^\tavenrun_1min +\d", r'"avenrun_1min": \d+', r"^no match: exit 1$"),
    (r"cpu_ticks_idle", r"^cpu:0:sys:cpu_nsec_(user|kernel|idle)\t\d"),
    (r"^kstatpy:0:connections:current\t[1-9]", r"^ncpus [1-9]", r"^kstat_unix_ncpus\{.*\} [1-9]"),
    (r"^ncpus [1-9]",),
    (r"freed while referenced", r"^kstatd exited with status 70$", r"panic"),
]


def examples() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Examples\n", 1)[1].split("\n## ", 1)[0]
    return BLOCK.findall(section)


def test_the_readme_has_five_or_six_examples() -> None:
    assert 5 <= len(examples()) <= 6


def test_the_examples_use_no_fixed_tmp_name() -> None:
    # A fixed /tmp directory another user can create first: root pasting the block
    # wrote kstatd's stderr (2>DIR/report) through that user's symbolic link, and
    # waited forever for a kstatd that refused the directory.
    assert [b for b in examples() if "/tmp/" in b] == []


def test_the_readme_is_a_front_door() -> None:
    assert (REPO / "README.md").stat().st_size <= 15 * 1024


@pytest.mark.parametrize("index", range(len(examples())))
def test_readme_example_runs(index: int, tmp_path: Path) -> None:
    block = examples()[index]
    # The blocks' fixed /tmp names move under this test's directory.
    script = block.replace("/tmp/", f"{tmp_path}/")
    port = _free_port()
    script = script.replace("127.0.0.1:9471", f"127.0.0.1:{port}")
    bindir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KSTAT", "PYTEST"))}
    env.update(
        PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}",
        XDG_RUNTIME_DIR=str(tmp_path / "run"),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        HOME=str(tmp_path),
        TMPDIR=str(tmp_path),  # mktemp -d
    )
    (tmp_path / "run").mkdir(mode=0o700)
    # Its own session, so a block that fails with a daemon still in the background
    # leaves nothing behind: the whole group is killed.
    proc = subprocess.Popen(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        try:  # a process that left the group could still hold the pipes
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            out, err = "(a process outside the group still holds its pipes)", ""
        pytest.fail(f"README example {index + 1} did not finish within 120 s; it printed:\n{out}\n{err}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert done.returncode == 0, (
        f"README example {index + 1} exited {done.returncode}:\n{script}\n{done.stdout}\n{done.stderr}"
    )
    assert done.stdout.strip(), f"README example {index + 1} printed nothing"
    for pattern in EXPECT[index]:
        assert re.search(pattern, done.stdout, re.M), (
            f"README example {index + 1} printed no {pattern!r}:\n{done.stdout}"
        )


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_examples_need_only_what_ci_installs() -> None:
    for tool in ("bash", "curl"):
        assert shutil.which(tool), f"{tool} is not installed"
