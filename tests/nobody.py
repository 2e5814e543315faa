"""Run helper processes as another local user (``nobody``) for the reliability tests.

CI runs as root; a second user comes from ``setpriv --reuid nobody --regid nogroup
--clear-groups``. The checkout and the venv may be unreadable by nobody (a clone under
root's 0700 home, a venv whose interpreter links into it), so nobody never runs them:
:func:`nobody_tree` copies what it needs, once per test session, into a fresh 0755
directory under the system's temporary directory:

    TREE/kstatpy, TREE/kstatpy_providers   the code under test (from the checkout)
    TREE/tests                             the test helpers (kstatd_fixture, providers_fixture, ...)
    TREE/site                              kstatpy's runtime dependencies (msgpack, click, ...)

and finds an interpreter nobody can execute (this one, the venv's base interpreter, or
the system's ``pythonX.Y`` of the same version) that imports kstatpy from TREE.

A second-user test that cannot run FAILS with the reason (not root, no setpriv, no
interpreter nobody can run): a skipped security test is not a passed one.
"""

from __future__ import annotations

import atexit
import functools
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from kstatd_fixture import REPO
from kstatd_fixture import kstatd_env

NOBODY_UID = 65534
AS_NOBODY = ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups"]
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", ".pytest_cache", "*.egg-info")


def _requirements(dist: importlib.metadata.Distribution) -> list[str]:
    """The names of ``dist``'s unconditional requirements (extras' left out)."""
    names = []
    for req in dist.requires or []:
        if "extra ==" in req.partition(";")[2].replace('extra=="', 'extra == "'):
            continue
        match = re.match(r"[A-Za-z0-9._-]+", req)
        if match:
            names.append(match.group(0))
    return names


def _copy_dependencies(site: Path) -> None:
    """Copy the files of kstatpy's runtime dependencies (recursively) into ``site``."""
    seen: set[str] = set()
    todo = _requirements(importlib.metadata.distribution("kstatpy"))
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in seen:
            continue
        seen.add(name)
        dist = importlib.metadata.distribution(name)
        todo += _requirements(dist)
        base = Path(str(dist.locate_file(""))).resolve()
        for f in dist.files or []:
            src = Path(str(dist.locate_file(f))).resolve()
            if not src.is_relative_to(base) or "__pycache__" in src.parts or not src.is_file():
                continue  # scripts in ../../bin, byte code
            dst = site / src.relative_to(base)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)


