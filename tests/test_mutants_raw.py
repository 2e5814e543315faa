"""kstatpy/raw.py's layouts, pack and decode at their edges (mutation testing survivors,
docs/TESTING.md): the table checks that catch a typo in a layout, the widths values
wrap to, the signed members, short data, and kstat(8)'s digit-free prefix lookup."""

from __future__ import annotations

import struct

import pytest

from kstatpy.cli.kstat_raw import decodable
from kstatpy.cli.kstat_raw import raw_stats
from kstatpy.constants import KSTAT_DATA_INT32
from kstatpy.constants import KSTAT_DATA_UINT32
from kstatpy.constants import KSTAT_DATA_UINT64
from kstatpy.raw import C_TYPES
from kstatpy.raw import CPU_STAT
from kstatpy.raw import LAYOUTS
from kstatpy.raw import SYSINFO
from kstatpy.raw import VAR
from kstatpy.raw import VMINFO
from kstatpy.raw import Field
from kstatpy.raw import Layout
from kstatpy.raw import decode
from kstatpy.raw import layout_for
from kstatpy.raw import pack


def test_c_types_are_lp64() -> None:
    assert C_TYPES == {
        "uint_t": (4, "I", KSTAT_DATA_UINT32),
        "int": (4, "i", KSTAT_DATA_INT32),
        "uint64_t": (8, "Q", KSTAT_DATA_UINT64),
    }
    assert [f.data_type for f in (CPU_STAT.fields[0], VAR.fields[0], VMINFO.fields[0])] == [
        KSTAT_DATA_UINT32, KSTAT_DATA_INT32, KSTAT_DATA_UINT64
    ]  # fmt: skip
    assert {f.data_type for f in CPU_STAT.fields if f.member.startswith("cpu_syswait.")} == {KSTAT_DATA_INT32}


def test_every_layout_is_dense_and_its_struct_matches() -> None:
    for layout in (CPU_STAT, SYSINFO, VMINFO, VAR):
        pos = 0
        for f in layout.fields:
            assert f.offset == pos, (layout.struct_name, f)
            pos += C_TYPES[f.ctype][0]
        assert pos == layout.size == layout.struct.size
        assert layout.struct.format.startswith("<")  # little-endian, no padding (amd64)
    assert [f.offset for f in SYSINFO.fields] == [0, 4, 8, 12, 16, 20]
    assert [f.offset for f in VAR.fields][:3] == [0, 4, 8] and VAR.fields[-1].offset == 56
    assert len(CPU_STAT.fields) == 2 + 59 + 3 + 31
    hidden = [f.member for f in CPU_STAT.fields if f.name is None]
    assert hidden == ["__cpu_stat_lock[0]", "__cpu_stat_lock[1]", "cpu_sysinfo.rw_enters", "cpu_sysinfo.win_uo_cnt",
                      "cpu_sysinfo.win_uu_cnt", "cpu_sysinfo.win_so_cnt", "cpu_sysinfo.win_su_cnt",
                      "cpu_sysinfo.win_suo_cnt"]  # fmt: skip
    assert CPU_STAT.shown[0] == (2, CPU_STAT.fields[2]) and len(CPU_STAT.shown) == len(CPU_STAT.names) == 87


