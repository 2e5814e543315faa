"""tests/mutate.py's "only" filter: which mutants of a module a restricted run leaves out.

The filter runs on the source text and the mutants' start positions; cosmic-ray (not
installed in CI) only stores its answer, so the answer is tested here on a real module.
"""

from __future__ import annotations

import pytest

from tests.mutate import TARGETS
from tests.mutate import _definitions
from tests.mutate import outside_only

MODULE = """\
LIMIT = 1 << 10
other = 3


class Server:
    cap: int = 5

    def accept(self, n):
        return n < LIMIT

    def serve(self):
        def inner():
            return 1 + 1
        return inner()


def helper(x):
    return x * 2
"""


def test_definitions_name_classes_methods_nested_functions_and_module_constants():
    spans = _definitions(MODULE)
    assert spans["LIMIT"] == ((1, 0), (1, 15))
    assert spans["Server"] == ((5, 0), (14, 22))
    assert spans["Server.accept"] == ((8, 4), (9, 24))
    assert spans["Server.serve.inner"] == ((12, 8), (13, 24))
    assert spans["helper"] == ((17, 0), (18, 16))
    assert "cap" not in spans and "Server.cap" not in spans  # class attributes are the class's


def test_mutants_outside_the_named_definitions_are_left_out():
    mutants = [
        ("limit", (1, 10)),  # LIMIT's <<
        ("other", (2, 8)),
        ("accept-def", (8, 4)),  # the first character of accept
        ("accept", (9, 17)),  # accept's <
        ("accept-end", (9, 24)),  # just past accept's end
        ("inner", (13, 21)),  # in serve's inner function
        ("helper", (18, 13)),
    ]
    assert outside_only(MODULE, ["LIMIT", "Server.accept"], mutants) == [
        "other", "accept-end", "inner", "helper"]  # fmt: skip
    assert outside_only(MODULE, ["Server"], mutants) == ["limit", "other", "helper"]
    assert outside_only(MODULE, ["Server.serve.inner", "helper"], mutants) == [
        "limit", "other", "accept-def", "accept", "accept-end"]  # fmt: skip


def test_a_name_not_in_the_module_is_an_error_not_an_empty_run():
    with pytest.raises(ValueError, match=r"not defined in the module: Server\.acept, nothing"):
        outside_only(MODULE, ["Server.acept", "helper", "nothing"], [("x", (1, 1))])


def test_every_only_name_in_targets_is_defined():
    from tests.mutate import REPO

    for source, _files in TARGETS.values():
        if isinstance(source, dict):
            outside_only((REPO / source["file"]).read_text(), source["only"], [])  # raises on a stale name
