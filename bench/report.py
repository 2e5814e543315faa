"""Tables for BENCHMARKS.md and the scaling curves' PNG, from the runs of ``python -m bench``."""

from __future__ import annotations

import statistics
from pathlib import Path

BEGIN = "<!-- bench:begin (written by python -m bench; edits between these markers are lost) -->"
END = "<!-- bench:end -->"

# key: (what, unit of value, baseline, aim text, aim test on (value, ratio))
ROWS = {
    "read": ("`KSTAT_IOC_READ` of `unix:0:kstat_types` through kstatd, round trip", "µs",
             "msgpack echo of the same reply bytes, own process", "ratio <= 1.15", lambda v, r: r <= 1.15),
    "read_handler": ("the same, against kstatd's own request handler in the echo's loop", "µs",
                     "echo's loop + kstatd's handler and chain, own process", "(kstatd's session share)", None),
    "read_model": ("that handler in the echo's loop, against the echo", "µs", "the echo above",
                   "(the data model's share)", None),
    "read_cpu": ("server CPU per READ above: kstatd", "µs", "the echo's CPU per request", "(profile)", None),
    "read_cpu_handler": ("server CPU per READ above: kstatd's handler in the echo's loop", "µs",
                         "the echo's CPU per request", "(profile)", None),
    "one_stat": ("`kstat -p bench:5:kstat5:stat_001` (one statistic), {big} kstats", "ms",
                 "the same with 10^3 kstats", "ratio <= 1.1", lambda v, r: r <= 1.1),
    "startup_kstatd": ("`kstat -p unix:0:system_misc:ncpus` through kstatd", "ms",
                       "floor: python imports socket + msgpack, one READ, one line", "ratio <= 1.2",
                       lambda v, r: r <= 1.2),
    "startup_embedded": ("the same, embedded default (no kstatd)", "ms", "the kstatd path above",
                         "ratio <= 1.6", lambda v, r: r <= 1.6),
    "startup_pass": ("`python -c pass` (for scale)", "ms", "itself", "", None),
    "read_many_1": ("`KSTATPY_IOC_READ_MANY` named values/s, 1 client", "values/s",
                    "echo of the same replies, same client", "ratio >= 0.7", lambda v, r: r >= 0.7),
    "read_many_4": ("the same, 4 clients", "values/s", "echo, 4 clients", "ratio >= 0.7 and >= 1M/s",
                    lambda v, r: r >= 0.7 and v >= 1e6),
    "read_many_16": ("the same, 16 clients", "values/s", "echo, 16 clients", "ratio >= 0.7", lambda v, r: r >= 0.7),
    "read_many_handler_1": ("READ_MANY, 1 client, against kstatd's handler in the echo's loop", "values/s",
                            "echo's loop + kstatd's handler", "(kstatd's session share)", None),
    "read_many_model_1": ("that handler in the echo's loop, 1 client, against the echo", "values/s",
                          "the echo, 1 client", "(the data model's share)", None),
    "read_many_handler_4": ("READ_MANY, 4 clients, against kstatd's handler in the echo's loop", "values/s",
                            "echo's loop + kstatd's handler", "(kstatd's session share)", None),
    "read_many_model_4": ("that handler in the echo's loop, 4 clients, against the echo", "values/s",
                          "the echo, 4 clients", "(the data model's share)", None),
    "dump_per_value": ("full `kstat -p` of 10^4 x 10 through kstatd, per value", "µs",
                       "a bare READ_MANY of the same kstats (a process), per value", "<= 3 µs",
                       lambda v, r: v <= 3.0),
    "dump_cpu": ("CPU of the `kstat` process in that dump, per value", "µs", "the dump's wall time per value",
                 "(profile)", None),
    "dump_cpu_kstatd": ("CPU of kstatd in that dump, per value", "µs", "the dump's wall time per value",
                        "(profile)", None),
    "pcp": ("the same per value, against PCP `pminfo -f` per value", "µs", "pminfo -f per value",
            "ratio <= 0.15", lambda v, r: r <= 0.15),
    "kid0": ("KID 0 (all headers) per header, {big} kstats", "µs", "per header at 10^3 kstats",
             "ratio <= 1.2", lambda v, r: r <= 1.2),
    "mem_kstat": ("daemon RSS per kstat (fit)", "B", "illumos kstat_t, 184 B", "<= 1 KB", lambda v, r: v <= 1024),
    "mem_stat": ("daemon RSS per named statistic (fit)", "B", "illumos kstat_named_t, 48 B", "<= 100 B",
                 lambda v, r: v <= 100),
    "rss_retained": ("RSS a fresh kstatd (10^4 x 10) retains after one full `kstat -p`", "MiB", "its RSS before, MiB",
                     "ratio <= 0.10", lambda v, r: r <= 0.10),
}  # fmt: skip


