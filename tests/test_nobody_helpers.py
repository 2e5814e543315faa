"""tests/nobody.py: the second user runs from a world-readable copy, and fails rather than skips (issue 23)."""

from __future__ import annotations

import os
import stat

import nobody
import pytest


def test_the_copy_is_world_readable_and_nobody_imports_kstatpy_from_it() -> None:
    tree = nobody.nobody_tree()
    for dirpath, _dirs, files in os.walk(tree):
        assert stat.S_IMODE(os.stat(dirpath).st_mode) & 0o005 == 0o005, dirpath
        for f in files:
            assert os.stat(os.path.join(dirpath, f)).st_mode & stat.S_IROTH, os.path.join(dirpath, f)
    code = "import os, kstatpy, kstatpy_providers.vmm, kstatd_fixture, msgpack; print(os.getuid(), kstatpy.__file__)"
    r = nobody.run_as_nobody(["-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    uid, path = r.stdout.split()
    assert int(uid) == nobody.NOBODY_UID and path == str(tree / "kstatpy" / "__init__.py")


def test_the_copy_is_the_code_under_test() -> None:
    tree = nobody.nobody_tree()
    for rel in ("kstatpy/safepath.py", "kstatpy/cli/kstatd.py"):
        assert (tree / rel).read_bytes() == (nobody.REPO / rel).read_bytes(), rel
    assert (tree / "kstatpy_providers/vmm/provider.py").read_bytes() == (nobody.REPO / "providers/vmm/provider.py").read_bytes()


def test_no_usable_interpreter_fails_the_test_instead_of_skipping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nobody, "_candidates", lambda: ["/nonexistent/python3"])
    nobody._interpreter.cache_clear()
    try:
        with pytest.raises(pytest.fail.Exception, match="the second-user tests cannot run"):
            nobody.nobody_python()
    finally:
        nobody._interpreter.cache_clear()


def test_not_root_fails_the_test_instead_of_skipping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    nobody._interpreter.cache_clear()
    try:
        with pytest.raises(pytest.fail.Exception, match="needs root"):
            nobody.nobody_python()
    finally:
        nobody._interpreter.cache_clear()
