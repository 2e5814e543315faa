"""kstat(8) output: the print passes and the default, -p, -C, -l, -p -V and -j formats.

Contract (illumos kstat(8): ``cmd/stat/kstat/kstat.c``, its print functions and output formats)
    :func:`format_report` walks the sorted instances once per selector, in
    command-line order. An instance is eligible when module, name, the decimal
    instance and the global class pattern match (evaluated in that order, so a
    lazily compiled regex is only compiled when reached). Each eligible
    instance's statistics matching the selector's statistic pattern are printed; the
    instance header comes before its first printed statistic, so an instance with
    none prints nothing. An instance matching two selectors prints twice.

Widths are C's: ``%-30.30s`` and ``%-30s`` count bytes (UTF-8), not characters.

NDJSON (``--ndjson``): one line per instance, ``{"timestamp", "module", "instance",
"name", "class", "type", "snaptime", ["reset",] "data"}``; ``timestamp`` is the
report's wall-clock time (seconds since the epoch), ``snaptime`` this read's (seconds,
monotonic); ``reset`` only with ``--rate``, as in -j.

JSON (-j) keeps the illumos layout but is valid JSON: strings are escaped for JSON
(no ``\\?``), UTF-8 stays UTF-8, control characters and undecodable bytes become
``\\u00XX``, integers are exact, and every report is a complete array.
"""

from __future__ import annotations

from kstatpy.cli.kstat_select import Instance
from kstatpy.cli.kstat_select import SelectorPatterns
from kstatpy.cli.kstat_select import hrtime_text

TYPE_CHECKING = False  # not typing's: the kstat command's kstatd path never imports typing
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["ReportStyle", "format_report", "json_string"]

_JSON_ESCAPES: dict[int, str] = {c: f"\\u{c:04x}" for c in range(0x20)}
_JSON_ESCAPES.update({0x7F: "\\u007f", ord('"'): '\\"', ord("\\"): "\\\\", ord("\n"): "\\n", ord("\t"): "\\t"})
# surrogateescape'd bytes (CHAR data that is not UTF-8): one \u00XX per byte, as illumos.
_JSON_ESCAPES.update({0xDC80 + b: f"\\u{0x80 + b:04x}" for b in range(0x80)})


def json_string(s: str) -> str:
    """``s`` as a JSON string literal, per the module docstring."""
    if s.isascii() and s.isprintable() and '"' not in s and "\\" not in s:
        return '"' + s + '"'
    return '"' + s.translate(_JSON_ESCAPES) + '"'


def _nbytes(s: str) -> int:
    return len(s) if s.isascii() else len(s.encode("utf-8", "surrogateescape"))


def _ljust(s: str, width: int) -> str:
    # %-<width>s: pad with spaces to width bytes, never truncate.
    n = _nbytes(s)
    return s + " " * (width - n) if n < width else s


def _trunc(s: str, width: int) -> str:
    # %-.<width>s: at most width bytes (may split a UTF-8 sequence, as C does).
    if s.isascii():
        return s[:width]
    return s.encode("utf-8", "surrogateescape")[:width].decode("utf-8", "surrogateescape")


class ReportStyle:
    """The output style the options chose (attribute names are the illumos flags)."""

    __slots__ = ("C", "V", "j", "l", "ndjson", "p", "q", "stamp")

    def __init__(self, opts: Any) -> None:
        # p is also set by -C and -l (illumos g_pflg); see kstat_args.Options.
        self.p, self.C, self.l, self.V, self.j, self.q = opts.p, opts.C, opts.l, opts.V, opts.j, opts.q
        self.ndjson = getattr(opts, "ndjson", False)
        self.stamp = 0.0  # --ndjson: the report's wall-clock time (time.time())


def _default_block(inst: Instance, stats: list[tuple[str, str, bool]], out: list[str]) -> None:
    out.append(
        f"module: {_ljust(_trunc(inst.module, 30), 30)}  instance: {inst.instance:<6d}\n"
        f"name:   {_ljust(_trunc(inst.name, 30), 30)}  class:    {_trunc(inst.ks_class, 30)}\n"
    )
    for name, text, _ in stats:
        pad = 30 - (len(name) if name.isascii() else _nbytes(name))
        out.append(f"\t{name}{' ' * pad if pad > 0 else ''}  {text}\n")
    out.append("\n")


