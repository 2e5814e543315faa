"""The man pages, generated from the commands themselves: ``python -m kstatpy.cli.manpage``.

One source per page, so that the page and ``--help`` cannot disagree: the synopsis,
options and subcommands come from the command (click's own help records, the text
``--help`` prints; for kstat, whose getopt parser is not click's, the option table
of :mod:`kstatpy.cli.kstat_help` that its ``--help`` renders); what ``--help`` does
not hold comes from one prose file per page, ``man/src/NAME.toml`` (description,
operands, examples, exit status, environment, files, see also). Sections and their
order are illumos' (NAME, SYNOPSIS, DESCRIPTION, OPTIONS, [SUBCOMMANDS], OPERANDS,
EXAMPLES, EXIT STATUS, ENVIRONMENT, FILES, SEE ALSO).

The pages are written to ``man/man1`` and ``man/man8`` in the repository and
installed with the package as data files (``share/man/manN``: man-db finds them
from ``PATH``, ``DIR/bin`` -> ``DIR/share/man``). ``--check`` exits 1 when a
committed page differs from what the commands generate now (tests/test_manpages.py
runs it). Not a kstat or kstatd code path: imported only by this generator.
"""

from __future__ import annotations

import importlib
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import click

__all__ = ["PAGES", "generate", "main", "render"]

REPO = Path(__file__).resolve().parent.parent.parent
#: (command, man section, "module:attribute" of its click command, or None for kstat)
PAGES: tuple[tuple[str, int, str | None], ...] = (
    ("kstat", 1, None),
    ("kstatd", 8, "kstatpy.cli.kstatd:main"),
    ("vmmctl", 8, "kstatpy_providers.vmm.vmmctl:main"),
    ("kstatpy-mdb", 1, "kstatpy.cli.mdb:main"),
    ("kstatpy-libkstat", 1, "kstatpy.cli.libkstat:main"),
)
_TITLES = {1: "User Commands", 8: "System Administration Commands"}
_RELEASE = re.compile(r"^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})$", re.MULTILINE)


def esc(text: str) -> str:
    """Plain text as roff: backslashes, hyphens (ASCII minus), and a leading . or '."""
    text = text.replace("\\", "\\e").replace("-", "\\-").replace("'", "\\(aq")
    return "\n".join("\\&" + ln if ln.startswith((".", "'")) else ln for ln in text.split("\n"))


def _paras(text: str, sep: str = ".PP") -> list[str]:
    # Paragraphs; sep ".IP" keeps later ones at the indent of the .TP they continue.
    out = []
    for i, para in enumerate(p.strip() for p in text.strip().split("\n\n") if p.strip()):
        out += ([sep] if i else []) + [esc(" ".join(para.split()))]
    return out


def _tp(head: str, body: str) -> list[str]:
    return [".TP", head, esc(" ".join(body.split()))]


def _opt_head(spelling: str) -> str:
    # "-c, --count INTEGER RANGE" -> bold options, italic argument.
    parts = []
    for piece in spelling.split(", "):
        opt, _, arg = piece.partition(" ")
        parts.append(f"\\fB{esc(opt)}\\fR" + (f" \\fI{esc(arg)}\\fR" if arg else ""))
    return ", ".join(parts)


def _click_options(cmd: click.Command, ctx: click.Context) -> list[str]:
    out: list[str] = []
    for param in cmd.get_params(ctx):
        if not isinstance(param, click.Option):
            continue  # arguments are the page's OPERANDS, from its prose
        record = param.get_help_record(ctx)
        if record is not None:
            out += _tp(_opt_head(record[0]), record[1])
    return out


def _load(target: str) -> click.Command:
    module, _, attr = target.partition(":")
    cmd = getattr(importlib.import_module(module), attr)
    assert isinstance(cmd, click.Command), target
    return cmd


def _synopsis_line(words: list[str]) -> str:
    return f"\\fB{esc(words[0])}\\fR " + " ".join(esc(w) for w in words[1:])


def _click_parts(name: str, cmd: click.Command, prose: dict[str, Any]) -> dict[str, list[str]]:
    ctx = click.Context(cmd, info_name=name, **cmd.context_settings)
    parts: dict[str, list[str]] = {}
    parts["SYNOPSIS"] = [".nf", _synopsis_line([name, *cmd.collect_usage_pieces(ctx)]), ".fi"]
    parts["DESCRIPTION"] = _paras((cmd.help or "").split("\n\n")[0] + "\n\n" + prose.get("description", ""))
    parts["OPTIONS"] = _click_options(cmd, ctx)
    if isinstance(cmd, click.Group):
        subs: list[str] = []
        lines = [".nf", parts["SYNOPSIS"][1]]
        for sub_name in cmd.list_commands(ctx):
            sub = cmd.commands[sub_name]
            sctx = click.Context(sub, info_name=sub_name, parent=ctx, **sub.context_settings)
            usage = [name, "[OPTIONS]", sub_name, *sub.collect_usage_pieces(sctx)]
            lines.append(_synopsis_line(usage))
            subs += [
                ".TP",
                _synopsis_line(usage),
                *_paras(sub.help or "", ".IP"),
                ".RS",
                *_click_options(sub, sctx),
                ".RE",
            ]
        parts["SYNOPSIS"] = [*lines, ".fi"]
        parts["SUBCOMMANDS"] = subs
    return parts


