"""RAW kstat layouts: the illumos structs kstat(8) decodes, as illumos LP64 lays them out.

One definition, three users: the ``system`` provider packs its RAW kstats with
:func:`pack`, the client decodes them with :func:`decode` (``KstatUser.raw_fields``),
and the ``kstat`` command prints them (``kstatpy.cli.kstat_raw``).

Each layout is a table of :class:`Field` rows in struct order: the name kstat(8)
prints, the C member it comes from, the C type and the byte offset. On LP64
(illumos amd64) ``uint_t`` and ``int`` are 4 bytes, ``uint64_t`` 8, each naturally
aligned; every struct here is a multiple of its largest member, so no field needs
padding. Multi-byte values are little-endian (amd64). Sources: illumos
``uts/common/sys/sysinfo.h`` (cpu_sysinfo_t, cpu_syswait_t, cpu_vminfo_t,
cpu_stat_t, sysinfo_t, vminfo_t), ``uts/common/sys/var.h`` (struct var), and
``cmd/stat/kstat/kstat.c`` (which members it prints, under which names).

    struct          size  kstat                      members kstat(8) does not print
    cpu_stat_t       380  cpu_stat:N:cpu_statN       __cpu_stat_lock[2] (offset 0, 8 bytes),
                                                     rw_enters, win_uo_cnt .. win_suo_cnt
    sysinfo_t         24  unix:0:sysinfo             -
    vminfo_t          48  unix:0:vminfo              -
    struct var        60  unix:0:var                 -

cpu_stat_t = { uint_t __cpu_stat_lock[2]; cpu_sysinfo_t cpu_sysinfo (offset 8, 236
bytes: 59 uint_t); cpu_syswait_t cpu_syswait (offset 244, 12 bytes: 3 int);
cpu_vminfo_t cpu_vminfo (offset 256, 124 bytes: 31 uint_t) }.

kstat(8) looks a decoder up by "module:name" with every digit removed, matching
by prefix (illumos ``cmd/stat/kstat/kstat.c``); :func:`layout_for` does the same.
"""

from __future__ import annotations

import struct
from collections import namedtuple
from collections.abc import Mapping
from collections.abc import Sequence

from kstatpy.constants import KSTAT_DATA_INT32
from kstatpy.constants import KSTAT_DATA_UINT32
from kstatpy.constants import KSTAT_DATA_UINT64

__all__ = [
    "CPU_STAT",
    "LAYOUTS",
    "SYSINFO",
    "VAR",
    "VMINFO",
    "Field",
    "Layout",
    "decode",
    "layout_for",
    "pack",
]

#: C type -> (size, struct format char, the KSTAT_DATA_* type kstat(8) prints it as)
C_TYPES: dict[str, tuple[int, str, int]] = {
    "uint_t": (4, "I", KSTAT_DATA_UINT32),
    "int": (4, "i", KSTAT_DATA_INT32),
    "uint64_t": (8, "Q", KSTAT_DATA_UINT64),
}


# collections.namedtuple, not typing.NamedTuple: the same class without importing typing.
class Field(namedtuple("Field", ("name", "member", "ctype", "offset"))):
    """One struct member: printed ``name`` (None: kstat(8) does not print it)."""

    __slots__ = ()
    name: str | None
    member: str
    ctype: str
    offset: int

    @property
    def data_type(self) -> int:
        return C_TYPES[self.ctype][2]


class Layout:
    """A struct: its fields in order, its size, and a precompiled struct.Struct."""

    def __init__(self, struct_name: str, size: int, fields: tuple[Field, ...]) -> None:
        self.struct_name = struct_name
        self.size = size
        self.fields = fields
        fmt = "<"
        pos = 0
        for f in fields:
            width, code, _ = C_TYPES[f.ctype]
            if f.offset != pos:  # the tables are dense: a hole would be a typo
                raise ValueError(f"{struct_name}.{f.member}: offset {f.offset}, expected {pos}")
            if f.offset % width:
                raise ValueError(f"{struct_name}.{f.member}: misaligned")
            fmt += code
            pos += width
        if pos != size:
            raise ValueError(f"{struct_name}: fields end at {pos}, size {size}")
        self.struct = struct.Struct(fmt)
        self.shown = tuple((i, f) for i, f in enumerate(fields) if f.name is not None)
        self.names = tuple(f.name for _, f in self.shown)
        # pack's tables: each member's position by the key it is given under, its mask
        self._index = {f.name or f.member: i for i, f in enumerate(fields)}
        self._mask = [(1 << (C_TYPES[f.ctype][0] * 8)) - 1 for f in fields]
        self._signed = frozenset(i for i, f in enumerate(fields) if f.ctype == "int")
        self._zeros = [0] * len(fields)

    def pack(self, values: Mapping[str, int]) -> bytes:
        """The struct's bytes; a member not in ``values`` (by printed name or member) is 0.

        Values wrap to the member's width (a ``uint_t`` counter wraps at 2**32, as in C).
        """
        out = self._zeros.copy()
        index, mask, signed = self._index, self._mask, self._signed
        for key, v in values.items():
            i = index.get(key)
            if i is not None:
                v &= mask[i]
                if i in signed and v >= 1 << 31:
                    v -= 1 << 32
                out[i] = v
        return self.struct.pack(*out)

    def decode(self, data: bytes) -> dict[str, int]:
        """{printed name: value} in struct order (members kstat(8) skips are left out).

        :raises ValueError: ``data`` is shorter than the struct.
        """
        if len(data) < self.size:
            raise ValueError(f"{self.struct_name}: {len(data)} bytes, need {self.size}")
        values = self.struct.unpack_from(data)
        return {f.name: values[i] for i, f in self.shown}  # type: ignore[misc]