def _parseable_block(inst: Instance, stats: list[tuple[str, str, bool]], out: list[str], style: ReportStyle) -> None:
    if style.V:
        out.extend(f"{text}\n" for _, text, _ in stats)
        return
    prefix = f"{inst.module}:{inst.instance}:{inst.name}:"
    if style.l:
        out.extend(f"{prefix}{name}\n" for name, _, _ in stats)
    elif style.C:
        out.extend(f"{prefix}{name}:{text}\n" for name, text, _ in stats)
    else:
        out.extend(f"{prefix}{name}\t{text}\n" for name, text, _ in stats)


def _json_block(inst: Instance, stats: list[tuple[str, str, bool]], out: list[str], first: bool) -> None:
    out.append(
        ("" if first else ", ")
        + "{\n"
        + f'\t"module": {json_string(inst.module)},\n'
        + f'\t"instance": {inst.instance},\n'
        + f'\t"name": {json_string(inst.name)},\n'
        + f'\t"class": {json_string(inst.ks_class)},\n'
        + f'\t"type": {inst.ks_type},\n'
        + f'\t"snaptime": {hrtime_text(inst.snaptime)},\n'
        + ("" if inst.reset is None else f'\t"reset": {"true" if inst.reset else "false"},\n')
        + '\t"data": {\n'
    )
    out.append(
        ",\n".join(f"\t\t{json_string(name)}: {json_string(text) if is_str else text}" for name, text, is_str in stats)
    )
    out.append("\n\t}\n}")


def _ndjson_line(inst: Instance, stats: list[tuple[str, str, bool]], out: list[str], stamp: float) -> None:
    # One line, one object; numbers are kstat's own decimal texts (exact integers).
    snaptime = next((text for name, text, _ in inst.stats if name == "snaptime"), hrtime_text(inst.snaptime))
    data = ", ".join(f"{json_string(name)}: {json_string(text) if is_str else text}" for name, text, is_str in stats)
    out.append(
        f'{{"timestamp": {stamp:.6f}, "module": {json_string(inst.module)}, "instance": {inst.instance}, '
        f'"name": {json_string(inst.name)}, "class": {json_string(inst.ks_class)}, "type": {inst.ks_type}, '
        f'"snaptime": {snaptime}, '
        + ("" if inst.reset is None else f'"reset": {"true" if inst.reset else "false"}, ')
        + f'"data": {{{data}}}}}\n'
    )


def format_report(
    instances: list[Instance],
    selectors: list[SelectorPatterns],
    class_pattern: Callable[[str], bool] | None,
    style: ReportStyle,
    out: list[str],
) -> bool:
    """Append one report's text (without timestamp) to ``out``; True if any statistic matched.

    ``class_pattern`` is the ``-c`` match function, or None for ``*``.

    :raises RegexError: a pattern evaluated here did not compile.
    """
    matched = False
    first_json = True
    if style.j:
        out.append("[")
    for sel in selectors:
        m_all, n_all, i_all = sel.module.matches_all, sel.name.matches_all, sel.instance.matches_all
        s_all = sel.statistic.matches_all
        m_match, n_match, i_match, s_match = sel.module.match, sel.name.match, sel.instance.match, sel.statistic.match
        for inst in instances:
            if not (
                (m_all or m_match(inst.module))
                and (n_all or n_match(inst.name))
                and (i_all or i_match(str(inst.instance)))
                and (class_pattern is None or class_pattern(inst.ks_class))
            ):
                continue
            stats = inst.stats if s_all else [s for s in inst.stats if s_match(s[0])]
            if not stats:
                continue
            matched = True
            if style.q:
                continue
            if style.ndjson:
                _ndjson_line(inst, stats, out, style.stamp)
            elif style.j:
                _json_block(inst, stats, out, first_json)
                first_json = False
            elif style.p:
                _parseable_block(inst, stats, out, style)
            else:
                _default_block(inst, stats, out)
    if style.j:
        out.append("]\n")
    return matched
