"""The project's console scripts (kstat, kstatd, vmmctl, kstatpy-mdb, ...) as the tests run them.

A script is looked up next to the interpreter running the tests
(``Path(sys.executable).parent``), never through ``PATH``: ``/venv/bin/python -m pytest``
without an activated venv must test that venv's scripts, not whatever ``PATH`` holds
(or nothing). ``sys.executable`` is not resolved: a venv's ``bin/python`` is a symlink to
the base interpreter, whose directory holds none of the venv's scripts.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def console_script(name: str) -> str | None:
    """The path of console script ``name`` next to ``sys.executable``; None when it is not there."""
    path = BIN / name
    return str(path) if path.is_file() and os.access(path, os.X_OK) else None


def require_script(name: str) -> str:
    """Like :func:`console_script`, failing the test (not skipping) when the script is missing."""
    path = console_script(name)
    assert path is not None, missing_script(name)
    return path


def missing_script(name: str) -> str:
    """The assertion message for a missing console script ``name``."""
    return f"the {name} console script is not in {BIN} (pip install -e . with {sys.executable})"