def _dense(specs: Sequence[tuple[str | None, str, str]], start: int = 0) -> tuple[Field, ...]:
    # Offsets written out by accumulation; Layout checks them against alignment and size.
    out = []
    pos = start
    for name, member, ctype in specs:
        out.append(Field(name, member, ctype, pos))
        pos += C_TYPES[ctype][0]
    return tuple(out)


_U = "uint_t"
_SYSINFO_COUNTERS = (
    "bread bwrite lread lwrite phread phwrite pswitch trap intr syscall sysread syswrite sysfork "
    "sysvfork sysexec readch writech rcvint xmtint mdmint rawch canch outch msg sema namei ufsiget "
    "ufsdirblk ufsipage ufsinopage inodeovf fileovf procovf intrthread intrblk idlethread inv_swtch "
    "nthreads cpumigrate xcalls mutex_adenters rw_rdfails rw_wrfails modload modunload bawrite"
).split()
_SYSINFO_HIDDEN = ("rw_enters", "win_uo_cnt", "win_uu_cnt", "win_so_cnt", "win_su_cnt", "win_suo_cnt")
_VMINFO_COUNTERS = (
    "pgrec pgfrec pgin pgpgin pgout pgpgout swapin pgswapin swapout pgswapout zfod dfree scan rev "
    "hat_fault as_fault maj_fault cow_fault prot_fault softlock kernel_asflt pgrrun execpgin "
    "execpgout execfree anonpgin anonpgout anonfree fspgin fspgout fsfree"
).split()

#: cpu_stat_t (sys/sysinfo.h), 380 bytes.
CPU_STAT = Layout(
    "cpu_stat_t",
    380,
    _dense(
        [(None, "__cpu_stat_lock[0]", _U), (None, "__cpu_stat_lock[1]", _U)]
        + [(n, f"cpu_sysinfo.cpu[{i}]", _U) for i, n in enumerate(("idle", "user", "kernel", "wait"))]
        + [(n, f"cpu_sysinfo.wait[{i}]", _U) for i, n in enumerate(("wait_io", "wait_swap", "wait_pio"))]
        + [(n, f"cpu_sysinfo.{n}", _U) for n in _SYSINFO_COUNTERS]
        + [(None, f"cpu_sysinfo.{n}", _U) for n in _SYSINFO_HIDDEN]
        + [(n, f"cpu_syswait.{n}", "int") for n in ("iowait", "swap", "physio")]
        + [(n, f"cpu_vminfo.{n}", _U) for n in _VMINFO_COUNTERS]
    ),
)

#: sysinfo_t (sys/sysinfo.h), 24 bytes: accumulated once a second.
SYSINFO = Layout(
    "sysinfo_t", 24, _dense([(n, n, _U) for n in ("updates", "runque", "runocc", "swpque", "swpocc", "waiting")])
)

#: vminfo_t (sys/sysinfo.h), 48 bytes: accumulated once a second, in pages.
VMINFO = Layout(
    "vminfo_t",
    48,
    _dense([(n, n, "uint64_t") for n in ("freemem", "swap_resv", "swap_alloc", "swap_avail", "swap_free", "updates")]),
)

#: struct var (sys/var.h), 60 bytes.
VAR = Layout(
    "var",
    60,
    _dense(
        [
            (n, n, "int")
            for n in (
                "v_buf v_call v_proc v_maxupttl v_nglobpris v_maxsyspri v_clist v_maxup v_hbuf v_hmask "
                "v_pbuf v_sptmap v_maxpmem v_autoup v_bufhwm"
            ).split()
        ]
    ),
)

#: kstat(8)'s decoder table: digit-free "module:name" -> layout, in its order.
LAYOUTS: tuple[tuple[str, Layout], ...] = (
    ("cpu_stat:cpu_stat", CPU_STAT),
    ("unix:var", VAR),
    ("unix:sysinfo", SYSINFO),
    ("unix:vminfo", VMINFO),
)


def layout_for(module: str, name: str) -> Layout | None:
    """The layout kstat(8) would decode ``module:name`` with (digits removed, prefix match)."""
    key = "".join(c for c in f"{module}:{name}" if not c.isdigit())
    for entry, layout in LAYOUTS:
        if entry.startswith(key):
            return layout
    return None


def decode(module: str, name: str, data: bytes | None) -> dict[str, int] | None:
    """{statistic: value} for a decodable RAW kstat's data, None when there is no decoder
    or the data is shorter than the struct (an undecodable snapshot)."""
    layout = layout_for(module, name)
    if layout is None or data is None or len(data) < layout.size:
        return None
    return layout.decode(data)


def pack(layout: Layout, values: Mapping[str, int]) -> bytes:
    """``layout.pack(values)``: see :meth:`Layout.pack`."""
    return layout.pack(values)
