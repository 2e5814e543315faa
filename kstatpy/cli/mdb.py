"""The ``kstatpy-mdb`` command: read a kstatd crash dump with mdb's syntax.

``kstatpy-mdb CRASHFILE`` reads commands at the ``> `` prompt until EOF or ``$q``;
``-e 'COMMANDS'`` runs them and exits. CRASHFILE is the ``.json`` dump kstatd
writes beside its panic report (the report's own path finds it too). Commands:
:mod:`kstatpy.cli.mdb_dcmds` (``::help``).

Exit status: 0 done, 2 usage (bad options, or a bad command under ``-e``),
3 fatal (the file is missing, a symbolic link, over 256 MiB, not a kstatpy crash
dump or hostile JSON: nesting too deep, integers too long; or the output cannot be
written whole). Errors are one line on stderr: ``kstatpy-mdb: ...``. Text from the
dump that is not valid UTF-8 (a lone surrogate) is printed backslash-escaped.
"""

from __future__ import annotations

import sys

import click

from kstatpy import __version__
from kstatpy.cli.guard import GuardedCommand

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_FATAL = 3


def _err(message: str) -> None:
    click.echo(f"kstatpy-mdb: {message}", err=True)


def _damaged(path: str, exc: BaseException) -> None:
    # A dump that loaded but lacks what a dcmd reads: fatal, one line.
    what = "nested too deeply" if isinstance(exc, RecursionError) else f"{type(exc).__name__}: {exc}"
    _err(_printable(f"{path}: damaged crash dump ({what})"))
    sys.exit(EXIT_FATAL)


def _printable(text: str) -> str:
    # A dump's strings may hold lone surrogates (JSON "\ud800"): escaped, never an encode error.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _out(text: str) -> None:
    click.echo(_printable(text))


class _Mdb(GuardedCommand):
    fatal_status = EXIT_FATAL


@click.command(cls=_Mdb, name="kstatpy-mdb", context_settings={"help_option_names": ["-h", "--help"]})
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
        _err(_printable(str(exc)))
        sys.exit(EXIT_FATAL)
    if commands is not None:
        try:
            text = run_line(dump, commands)
        except Quit:
            return
        except MdbError as exc:
            _err(_printable(str(exc)))
            sys.exit(EXIT_USAGE)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError) as exc:
            _damaged(crashfile, exc)
        if text:
            _out(text)
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
            _err(_printable(str(exc)))
            continue
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError) as exc:
            _damaged(crashfile, exc)
        if text:
            _out(text)


if __name__ == "__main__":
    main()
