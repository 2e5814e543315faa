"""Every document the README, a command's ``--help``, a docstring or a doc page cites exists.

A citation is a path ending in ``.md`` (``docs/PROTOCOL.md``, ``README.md``). In the
README, ``--help`` texts and Python sources it is resolved from the repository root;
in ``docs/*.md`` from the page's own folder (relative links). Markdown link texts are
not citations, their targets are.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.console_scripts import require_script

REPO = Path(__file__).resolve().parent.parent
# A path segment run ending in .md, not preceded by another path character, and not a
# whole string literal of code (REPO / "docs" / "X.md" joins a path; it cites nothing).
CITATION = re.compile(r"(?<![\w./-])((?:[\w.-]+/)*[\w-]+\.md)\b(?![\"'])")
LINK = re.compile(r"\[[^\]]*\]\(([^)#\s]+)(?:#[^)]*)?\)")
COMMANDS = {
    "kstat": [["--help"]],
    "kstatd": [["--help"]],
    "vmmctl": [["--help"], *([sub, "--help"] for sub in ("create", "destroy", "list", "hold", "run"))],
}


def citations(text: str) -> list[str]:
    """The .md paths ``text`` cites; a markdown link counts by its target only."""
    found = [m.group(1) for m in LINK.finditer(text) if m.group(1).endswith(".md")]
    return found + CITATION.findall(LINK.sub(" ", text))


def missing(text: str, base: Path) -> list[str]:
    """The citations of ``text`` that name no file under ``base``."""
    return sorted({c for c in citations(text) if not (base / c).is_file()})


def test_the_scanner_finds_a_missing_document() -> None:
    text = "see PROTOCOL.md §3, [the vmm page](docs/NOPE.md), [README.md](README.md), docs/KMEM.md"
    assert missing(text, REPO) == ["PROTOCOL.md", "docs/NOPE.md"]
    assert citations("a [VMM.md](docs/VMM.md) link") == ["docs/VMM.md"]
    assert citations('guide = (REPO / "docs" / "GUIDE.md").read_text()  # docs/GUIDE.md §6') == ["docs/GUIDE.md"]


def test_the_contract_documents_ship() -> None:
    for name in ("PROTOCOL.md", "VMM.md", "KMEM.md"):
        assert (REPO / "docs" / name).is_file(), name


def test_readme_cites_only_documents_in_the_repository() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert {"docs/PROTOCOL.md", "docs/VMM.md", "docs/KMEM.md"} <= set(citations(text))
    assert missing(text, REPO) == []


def test_doc_pages_cite_only_documents_in_the_repository() -> None:
    pages = sorted((REPO / "docs").glob("*.md"))
    assert pages
    bad = {p.name: missing(p.read_text(encoding="utf-8"), p.parent) for p in pages}
    assert {k: v for k, v in bad.items() if v} == {}


def test_sources_cite_only_documents_in_the_repository() -> None:
    # Docstrings and comments alike: the whole text of every Python file we ship or run.
    this = Path(__file__).resolve()
    bad = {}
    for folder in ("kstatpy", "providers", "tests", "bench", "examples"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path.resolve() == this or {"build", "dist"} & set(path.relative_to(REPO).parts):
                continue  # build output (a pip install of an example writes build/ beside it)
            gone = missing(path.read_text(encoding="utf-8"), REPO)
            if gone:
                bad[str(path.relative_to(REPO))] = gone
    assert bad == {}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_cites_only_documents_in_the_repository(command: str) -> None:
    exe = require_script(command)
    for argv in COMMANDS[command]:
        proc = subprocess.run([exe, *argv], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert missing(proc.stdout, REPO) == [], (argv, proc.stdout)


# --- anchors: a link to a section names a heading that exists ------------------------

ANCHORED = re.compile(r"\[[^\]]*\]\(([^)\s#]*)#([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading: lower case, punctuation but - and _ dropped."""
    text = heading.lstrip("#").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of ``path``'s headings (fenced code is not a heading)."""
    found: set[str] = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            base = slug(line)
            n = 0
            while (name := base if n == 0 else f"{base}-{n}") in found:
                n += 1
            found.add(name)
    return found


def dead_anchors(path: Path) -> list[str]:
    """The ``FILE#anchor`` links of ``path`` whose heading does not exist."""
    dead = []
    for target, anchor in ANCHORED.findall(path.read_text(encoding="utf-8")):
        if target.startswith(("http://", "https://")):
            continue
        page = (path.parent / target) if target else path
        if not page.is_file() or anchor not in anchors(page):
            dead.append(f"{target}#{anchor}")
    return dead


def test_the_anchor_checker_finds_a_dead_section_link(tmp_path: Path) -> None:
    (tmp_path / "A.md").write_text(
        "# Top\n\n## Rates: kstat --rate\n\n[ok](#rates-kstat---rate) [gone](#nope)\n"
        "```\n# not a heading\n```\n[code](#not-a-heading) [b](B.md#top)\n"
    )
    (tmp_path / "B.md").write_text("# Top\n")
    assert dead_anchors(tmp_path / "A.md") == ["#nope", "#not-a-heading"]


def test_every_section_link_is_alive() -> None:
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "BENCHMARKS.md", REPO / "RELIABILITY.md"]
    bad = {p.name: dead_anchors(p) for p in pages if p.is_file()}
    assert {k: v for k, v in bad.items() if v} == {}
