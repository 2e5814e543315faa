"""The ``kstatpy-mdb`` command: read a kstatd crash dump with mdb's syntax.

``kstatpy-mdb CRASHFILE`` reads commands at the ``> `` prompt until EOF or ``$q``;
``-e 'COMMANDS'`` runs them and exits. CRASHFILE is the ``.json`` dump kstatd
writes beside its panic report (the report's own path finds it too). Commands:
:mod:`kstatpy.cli.mdb_dcmds` (``::help``).

Exit status: 0 done, 2 usage (bad options, or a bad command under ``-e``),
3 fatal (the file is missing or not a kstatpy crash dump). Errors are one line on
stderr: ``kstatpy-mdb: ...``.
"""

from __future__ import annotations

import sys

import click

from kstatpy import __version__

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_FATAL = 3


def _err(message: str) -> None:
    click.echo(f"kstatpy-mdb: {message}", err=True)


def _damaged(path: str, exc: BaseException) -> None:
    # A dump that loaded but lacks what a dcmd reads: fatal, one line.
    _err(f"{path}: damaged crash dump ({type(exc).__name__}: {exc})")
    sys.exit(EXIT_FATAL)


@click.command(name="kstatpy-mdb", context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="kstatpy-mdb", message="%(prog)s (kstatpy %(version)s)")
@click.argument("crashfile", metavar="CRASHFILE")
@click.option("-e", "commands", metavar="COMMANDS", help="Run COMMANDS (';' or newline separated) and exit.")
def main(crashfile: str, commands: str | None) -> None:
    """kstatpy-mdb: examine a kstatd crash dump ($C, ::status, ::print kstat_t, ::whatis, ::kstat)."""
    from kstatpy.cli.mdb_dcmds import MdbError
    from kstatpy.cli.mdb_dcmds import Quit
    from kstatpy.cli.mdb_dcmds import run_line
    from kstatpy.crashdump import CrashDumpError
    from kstatpy.crashdump import load_dump

    try:
        dump = load_dump(crashfile)
    except CrashDumpError as exc:
        _err(str(exc))
        sys.exit(EXIT_FATAL)
    if commands is not None:
        try:
            text = run_line(dump, commands)
        except Quit:
            return
        except MdbError as exc:
            _err(str(exc))
            sys.exit(EXIT_USAGE)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            _damaged(crashfile, exc)
        if text:
            click.echo(text)
        return
    while True:
        click.echo("> ", nl=False)
        sys.stdout.flush()
        line = sys.stdin.readline()
        if not line:
            click.echo("")
            return
        try:
            text = run_line(dump, line)
        except Quit:
            return
        except MdbError as exc:
            _err(str(exc))
            continue
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            _damaged(crashfile, exc)
        if text:
            click.echo(text)


if __name__ == "__main__":
    main()
