"""Shared fixtures: a fresh chain per test, plugin autoload off unless a test turns it on."""

from __future__ import annotations

import pytest

from kstatpy.chain import Chain


@pytest.fixture(autouse=True)
def _no_plugin_autoload(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KSTATPY_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.delenv("KSTATPY_DISABLED_PROVIDERS", raising=False)
    monkeypatch.delenv("KSTATPY_TRACE_PLUGINS", raising=False)


@pytest.fixture
def chain() -> Chain:
    return Chain()
