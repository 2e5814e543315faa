"""Every blocking call in tests/ names its bound (issue 23): no test leans on pytest-timeout's 300 s.

Scanned (AST of every tests/*.py): ``subprocess.run/call/check_call/check_output``
without ``timeout=``; ``.join()``, ``.wait()``, ``.acquire()``, ``.get()`` with no
argument; ``.communicate()`` without a timeout; ``.read()/.readline()/.readlines()`` of
a child's ``stdout``/``stderr``; ``os.waitpid``. A call bounded some other way (a
``select`` just before, a ``Barrier(timeout=)``, a helper with its own deadline) says
so with a ``# bounded: <why>`` comment on its line. tests/bounded.py has the helpers
(``within``, ``join``, ``wait``, ``reap``). Sockets are bounded with ``settimeout``
where they are made (reviewed by hand: see docs/TESTING.md).
"""

from __future__ import annotations

import ast

from tests.kstatd_fixture import REPO

RUNS = {"run", "call", "check_call", "check_output"}


def unbounded(source: str) -> list[tuple[int, str]]:
    """(line, what) of each blocking call in ``source`` with no bound and no ``# bounded:`` note."""
    lines = source.splitlines()
    found = []
    for n in ast.walk(ast.parse(source)):
        if not isinstance(n, ast.Call) or not isinstance(n.func, ast.Attribute):
            continue
        attr, base = n.func.attr, n.func.value
        kws = {k.arg for k in n.keywords}
        module = base.id if isinstance(base, ast.Name) else None
        if attr in RUNS and module == "subprocess" and "timeout" not in kws and None not in kws:
            what = f"subprocess.{attr} without timeout="
        elif attr in ("join", "wait", "acquire", "get") and not n.args and not kws:
            what = f".{attr}() without a timeout"
        elif attr == "communicate" and "timeout" not in kws and len(n.args) < 2:
            what = ".communicate() without a timeout"
        elif attr in ("read", "readline", "readlines") and isinstance(base, ast.Attribute) and base.attr in ("stdout", "stderr"):
            what = f"a child's pipe .{attr}() with no bound"
        elif attr == "waitpid" and module == "os":
            what = "os.waitpid"
        else:
            continue
        if not any("# bounded:" in lines[i - 1] for i in range(n.lineno, (n.end_lineno or n.lineno) + 1)):
            found.append((n.lineno, what))
    return found


def test_every_blocking_call_in_the_tests_is_bounded() -> None:
    bad = [
        f"{path.relative_to(REPO)}:{line}: {what}"
        for path in sorted((REPO / "tests").rglob("*.py"))
        if "golden" not in path.parts
        for line, what in unbounded(path.read_text())
    ]
    assert not bad, "bound these waits (tests/bounded.py) or note '# bounded: why':\n" + "\n".join(bad)


def test_the_scan_finds_each_kind_and_honours_the_note() -> None:
    src = """
import os, subprocess
subprocess.run(["x"])
t.join()
ev.wait()
proc.communicate()
proc.stdout.readline()
os.waitpid(pid, 0)
subprocess.run(["x"], timeout=5)
t.join(5)
proc.communicate(timeout=5)
proc.stdout.readline()  # bounded: select above
"""
    assert [line for line, _ in unbounded(src)] == [3, 4, 5, 6, 7, 8]