@pytest.mark.parametrize(
    ("fields", "size", "message"),
    [
        ((Field("a", "a", "uint_t", 0), Field("b", "b", "uint_t", 8)), 12, "s.b: offset 8, expected 4"),  # a hole
        ((Field("a", "a", "uint_t", 0), Field("b", "b", "uint_t", 2)), 8, "s.b: offset 2, expected 4"),  # overlap
        ((Field("a", "a", "uint_t", 0), Field("b", "b", "uint64_t", 4)), 12, "s.b: misaligned"),
        ((Field("a", "a", "int", 0),), 8, "s: fields end at 4, size 8"),
        ((Field("a", "a", "uint64_t", 0),), 4, "s: fields end at 8, size 4"),
    ],
)
def test_a_layout_typo_is_refused(fields: tuple[Field, ...], size: int, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        Layout("s", size, fields)


def test_good_small_layouts_are_accepted() -> None:
    mixed = Layout("m", 16, (Field("a", "a", "uint_t", 0), Field("b", "b", "int", 4), Field("c", "c", "uint64_t", 8)))
    assert mixed.struct.format == "<IiQ" and mixed.names == ("a", "b", "c")
    assert mixed.decode(mixed.pack({"a": 1, "b": -2, "c": 3})) == {"a": 1, "b": -2, "c": 3}
    empty = Layout("e", 0, ())
    assert empty.pack({}) == b"" and empty.decode(b"") == {}


def test_pack_wraps_each_member_to_its_width_and_sign() -> None:
    m = Layout("m", 16, (Field("u", "u", "uint_t", 0), Field("i", "i", "int", 4), Field("q", "q", "uint64_t", 8)))
    cases = [
        ({"u": 2**32 - 1, "i": 2**31 - 1, "q": 2**64 - 1}, (2**32 - 1, 2**31 - 1, 2**64 - 1)),  # the tops
        ({"u": 2**32, "i": 2**31, "q": 2**64}, (0, -(2**31), 0)),  # one past: wrap
        ({"u": 2**32 + 7, "i": 2**32 + 7, "q": 2**64 + 7}, (7, 7, 7)),
        ({"u": -1, "i": -1, "q": -1}, (2**32 - 1, -1, 2**64 - 1)),  # C's conversions
        ({"i": -(2**31)}, (0, -(2**31), 0)),
        ({"i": 2**32 - 1}, (0, -1, 0)),
    ]
    for values, want in cases:
        assert struct.unpack("<IiQ", m.pack(values)) == want, values


def test_pack_takes_printed_names_and_members_and_ignores_the_rest() -> None:
    data = CPU_STAT.pack({"__cpu_stat_lock[1]": 9, "idle": 5, "cpu_sysinfo.bawrite": 3, "bawrite": 4, "nosuch": 1})
    words = struct.unpack_from("<4I", data)
    assert words == (0, 9, 5, 0)  # the lock by member, idle by name, user left 0
    got = CPU_STAT.decode(data)
    assert got["bawrite"] == 4 and got["idle"] == 5 and got["user"] == 0  # a printed member is keyed by its name only
    assert "__cpu_stat_lock[1]" not in got and list(got) == list(CPU_STAT.names)
    assert pack(SYSINFO, {"runocc": 2}) == SYSINFO.pack({"runocc": 2}) == struct.pack("<6I", 0, 0, 2, 0, 0, 0)
    again = SYSINFO.pack({"updates": 1})
    assert SYSINFO.pack({}) == bytes(24) and again == struct.pack("<6I", 1, 0, 0, 0, 0, 0)  # no state kept


def test_decode_needs_the_whole_struct_and_ignores_what_follows() -> None:
    data = VMINFO.pack({"freemem": 11, "updates": 12})
    assert VMINFO.decode(data + b"\xff" * 8) == VMINFO.decode(data)
    assert VMINFO.decode(data)["freemem"] == 11 and VMINFO.decode(data)["updates"] == 12
    with pytest.raises(ValueError, match=r"^vminfo_t: 47 bytes, need 48$"):
        VMINFO.decode(data[:-1])
    assert decode("unix", "vminfo", data) == VMINFO.decode(data)
    assert decode("unix", "vminfo", data[:-1]) is None and decode("unix", "vminfo", None) is None
    assert decode("unix", "system_misc", data) is None
    assert decode("unix", "vminfo", data + b"\0") == VMINFO.decode(data)
    assert raw_stats("unix", "vminfo", data)[0] == ("freemem", "11", False)
    assert raw_stats("unix", "vminfo", data[:-1]) == [] and raw_stats("unix", "vminfo", None) == []
    assert raw_stats("unix", "nosuch", data) == []
    assert [s[0] for s in raw_stats("unix", "vminfo", bytearray(data))] == list(VMINFO.names)


def test_lookup_removes_every_digit_and_matches_a_prefix_in_kstat8s_order() -> None:
    assert [name for name, _ in LAYOUTS] == ["cpu_stat:cpu_stat", "unix:var", "unix:sysinfo", "unix:vminfo"]
    assert layout_for("cpu_stat", "cpu_stat0") is CPU_STAT and layout_for("cpu_stat12", "cpu_stat") is CPU_STAT
    assert layout_for("un1ix", "sys2info") is SYSINFO and layout_for("unix", "vminfo") is VMINFO
    # kstat.c's quirks: a prefix of a table entry matches, and the first entry wins.
    assert layout_for("unix", "v") is VAR and layout_for("unix", "") is VAR
    assert layout_for("unix", "vm") is VMINFO and layout_for("cpu", "") is None
    assert layout_for("unix", "vminfo0x") is None and layout_for("unix", "sysinfo_x") is None
    assert layout_for("cpu_stat", "cpu_stat") is CPU_STAT
    assert decodable("unix", "var") and not decodable("unix", "system_misc")