def _kstat_parts(prose: dict[str, Any]) -> dict[str, list[str]]:
    from kstatpy.cli import kstat_help as h
    from kstatpy.cli.kstat_args import USAGE

    parts: dict[str, list[str]] = {}
    lines = [ln.strip() for ln in USAGE.splitlines()[1:]]
    parts["SYNOPSIS"] = [".nf", *(_synopsis_line(ln.split(" ", 1)) if ln.startswith("kstat ") else
                                  "      " + esc(ln) for ln in lines), ".fi"]  # fmt: skip
    parts["DESCRIPTION"] = _paras(h.SUMMARY + "\n\n" + prose.get("description", "") + "\n\n" + "\n\n".join(h.NOTES))
    options: list[str] = []
    for title, rows in (("illumos kstat(8)'s options:", h.ILLUMOS), ("kstatpy's additions:", h.ADDITIONS)):
        options += [".PP" if options else "", esc(title)]
        for spellings, arg, text in rows:
            options += _tp(_opt_head(", ".join(s + (f" {arg}" if arg else "") for s in spellings)), text)
    parts["OPTIONS"] = [ln for ln in options if ln]
    return parts


def render(name: str, section: int, cmd: click.Command | None, prose: dict[str, Any], version: str,
           date: str) -> str:  # fmt: skip
    """One page as roff text (see the module docstring for its sources)."""
    parts = _kstat_parts(prose) if cmd is None else _click_parts(name, cmd, prose)
    out = [
        f".\\\" Generated by python -m kstatpy.cli.manpage from {name}'s --help and man/src/{name}.toml; do not edit.",
        f'.TH "{name.upper()}" "{section}" "{date}" "kstatpy {version}" "{_TITLES[section]}"',
        ".nh",
        ".ad l",
        ".SH NAME",
        f"{esc(name)} \\- {esc(prose['summary'])}",
    ]
    for title in ("SYNOPSIS", "DESCRIPTION", "OPTIONS", "SUBCOMMANDS"):
        if parts.get(title):
            out += [f".SH {title}", *parts[title]]
    out.append(".SH OPERANDS")
    operands = prose.get("operands") or []
    out += [ln for op, text in operands for ln in _tp(f"\\fI{esc(op)}\\fR", text)] or ["None."]
    out.append(".SH EXAMPLES")
    for i, ex in enumerate(prose["examples"], start=1):
        out += [".PP" if i > 1 else "", f"\\fBExample {i}\\fR {esc(ex['title'])}", ".PP", *_paras(ex.get("text", ""))]
        out += [".PP", ".RS 4", ".nf", esc(ex["commands"].strip("\n")), ".fi", ".RE"]
    for title, key in (("EXIT STATUS", "exit_status"), ("ENVIRONMENT", "environment"), ("FILES", "files")):
        out.append(f".SH {title}")
        rows = prose.get(key) or []
        out += [ln for head, text in rows for ln in _tp(f"\\fB{esc(head)}\\fR", text)] or ["None."]
    refs = [re.fullmatch(r"(.+)\((\w+)\)", ref) for ref in prose["see_also"]]
    out += [".SH SEE ALSO", ",\n".join(f"\\fB{esc(m.group(1))}\\fR({m.group(2)})" for m in refs if m)]
    return "\n".join(ln for ln in out if ln) + "\n"


def _release() -> tuple[str, str]:
    from kstatpy import __version__

    found = _RELEASE.findall((REPO / "CHANGELOG.md").read_text(encoding="utf-8"))
    dates = {v: d for v, d in found}
    return __version__, dates.get(__version__, "")


def generate(only_present: bool = True) -> dict[str, str]:
    """Relative path (``man1/kstat.1``) -> page text, for every page whose command exists."""
    version, date = _release()
    pages = {}
    for name, section, target in PAGES:
        try:
            cmd = None if target is None else _load(target)
        except ModuleNotFoundError:
            if only_present:
                continue  # kstatpy-libkstat before issue 18 lands: its page comes with its command
            raise
        prose = tomllib.loads((REPO / "man" / "src" / f"{name}.toml").read_text(encoding="utf-8"))
        pages[f"man{section}/{name}.{section}"] = render(name, section, cmd, prose, version, date)
    return pages


def main(argv: list[str] | None = None) -> int:
    """``[--check] [DIR]``: write the pages under DIR (default: the repository's man/), or compare."""
    args = sys.argv[1:] if argv is None else argv
    check = "--check" in args
    rest = [a for a in args if a != "--check"]
    out = Path(rest[0]) if rest else REPO / "man"
    stale = []
    for rel, text in generate().items():
        path = out / rel
        if check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(rel)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    if stale:
        print(f"manpage: stale: {', '.join(stale)} (run: python -m kstatpy.cli.manpage)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
