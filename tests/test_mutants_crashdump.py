"""kstatpy.crashdump in-process: real traps dumped, written, read back; one test per behaviour a mutant changed.

cosmic-ray (python tests/mutate.py crashdump, docs/TESTING.md) runs these instead of
test_mdb's crash fixture (a kstatd panicking, 12 s a run): the same dump is built here
from traps raised in this process (a use-after-free read, a double free, the reference
audit, the lock-order checker) and checked field by field against the module's
docstring (the dump's format), then written and loaded back through the file checks
kstatpy-mdb relies on (size cap, symbolic links, the owner of a dump beside a report).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import pytest

from kstatpy import constants as c
from kstatpy.chain import Chain
from kstatpy.constants import ALL_ZONES
from kstatpy.crashdump import CrashDumpError
from kstatpy.crashdump import _arg
from kstatpy.crashdump import build_dump
from kstatpy.crashdump import dump_path_for
from kstatpy.crashdump import load_dump
from kstatpy.crashdump import write_dump
from kstatpy.driver import read_kstat_data
from kstatpy.kmem import BadTrap
from kstatpy.kmem import FreeWhileReferenced
from kstatpy.kmem import Kmem
from kstatpy.kmem import KmemObject
from kstatpy.kmem import kmem_addr
from kstatpy.kstat import KMutex
from kstatpy.kstat import kstat_named_init
from kstatpy.lockorder import LockOrderViolation
from kstatpy.panic import format_panic
from kstatpy.panic import stack_frame_addr
from tests.providers_fixture import datalink


class Softc(KmemObject):
    __slots__ = ("count", "lock")
    kmem_size = 96

    def __init__(self) -> None:
        self.count = 0
        self.lock = KMutex()


def softc_update(ksp: Any, rw: int) -> int:
    ksp.ks_private.count += 1  # traps once ks_private was freed
    return 0


def named(chain: Chain, name: str, private: Any = None) -> Any:
    ksp = chain.kstat_create("cd", 0, name, "misc", c.KSTAT_TYPE_NAMED, 1)
    kstat_named_init(ksp.ks_data[0], "count", c.KSTAT_DATA_UINT64)
    ksp.ks_private = private
    ksp.ks_update = softc_update
    chain.kstat_install(ksp)
    return ksp


def page_fault(chain: Chain, ksp: Any) -> BadTrap:
    with pytest.raises(BadTrap) as info:
        read_kstat_data(chain, ksp.ks_kid, ALL_ZONES, None)
    return info.value


def uaf() -> tuple[Chain, Any, Softc, BadTrap]:
    chain = Chain(kmem=Kmem())
    sc = chain.kmem.zalloc(Softc)
    ksp = named(chain, "uaf", sc)
    chain.kmem.free(sc)
    return chain, ksp, sc, page_fault(chain, ksp)


# --- the dump of a use-after-free read -----------------------------------------------------


def test_a_page_fault_dump_holds_the_panic_the_stack_and_the_trap() -> None:
    chain, ksp, sc, trap = uaf()
    report = format_panic(trap, chain.kmem)
    doc = build_dump(trap, chain, report)
    assert (doc["format"], doc["version"]) == ("kstatpy-crashdump", 1)
    assert doc["report"] == report
    assert doc["panic"]["message"] == report.split("\n", 1)[0].split(": ", 1)[1]
    assert doc["panic"]["message"].startswith("BAD TRAP: type=e (#pf Page fault)")
    assert doc["panic"]["trap"] == {"what": "read count", "addr": trap.addr, "kind": "page fault"}
    assert kmem_addr(sc) <= trap.addr < kmem_addr(sc) + 96
    assert doc["panic"]["pid"] == os.getpid() and isinstance(doc["panic"]["thread"], int)
    assert doc["panic"]["software"].startswith("kstatpy (Python 3.")
    assert doc["kstat"] == kmem_addr(ksp) != 0
    assert doc["audit"] is None and "lockorder" not in doc
    stack = doc["stack"]
    assert [f["frame"] for f in stack] == [stack_frame_addr(i) for i in range(len(stack))]
    symbols = [f["symbol"] for f in stack]
    assert symbols[0].startswith("unix:trap+0x") and symbols[1] == "unix:_cmntrap+0x1cd"
    # the trap handler's frame: the poisoned object (a heap object) and the member read
    assert stack[0]["args"] == [f"{kmem_addr(sc):x}", '"count"'] and stack[1]["args"] == []
    update = next(f for f in stack if ":softc_update+0x" in f["symbol"])
    assert update["args"] == [f"{kmem_addr(ksp):x}", "0"]  # (ksp, KSTAT_READ)
    assert any(":read_kstat_data+0x" in s for s in symbols)


def test_the_dump_holds_every_kstat_with_its_zones_and_creation_stack() -> None:
    chain, ksp, sc, trap = uaf()
    doc = build_dump(trap, chain, format_panic(trap, chain.kmem))
    assert [k["ks_kid"] for k in doc["kstats"]] == [k.ks_kid for k in chain.kstats()]
    mine = next(k for k in doc["kstats"] if k["ks_name"] == "uaf")
    assert mine["addr"] == kmem_addr(ksp) and mine["ks_private"] == kmem_addr(sc)
    assert mine["zones"] == list(ksp.e_zones) and mine["zones"]
    assert mine["created"] and any(":named+0x" in s for s in mine["created"])
    assert mine["created"] == list(chain.kmem.lookup(kmem_addr(ksp)).alloc_stack)


def test_the_heap_in_the_dump_allocated_and_freed_records() -> None:
    chain, ksp, sc, trap = uaf()
    doc = build_dump(trap, chain, format_panic(trap, chain.kmem))
    bufs = {b["addr"]: b for b in doc["kmem"]["buffers"]}
    assert list(bufs) == sorted(bufs)
    freed = bufs[kmem_addr(sc)]
    rec = chain.kmem.lookup(kmem_addr(sc))
    assert freed == {
        "addr": rec.addr, "size": 96, "type": "Softc", "cache": "kmem_alloc_128", "state": "freed",
        "alloc_stack": list(rec.alloc_stack), "alloc_time": rec.alloc_time, "alloc_thread": rec.thread,
        "free_stack": list(rec.free_stack), "free_time": rec.free_time, "free_thread": rec.free_thread,
    }  # fmt: skip
    assert rec.free_time > rec.alloc_time > 0 and any(":uaf+0x" in s for s in freed["free_stack"])
    live = bufs[kmem_addr(ksp)]
    assert live["state"] == "allocated" and "free_stack" not in live and "free_time" not in live
    assert live["type"] == "Kstat" and doc["kmem"]["freed_omitted"] == 0
    assert len(bufs) == len(chain.kmem.buffers())


def test_a_double_free_and_a_trap_without_a_traceback() -> None:
    chain = Chain(kmem=Kmem())
    sc = chain.kmem.zalloc(Softc)
    chain.kmem.free(sc)
    with pytest.raises(BadTrap) as info:
        chain.kmem.free(sc)
    doc = build_dump(info.value, chain, "no colon in this line\nmore")
    assert doc["panic"]["trap"]["kind"] == "double free" and doc["kstat"] == 0
    assert doc["panic"]["message"] == "no colon in this line"
    assert doc["stack"] and doc["stack"][0]["frame"] == stack_frame_addr(0)
    bare = BadTrap(kmem_addr(sc), None, "read count")  # never raised: no frames at all
    doc = build_dump(bare, chain, "panic[cpu0]/thread=1: a: b\n")
    assert doc["stack"] == [] and doc["panic"]["message"] == "a: b"
    assert doc["panic"]["trap"]["kind"] == "page fault"


# --- the reference audit's and the lock-order checker's traps --------------------------------


def audit_trap() -> tuple[Chain, Any, Softc, FreeWhileReferenced]:
    chain = Chain(kmem=Kmem(audit=True, lockorder=False))
    sc = chain.kmem.zalloc(Softc)
    ksp = named(chain, "held", sc)
    ksp.ks_lock = sc.lock
    with pytest.raises(FreeWhileReferenced) as info:
        chain.kmem.free(sc)
    return chain, ksp, sc, info.value


def test_a_kmem_audit_dump_names_the_buffer_and_each_pointer() -> None:
    chain, ksp, sc, trap = audit_trap()
    doc = build_dump(trap, chain, format_panic(trap, chain.kmem))
    assert doc["panic"]["trap"]["kind"] == "kmem audit"
    refs = sorted((r["kstat"], r["field"].split("[")[0]) for r in doc["audit"]["refs"])
    assert doc["audit"]["buffer"] == kmem_addr(sc)
    assert refs == [(kmem_addr(ksp), "ks_lock"), (kmem_addr(ksp), "ks_private")]
    assert any(":audit_trap+0x" in f["symbol"] for f in doc["stack"])
    free = next(f for f in doc["stack"] if f["symbol"].startswith("genunix:free+0x"))
    assert free["args"] == [f"{kmem_addr(sc):x}"]  # the raised trap's own frames, with their arguments
    bare = trap.with_traceback(None)  # the stack falls back on the refused free's
    doc = build_dump(bare, chain, "")
    assert [f["symbol"] for f in doc["stack"]] == list(trap.free_stack)
    assert [f["frame"] for f in doc["stack"]] == [stack_frame_addr(i) for i in range(len(trap.free_stack))]
    assert all(f["args"] == [] for f in doc["stack"]) and doc["panic"]["message"] == ""


def lock_order_trap() -> tuple[Chain, LockOrderViolation]:
    chain = Chain(kmem=Kmem(audit=True), config={"dls_order": "8149"})
    datalink.kstatpy_attach(chain)
    dls = chain.provider_data["dls"]
    dls.create("e0")
    for k in chain.kstats():
        if k.ks_module == "dls":
            read_kstat_data(chain, k.ks_kid, ALL_ZONES, None)
    with pytest.raises(LockOrderViolation) as info:
        dls.delete("e0")
    return chain, info.value


def test_a_lock_order_dump_carries_the_cycle() -> None:
    chain, trap = lock_order_trap()
    doc = build_dump(trap, chain, format_panic(trap, chain.kmem))
    assert doc["panic"]["trap"]["kind"] == "lock order" and doc["audit"] is None
    assert doc["lockorder"]["cycle"] == [e.as_json() for e in trap.cycle]
    assert [(e["from"], e["to"]) for e in doc["lockorder"]["cycle"]] == [
        ("mutex dls_lock", "hold dls:*:link"), ("hold dls:*:link", "mutex dls_lock")]  # fmt: skip
    assert any(":delete+0x" in f["symbol"] for f in doc["stack"])
    assert any(f["args"] for f in doc["stack"])  # the raised trap's own frames, not the edge's recorded stack
    doc = build_dump(trap.with_traceback(None), chain, "")
    assert [f["symbol"] for f in doc["stack"]] == list(trap.cycle[0].stack) and doc["stack"]
    assert [f["frame"] for f in doc["stack"]] == [stack_frame_addr(i) for i in range(len(doc["stack"]))]
    assert all(f["args"] == [] for f in doc["stack"])


# --- the arguments as $C shows them ----------------------------------------------------------


def named_fn() -> None:
    """A function: shown by its name."""


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "0"), (False, "0"), (True, "1"), (0, "0"), (1, "1"), (255, "ff"), (-1, "-1"), (-255, "-ff"),
        ("", '""'), ("x" * 32, '"' + "x" * 32 + '"'), ("x" * 33, "<str>"), (named_fn, "named_fn"),
        (len, "len"), (1.5, "<float>"), (0.0, "<float>"), (1.0, "<float>"), ([1], "<list>"), (object(), "<object>"), (Softc, "Softc"),
        (json, "<module>"), (functools.partial(len), "<partial>"),  # named but not callable; callable, no name
    ],
)  # fmt: skip
def test_arguments_as_dollar_c_shows_them(value: Any, shown: str) -> None:
    assert _arg(value) == shown


def test_a_heap_object_argument_is_its_address() -> None:
    kmem = Kmem()
    sc = kmem.zalloc(Softc)
    assert _arg(sc) == f"{kmem_addr(sc):x}"
    kmem.free(sc)
    assert _arg(sc) == f"{kmem_addr(sc):x}"  # freed: read without trapping


class Plain:
    """Not on the heap: its ``self`` is left out of $C, as C has none."""

    def method(self, ksp: Any, value: int) -> None:  # a name after "self" in string order: still shown
        ksp.ks_private.count += value


def test_a_methods_self_is_left_out_unless_it_is_on_the_heap() -> None:
    chain = Chain(kmem=Kmem())
    sc = chain.kmem.zalloc(Softc)
    ksp = named(chain, "m", sc)
    chain.kmem.free(sc)
    with pytest.raises(BadTrap) as info:
        Plain().method(ksp, 7)
    doc = build_dump(info.value, chain, "")
    (frame,) = [f for f in doc["stack"] if ":method+0x" in f["symbol"]]
    assert frame["args"] == [f"{kmem_addr(ksp):x}", "7"]


# --- paths, writing ----------------------------------------------------------------------------


def test_dump_path_for() -> None:
    assert dump_path_for("/var/crash/kstatd.crash.12.0") == "/var/crash/kstatd.vmcore.12.0.json"
    assert dump_path_for(Path("d/kstatd.crash.kstatd.crash.1")) == "d/kstatd.vmcore.kstatd.crash.1.json"
    assert dump_path_for("d/my.kstatd.crash.1") == "d/my.kstatd.crash.1.json"
    assert dump_path_for("report") == "report.json"


def test_write_dump_is_one_compact_line_never_overwrites_and_loads_back(tmp_path: Path) -> None:
    chain, ksp, sc, trap = uaf()
    doc = build_dump(trap, chain, format_panic(trap, chain.kmem))
    doc["report"] += "\udcff"  # a lone surrogate (a non-UTF-8 name in the report) is escaped
    path = tmp_path / "kstatd.vmcore.1.0.json"
    assert write_dump(doc, str(path)) == path
    raw = path.read_bytes()
    assert raw.endswith(b"}\n") and raw.count(b"\n") == 1 and b'{"format":"kstatpy-crashdump",' in raw
    assert json.loads(raw) == doc
    assert os.listdir(tmp_path) == [path.name]  # no temporary file left
    assert (path.stat().st_mode & 0o777) == 0o644
    with pytest.raises(FileExistsError):
        write_dump({"other": 1}, path)
    assert path.read_bytes() == raw
    dump = load_dump(path)
    assert dump.path == str(path) and dump.doc == doc and dump.panic is dump.doc["panic"]
    assert dump.by_addr[kmem_addr(ksp)]["ks_name"] == "uaf" and dump.kstats == doc["kstats"]
    found = dump.lookup(trap.addr)
    assert found is not None and found.addr == kmem_addr(sc) and found.freed
    rec = chain.kmem.lookup(kmem_addr(sc))
    assert (found.size, found.type_name, found.cache) == (96, "Softc", "kmem_alloc_128")
    assert (found.alloc_stack, found.alloc_time, found.thread) == (rec.alloc_stack, rec.alloc_time, rec.thread)
    assert (found.free_stack, found.free_time, found.free_thread) == (rec.free_stack, rec.free_time, rec.free_thread)
    live = dump.lookup(kmem_addr(ksp))
    assert live is not None and not live.freed and live.free_stack == ()


# --- loading: lookups by address, defaults, errors ------------------------------------------


def write_doc(path: Path, **extra: Any) -> Path:
    doc = {"format": "kstatpy-crashdump", "version": 1, "panic": {}, "stack": [], "kstats": [],
           "kmem": {"buffers": []}}  # fmt: skip
    doc.update(extra)
    path.write_text(json.dumps(doc))
    return path


def test_lookup_edges_of_the_dumped_buffers(tmp_path: Path) -> None:
    bufs = [{"addr": 0x1000, "size": 16, "type": "A"}, {"addr": 0x2000, "size": 0, "type": "Z"},
            {"addr": 0x3000, "size": 32, "type": "B", "state": "freed"},
            {"addr": 0x8000, "size": 0x8000, "type": "C"}]  # fmt: skip
    dump = load_dump(write_doc(tmp_path / "d.json", kmem={"buffers": bufs}))
    addrs = (0xFFF, 0x1000, 0x100F, 0x1010, 0x1FFF, 0x2000, 0x2001, 0x3000, 0x301F, 0x3020, 0)
    found = {a: getattr(dump.lookup(a), "type_name", None) for a in addrs}
    assert found == {0xFFF: None, 0x1000: "A", 0x100F: "A", 0x1010: None, 0x1FFF: None, 0x2000: "Z",
                     0x2001: None, 0x3000: "B", 0x301F: "B", 0x3020: None, 0: None}  # fmt: skip
    assert [getattr(dump.lookup(x), "type_name", None) for x in (0x8000, 0xFFFF, 0x10000)] == ["C", "C", None]
    a, _z, b, _c = dump.buffers
    assert dump.lookup(a.addr) is a and dump.lookup(b.addr) is b  # the very int a buffer holds
    assert load_dump(write_doc(tmp_path / "e.json")).lookup(0x1000) is None  # no buffers at all: nothing, no error
    assert (a.freed, b.freed) == (False, True)
    assert (a.alloc_stack, a.alloc_time, a.thread, a.free_stack, a.free_time, a.free_thread) == ((), 0, 0, (), 0, 0)
    assert (b.free_stack, b.free_time, b.free_thread) == ((), 0, 0) and b.cache == "kmem_alloc_32"


def test_a_report_path_reads_the_dump_beside_it_only_from_the_same_owner(tmp_path: Path) -> None:
    report = tmp_path / "kstatd.crash.7.0"
    report.write_text("panic\n")
    dump = write_doc(tmp_path / "kstatd.vmcore.7.0.json", stack=[{"x": 1}])
    assert load_dump(report).path == str(dump) and load_dump(report).doc["stack"] == [{"x": 1}]
    alone = tmp_path / "kstatd.crash.8.0"  # no dump beside it: the report itself is read (not JSON)
    alone.write_text("panic\n")
    with pytest.raises(CrashDumpError, match=r"^.*kstatd\.crash\.8\.0: not a kstatpy crash dump \(not JSON"):
        load_dump(alone)
    if os.geteuid() != 0:
        return  # giving the dump another owner needs root (tests/test_mdb.py covers it the same way)
    os.chown(dump, 65534, -1)
    with pytest.raises(CrashDumpError) as info:
        load_dump(report)
    assert str(info.value) == (f"{dump}: owned by uid 65534, not by the report's uid 0; "
                               "name the dump itself if you trust it")  # fmt: skip
    assert load_dump(dump).path == str(dump)  # named itself: the user's choice
    os.chown(report, 65534, -1)
    assert load_dump(report).path == str(dump)  # both someone else's, the same someone: read
    os.chown(dump, 0, -1)  # the report someone else's, the dump root's: not the same owner either
    with pytest.raises(CrashDumpError, match="owned by uid 0, not by the report's uid 65534"):
        load_dump(report)
    os.chown(report, 0, -1)
    dump.unlink()
    os.symlink(tmp_path / "elsewhere.json", dump)  # a dangling link planted beside the report
    os.lchown(dump, 65534, -1)
    with pytest.raises(CrashDumpError, match="owned by uid 65534"):
        load_dump(report)


def test_a_dump_named_itself_never_looks_beside_it(tmp_path: Path) -> None:
    dump = write_doc(tmp_path / "kstatd.vmcore.1.0.json", stack=[1])
    write_doc(tmp_path / "kstatd.vmcore.1.0.json.json", stack=[2])
    assert load_dump(dump).doc["stack"] == [1]
    other = write_doc(tmp_path / "x", stack=[3])
    write_doc(tmp_path / "x.json", stack=[4])
    assert load_dump(other).doc["stack"] == [4]  # any other name is a report: its dump beside it wins


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff{}", "not a kstatpy crash dump (not UTF-8: invalid start byte)"),
        (b"{\n\n nope", "not a kstatpy crash dump (not JSON: Expecting property name enclosed in double quotes, line 3)"),
        (b"[" * 100_000 + b"]" * 100_000, "not a kstatpy crash dump (JSON nested too deeply)"),
        (b'{"version": ' + b"9" * 5000 + b"}", "not a kstatpy crash dump (Exceeds the limit (4300 digits) for "
         "integer string conversion: value has 5000 digits; use sys.set_int_max_str_digits() to increase the limit)"),
        (b"[]", 'not a kstatpy crash dump (no "format": "kstatpy-crashdump")'),
        (b'{"format": "kstatpy-crashdumps"}', 'not a kstatpy crash dump (no "format": "kstatpy-crashdump")'),
        (b'{"format": "kstatpy-crash", "version": 1}', 'not a kstatpy crash dump (no "format": "kstatpy-crashdump")'),
        (b'{"version": 1}', 'not a kstatpy crash dump (no "format": "kstatpy-crashdump")'),
        (b'{"format": "kstatpy-crashdump"}', "crash dump version None; this kstatpy-mdb reads version 1"),
        (b'{"format": "kstatpy-crashdump", "version": "1"}', "crash dump version '1'; this kstatpy-mdb reads version 1"),
        (b'{"format": "kstatpy-crashdump", "version": 2}', "crash dump version 2; this kstatpy-mdb reads version 1"),
        (b'{"format": "kstatpy-crashdump", "version": 1}', "damaged crash dump (missing 'kstats')"),
        (b'{"format": "kstatpy-crashdump", "version": 1, "kstats": [{}], "kmem": {"buffers": []}}',
         "damaged crash dump (missing 'addr')"),
        (b'{"format": "kstatpy-crashdump", "version": 1, "kstats": [], "kmem": []}',
         "damaged crash dump (missing list indices must be integers or slices, not str)"),
        (b'{"format": "kstatpy-crashdump", "version": 1, "kstats": [], "kmem": {"buffers": [[]]}}',
         "damaged crash dump (missing list indices must be integers or slices, not str)"),
        (b'{"format": "kstatpy-crashdump", "version": 1, "kstats": [], "kmem": {"buffers": [{"addr": 1, "size": 1,'
         b' "type": "T", "alloc_stack": 5}]}}', "damaged crash dump (missing 'int' object is not iterable)"),
    ],
)  # fmt: skip
def test_a_bad_file_is_one_line_naming_it(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "kstatd.vmcore.1.0.json"
    path.write_bytes(content)
    with pytest.raises(CrashDumpError) as info:
        load_dump(path)
    assert str(info.value) == f"{path}: {message}"


def test_older_versions_load(tmp_path: Path) -> None:
    assert load_dump(write_doc(tmp_path / "d.json", version=0)).doc["version"] == 0


def test_missing_linked_large_and_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "kstatd.vmcore.1.0.json"
    with pytest.raises(CrashDumpError) as info:
        load_dump(missing)
    assert str(info.value) == f"{missing}: no such file"
    os.symlink(write_doc(tmp_path / "real.json"), missing)
    with pytest.raises(CrashDumpError) as info:
        load_dump(missing)
    assert str(info.value) == f"{missing}: cannot read: a symbolic link (name the file it points to)"
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate((256 << 20) + 1)  # sparse: costs nothing
    with pytest.raises(CrashDumpError) as info:
        load_dump(big)
    assert str(info.value) == f"{big}: larger than 256 MiB; not a kstatpy crash dump"
    with pytest.raises(CrashDumpError) as info:
        load_dump(tmp_path)
    assert str(info.value) == f"{tmp_path}: cannot read: not a regular file"


def test_a_report_whose_dump_vanished_between_the_looks(tmp_path: Path) -> None:
    # lexists saw the dump beside the report, lstat of the report fails: one line, not a traceback.
    report = tmp_path / "kstatd.crash.1.0"
    os.symlink(tmp_path / "nowhere", tmp_path / "kstatd.vmcore.1.0.json")
    with pytest.raises(CrashDumpError) as info:
        load_dump(report)
    assert str(info.value) == f"{report}: cannot read: No such file or directory"


# --- which freed buffers a dump keeps (last: the slowest, 4,096 frees each) --------------------------------------------------------


def test_the_4096_most_recent_frees_and_every_pointed_one_are_kept() -> None:
    kmem = Kmem(history_bytes=1 << 40)  # remember every free
    first = kmem.zalloc(Softc)  # the heap's lowest address: index 0 of the bisect
    chain = Chain(kmem=kmem)
    quiet = named(chain, "quiet", first)  # never read: kept only because a kstat points into it
    sc = kmem.zalloc(Softc)
    loud = named(chain, "loud", sc)
    kmem.free(first)
    kmem.free(sc)
    old = [kmem.zalloc(Softc) for _ in range(3)]
    for o in old:
        kmem.free(o)
    recent = [kmem.zalloc(Softc) for _ in range(4096)]
    for o in recent:
        kmem.free(o)
    trap = page_fault(chain, loud)
    doc = build_dump(trap, chain, "")
    kept = {b["addr"] for b in doc["kmem"]["buffers"]}
    assert {kmem_addr(o) for o in recent} <= kept
    assert kmem_addr(first) in kept and kmem_addr(sc) in kept and kmem_addr(quiet) in kept
    assert not {kmem_addr(o) for o in old} & kept
    assert doc["kmem"]["freed_omitted"] == 3 and len(kept) == len(kmem.buffers()) - 3


def test_a_pointer_past_a_freed_buffers_end_does_not_keep_it() -> None:
    kmem = Kmem(history_bytes=1 << 40)
    chain = Chain(kmem=kmem)
    sc = kmem.zalloc(Softc)
    ksp = named(chain, "k", sc)
    kmem.free(sc)
    trap = page_fault(chain, ksp)
    trap.addr = kmem_addr(sc) + 96  # just past the buffer: inside its page, not in it
    ksp.ks_private = None
    for o in [kmem.zalloc(Softc) for _ in range(4096)]:
        kmem.free(o)
    doc = build_dump(trap, chain, "")
    assert kmem_addr(sc) not in {b["addr"] for b in doc["kmem"]["buffers"]}
    trap.addr = kmem_addr(sc) + 200  # further past it, before the next page
    assert kmem_addr(sc) not in {b["addr"] for b in build_dump(trap, chain, "")["kmem"]["buffers"]}
    trap.addr = kmem_addr(sc) + 95  # its last byte
    assert kmem_addr(sc) in {b["addr"] for b in build_dump(trap, chain, "")["kmem"]["buffers"]}


def test_a_trap_address_below_every_buffer_keeps_nothing_extra() -> None:
    kmem = Kmem(history_bytes=1 << 40)
    chain = Chain(kmem=kmem)
    early = [kmem.zalloc(Softc) for _ in range(4096)]
    last = kmem.zalloc(Softc)  # the highest address, freed first: the 4,097th most recent free
    kmem.free(last)
    for o in early:
        kmem.free(o)
    doc = build_dump(BadTrap(1, None, "read x"), chain, "")  # address 1: below the heap
    assert kmem_addr(last) not in {b["addr"] for b in doc["kmem"]["buffers"]}
    assert doc["kmem"]["freed_omitted"] == 1


def test_freed_omitted_counts_every_buffer_left_out() -> None:
    kmem = Kmem(history_bytes=1 << 40)
    chain = Chain(kmem=kmem)
    objs = [kmem.zalloc(Softc) for _ in range(2 * 4096 + 10)]
    for o in objs:
        kmem.free(o)
    doc = build_dump(BadTrap(1, None, "read x"), chain, "")
    assert doc["kmem"]["freed_omitted"] == 4096 + 10 == len(kmem.buffers()) - len(doc["kmem"]["buffers"])


class Big(KmemObject):
    __slots__ = ()
    kmem_size = 0x8000


def test_pointers_into_a_large_buffer_and_an_empty_one() -> None:
    kmem = Kmem(history_bytes=1 << 40)
    chain = Chain(kmem=kmem)
    # a buffer larger than a page at an address with its size's bit set (addr + size is not addr | size)
    big = next(b for b in (kmem.zalloc(Big) for _ in range(16)) if kmem_addr(b) & 0x8000)
    empty = kmem.zalloc(Softc, size=0)
    kmem.free(big)
    kmem.free(empty)
    for o in [kmem.zalloc(Softc) for _ in range(4096)]:
        kmem.free(o)

    def kept(addr: int) -> set[int]:
        return {b["addr"] for b in build_dump(BadTrap(addr, None, "read x"), chain, "")["kmem"]["buffers"]}

    assert kmem_addr(big) in kept(kmem_addr(big) + 0x7FF8)  # inside it, seven pages in
    assert kmem_addr(empty) in kept(kmem_addr(empty))  # a size-0 buffer still holds its own address
    assert kmem_addr(empty) not in kept(kmem_addr(empty) + 1)