def _make_readable(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        os.chmod(dirpath, 0o755)
        for f in files:
            os.chmod(os.path.join(dirpath, f), 0o644)


@functools.cache
def nobody_tree() -> Path:
    """The session's world-readable copy of the code and helpers nobody runs (see the module doc)."""
    tree = Path(tempfile.mkdtemp(prefix="kstatpy-nobody-"))
    atexit.register(shutil.rmtree, tree, ignore_errors=True)
    shutil.copytree(REPO / "kstatpy", tree / "kstatpy", ignore=_IGNORE)
    shutil.copytree(REPO / "providers", tree / "kstatpy_providers", ignore=_IGNORE)
    shutil.copytree(REPO / "tests", tree / "tests", ignore=_IGNORE)
    _copy_dependencies(tree / "site")
    _make_readable(tree)
    return tree


def nobody_path() -> list[str]:
    """The PYTHONPATH entries of nobody's processes: the copy, its test helpers, its dependencies."""
    tree = nobody_tree()
    return [str(tree), str(tree / "tests"), str(tree / "site")]


def _candidates() -> list[str]:
    """Interpreters of this Python's version, this one first."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    found = [sys.executable, getattr(sys, "_base_executable", sys.executable), os.path.realpath(sys.executable)]
    for d in ("/usr/local/bin", "/usr/bin", "/bin"):
        found.append(os.path.join(d, version))
    return list(dict.fromkeys(p for p in found if os.path.isfile(p)))


_PROBE = "import sys, msgpack, click, pluggy, prometheus_client, kstatpy, kstatpy_providers, kstatd_fixture; " \
         "print(sys.version_info[:2] == {v!r} and kstatpy.__file__.startswith({t!r}))"  # fmt: skip


@functools.cache
def _interpreter() -> tuple[str | None, str]:
    """(an interpreter nobody can run that imports the copy, or None; what was tried)."""
    if os.geteuid() != 0:
        return None, "needs root to become nobody (run the tests as root, as CI does)"
    if shutil.which("setpriv") is None:
        return None, "needs setpriv (util-linux)"
    tree = nobody_tree()
    code = _PROBE.format(v=tuple(sys.version_info[:2]), t=str(tree / "kstatpy"))
    tried = []
    for python in _candidates():
        probe = subprocess.run(
            [*AS_NOBODY, python, "-s", "-c", code], cwd=str(tree), env=_env(), capture_output=True, timeout=60
        )  # fmt: skip
        if probe.returncode == 0 and probe.stdout.strip() == b"True":
            return python, ""
        tried.append(f"{python}: {(probe.stderr or probe.stdout).decode(errors='replace').strip()[-200:]}")
    return None, "no interpreter nobody can run imports kstatpy from " + str(tree) + ": " + "; ".join(tried)


def _env(env: dict[str, str] | None = None) -> dict[str, str]:
    """kstatd's environment for nobody: PYTHONPATH is the copy, never the checkout or the venv."""
    out = kstatd_env(env)
    out["PYTHONPATH"] = os.pathsep.join(nobody_path())
    out.pop("VIRTUAL_ENV", None)
    return out


def nobody_python() -> str:
    """The interpreter nobody runs; fails the running test (never skips) when there is none."""
    python, why = _interpreter()
    if python is None:
        pytest.fail(f"the second-user tests cannot run: {why}", pytrace=False)
    return python


def nobody_skip() -> None:
    """Kept for old callers: fails (no longer skips) the running test when nobody cannot run helpers."""
    nobody_python()


def run_as_nobody(
    argv: list[str], env: dict[str, str] | None = None, groups: list[int] | None = None, **kw
) -> subprocess.CompletedProcess[bytes]:
    """Run ``python argv...`` as nobody with the copy importable (cwd: the copy).

    ``groups``: nobody's supplementary gids (``setpriv --groups``) instead of none.
    """
    kw.setdefault("timeout", 60)
    prefix = AS_NOBODY if groups is None else [*AS_NOBODY[:-1], "--groups", ",".join(map(str, groups))]
    return subprocess.run([*prefix, nobody_python(), "-s", *argv], cwd=str(nobody_tree()), env=_env(env), **kw)


#: A second unprivileged local user (no passwd entry needed): the victim of tests where
#: nobody attacks a non-root caller (docs/PROTOCOL.md §9.7: root's default is /run).
VICTIM_UID = 4242


def as_victim(uid: int = VICTIM_UID) -> list[str]:
    """The setpriv prefix that runs a command as ``uid`` (group ``uid``, no other groups)."""
    nobody_skip()
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]


def popen_as_nobody(argv: list[str], env: dict[str, str] | None = None, **kw) -> subprocess.Popen[bytes]:
    """Start ``python argv...`` as nobody (cwd: the copy)."""
    return subprocess.Popen([*AS_NOBODY, nobody_python(), "-s", *argv], cwd=str(nobody_tree()), env=_env(env), **kw)


def run_as(
    prefix: list[str], argv: list[str], env: dict[str, str], timeout: float = 60, text: bool = False
) -> subprocess.CompletedProcess:
    """Run ``python argv...`` under ``prefix`` (:data:`AS_NOBODY`, :func:`as_victim`) from the
    world-readable copy, output captured: the interpreter another user can run, ``-s``, cwd
    the copy, ``env`` as given but PYTHONPATH the copy (never the checkout or the venv, which
    another user may not be able to read: a clone under root's 0700 home)."""
    e = dict(env)
    e["PYTHONPATH"] = os.pathsep.join(nobody_path())
    e.pop("VIRTUAL_ENV", None)
    return subprocess.run([*prefix, nobody_python(), "-s", *argv], cwd=str(nobody_tree()), env=e,
                          capture_output=True, timeout=timeout, text=text)  # fmt: skip


@contextmanager
def shared_dir(mode: int = 0o755) -> Iterator[str]:
    """A fresh directory outside pytest's 0700 tree, with ``mode``; removed after."""
    d = tempfile.mkdtemp(prefix="kstatpy-i13-")
    os.chmod(d, mode)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
