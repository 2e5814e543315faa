"""Shared fixtures: a fresh chain per test, plugin autoload off unless a test turns it on.

Root's default socket lives under ``$KSTATPY_RUNDIR`` (else /run/kstatpy): the suite points
it at a fresh directory of its own, so a root kstatd running on the machine is never what
a test that expects "nothing at the default path" reads (docs/PROTOCOL.md §9.7).
"""

from __future__ import annotations

import os
import tempfile

import pytest

from kstatpy.chain import Chain

if not os.environ.get("KSTATPY_RUNDIR"):
    _rundir = tempfile.mkdtemp(prefix="kstatpy-run-")
    os.chmod(_rundir, 0o755)  # reachable by nobody, like /run
    os.environ["KSTATPY_RUNDIR"] = os.path.join(_rundir, "kstatpy")


@pytest.fixture(autouse=True)
def _no_plugin_autoload(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KSTATPY_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.delenv("KSTATPY_DISABLED_PROVIDERS", raising=False)
    monkeypatch.delenv("KSTATPY_TRACE_PLUGINS", raising=False)


@pytest.fixture
def chain() -> Chain:
    return Chain()
