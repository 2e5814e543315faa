"""A provider whose counters do scripted things between ``kstat --rate`` reports.

Every kstat is module ``rate``, instance 0; the values depend only on how many
times the kstat was read (``n``, from 1), so each report sees the next step.

``steady``     ``events`` counter UINT64 = 1000 x n; ``level`` gauge = 42;
               ``label`` text "steady"; ``plain`` UINT64 with no metadata = 7 x n
``wrap``       ``events`` counter UINT32: 2**32 - 500, then 500, 1500, ...: a 32-bit
               wrap between reads 1 and 2 (1000 a read)
``back``       ``events`` counter UINT64: 10**9, then 10: a 64-bit counter went back
``recreated``  ``events`` counter UINT64 = 1000 x n; deleted and created again (same
               module:instance:name, new kid and crtime, n from 1 again) by the
               first refresh after its first read
"""

from __future__ import annotations

from kstatpy import KSTAT_DATA_STRING
from kstatpy import KSTAT_DATA_UINT32
from kstatpy import KSTAT_DATA_UINT64
from kstatpy import KSTAT_TYPE_NAMED
from kstatpy import hookimpl
from kstatpy import kstat_named_init
from kstatpy.metadata import counter
from kstatpy.metadata import gauge
from kstatpy.metadata import kstat_set_meta
from kstatpy.metadata import text
from kstatpy.records import kstat_named_setstr

_KEY = "tests.providers_fixture.ratetest"


class _State:
    def __init__(self) -> None:
        self.reads: dict[str, int] = {}
        self.recreated = False
        self.kstats: dict[str, object] = {}


def _values(name: str, n: int) -> list[int]:
    if name == "wrap":
        return [(2**32 - 500 + 1000 * (n - 1)) % 2**32]
    if name == "back":
        return [10**9 if n == 1 else 10]
    return [1000 * n]


def _make(chain, st: _State, name: str) -> None:
    steady = name == "steady"
    ksp = chain.kstat_create("rate", 0, name, "misc", KSTAT_TYPE_NAMED, 4 if steady else 1, 0)
    kstat_named_init(ksp.ks_data[0], "events", KSTAT_DATA_UINT32 if name == "wrap" else KSTAT_DATA_UINT64)
    meta = {"events": counter("count", "scripted events")}
    if steady:
        kstat_named_init(ksp.ks_data[1], "level", KSTAT_DATA_UINT64)
        kstat_named_init(ksp.ks_data[2], "label", KSTAT_DATA_STRING)
        kstat_named_init(ksp.ks_data[3], "plain", KSTAT_DATA_UINT64)
        kstat_named_setstr(ksp.ks_data[2], "steady")
        ksp.ks_data[1].value = 42
        meta.update(level=gauge("count", "a constant level"), label=text("a constant label"))
    kstat_set_meta(ksp, meta)
    st.reads[name] = 0

    def update(ksp, rw):
        st.reads[name] += 1
        n = st.reads[name]
        ksp.ks_data[0].value = _values(name, n)[0]
        if steady:
            ksp.ks_data[3].value = 7 * n
        return 0

    ksp.ks_update = update
    chain.kstat_install(ksp)
    st.kstats[name] = ksp


@hookimpl
def kstatpy_attach(chain):
    st = chain.provider_data.setdefault(_KEY, _State())
    for name in ("steady", "wrap", "back", "recreated"):
        _make(chain, st, name)


@hookimpl
def kstatpy_refresh(chain):
    st = chain.provider_data.get(_KEY)
    if st is None or st.recreated or st.reads.get("recreated", 0) < 1:
        return
    st.recreated = True
    chain.kstat_delete(st.kstats.pop("recreated"))
    _make(chain, st, "recreated")


@hookimpl
def kstatpy_detach(chain):
    st = chain.provider_data.pop(_KEY, None)
    if st is not None:
        for ksp in st.kstats.values():
            chain.kstat_delete(ksp)
