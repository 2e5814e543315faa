"""The man pages (kstatpy.cli.manpage, man/, issue 22): generated from the commands and
committed fresh, with illumos' sections, rendered by man(1) without a warning, and
holding every option ``--help`` shows, in the same words (and no other option).
tests/test_examples_venv.py checks ``man kstat`` after ``pip install`` in a fresh venv."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from kstatpy.cli.manpage import PAGES
from kstatpy.cli.manpage import generate
from kstatpy.cli.manpage import main as manpage_main

REPO = Path(__file__).resolve().parent.parent
MAN = shutil.which("man")
BIN = Path(sys.executable).parent
SCRIPTS = set(tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"])
PRESENT = [(name, section) for name, section, _ in PAGES if name in SCRIPTS]
SECTIONS = ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "OPERANDS", "EXAMPLES", "EXIT STATUS", "ENVIRONMENT",
            "FILES", "SEE ALSO"]  # fmt: skip
needs_man = pytest.mark.skipif(MAN is None, reason="man-db is not installed (.ci/run installs it)")


def page(name: str, section: int) -> Path:
    return REPO / "man" / f"man{section}" / f"{name}.{section}"


def test_the_committed_pages_are_what_the_commands_generate(tmp_path: Path) -> None:
    assert manpage_main(["--check"]) == 0, "stale man pages: run python -m kstatpy.cli.manpage and commit man/"
    assert manpage_main(["--check", str(tmp_path)]) == 1  # the check can fail
    assert sorted(generate()) == sorted(f"man{s}/{n}.{s}" for n, s in PRESENT)
    on_disk = {p.relative_to(REPO / "man").as_posix() for p in (REPO / "man").glob("man[18]/*")}
    assert on_disk == set(generate()), "a page without a command (or the reverse)"


def test_every_command_has_a_page() -> None:
    assert SCRIPTS <= {name for name, _, _ in PAGES}, SCRIPTS
    for name, _, _ in PAGES:
        assert (REPO / "man" / "src" / f"{name}.toml").is_file(), name


@pytest.mark.parametrize(("name", "section"), PRESENT)
def test_illumos_sections_in_illumos_order(name: str, section: int) -> None:
    heads = re.findall(r"^\.SH (.+)$", page(name, section).read_text(encoding="utf-8"), re.MULTILINE)
    assert [h for h in heads if h != "SUBCOMMANDS"] == SECTIONS, heads


def render(path: Path, width: int = 80) -> str:
    assert MAN is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAN", "LC_", "LANG"))}
    env.update(LANG="C", MANWIDTH=str(width))
    r = subprocess.run([MAN, "--warnings", "-l", str(path)], capture_output=True, text=True, env=env, timeout=60)
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    return r.stdout


@needs_man
@pytest.mark.parametrize(("name", "section"), PRESENT)
def test_man_renders_every_page_without_a_warning(name: str, section: int) -> None:
    text = render(page(name, section))
    assert text.startswith(f"{name.upper()}({section})") and f"{name} - " in text, text[:300]


def flat(text: str) -> str:
    # Whitespace runs as one space; a word click's wrap split at a hyphen joined again.
    return " ".join(re.sub(r"-\n\s+", "-", text).split())


def help_rows(text: str) -> dict[str, str]:
    """``--help`` option rows: spelling -> help text (click's two-column layout, and kstat's)."""
    rows: dict[str, str] = {}
    current: list[str] | None = None
    in_options = False  # rows only under "Options:" (kstat: "Options (as illumos):", "kstatpy additions:")
    for line in text.splitlines():
        if line[:1].strip() and line.endswith(":"):
            in_options = line.startswith("Options") or line == "kstatpy additions:"
            current = None
            continue
        m = re.match(r"^  (-\S.*?)(?:  +(\S.*))?$", line) if in_options else None
        if m:
            current = [m.group(2) or ""]
            rows[m.group(1).strip()] = current  # type: ignore[assignment]
        elif current is not None and line.startswith("    ") and line.strip():
            current.append("\n" + line)
        else:
            current = None
    return {k: flat("".join(v)) for k, v in rows.items()}  # type: ignore[arg-type]


def helps(name: str) -> dict[str, str]:
    run = [str(BIN / name)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KSTAT_", "KSTATPY_"))}
    env["COLUMNS"] = "80"
    out = subprocess.run([*run, "--help"], capture_output=True, text=True, env=env, timeout=60).stdout
    rows = help_rows(out)
    commands = re.search(r"^Commands:\n((?:  .*\n)+)", out, re.MULTILINE)
    for sub in re.findall(r"^  (\S+)", commands.group(1), re.MULTILINE) if commands else ():
        sub_out = subprocess.run([*run, sub, "--help"], capture_output=True, text=True, env=env, timeout=60).stdout
        rows.update({f"{sub} {k}": v for k, v in help_rows(sub_out).items()})
    assert rows, out
    return rows


@needs_man
@pytest.mark.parametrize(("name", "section"), PRESENT)
def test_every_option_in_help_is_in_the_page_in_the_same_words(name: str, section: int) -> None:
    text = flat(render(page(name, section), width=250))
    options = text[text.index(" OPTIONS ") : text.index(" OPERANDS ")]
    for spelling, words in helps(name).items():
        spelling = spelling.split(" ", 1)[1] if spelling[0] != "-" else spelling  # "create --socket PATH"
        assert f"{spelling} {words}" in options, (spelling, words)


@pytest.mark.parametrize(("name", "section"), PRESENT)
def test_the_page_has_no_option_help_lacks(name: str, section: int) -> None:
    roff = page(name, section).read_text(encoding="utf-8")
    body = roff[roff.index(".SH OPTIONS") : roff.index(".SH OPERANDS")]
    in_page = {t.replace("\\-", "-") for t in re.findall(r"\\fB(\\-[^\\ ]*(?:\\-[^\\ ]*)*)\\fR", body)}
    in_help = {opt for spelling in helps(name) for opt in re.findall(r"(?:^|[ ,])(-[-\w?]+)", spelling)}
    assert in_page and in_page <= in_help, in_page - in_help
    assert in_help <= in_page, in_help - in_page


def test_kstat_page_examples_run(tmp_path: Path) -> None:
    # kstat(1)'s examples that need no daemon, run as written (the embedded default, the
    # host's own statistics); an example's printed output must match field by field.
    prose = tomllib.loads((REPO / "man" / "src" / "kstat.toml").read_text(encoding="utf-8"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KSTAT_", "KSTATPY_"))}
    env.update(PATH=f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}", XDG_RUNTIME_DIR=str(tmp_path))
    ran = 0
    for example in prose["examples"]:
        lines = example["commands"].strip("\n").splitlines()
        command, shown = lines[0], lines[1:]
        assert command.startswith("$ kstat "), command
        if "--socket" in command:
            continue  # names the system kstatd's socket
        r = subprocess.run(["bash", "-c", command[2:]], capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode in (0, 1) and r.stderr == "", (command, r.stderr)
        for want, got in zip(shown, r.stdout.splitlines(), strict=False):
            assert want.split("\t")[0] == got.split("\t")[0], (command, got)
        assert len(r.stdout.splitlines()) >= len(shown), (command, r.stdout)
        ran += 1
    assert ran >= 4
