"""The tests find the project's console scripts next to the interpreter, not through PATH (issue 23).

``/venv/bin/python -m pytest -q`` without an activated venv must pass: the venv's
``bin`` is then not on ``PATH``, and a test that looked ``kstat`` up there would fail
(or, worse, run another installation's ``kstat``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.console_scripts import console_script
from tests.console_scripts import require_script
from tests.kstatd_fixture import REPO

SCRIPTS = sorted(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"])


@pytest.mark.parametrize("name", SCRIPTS)
def test_scripts_resolve_next_to_the_interpreter_without_path(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert console_script(name) == str(Path(sys.executable).parent / name)
    got = subprocess.run([require_script(name), "--help"], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/nonexistent", "KSTATPY_DISABLE_PLUGIN_AUTOLOAD": "1"})  # fmt: skip
    assert got.returncode == 0, f"{name} --help with no PATH: {got.stderr[-500:]}"


def test_a_missing_script_fails_with_the_interpreter_named() -> None:
    assert console_script("kstatpy-no-such-script") is None
    with pytest.raises(AssertionError, match=r"kstatpy-no-such-script.*pip install -e"):
        require_script("kstatpy-no-such-script")


def _which_calls(tree: ast.AST) -> list[tuple[int, str]]:
    """The (line, name) of every ``shutil.which("literal")`` / ``which("literal")`` call."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            if name == "which" and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


def test_no_test_looks_a_project_script_up_on_path() -> None:
    bad = [
        f"{path.relative_to(REPO)}:{line}: which({arg!r})"
        for path in sorted((REPO / "tests").rglob("*.py"))
        for line, arg in _which_calls(ast.parse(path.read_text(), str(path)))
        if arg in SCRIPTS or arg.startswith("kstatpy")
    ]
    assert not bad, "use tests/console_scripts.py (next to sys.executable), not PATH:\n" + "\n".join(bad)


def test_the_scan_catches_a_which_call() -> None:
    assert _which_calls(ast.parse('import shutil\nK = shutil.which("kstat")\n')) == [(2, "kstat")]
