"""The example packages under ``examples/``, importable without installing them.

CI installs only the project and ``tests/thirdparty_provider``; tests of the examples
call :func:`use_examples` (sys.path) or pass :data:`EXAMPLE_PATHS` on PYTHONPATH to
subprocesses. ``tests/test_examples_venv.py`` installs them for real.
"""

from __future__ import annotations

import sys

from tests.kstatd_fixture import REPO

EXAMPLES = REPO / "examples"
EXAMPLE_PATHS = [str(EXAMPLES / "http_service"), str(EXAMPLES / "provider_template")]


def use_examples() -> None:
    """Make the example packages importable in this process."""
    for path in EXAMPLE_PATHS:
        if path not in sys.path:
            sys.path.append(path)
