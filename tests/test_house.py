"""The house rules the layout promises (the style guide of the design notes, issue 14).

- Imports in ``kstatpy/`` flow one way (model -> chain -> driver/instance -> ioctl ->
  server/client -> CLI): no module imports, at module level, a module that imports
  it back, directly or through others. Imports inside functions (lazy imports) and
  under ``if TYPE_CHECKING:`` do not count: they run after both modules exist.
- A module of ``kstatpy/`` or ``providers/`` has at most 400 lines, unless its
  docstring says why it needs more (a sentence naming "400 lines").
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MAX_LINES = 400


def module_name(path: Path, root: Path, package: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    # Statements that run at import time: the body, and the bodies of top-level
    # if/try/with blocks, except ``if TYPE_CHECKING:`` (its else branch does run).
    found: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                found += _module_level(node.body)
            found += _module_level(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                found += _module_level(block)
        elif isinstance(node, ast.With):
            found += _module_level(node.body)
    return found


def imports_of(source: str, name: str, is_package: bool, known: set[str]) -> set[str]:
    """The modules of ``known`` that module ``name`` imports at module level."""
    out: set[str] = set()
    for node in _module_level(ast.parse(source).body):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = name if is_package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            # "from pkg import sub" imports the submodule when there is one.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for target in targets:
            while target and target not in known:  # "import a.b.c" of a known "a.b"
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the package's modules it imports at module level."""
    files = {module_name(p, root, package): p for p in sorted(root.rglob("*.py"))}
    known = set(files)
    return {
        name: imports_of(path.read_text(encoding="utf-8"), name, path.name == "__init__.py", known)
        for name, path in files.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_the_cycle_finder_finds_cycles() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    src = (
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "import pkg.b\n"
        "from pkg import c\n"
        "from . import d\n"
        "if TYPE_CHECKING:\n    from pkg import e\n"
        "def f():\n    from pkg import g\n"
        "try:\n    from pkg.h import thing\nexcept ImportError:\n    pass\n"
    )
    known = {"pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.d", "pkg.e", "pkg.g", "pkg.h"}
    assert imports_of(src, "pkg.a", False, known) == {"pkg.b", "pkg.c", "pkg.d", "pkg.h"}


def test_kstatpy_has_no_import_cycle() -> None:
    graph = import_graph(REPO / "kstatpy", "kstatpy")
    assert "kstatpy.chain" in graph and "kstatpy.cli.kstat" in graph
    assert cycles(graph) == []


def test_providers_have_no_import_cycle() -> None:
    assert cycles(import_graph(REPO / "providers", "kstatpy_providers")) == []


def test_no_module_over_400_lines_without_a_reason() -> None:
    too_long = {}
    for folder in ("kstatpy", "providers"):
        for path in sorted((REPO / folder).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            lines = len(text.splitlines())
            if lines <= MAX_LINES:
                continue
            doc = ast.get_docstring(ast.parse(text)) or ""
            if "400 lines" not in doc:
                too_long[str(path.relative_to(REPO))] = lines
    assert too_long == {}
