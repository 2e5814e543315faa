"""docs/WRITING-PROVIDERS.md documents every provider hook under a heading titled by its signature."""

from __future__ import annotations

import inspect
from pathlib import Path

from kstatpy import hookspecs

README = Path(__file__).resolve().parent.parent / "docs" / "WRITING-PROVIDERS.md"


def hook_headings() -> list[str]:
    out = []
    for name, fn in vars(hookspecs).items():
        if name.startswith("kstatpy_") and callable(fn):
            params = ", ".join(inspect.signature(fn).parameters)
            out.append(f"### `{name}({params})`")
    return out


def test_every_hook_has_a_readme_section() -> None:
    text = README.read_text(encoding="utf-8")
    headings = hook_headings()
    assert len(headings) >= 5
    missing = [h for h in headings if h not in text.splitlines()]
    assert missing == []


def test_readme_documents_no_hook_that_does_not_exist() -> None:
    documented = [line for line in README.read_text(encoding="utf-8").splitlines() if line.startswith("### `kstatpy_")]
    assert sorted(documented) == sorted(hook_headings())
