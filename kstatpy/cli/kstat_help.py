"""kstat's options as data: the one source of ``kstat --help`` and of the kstat(1) page.

kstat parses its options with its own getopt(3C) (:mod:`kstatpy.cli.kstat_args`), so
click cannot describe them; this table does, and both ``HELP`` below and
:mod:`kstatpy.cli.manpage` render it, so the page and ``--help`` cannot disagree.
Each row is ``(spellings, argument or "", description)``; the description is one
sentence or a few, plain text. Imports only kstat_args' USAGE (kstat's start-up stays small).
"""

from __future__ import annotations

from kstatpy.cli.kstat_args import USAGE

__all__ = ["ADDITIONS", "EXIT", "HELP", "ILLUMOS", "NOTES", "SUMMARY"]

SUMMARY = "Report kernel statistics (kstats), as illumos kstat(8) does."

#: illumos kstat(8)'s options, with illumos' meaning.
ILLUMOS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("-C",), "", "Parseable output with ':' between the statistic and its value (implies -p)."),
    (("-c",), "class", "Only kstats of this class."),
    (("-i",), "instance", "Only kstats of this instance."),
    (("-j",), "", "JSON output."),
    (("-l",), "", "List the matching statistics' names only (implies -p)."),
    (("-m",), "module", "Only kstats of this module."),
    (("-n",), "name", "Only kstats of this name."),
    (("-p",), "", "Parseable output: module:instance:name:statistic, a tab, the value."),
    (("-q",), "", "Quiet: print nothing, only the exit status tells whether anything matched."),
    (("-s",), "statistic", "Only statistics of this name."),
    (("-T",), "d|u", "Before each report, a timestamp: d the date, u seconds since the epoch."),
    (("-V",), "", "Values only, without the names (with -p and exact selectors)."),
    (("-h", "-?"), "", "Print the usage and exit."),
)

#: kstatpy's own long options; none changes an illumos option.
ADDITIONS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (
        ("--socket",),
        "PATH",
        "Read from the kstatd listening on PATH (also $KSTAT_SOCKET); without either, the default "
        "socket is tried (root's: /run/kstatpy/priv/kstat.sock), and when nothing answers there the "
        "providers are loaded in this process.",
    ),
    (
        ("--timeout",),
        "SECONDS",
        "Give up on a request kstatd has not answered in SECONDS (also $KSTAT_TIMEOUT; default 10): exit 3.",
    ),
    (
        ("--trust-uid",),
        "N",
        "Accept a server run by uid N on the socket named (also $KSTAT_TRUST_UID=N[,N...]); root's and "
        "your own are always accepted, any other is refused.",
    ),
    (
        ("--rate",),
        "",
        "Counters as per-second rates: the first report averages since the kstat's crtime, later ones "
        'cover the interval; a re-created kstat or a counter that went back is a reset (stderr; "reset" '
        "in JSON); 32-bit counters are unwrapped.",
    ),
    (
        ("--ndjson",),
        "",
        'One JSON object per kstat per line, with the report\'s wall-clock "timestamp" and "snaptime"; '
        "flushed after each report.",
    ),
    (
        ("--describe",),
        "",
        "The selected statistics' metadata (kind, type, unit, description) instead of their values; -j for JSON.",
    ),
    (("--help",), "", "Print this help and exit."),
    (("--version",), "", "Print kstatpy's version and exit."),
)

#: Paragraphs after the options (--help) and in the page's DESCRIPTION.
NOTES = (
    "Patterns are shell globs, or /extended regular expressions/ (unanchored).",
    "Differences from illumos: -j output is valid JSON (no \\? escape, UTF-8 as UTF-8, exact 64-bit "
    "integers, every interval report a complete [ ... ] array). RAW kstats are shown where illumos "
    "decodes them (cpu_stat, unix:sysinfo, unix:vminfo, unix:var).",
)

EXIT = "Exit status: 0 statistics matched, 1 none matched, 2 usage error, 3 fatal error."


def _wrap(text: str, width: int, indent: str, first: str) -> list[str]:
    # Greedy word wrap (textwrap imports re, which kstat's start-up avoids).
    lines, line = [], first
    for word in text.split():
        if len(line) + 1 + len(word) > width and line.strip():
            lines.append(line.rstrip())
            line = indent
        line = f"{line}{word} " if line else f"{word} "
    lines.append(line.rstrip())
    return lines


def _options(rows: tuple[tuple[tuple[str, ...], str, str], ...]) -> str:
    out = []
    for spellings, arg, text in rows:
        head = "  " + ", ".join(spellings) + (f" {arg}" if arg else "")
        first = head.ljust(18) if len(head) < 18 else head + "\n" + " " * 18
        out.extend(_wrap(text, 79, " " * 18, first))
    return "\n".join(out) + "\n"


HELP = (
    USAGE
    + f"\n{SUMMARY}\n\nOptions (as illumos):\n"
    + _options(ILLUMOS)
    + "\nkstatpy additions:\n"
    + _options(ADDITIONS)
    + "".join("\n" + "\n".join(_wrap(p, 79, "", "")) + "\n" for p in NOTES)
    + f"\n{EXIT}\n"
)
