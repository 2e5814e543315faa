"""kstatpy.kmem_audit's extent and index rules, one test per behaviour a surviving mutant changed.

cosmic-ray (python tests/mutate.py kmem_audit, docs/TESTING.md) left 41 of 93 mutants
alive with tests/test_kmem_audit.py alone: the extent's edges (which fields, which
elements, the limits) and the index's bookkeeping when a field is reassigned or a
holder leaves (issue 23's "false use-after-free after a field is reassigned").
"""

from __future__ import annotations

import dataclasses
import threading

import pytest

from kstatpy.kmem_audit import ELEMENTS_SEEN
from kstatpy.kmem_audit import EXTENT_LIMIT
from kstatpy.kmem_audit import AuditRef
from kstatpy.kmem_audit import RefIndex
from kstatpy.kmem_audit import buffer_extent


def no_heap(_value: object) -> bool:
    return False


class Obj:
    """A plain object: attributes in __dict__."""


def objects(n: int) -> list[object]:
    return [object() for _ in range(n)]


# --- the extent: which fields -----------------------------------------------------------


def test_dict_fields_count_whatever_their_name_but_the_heap_link() -> None:
    o = Obj()
    o.zlist, o.Upper, o._cache = [], [], []  # after, before and before "_kmem_buf" in sort order
    buf = "".join(["_kmem", "_buf"])  # a name equal to "_kmem_buf" but not the same string object
    o.__dict__[buf] = []
    extent = buffer_extent(o, no_heap)
    assert extent == {id(o), id(o.zlist), id(o.Upper), id(o._cache)}


class Slotted:
    __slots__ = ("_kmem_buf", "unset", "items")


class MoreSlots(Slotted):
    __slots__ = ("more",)


def test_slots_of_every_class_count_and_unset_or_heap_link_slots_do_not() -> None:
    o = MoreSlots()
    o._kmem_buf, o.items, o.more = [], [], []  # "unset" stays unset
    assert buffer_extent(o, no_heap) == {id(o), id(o.items), id(o.more)}


def test_a_scalar_or_a_plain_object_field_does_not_end_the_walk() -> None:
    o = Obj()
    o.count, o.peer, o.later = 5, object(), []
    assert buffer_extent(o, no_heap) == {id(o), id(o.later)}


def test_scalars_heap_objects_and_classes_are_never_embedded() -> None:
    class Embeds:
        kmem_embedded = ("count", "child", "kind", "lock_class")

    heap = Obj()
    o = Embeds()
    o.count, o.child, o.kind, o.lock_class = 10**6, heap, Obj, threading.Condition
    assert buffer_extent(o, lambda v: v is heap) == {id(o)}


def test_a_lock_needs_both_acquire_and_release() -> None:
    class Half:
        def acquire(self) -> None: ...

    class Lock(Half):
        def release(self) -> None: ...

    o = Obj()
    o.half, o.lock = Half(), Lock()
    assert buffer_extent(o, no_heap) == {id(o), id(o.lock)}


def test_kmem_extent_names_exactly_the_embedded_fields() -> None:
    class Exact:
        kmem_extent = ("later",)

    o = Exact()
    o.first, o.later = [], object()  # a container not named, then a plain object named
    assert buffer_extent(o, no_heap) == {id(o), id(o.later)}

    class Nothing:
        kmem_extent = ()

    n = Nothing()
    n.records = []
    assert buffer_extent(n, no_heap) == {id(n)}


# --- the extent: which elements ---------------------------------------------------------


def test_elements_seen_are_the_first_elements_seen_and_never_scalars_or_heap() -> None:
    heap = Obj()
    many = objects(ELEMENTS_SEEN + 10)
    o = Obj()
    o.items = [*many[:ELEMENTS_SEEN - 2], 7, heap, *many[ELEMENTS_SEEN - 2:]]
    extent = buffer_extent(o, lambda v: v is heap)
    assert extent == {id(o), id(o.items), *(id(x) for x in many[:ELEMENTS_SEEN - 2])}
    o.items = many
    assert buffer_extent(o, no_heap) == {id(o), id(many), *(id(x) for x in many[:ELEMENTS_SEEN])}


def test_a_container_that_cannot_be_iterated_is_still_embedded() -> None:
    class Broken(list):
        def __iter__(self):
            raise RuntimeError("no iteration")

    o = Obj()
    o.broken, o.later = Broken([1]), []
    assert buffer_extent(o, no_heap) == {id(o), id(o.broken), id(o.later)}


# --- the extent: its limit ----------------------------------------------------------------


def wide(fields: list[int]) -> tuple[Obj, list[list[object]]]:
    """An object whose i-th field is a list of fields[i] distinct objects (1 + n ids each)."""
    o = Obj()
    lists = []
    for i, n in enumerate(fields):
        lists.append(objects(n))
        setattr(o, f"f{i:04d}", lists[-1])
    return o, lists


