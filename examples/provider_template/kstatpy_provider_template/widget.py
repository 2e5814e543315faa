"""The template's device state: a widget on the debug heap, and its kstat.

Kstats
    ``template:0:widgets`` NAMED, one for the provider: ``live`` (widgets now) and
    ``created`` (ever), UINT64. ``ks_private`` is the provider's :class:`TemplateState`.
    ``template:<minor>:widget`` NAMED, one per widget: ``name`` (STRING), ``pokes``
    (UINT64), ``age`` (UINT64 ns since create). ``ks_private`` is the :class:`Widget`.

Who frees what
    The widget's kstat is created through the instance (``inst.kstat_create``), so the
    framework (``kstatpy.instance``) deletes it before ``kstatpy_instance_destroy``
    frees the widget, on every path (destroy, last close, dropped connection, detach).
"""

from __future__ import annotations

import time
from typing import Any

from kstatpy import KSTAT_DATA_STRING
from kstatpy import KSTAT_DATA_UINT64
from kstatpy import KSTAT_TYPE_NAMED
from kstatpy import KmemObject
from kstatpy import hookimpl
from kstatpy import kstat_named_init
from kstatpy import kstat_named_setstr

MODULE = "template"


class Widget(KmemObject):
    """One widget's state (a driver's soft state): what its kstat reads."""

    __slots__ = ("created", "name", "pokes")
    kmem_size = 128

    def __init__(self, name: str) -> None:
        self.name = name
        self.pokes = 0
        self.created = time.monotonic_ns()


class TemplateState(KmemObject):
    """The provider's own state in one chain."""

    __slots__ = ("created", "driver", "summary")
    kmem_size = 256

    def __init__(self) -> None:
        self.created = 0
        self.driver: Any = None
        self.summary: Any = None  # the template:0:widgets kstat


def widget_kstat_update(ksp: Any, rw: int) -> int:
    """ks_update of ``template:<minor>:widget``: copy the widget's counters (read only)."""
    w = ksp.ks_private
    ksp.ks_data[1].value = w.pokes
    ksp.ks_data[2].value = time.monotonic_ns() - w.created
    return 0


def summary_kstat_update(ksp: Any, rw: int) -> int:
    """ks_update of ``template:0:widgets``."""
    st = ksp.ks_private
    ksp.ks_data[0].value = len(st.driver.instances())
    ksp.ks_data[1].value = st.created
    return 0


class WidgetOps:
    """The instance hooks of the template's ``DeviceDriver``; the framework orders them."""

    def __init__(self, state: TemplateState) -> None:
        self.state = state

    @hookimpl
    def kstatpy_instance_create(self, chain: Any, inst: Any, arg: Any) -> None:
        """Create the widget's kstat (through ``inst``), the widget, then install."""
        ksp = inst.kstat_create(MODULE, inst.minor, "widget", "misc", KSTAT_TYPE_NAMED, 3)
        kstat_named_init(ksp.ks_data[0], "name", KSTAT_DATA_STRING)
        kstat_named_init(ksp.ks_data[1], "pokes", KSTAT_DATA_UINT64)
        kstat_named_init(ksp.ks_data[2], "age", KSTAT_DATA_UINT64)
        inst.private = chain.kmem.zalloc(Widget, inst.name)
        kstat_named_setstr(ksp.ks_data[0], inst.name)
        ksp.ks_private = inst.private
        ksp.ks_update = widget_kstat_update
        chain.kstat_install(ksp)
        self.state.created += 1

    @hookimpl
    def kstatpy_instance_destroy(self, chain: Any, inst: Any) -> None:
        """Free the widget: its kstat is already gone (the framework's guarantee)."""
        if inst.private is not None:
            chain.kmem.free(inst.private)
            inst.private = None
