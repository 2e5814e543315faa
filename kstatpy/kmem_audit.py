"""The debug heap's reference audit: which live kstats still point into a buffer.

``Kmem(audit=True)`` (``kstatd --kmem-audit``) asks this module, at every
``kmem_free``, whether an *audited holder* still reaches the buffer being freed.
Holders are the heap objects whose class names the fields to audit in
``kmem_audit_refs``; :class:`kstatpy.kstat.Kstat` names ``ks_private``, ``ks_lock``
and ``ks_data``. Every kstat from ``kstat_create`` until the ``kstat_delete`` that
frees it is a holder: installed, INVALID (created, not installed) and lingering
kstats alike. A hit is the fatal trap of illumos 14281 caught when the bug is made,
not when a reader happens to race it.

What "points into the buffer" means (C's interior pointers, modelled)
    The buffer's *extent* is the object itself plus what is embedded in it: each
    attribute value that is a container (list, tuple, dict, set, bytearray), a lock
    (anything with ``acquire`` and ``release``) or is named in the class's
    ``kmem_embedded``, and the elements of those containers. Other heap objects
    are never part of an extent (they are buffers of their own), and neither are
    scalars (int, str, ...), which Python shares. A class that knows better sets
    ``kmem_extent`` to the exact fields embedded in it: a kstat's is ``()``, since
    its ``ks_private``, ``ks_lock`` and virtual data belong to the provider. So ``ks_private = vm``,
    ``ks_private = vm.vcpu[3]``, ``ks_lock = sc.lock`` and ``ks_data = sc.records``
    all point into the buffer of ``vm`` or ``sc``.

    A holder points into the extent when an audited field's value is in it, or,
    when the value is a tuple, dict (its values) or set, one of its first
    :data:`ELEMENTS_SEEN` elements is (``ks_private = (vm, 3)``). A list value is
    the holder's own array (a NAMED kstat's records) and is not looked into. Pointers held by
    *other* heap objects (``ks_private = sc`` with a stale ``sc.vmm_vm``) are not
    followed: the poisoned object still traps when they are used.

Cost
    The pointers are indexed as they are assigned (:class:`RefIndex`), so a free
    costs one lookup per object of its extent, whatever the size of the chain; an
    audited field's assignment costs an index update, and every other assignment
    to an audited object a Python-level ``__setattr__`` call (reads of a kstat
    stamp ``ks_snaptime``). Measured in BENCHMARKS.md ("The reference audit").
    Without the audit nothing changes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["ELEMENTS_SEEN", "EXTENT_LIMIT", "AuditRef", "RefIndex", "buffer_extent"]

#: At most this many elements of a container-valued field are looked at.
ELEMENTS_SEEN = 64
#: At most this many objects make up one buffer's extent.
EXTENT_LIMIT = 4096

_SCALARS = frozenset({int, float, complex, bool, str, bytes, type(None)})
_CONTAINERS = (list, tuple, dict, set, frozenset, bytearray)
# Field values whose elements are pointers worth following; a list is the holder's own
# array (ks_data's records), not followed.
_POINTER_SETS = frozenset({tuple, dict, set, frozenset})


@dataclass(frozen=True)
class AuditRef:
    """One pointer into a buffer being freed: ``holder.<field>`` (e.g. ``ks_private``)."""

    holder: Any
    field: str


def _attr_values(obj: Any) -> Iterable[tuple[str, Any]]:
    # The object's own fields, read without properties or __getattr__.
    seen: set[str] = set()
    for cls in type(obj).__mro__:
        for name in getattr(cls, "__slots__", ()):
            if name in ("__weakref__", "__dict__", "_kmem_buf") or name in seen:
                continue
            seen.add(name)
            try:
                yield name, object.__getattribute__(obj, name)
            except AttributeError:
                continue
    try:
        d = object.__getattribute__(obj, "__dict__")
    except AttributeError:
        return
    for name, value in list(d.items()):
        if name != "_kmem_buf":
            yield name, value


def _elements(value: Any) -> Iterable[Any]:
    if isinstance(value, dict):
        return list(value.values())[:ELEMENTS_SEEN]
    if isinstance(value, (bytearray, bytes)):
        return ()
    try:
        return list(value)[:ELEMENTS_SEEN]
    except Exception:
        return ()


def _is_lock(value: Any) -> bool:
    return hasattr(value, "acquire") and hasattr(value, "release")


def buffer_extent(obj: Any, is_heap: Callable[[Any], bool]) -> set[int]:
    """The ids of ``obj`` and of what is embedded in it (see the module docstring).

    :param is_heap: tells heap objects (never part of another buffer's extent).
    """
    extent = {id(obj)}
    exact = getattr(type(obj), "kmem_extent", None)
    if exact is not None and not exact:
        return extent
    embedded = set(exact if exact is not None else getattr(type(obj), "kmem_embedded", ()))
    for name, value in _attr_values(obj):
        if type(value) in _SCALARS or is_heap(value) or isinstance(value, type):
            continue
        if exact is not None:
            if name not in embedded:
                continue
        elif not (isinstance(value, _CONTAINERS) or _is_lock(value) or name in embedded):
            continue
        extent.add(id(value))
        if isinstance(value, _CONTAINERS):
            for elem in _elements(value):
                if type(elem) not in _SCALARS and not is_heap(elem):
                    extent.add(id(elem))
        if len(extent) >= EXTENT_LIMIT:
            break
    return extent


class RefIndex:
    """Who points where: audited holders' pointers, indexed by the object pointed at.

    A holder joins with :meth:`track` (its class is swapped for one whose
    ``__setattr__`` reports every assignment of an audited field, so the index is
    always current and a free costs a lookup per object of its extent, not a scan
    of the chain); it leaves with :meth:`untrack` before it is poisoned. Elements
    of a tuple, dict or set assigned to a field are indexed as they are at the
    assignment (a container mutated later is not seen).

    ``_lock`` guards both tables; the holder's field is assigned under it, so a
    free never sees a half-made assignment. Holders are strongly referenced, and
    so (through them) are the objects indexed: an id here is never reused.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # id(target) -> {(holder addr, field): holder}; one entry per pointer, so a holder
        # pointing at a target through two fields still does after one of them changes.
        self._by_target: dict[int, dict[tuple[int, str], Any]] = {}
        self._by_holder: dict[int, dict[str, list[tuple[int, str]]]] = {}  # addr -> {name: [(id(target), field)]}

    def track(self, holder: Any, addr: int) -> None:
        """Start auditing ``holder`` (just allocated at ``addr``) and index its fields."""
        cls = type(holder)
        with self._lock:
            fields: dict[str, list[tuple[int, str]]] = {}
            self._by_holder[addr] = fields
            for name in cls.kmem_audit_refs:
                self._index(holder, addr, fields, name, object.__getattribute__(holder, name))
        object.__setattr__(holder, "__class__", _audited(cls))

    def assign(self, holder: Any, addr: int, name: str, value: Any) -> None:
        """``holder.<name> = value`` for an audited field, re-indexed in one step."""
        with self._lock:
            fields = self._by_holder.get(addr)
            if fields is not None:
                self._forget(addr, fields.pop(name, ()))
                self._index(holder, addr, fields, name, value)
            object.__setattr__(holder, name, value)

    def untrack(self, addr: int) -> None:
        """The holder at ``addr`` is being freed: forget its pointers."""
        with self._lock:
            for pointers in self._by_holder.pop(addr, {}).values():
                self._forget(addr, pointers)

    def find(self, extent: set[int], exclude: int) -> list[AuditRef]:
        """Every pointer into ``extent`` (holder ``exclude`` aside), by holder address."""
        with self._lock:
            hits = [
                (addr, AuditRef(holder, field))
                for target in extent
                for (addr, field), holder in self._by_target.get(target, {}).items()
                if addr != exclude
            ]
        hits.sort(key=lambda h: (h[0], h[1].field))
        return [ref for _, ref in hits]

    def _index(self, holder: Any, addr: int, fields: dict[str, list[tuple[int, str]]], name: str, value: Any) -> None:
        # Under _lock.
        if type(value) in _SCALARS:
            return
        targets = [(id(value), name)]
        if type(value) in _POINTER_SETS:
            targets += [(id(e), f"{name}[{i}]") for i, e in enumerate(_elements(value)) if type(e) not in _SCALARS]
        pointers = fields.setdefault(name, [])
        for target, field in targets:
            pointers.append((target, field))
            self._by_target.setdefault(target, {})[(addr, field)] = holder

    def _forget(self, addr: int, pointers: Iterable[tuple[int, str]]) -> None:
        # Under _lock: drop the holder at addr's pointers (target, field); no empty entry stays.
        for target, field in pointers:
            entries = self._by_target.get(target)
            if entries is not None:
                entries.pop((addr, field), None)
                if not entries:
                    del self._by_target[target]


def _audited_setattr(self: Any, name: str, value: Any) -> None:
    if name in type(self).kmem_audit_refs:
        buf = object.__getattribute__(self, "_kmem_buf")
        index = getattr(buf, "audit", None)
        if index is not None:
            index.assign(self, buf.addr, name, value)
            return
    object.__setattr__(self, name, value)


_audited_classes: dict[type, type] = {}
_audited_lock = threading.Lock()


def _audited(cls: type) -> type:
    # One subclass per holder class, made once; "__slots__ = ()" keeps the layout, so
    # the swap is allowed and reads stay plain attribute reads.
    with _audited_lock:
        acls = _audited_classes.get(cls)
        if acls is None:
            acls = type(
                cls.__name__,
                (cls,),
                {"__slots__": (), "__setattr__": _audited_setattr, "__module__": cls.__module__, "__qualname__": cls.__qualname__},
            )
            _audited_classes[cls] = acls
        return acls