def _fmt(x: float) -> str:
    if x >= 10_000:
        return f"{x:,.0f}"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def summarize(runs: list[list[dict]], big: int) -> list[str]:
    """The Markdown table: median and spread (min-max) of value and ratio over the runs."""
    by_key: dict[str, list[dict]] = {}
    for run in runs:
        for row in run:
            by_key.setdefault(row["key"], []).append(row)
    lines = [
        "| what | value (median, min-max) | baseline (median) | ratio (median, min-max) | aim | met |",
        "|---|---:|---:|---:|---|---|",
    ]
    for key, (what, unit, base_what, aim, test) in ROWS.items():
        rows = by_key.get(key)
        what = what.format(big=f"{big:,}")
        if not rows:
            lines.append(f"| {what} | not measured | {base_what} | | {aim} | |")
            continue
        values = [r["value"] for r in rows]
        bases = [r["baseline"] for r in rows]
        ratios = [r["value"] / r["baseline"] if r["baseline"] else float("nan") for r in rows]
        v, b, rt = statistics.median(values), statistics.median(bases), statistics.median(ratios)
        met = "" if test is None else ("yes" if test(v, rt) else "**no**")
        lines.append(
            f"| {what} | {_fmt(v)} {unit} ({_fmt(min(values))}-{_fmt(max(values))}) | {_fmt(b)} {unit}: {base_what} "
            f"| {rt:.2f} ({min(ratios):.2f}-{max(ratios):.2f}) | {aim} | {met} |"
        )
    return lines


def write_markdown(path: Path, header: list[str], table: list[str], png: str) -> None:
    """Replace the text between the markers of BENCHMARKS.md (appended when absent)."""
    block = "\n".join([BEGIN, *header, "", *table, "", f"![scaling curves]({png})", END])
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def plot(curves: dict[str, list], path: Path) -> bool:
    """Draw the scaling curves (median over runs); False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))

    def med(series: list[dict], x) -> float:
        return statistics.median(s[x] for s in series)

    for ax, key, title, ylabel in (
        (axes[0], "one_stat", "kstat -p of one statistic via kstatd", "seconds"),
        (axes[1], "kid0", "KID 0 read, per header", "µs per header"),
    ):
        series = curves.get(key) or []
        if series:
            xs = sorted(series[0])
            ax.plot(xs, [med(series, x) for x in xs], marker="o")
            ax.set_xscale("log")
            ax.set_ylim(bottom=0)
        ax.set_title(title)
        ax.set_xlabel("kstats in the chain")
        ax.set_ylabel(ylabel)
    series = curves.get("read_many") or []
    ax = axes[2]
    if series:
        xs = sorted(series[0])
        ax.plot(xs, [statistics.median(s[x][0] for s in series) for x in xs], marker="o", label="kstatd")
        ax.plot(xs, [statistics.median(s[x][1] for s in series) for x in xs], marker="s", label="msgpack echo")
        ax.legend()
        ax.set_ylim(bottom=0)
    ax.set_title("READ_MANY named values/s")
    ax.set_xlabel("client processes")
    ax.set_xscale("log", base=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