def test_the_extent_stops_growing_at_the_limit() -> None:
    o, _ = wide([10] + [ELEMENTS_SEEN] * 200)  # 13012 ids if nothing stopped it; 4096 never exactly
    assert EXTENT_LIMIT <= len(buffer_extent(o, no_heap)) <= EXTENT_LIMIT + ELEMENTS_SEEN + 1


def test_an_extent_that_reaches_the_limit_exactly_stops_there() -> None:
    per = ELEMENTS_SEEN + 1
    assert (EXTENT_LIMIT - 1) % per == 0  # 4096 = 1 + 63 fields of a list and its 64 elements
    o, lists = wide([ELEMENTS_SEEN] * ((EXTENT_LIMIT - 1) // per) + [0])
    extent = buffer_extent(o, no_heap)
    assert len(extent) == EXTENT_LIMIT and id(lists[-1]) not in extent


def test_an_extent_one_short_of_the_limit_takes_the_next_field() -> None:
    per = ELEMENTS_SEEN + 1
    full = (EXTENT_LIMIT - 1) // per - 1  # 62 fields: 4031 ids; then a list of 63: 4095
    o, lists = wide([ELEMENTS_SEEN] * full + [EXTENT_LIMIT - 3 - full * per, 0])
    extent = buffer_extent(o, no_heap)
    assert id(lists[-1]) in extent and len(extent) == EXTENT_LIMIT


# --- the index --------------------------------------------------------------------------


class Buf:
    def __init__(self, index: RefIndex, addr: int) -> None:
        self.audit, self.addr = index, addr


class Holder:
    kmem_audit_refs = ("ref", "other")

    def __init__(self, index: RefIndex, addr: int, ref: object = None) -> None:
        self.ref, self.other = ref, None
        self._kmem_buf = Buf(index, addr)
        index.track(self, addr)


def found(index: RefIndex, target: object) -> list[tuple[object, str]]:
    return [(r.holder, r.field) for r in index.find({id(target)}, exclude=-1)]


def test_a_field_set_before_tracking_is_indexed() -> None:
    index, target = RefIndex(), Obj()
    h = Holder(index, 1000, ref=target)
    assert found(index, target) == [(h, "ref")]


def test_a_reassigned_field_no_longer_points_at_its_old_target() -> None:
    index, old, new = RefIndex(), Obj(), Obj()
    h = Holder(index, 1000, ref=old)
    h.ref = new
    assert found(index, old) == [] and found(index, new) == [(h, "ref")]
    h.ref = (new, 3)
    assert found(index, new) == [(h, "ref[0]")]
    h.ref = None
    assert found(index, new) == []
    assert index._by_target == {}  # nothing left behind for a target nobody points at


def test_reassigning_one_holder_keeps_the_others_pointers() -> None:
    index, shared, other = RefIndex(), Obj(), Obj()
    a = Holder(index, 1000, ref=shared)
    b = Holder(index, 2000, ref=shared)
    a.ref = other
    assert found(index, shared) == [(b, "ref")]


def test_a_holder_pointing_twice_at_a_target_still_points_after_one_field_changes() -> None:
    index, shared = RefIndex(), Obj()
    h = Holder(index, 1000, ref=shared)
    h.other = (shared,)
    assert found(index, shared) == [(h, "other[0]"), (h, "ref")]
    h.other = None  # h.ref still points at shared: freeing shared must still trap
    assert found(index, shared) == [(h, "ref")]


def test_untrack_forgets_only_that_holder() -> None:
    index, shared = RefIndex(), Obj()
    a = Holder(index, 1000, ref=shared)
    b = Holder(index, 2000, ref=shared)
    b.other = (shared,)
    index.untrack(1000)
    assert found(index, shared) == [(b, "other[0]"), (b, "ref")]
    index.untrack(2000)
    assert found(index, shared) == [] and index._by_target == {}
    assert a.ref is shared  # untracking changes no field


def test_find_leaves_out_the_holder_being_freed_by_value() -> None:
    index, target = RefIndex(), Obj()
    addr = 10**12 + 7
    h = Holder(index, addr, ref=target)
    assert index.find({id(target)}, exclude=int(str(addr))) == []  # equal, not the same int object
    assert index.find({id(target)}, exclude=addr + 1) == [AuditRef(h, "ref")]


def test_only_the_first_elements_of_a_tuple_field_are_indexed() -> None:
    index, many = RefIndex(), objects(ELEMENTS_SEEN + 1)
    h = Holder(index, 1000, ref=tuple(many))
    assert found(index, many[ELEMENTS_SEEN - 1]) == [(h, f"ref[{ELEMENTS_SEEN - 1}]")]
    assert found(index, many[ELEMENTS_SEEN]) == []


def test_an_audit_ref_is_a_frozen_value() -> None:
    ref = AuditRef("holder", "ks_private")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ref.field = "ks_lock"  # type: ignore[misc]
    assert ref == AuditRef("holder", "ks_private") and len({ref, AuditRef("holder", "ks_private")}) == 1
