"""kstatpy.kmem's addresses, history, lookup and ``::whatis`` text, one test per behaviour a surviving mutant changed.

cosmic-ray (python tests/mutate.py kmem, docs/TESTING.md) left mutants alive with
tests/test_kmem.py alone: the page spacing, the freed history's bound, the lookup's
edges, the stack records and the exact ``::whatis`` lines (docs/KMEM.md).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import types

import pytest

from kstatpy import kmem as km
from kstatpy.kmem import HEAP_BASE
from kstatpy.kmem import BadTrap
from kstatpy.kmem import FreeWhileReferenced
from kstatpy.kmem import Kmem
from kstatpy.kmem import KmemBuf
from kstatpy.kmem import KmemObject
from kstatpy.kmem import frame_symbol
from kstatpy.kmem import kmem_addr
from kstatpy.kmem import kmem_alloc_time
from kstatpy.kmem import whatis_text


class Softc(KmemObject):
    __slots__ = ("name", "minor")
    kmem_size = 1024

    def __init__(self, name: str = "", minor: int = 0) -> None:
        self.name = name
        self.minor = minor


class Plain(KmemObject):
    def __init__(self) -> None:
        self.x = 1


class Holder(KmemObject):
    """An audited holder: its ``ptr`` field is a pointer the audit follows."""

    __slots__ = ("ptr", "other")
    kmem_audit_refs = ("ptr", "other")

    def __init__(self) -> None:
        self.ptr = None
        self.other = None


# --- constants and addresses --------------------------------------------------------------


def test_heap_base_page_size_and_history_default_are_the_documented_ones() -> None:
    assert HEAP_BASE == 0xFFFFFE8BF4800000
    assert (km.PAGESHIFT, km.PAGEOFFSET) == (12, 0xFFF)
    assert km.FREED_HISTORY_BYTES == 1 << 20 and Kmem().history_bytes == 1 << 20


@pytest.mark.parametrize(("size", "spacing"), [(0, 4096), (1, 4096), (4096, 4096), (4097, 8192), (None, 4096)])
def test_buffers_are_page_spaced_by_their_rounded_size(size, spacing) -> None:
    kmem = Kmem(base=0x10000)
    a = kmem.zalloc(Softc, "a", size=size)
    b = kmem.zalloc(Softc, "b")
    assert (a.kmem_addr, b.kmem_addr - a.kmem_addr) == (0x10000, spacing)
    assert kmem.lookup(a.kmem_addr).size == (1024 if size is None else size)


def test_zalloc_passes_arguments_and_records_type_thread_and_time() -> None:
    kmem = Kmem()
    obj = kmem.zalloc(Softc, "vm", minor=7)
    assert (obj.name, obj.minor) == ("vm", 7)
    buf = kmem.lookup(obj.kmem_addr)
    assert buf.type_name == "Softc" and buf.thread == threading.get_ident()
    assert kmem_alloc_time(obj) == buf.alloc_time > 0
    assert kmem_addr(obj) == obj.kmem_addr == buf.addr


def test_objects_off_the_heap_have_address_and_time_zero() -> None:
    off = Softc("x", 1)
    assert (off.kmem_addr, kmem_addr(off), kmem_alloc_time(off)) == (0, 0, 0)
    assert (kmem_addr(object()), kmem_alloc_time(object())) == (0, 0)
    assert not Kmem().is_freed(off)


# --- the stacks ---------------------------------------------------------------------------


def _recurse(kmem: Kmem, n: int) -> Softc:
    return kmem.zalloc(Softc) if n == 0 else _recurse(kmem, n - 1)


def test_alloc_stack_starts_at_the_caller_and_keeps_eight_frames() -> None:
    kmem = Kmem()
    buf = kmem.lookup(_recurse(kmem, 20).kmem_addr)
    assert len(buf.alloc_stack) == 8
    assert all(s.startswith("test_mutants_kmem:_recurse+0x") for s in buf.alloc_stack)


def test_the_same_call_site_shares_one_stack_tuple() -> None:
    kmem = Kmem()
    a, b = (kmem.lookup(_recurse(kmem, 1).kmem_addr) for _ in range(2))
    assert a.alloc_stack == b.alloc_stack and a.alloc_stack is b.alloc_stack


def test_pluggy_frames_are_left_out_of_stacks() -> None:
    kmem = Kmem()
    g = {"__name__": "pluggy._hooks", "kmem": kmem, "Softc": Softc}
    exec("def hook_call():\n    return kmem.zalloc(Softc)\n", g)
    buf = kmem.lookup(g["hook_call"]().kmem_addr)
    assert buf.alloc_stack[0].startswith("test_mutants_kmem:test_pluggy_frames_are_left_out_of_stacks+0x")
    assert not any("hook_call" in s for s in buf.alloc_stack)


def test_free_records_the_freeing_stack_thread_and_time() -> None:
    kmem = Kmem()
    obj = kmem.zalloc(Softc)
    buf = kmem.lookup(obj.kmem_addr)
    assert (buf.free_stack, buf.free_time, buf.free_thread) == ((), 0, 0)
    kmem.free(obj)
    assert buf.free_stack[0].startswith("test_mutants_kmem:test_free_records_the_freeing_stack_thread_and_time+0x")
    assert buf.free_time >= buf.alloc_time and buf.free_thread == threading.get_ident()


def _frame(name: str | None, func: str = "f", lasti: int = 0x2A) -> types.SimpleNamespace:
    g = {} if name is None else {"__name__": name}
    return types.SimpleNamespace(f_globals=g, f_code=types.SimpleNamespace(co_name=func), f_lasti=lasti)


@pytest.mark.parametrize(
    ("module", "symbol"),
    [
        ("kstatpy.server", "kstat:f+0x2a"),
        ("kstatpy.chain", "genunix:f+0x2a"),
        ("kstatpy_providers.vmm.ops", "vmm:f+0x2a"),
        ("kstatpy_providers", "kstatpy_providers:f+0x2a"),
        ("some.pkg.mod", "mod:f+0x2a"),
        ("a.pkg.mod", "mod:f+0x2a"),  # sorts before "kstatpy_providers"
        (None, "?:f+0x2a"),
    ],
)
def test_frame_symbol_names_the_illumos_module(module, symbol) -> None:
    assert frame_symbol(_frame(module)) == symbol


# --- the records and traps ----------------------------------------------------------------


def test_kmembuf_record_repr_cache_and_free_fields() -> None:
    buf = KmemBuf(0x1000, 9, "T", ("a",), 5, 6)
    assert repr(buf) == "<KmemBuf 0x1000 T size=9 allocated>" and buf.cache == "kmem_alloc_16"
    freed = KmemBuf(0x1000, 8, "T", ("a",), 5, 6, freed=True, free_stack=("b",), free_time=7, free_thread=8)
    assert repr(freed) == "<KmemBuf 0x1000 T size=8 freed>" and freed.cache == "kmem_alloc_8"
    assert (freed.freed, freed.free_stack, freed.free_time, freed.free_thread) == (True, ("b",), 7, 8)
    assert not KmemBuf(0, 1, "T", (), 0, 0, free_stack=("b",), free_time=7).freed


@pytest.mark.parametrize(("nbytes", "cache"), [(0, 8), (1, 8), (8, 8), (9, 16), (1024, 1024), (1025, 2048)])
def test_cache_is_the_size_rounded_up_to_a_power_of_two(nbytes, cache) -> None:
    assert KmemBuf(0, nbytes, "T", (), 0, 0).cache == f"kmem_alloc_{cache}"


def test_trap_message_and_field_offsets() -> None:
    kmem = Kmem(base=0x100000)
    obj = kmem.zalloc(Softc, "a", 1)
    plain = kmem.zalloc(Plain)
    kmem.free(obj)
    kmem.free(plain)
    assert obj.__class__.__name__ == "freed Softc" and obj.__class__.__module__ == __name__
    for access, what, offset in [
        (lambda: obj.name, "read name", 0),
        (lambda: obj.minor, "read minor", 8),
        (lambda: setattr(obj, "minor", 2), "write minor", 8),
        (lambda: delattr(obj, "name"), "write name", 0),
        (lambda: plain.x, "read x", 8 * (ord("x") % 64)),
        (lambda: plain.xy, "read xy", 8 * ((ord("x") + ord("y")) % 64)),
    ]:
        with pytest.raises(BadTrap) as info:
            access()
        base = 0x100000 if " x" not in what else 0x100000 + 4096
        trap = info.value
        assert (trap.what, trap.addr, trap.ksp) == (what, base + offset, None)
        assert str(trap) == f"BAD TRAP: {what} at addr=0x{base + offset:x}"


def test_one_poisoned_class_per_class() -> None:
    kmem = Kmem()
    a, b = kmem.zalloc(Softc), kmem.zalloc(Softc)
    kmem.free(a)
    kmem.free(b)
    assert a.__class__ is b.__class__ and issubclass(a.__class__, Softc)


def test_free_calls_the_scheduler_hook() -> None:
    kmem = Kmem()
    seen: list[str] = []
    kmem.sync = seen.append
    kmem.free(kmem.zalloc(Softc))
    assert seen == ["kmem_free"]


def test_audit_and_lockorder_switches() -> None:
    assert Kmem().witness is None and Kmem(lockorder=False, audit=True).witness is None
    assert Kmem(audit=True).witness is not None and Kmem(lockorder=True).witness is not None


def test_free_while_referenced_counts_holders_and_keeps_a_deeper_stack() -> None:
    kmem = Kmem(audit=True, lockorder=False)
    target = kmem.zalloc(Softc)
    h1, h2 = kmem.zalloc(Holder), kmem.zalloc(Holder)
    h1.ptr = h1.other = target  # one holder through two fields
    h2.ptr = target
    with pytest.raises(FreeWhileReferenced) as info:
        kmem.free(target)
    trap = info.value
    assert trap.what == "kmem_free while 2 kstat(s) point into it" and len(trap.refs) == 3
    assert len(trap.free_stack) == 12 and trap.free_stack[0].startswith(
        "test_mutants_kmem:test_free_while_referenced_counts_holders_and_keeps_a_deeper_stack+0x"
    )
    assert not kmem.is_freed(target)
    h1.ptr = h1.other = h2.ptr = None
    kmem.free(target)
    with pytest.raises(BadTrap, match="double free"):
        kmem.free(target)


def test_a_freed_holder_leaves_the_index() -> None:
    kmem = Kmem(audit=True, lockorder=False)
    target = kmem.zalloc(Softc)
    holder = kmem.zalloc(Holder)
    holder.ptr = target
    kmem.free(holder)
    kmem.free(target)  # the freed holder no longer points anywhere
    assert kmem.is_freed(target)


# --- the freed history and lookup ---------------------------------------------------------


def _alloc_free(kmem: Kmem) -> KmemBuf:
    obj = kmem.zalloc(Softc)
    buf = kmem.lookup(obj.kmem_addr)
    kmem.free(obj)
    return buf


def test_history_keeps_exactly_its_bound_of_bytes() -> None:
    kmem = Kmem()
    bufs: list[KmemBuf] = []
    for i in range(2):  # one call site: both records cost the same
        bufs.append(_alloc_free(kmem))
        if i == 0:
            cost = kmem._freed_bytes
            kmem.history_bytes = cost  # exactly one record
    first, second = bufs
    assert kmem.lookup(first.addr) is None and kmem.lookup(second.addr) is second  # at the bound, kept
    assert kmem.buffers() == [second] and kmem._freed_bytes == cost
    live = kmem.zalloc(Softc)
    assert [b.addr for b in kmem.buffers()] == [second.addr, live.kmem_addr]


def test_history_cost_counts_the_record_and_both_stacks() -> None:
    kmem = Kmem()
    obj = _recurse(kmem, 3)
    freed = kmem.lookup(obj.kmem_addr)
    kmem.free(obj)
    parts = [freed, freed._free, freed.alloc_stack, freed.free_stack, *freed.alloc_stack, *freed.free_stack]
    assert kmem._freed_bytes == sum(map(sys.getsizeof, parts))


def test_history_zero_forgets_at_once_but_the_object_still_traps() -> None:
    kmem = Kmem(history_bytes=0)
    obj = kmem.zalloc(Softc)
    addr = obj.kmem_addr
    kmem.free(obj)
    assert kmem.lookup(addr) is None and kmem.buffers() == [] and kmem._freed_bytes == 0
    with pytest.raises(BadTrap):
        _ = obj.name


def test_lookup_edges() -> None:
    kmem = Kmem(base=0x100000)
    big = kmem.zalloc(Softc, size=3 * 4096)
    empty = kmem.zalloc(Softc, size=0)
    small = kmem.zalloc(Softc, size=100)
    b = big.kmem_addr
    assert kmem.lookup(b + 2 * 4096 + 5) is kmem.lookup(b)  # a later page of a big buffer
    assert kmem.lookup(b + 3 * 4096 - 1).addr == b
    assert kmem.lookup(empty.kmem_addr).addr == empty.kmem_addr  # size 0 still holds its address
    assert kmem.lookup(empty.kmem_addr + 1) is None
    assert kmem.lookup(small.kmem_addr + 99).addr == small.kmem_addr
    assert kmem.lookup(small.kmem_addr + 100) is None
    assert kmem.lookup(b - 1) is None and kmem.lookup(0) is None


# --- ::whatis -----------------------------------------------------------------------------


def test_whatis_text_lines_allocated_and_freed() -> None:
    buf = KmemBuf(0x2000, 0x30, "Softc", ("genunix:a+0x1", "kstat:b+0x2"), 0xABC, 0x99)
    assert whatis_text(0x2010, buf) == "\n".join(
        [
            "2010 is 2000+10, allocated from kmem_alloc_64 (Softc):",
            "            ADDR TYPE            START              END             SIZE",
            "                                THREAD        TIMESTAMP",
            f"{0x2000:16x} ALLC {0x2000:16x} {0x2030:16x} {48:16d}",
            f"{'':16s} {0x99:21x} {0xABC:16x}",
            "                 genunix:a+0x1",
            "                 kstat:b+0x2",
        ]
    )
    buf.mark_freed(("vmm:c+0x3",), 0xDEF, 0x77)
    assert whatis_text(0x2000, buf).splitlines() == [
        "2000 is 2000+0, freed from kmem_alloc_64 (Softc):",
        "            ADDR TYPE            START              END             SIZE",
        "                                THREAD        TIMESTAMP",
        f"{0x2000:16x} FREE {0x2000:16x} {0x2030:16x} {48:16d}",
        f"{'':16s} {0x77:21x} {0xDEF:16x}",
        "                 vmm:c+0x3",
    ]
    assert whatis_text(0x5, None) == "5 is not in the kmem heap"


def test_lookup_by_page_finds_the_buffer_of_that_page() -> None:
    kmem = Kmem(base=0)
    objs = [kmem.zalloc(Softc, size=4096) for _ in range(20)]  # pages 0 to 19
    for i, obj in enumerate(objs):
        assert kmem.lookup(i * 4096 + 4).addr == obj.kmem_addr == i * 4096
    for addr in (1, 16, 48):  # in page 0, whatever other pages the address's digits name
        assert kmem.lookup(addr) is kmem.lookup(0) is not None


def test_a_crash_dump_record_freed_without_a_free_time_has_time_zero() -> None:
    buf = KmemBuf(0x1000, 8, "T", (), 5, 6, freed=True, cache="kmem_alloc_8")
    assert (buf.freed, buf.free_stack, buf.free_time, buf.free_thread) == (True, (), 0, 0)


def test_importing_kmem_does_not_import_typing() -> None:
    # The embedded kstat's start-up never imports typing (kmem's TYPE_CHECKING is its own).
    code = "import sys, kstatpy.kmem; print('typing' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"


def test_a_freed_object_traps_every_name_but_its_class() -> None:
    kmem = Kmem()
    obj = kmem.zalloc(Softc)
    kmem.free(obj)
    assert getattr(obj, "".join(["__cl", "ass__"])).__name__ == "freed Softc"  # an equal, not interned, name
    with pytest.raises(BadTrap, match="read A at"):  # a name sorting before "__class__"
        _ = obj.A  # type: ignore[attr-defined]


def test_the_default_buffer_size_is_64() -> None:
    kmem = Kmem()
    buf = kmem.lookup(kmem.zalloc(Plain).kmem_addr)
    assert (buf.size, buf.cache) == (64, "kmem_alloc_64")


def test_whatis_text_of_a_big_buffer_at_a_low_address() -> None:
    buf = KmemBuf(0x1000, 0x3000, "Big", (), 1, 2)
    lines = whatis_text(0x2010, buf).splitlines()
    assert lines[0] == "2010 is 1000+1010, allocated from kmem_alloc_16384 (Big):"
    assert lines[3] == f"{0x1000:16x} ALLC {0x1000:16x} {0x4000:16x} {0x3000:16d}"


def test_lookup_past_the_end_and_into_a_later_buffer() -> None:
    kmem = Kmem(base=0x100000)
    small = kmem.zalloc(Softc, size=100)
    big = kmem.zalloc(Softc, size=3 * 4096)
    assert kmem.lookup(small.kmem_addr + 200) is None  # past the end, in the same page
    assert kmem.lookup(big.kmem_addr + 2 * 4096 + 5).addr == big.kmem_addr  # a later page, by bisect
