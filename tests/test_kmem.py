"""The debug heap: addresses, poisoning, double free, ::whatis."""

from __future__ import annotations

import pytest

from kstatpy.kmem import HEAP_BASE
from kstatpy.kmem import BadTrap
from kstatpy.kmem import Kmem
from kstatpy.kmem import KmemObject


class Softc(KmemObject):
    __slots__ = ("name", "minor")
    kmem_size = 1024

    def __init__(self, name: str, minor: int) -> None:
        self.name = name
        self.minor = minor


class Plain(KmemObject):
    """A subclass with a __dict__ instead of slots."""

    def __init__(self) -> None:
        self.x = 1


def test_addresses_are_stable_kernel_like_and_unique() -> None:
    kmem = Kmem()
    a = kmem.zalloc(Softc, "a", 1)
    b = kmem.zalloc(Softc, "b", 2)
    assert a.kmem_addr == HEAP_BASE and hex(a.kmem_addr).startswith("0xfffffe")
    assert b.kmem_addr > a.kmem_addr
    addr_a = a.kmem_addr
    kmem.free(a)
    c = kmem.zalloc(Softc, "c", 3)
    assert c.kmem_addr not in (addr_a, b.kmem_addr)  # never reused


@pytest.mark.parametrize("cls_args", [(Softc, ("vm0", 1)), (Plain, ())])
def test_any_access_after_free_traps(cls_args) -> None:
    cls, args = cls_args
    kmem = Kmem()
    obj = kmem.zalloc(cls, *args)
    alias = obj
    kmem.free(obj)
    with pytest.raises(BadTrap) as info:
        _ = alias.__dict__ if cls is Plain else alias.name
    assert info.value.buf.freed and info.value.what.startswith("read")
    with pytest.raises(BadTrap, match="write"):
        alias.minor = 5
    with pytest.raises(BadTrap):
        del alias.minor
    assert kmem.is_freed(alias)
    assert isinstance(alias, cls)


def test_live_objects_do_not_trap_and_keep_values() -> None:
    kmem = Kmem()
    obj = kmem.zalloc(Softc, "vm", 4)
    other = kmem.zalloc(Softc, "vm2", 5)
    kmem.free(other)
    obj.minor += 1
    assert (obj.name, obj.minor) == ("vm", 5)
    assert not kmem.is_freed(obj)


def test_double_free_traps() -> None:
    kmem = Kmem()
    obj = kmem.zalloc(Softc, "vm", 1)
    kmem.free(obj)
    with pytest.raises(BadTrap, match="double free"):
        kmem.free(obj)


def test_free_of_foreign_object_is_refused() -> None:
    with pytest.raises(ValueError):
        Kmem().free(Softc("x", 1))


def test_whatis_allocated_interior_and_freed() -> None:
    kmem = Kmem()
    obj = kmem.zalloc(Softc, "vm", 1)
    addr = obj.kmem_addr
    text = kmem.whatis(addr + 0x10)
    assert text.startswith(f"{addr + 0x10:x} is {addr:x}+10, allocated from kmem_alloc_1024 (Softc):")
    assert "test_kmem:test_whatis_allocated_interior_and_freed+0x" in text  # the allocating stack
    kmem.free(obj)
    text = kmem.whatis(addr)
    assert text.startswith(f"{addr:x} is {addr:x}+0, freed from kmem_alloc_1024 (Softc):")
    assert " FREE " in text
    assert kmem.whatis(1234).endswith("is not in the kmem heap")


def test_trap_address_lies_inside_the_freed_buffer() -> None:
    kmem = Kmem()
    obj = kmem.zalloc(Softc, "vm", 1)
    kmem.free(obj)
    with pytest.raises(BadTrap) as info:
        _ = obj.minor
    trap = info.value
    assert trap.buf.addr <= trap.addr < trap.buf.addr + trap.buf.size
    assert kmem.lookup(trap.addr) is trap.buf
