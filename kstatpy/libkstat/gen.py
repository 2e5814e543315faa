"""The RAW struct headers of libkstat, generated from :mod:`kstatpy.raw`'s layout table.

``<sys/sysinfo.h>`` (``cpu_stat_t`` and its parts, ``sysinfo_t``, ``vminfo_t``) and
``<sys/var.h>`` (``struct var``) with illumos' names (``uts/common/sys/sysinfo.h``,
``uts/common/sys/var.h``; the text is generated, not copied). Every member comes from a
:class:`kstatpy.raw.Field` row: ``cpu_sysinfo.cpu[2]`` is element 2 of array ``cpu`` in
the nested struct ``cpu_sysinfo`` (type ``cpu_sysinfo_t``). The table is dense and
naturally aligned (``Layout`` checks it), so the C compiler puts every member at the
table's offset; tests/test_libkstat_layout.py compiles ``offsetof`` for each row.
"""

from __future__ import annotations

from kstatpy.raw import C_TYPES
from kstatpy.raw import CPU_STAT
from kstatpy.raw import SYSINFO
from kstatpy.raw import VAR
from kstatpy.raw import VMINFO
from kstatpy.raw import Layout

__all__ = ["HEADERS", "generated_headers", "render"]

#: header path under include/ -> the layouts it declares, in order.
HEADERS: dict[str, tuple[Layout, ...]] = {
    "sys/sysinfo.h": (CPU_STAT, SYSINFO, VMINFO),
    "sys/var.h": (VAR,),
}
#: Arrays whose elements have index macros (illumos sys/sysinfo.h): prefix of each
#: element's macro (its printed name without "<array>_", upper case) and of the count.
ARRAY_MACROS = {"cpu": "CPU_", "wait": "W_"}


def _tag(struct_name: str) -> tuple[str, str | None]:
    """("cpu_stat", "cpu_stat_t") for a typedef'd struct, ("var", None) for a bare tag."""
    if struct_name.endswith("_t"):
        return struct_name[:-2], struct_name
    return struct_name, None


def _parse(member: str) -> tuple[list[str], str, int | None]:
    """``cpu_sysinfo.cpu[2]`` -> (["cpu_sysinfo"], "cpu", 2)."""
    *outer, last = member.split(".")
    if last.endswith("]"):
        name, index = last[:-1].split("[")
        return outer, name, int(index)
    return outer, last, None


def _members(layout: Layout, outer: list[str]) -> list[tuple]:
    """Members directly inside the struct at path ``outer``, in order:
    ("scalar", name, ctype, printed) | ("array", name, ctype, [printed...]) | ("struct", name)."""
    out: list[tuple] = []
    for f in layout.fields:
        path, name, index = _parse(f.member)
        if path[: len(outer)] != outer:
            continue
        if len(path) > len(outer):
            sub = path[len(outer)]
            if not out or out[-1] != ("struct", sub):
                out.append(("struct", sub))
            continue
        if index is None:
            out.append(("scalar", name, f.ctype, f.name))
        elif out and out[-1][0] == "array" and out[-1][1] == name:
            out[-1][3].append(f.name)
        else:
            out.append(("array", name, f.ctype, [f.name]))
    return out


def _struct(layout: Layout, outer: list[str], tag: str, typedef: str | None, lines: list[str]) -> None:
    members = _members(layout, outer)
    for m in members:  # nested structs first, each once
        if m[0] == "struct":
            _struct(layout, [*outer, m[1]], m[1], f"{m[1]}_t", lines)
    body = []
    for m in members:
        if m[0] == "struct":
            body.append(f"\t{m[1]}_t {m[1]};")
        elif m[0] == "scalar":
            note = f" /* kstat -p: {m[3]} */" if m[3] and m[3] != m[1] else ""
            body.append(f"\t{m[2]} {m[1]};{note}")
        else:
            _, name, ctype, printed = m
            macro = ARRAY_MACROS.get(name)
            count = f"{macro}STATES" if macro else str(len(printed))
            if macro:
                for i, p in enumerate(printed):
                    lines.append(f"#define {macro}{p.removeprefix(name + '_').upper()} {i} /* kstat -p: {p} */")
                lines.append(f"#define {count} {len(printed)}")
            body.append(f"\t{ctype} {name}[{count}];")
    head = f"typedef struct {tag} {{" if typedef else f"struct {tag} {{"
    tail = f"}} {typedef};" if typedef else "};"
    lines += [head, *body, tail, ""]


def render(path: str, layouts: tuple[Layout, ...]) -> str:
    """The text of header ``path`` declaring ``layouts``."""
    guard = "_" + path.upper().replace("/", "_").replace(".", "_")
    lines = [
        "/*",
        f" * <{path}> for libkstat (kstatpy): RAW kstat data as illumos LP64 lays it out.",
        " * GENERATED at install time from kstatpy/raw.py's layout table (kstatpy/libkstat/gen.py);",
        " * do not edit. Sizes: "
        + ", ".join(f"{(_tag(lay.struct_name)[1] or 'struct ' + lay.struct_name)} {lay.size}" for lay in layouts)
        + " bytes.",
        " */",
        f"#ifndef {guard}",
        f"#define {guard}",
        "",
        "#include <sys/kstatpy_types.h>",
        "",
    ]
    for lay in layouts:
        tag, typedef = _tag(lay.struct_name)
        _struct(lay, [], tag, typedef, lines)
    lines.append(f"#endif /* {guard} */")
    return "\n".join(lines) + "\n"


def generated_headers() -> dict[str, str]:
    """{path under include/: text} of every generated header."""
    assert set(C_TYPES) == {"uint_t", "int", "uint64_t"}  # the types kstatpy_types.h and stdint.h give
    return {path: render(path, layouts) for path, layouts in HEADERS.items()}
