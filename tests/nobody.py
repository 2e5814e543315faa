"""Run helper processes as another local user (``nobody``) for the reliability tests.

CI runs as root; a second user comes from ``setpriv --reuid nobody --regid nogroup
--clear-groups``. ``needs_nobody`` skips (with the reason) where that is impossible:
not root, no setpriv, or this Python cannot be executed by nobody.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from kstatd_fixture import REPO
from kstatd_fixture import kstatd_env

NOBODY_UID = 65534
AS_NOBODY = ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups"]


@functools.cache
def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root to become nobody"
    if shutil.which("setpriv") is None:
        return "needs setpriv (util-linux)"
    probe = subprocess.run(
        [*AS_NOBODY, sys.executable, "-c", "import msgpack, click, kstatpy"],
        cwd=str(REPO), env=kstatd_env(), capture_output=True,
    )  # fmt: skip
    if probe.returncode:
        return f"nobody cannot run {sys.executable} with kstatpy: {probe.stderr.decode()[-200:]}"
    return None


needs_nobody = pytest.mark.skipif("_why_not() is not None", reason="needs a second user (nobody via setpriv)")


def nobody_skip() -> None:
    """Skip the running test with the reason when nobody cannot run helpers."""
    why = _why_not()
    if why:
        pytest.skip(why)


def run_as_nobody(argv: list[str], env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess[bytes]:
    """Run ``python argv...`` as nobody with the repository importable."""
    nobody_skip()
    return subprocess.run([*AS_NOBODY, sys.executable, *argv], cwd=str(REPO), env=kstatd_env(env), **kw)


#: A second unprivileged local user (no passwd entry needed): the victim of tests where
#: nobody attacks a non-root caller (docs/PROTOCOL.md §9.7: root's default is /run).
VICTIM_UID = 4242


def as_victim(uid: int = VICTIM_UID) -> list[str]:
    """The setpriv prefix that runs a command as ``uid`` (group ``uid``, no other groups)."""
    nobody_skip()
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]


def popen_as_nobody(argv: list[str], env: dict[str, str] | None = None, **kw) -> subprocess.Popen[bytes]:
    """Start ``python argv...`` as nobody."""
    nobody_skip()
    return subprocess.Popen([*AS_NOBODY, sys.executable, *argv], cwd=str(REPO), env=kstatd_env(env), **kw)


@contextmanager
def shared_dir(mode: int = 0o755) -> Iterator[str]:
    """A fresh directory outside pytest's 0700 tree, with ``mode``; removed after."""
    d = tempfile.mkdtemp(prefix="kstatpy-i13-")
    os.chmod(d, mode)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
