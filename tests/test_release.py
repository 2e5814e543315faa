"""The release's version (issue 22): CHANGELOG.md's newest release is
``kstatpy.__version__``, and every console script's ``--version`` shows it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import kstatpy

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"])
RELEASE = re.compile(r"^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})$", re.MULTILINE)


def releases() -> list[tuple[str, str]]:
    return RELEASE.findall((REPO / "CHANGELOG.md").read_text(encoding="utf-8"))


def test_the_newest_release_in_the_changelog_is_the_version() -> None:
    found = releases()
    assert found and found[0][0] == kstatpy.__version__, (found[:1], kstatpy.__version__)


def test_changelog_releases_go_back_in_time_and_version() -> None:
    found = releases()
    versions = [tuple(int(n) for n in v.split(".")) for v, _ in found]
    assert versions == sorted(versions, reverse=True) and len(set(versions)) == len(versions), found
    dates = [d for _, d in found]
    assert dates == sorted(dates, reverse=True), found
    text = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    for heading in re.findall(r"^## .*$", text, re.MULTILINE):
        assert RELEASE.match(heading) or heading == "## [Unreleased]", heading


@pytest.mark.parametrize("command", SCRIPTS)
def test_every_command_shows_the_version(command: str) -> None:
    exe = Path(sys.executable).parent / command
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KSTAT_", "KSTATPY_"))}
    got = subprocess.run([str(exe), "--version"], capture_output=True, text=True, env=env, timeout=60)
    assert (got.returncode, got.stdout, got.stderr) == (0, f"{command} (kstatpy {kstatpy.__version__})\n", "")
