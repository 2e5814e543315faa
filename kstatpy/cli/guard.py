"""One-line errors for the console scripts when their own output fails (issue 13).

Standard output or error that cannot be written (a full disk: ENOSPC, EIO, a closed
pipe) is a fatal error, reported as ``PROG: write error: <strerror>`` on stderr when
stderr still works, with the command's fatal exit status (kstat 3, kstatd 1,
vmmctl 1); never a traceback, never Python's "Exception ignored" at exit.
A closed pipe on stdout: ``kstat`` dies of SIGPIPE as the C command does; the click
commands exit 1 quietly (click's own handling).
"""

from __future__ import annotations

import os
import sys
from typing import Any
from typing import NoReturn

import click

from kstatpy.cli.output import complete_stdio

__all__ = ["GuardedCommand", "GuardedGroup", "silence_stdout", "write_failed"]


def silence_stdout() -> None:
    """Point fd 1 at /dev/null, so the interpreter's final flush cannot fail again."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 1)
        os.close(fd)
    except OSError:
        pass


def write_failed(prog: str, exc: OSError, status: int) -> NoReturn:
    """Report a failed write of the command's output in one line and exit ``status``."""
    silence_stdout()
    try:
        sys.stderr.write(f"{prog}: write error: {exc.strerror or exc}\n")
        sys.stderr.flush()
    except OSError:
        pass
    sys.exit(status)


class _Guard:
    """Mixin for click commands: an OSError escaping click (not EPIPE) is one line."""

    fatal_status = 1

    def main(self, *args: Any, **kwargs: Any) -> Any:
        complete_stdio()  # unbuffered streams: no silent short writes (kstatpy.cli.output)
        try:
            try:
                return super().main(*args, **kwargs)  # type: ignore[misc]
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
