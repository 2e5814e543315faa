"""One-line errors for the console scripts when their own output fails (issue 13).

Standard output or error that cannot be written (a full disk: ENOSPC, EIO, a closed
pipe) is a fatal error, reported as ``PROG: write error: <strerror>`` on stderr when
stderr still works, with the fatal exit status every command shares with kstat(8): 3
(issue 21); never a traceback, never Python's "Exception ignored" at exit.
A closed pipe on stdout: ``kstat`` dies of SIGPIPE as the C command does; the click
commands exit 3 quietly (click reports nothing and would exit 1: mapped here).
"""

from __future__ import annotations

import os
import sys
from typing import Any
from typing import NoReturn

import click

from kstatpy.cli.output import complete_stdio

__all__ = ["FATAL", "USAGE", "GuardedCommand", "GuardedGroup", "silence_stdout", "write_failed"]

#: kstat(8)'s exit statuses, shared by every console script: usage errors, fatal errors.
USAGE = 2
FATAL = 3


def silence_stdout(fd: int = 1) -> None:
    """Point ``fd`` (stdout) at /dev/null, so the interpreter's final flush cannot fail again."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)
    except OSError:
        pass


def write_failed(prog: str, exc: OSError, status: int) -> NoReturn:
    """Report a failed write of the command's output in one line and exit ``status``.

    When stderr fails too (both on a full disk), its unwritten line stays in the stream's
    buffer: stderr is pointed at /dev/null as well, or the interpreter's final flush would
    fail and exit 120 instead of ``status`` (seen without PYTHONUNBUFFERED)."""
    silence_stdout()
    try:
        sys.stderr.write(f"{prog}: write error: {exc.strerror or exc}\n")
        sys.stderr.flush()
    except OSError:
        silence_stdout(2)
    sys.exit(status)


class _Guard:
    """Mixin for click commands: an OSError escaping click (not EPIPE) is one line."""

    fatal_status = FATAL

    def main(self, *args: Any, **kwargs: Any) -> Any:
        complete_stdio()  # unbuffered streams: no silent short writes (kstatpy.cli.output)
        stdout = sys.stdout
        try:
            try:
                return super().main(*args, **kwargs)  # type: ignore[misc]
            except SystemExit as exc:
                # click answers EPIPE by replacing sys.stdout with a wrapper that
                # swallows the final flush, then exits 1: a fatal error, ours is 3.
                if exc.code == 1 and sys.stdout is not stdout:
                    raise SystemExit(self.fatal_status) from None
                raise
            finally:
                # Whatever ends the command (click exits with SystemExit), its output is
                # out before the status is: a failed final flush is this command's error.
                if sys.stdout is not None:
                    sys.stdout.flush()
        except OSError as exc:
            write_failed(self.name or "command", exc, self.fatal_status)  # type: ignore[attr-defined]


class GuardedCommand(_Guard, click.Command):
    """A click command whose output errors are one line (see the module docstring)."""


class GuardedGroup(_Guard, click.Group):
    """A click group whose output errors are one line (see the module docstring)."""
