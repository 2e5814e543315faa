"""kstatpy.cred: the caller's credentials are a fixed value, compared by every field (issue 23).

cosmic-ray left 69 of 72 mutants alive with tests/test_vmm_privilege.py alone: the
defaults (a Cred() is the privileged global root), each field's place, immutability,
equality and hashing by value and exact type, of_this_process, Conn's fields.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict

import pytest

from kstatpy.constants import GLOBAL_ZONEID
from kstatpy.cred import Conn
from kstatpy.cred import Cred
from tests.kstatd_fixture import REPO


def test_defaults_are_the_privileged_global_root() -> None:
    c = Cred()
    assert (c.uid, c.gid, c.pid, c.zone, c.zoneid, c.privileged) == (0, 0, 0, "global", GLOBAL_ZONEID, True)


def test_each_field_lands_where_it_is_named() -> None:
    c = Cred(uid=1, gid=2, pid=3, zone="z", zoneid=4, privileged=False)
    assert (c.uid, c.gid, c.pid, c.zone, c.zoneid, c.privileged) == (1, 2, 3, "z", 4, False)
    assert repr(c) == "Cred(uid=1, gid=2, pid=3, zone='z', zoneid=4, privileged=False)"


def test_a_cred_cannot_be_changed_or_unset() -> None:
    c = Cred(uid=1000, privileged=False)
    with pytest.raises(AttributeError, match="cannot assign to field 'privileged': Cred is immutable"):
        c.privileged = True
    with pytest.raises(AttributeError, match="cannot delete field 'uid': Cred is immutable"):
        del c.uid
    with pytest.raises(AttributeError):
        c.other = 1  # type: ignore[attr-defined]
    assert c.privileged is False and c.uid == 1000


@pytest.mark.parametrize("field", ["uid", "gid", "pid", "zone", "zoneid", "privileged"])
def test_equal_and_hash_by_every_field(field: str) -> None:
    base = {"uid": 1, "gid": 2, "pid": 3, "zone": "z", "zoneid": 4, "privileged": False}
    other = dict(base, **{field: {"zone": "y", "privileged": True}.get(field, 99)})
    assert Cred(**base) == Cred(**base) and hash(Cred(**base)) == hash(Cred(**base))
    assert Cred(**base) != Cred(**other)
    assert len({Cred(**base), Cred(**base), Cred(**other)}) == 2


def test_a_cred_is_not_equal_to_another_type() -> None:
    c = Cred()
    assert c.__eq__((0, 0, 0, "global", GLOBAL_ZONEID, True)) is NotImplemented
    assert c != (0, 0, 0, "global", GLOBAL_ZONEID, True)

    class Sub(Cred):
        __slots__ = ()

    assert c.__eq__(Sub()) is NotImplemented  # the exact type, not a subclass


def test_of_this_process_is_privileged_only_in_the_global_zone() -> None:
    g = Cred.of_this_process()
    assert (g.uid, g.gid, g.pid, g.zone, g.zoneid, g.privileged) == (
        os.getuid(), os.getgid(), os.getpid(), "global", GLOBAL_ZONEID, True)  # fmt: skip
    z = Cred.of_this_process("web", 5)
    assert (z.zone, z.zoneid, z.privileged) == ("web", 5, False)
    assert Cred.of_this_process("odd", GLOBAL_ZONEID - 1).privileged is False  # only the global zone's id


def test_conn_keeps_its_cred_state_id_and_packing() -> None:
    cred = Cred(uid=7)
    c = Conn(cred)
    assert (c.cred, c.id, c.packed) is not None and (c.cred is cred, c.id, c.packed) == (True, 0, False)
    assert isinstance(c.state, defaultdict) and c.state["vmm"] == {} and "vmm" in c.state
    shared: defaultdict[str, dict] = defaultdict(dict)
    d = Conn(cred, shared, id=3, packed=True)
    assert d.state is shared and (d.id, d.packed) == (3, True)
    assert repr(d) == f"Conn(cred={cred!r}, state={shared!r}, id=3, packed=True)"
    assert Conn(cred) != Conn(cred)  # compared by identity


def test_importing_cred_does_not_import_typing() -> None:
    # The embedded kstat's start-up path (kstatpy.cred's TYPE_CHECKING flag).
    code = "import sys, kstatpy.cred; print('typing' in sys.modules)"
    got = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=str(REPO), env={"PYTHONPATH": str(REPO)})  # fmt: skip
    assert (got.returncode, got.stdout) == (0, "False\n"), got.stderr
