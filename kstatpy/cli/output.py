"""Complete output for the console scripts (issue 21): every byte out, or an error.

Unbuffered Python (``-u``, ``PYTHONUNBUFFERED=1``: common in containers, CI and
systemd units) gives ``sys.stdout`` a raw ``FileIO`` under its text layer, and both
``FileIO.write`` and the text layer's flush may write fewer bytes than asked and say
nothing more: on a full disk a command printed half its output and exited 0.
:func:`complete_stdio` puts a writer under the text layer that loops until every byte
is written or ``os.write`` fails (ENOSPC, EFBIG, EIO: then ``OSError``, which each
command reports in one line with its fatal status, :mod:`kstatpy.cli.guard`). With
buffering, ``BufferedWriter`` already loops; the commands then flush before they
exit, so a failed final flush is their error too, not the interpreter's.

Imports ``io`` and ``os`` only (the kstat command's start-up has both already).
"""

from __future__ import annotations

import io
import os
import sys

from kstatpy.safefile import write_all

__all__ = ["complete_stdio", "stdout_closed", "write_fully"]

_installed: list[object] = []  # the replaced streams: kept so they are never collected (and closed)


class _FullWriter(io.RawIOBase):
    """A raw writer on ``fd`` whose ``write`` writes everything or raises."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return os.isatty(self._fd)

    def write(self, b: object) -> int:  # type: ignore[override]
        view = memoryview(b)  # type: ignore[arg-type]
        write_all(self._fd, view)
        return view.nbytes

    def close(self) -> None:  # the descriptor is the process's: never closed here
        super().close()


def complete_stdio() -> None:
    """Make unbuffered ``sys.stdout``/``sys.stderr`` write completely (module docstring)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        raw = getattr(stream, "buffer", None)
        if not isinstance(raw, io.FileIO) or raw.closed:
            continue  # buffered (BufferedWriter loops), closed (None), or already ours
        _installed.append(stream)
        text = io.TextIOWrapper(  # type: ignore[type-var]
            _FullWriter(raw.fileno()),
            encoding=stream.encoding,
            errors=stream.errors,
            write_through=True,
        )
        setattr(sys, name, text)


def write_fully(stream: object, data: bytes) -> None:
    """``stream.write(data)`` until every byte is taken (a raw stream may take fewer)."""
    view = memoryview(data)
    while view:
        n = stream.write(view)  # type: ignore[attr-defined]
        if n is None or n >= len(view):
            return
        if n <= 0:
            raise OSError(28, os.strerror(28))  # ENOSPC: a write that wrote nothing
        view = view[n:]


def stdout_closed(prog: str) -> None:
    """Started with fd 1 closed (``>&-``): one line on stderr, exit 3 (reading what nobody
    can see would only hide it)."""
    try:
        os.write(2, f"{prog}: standard output is closed; nothing can be printed\n".encode())
    except OSError:
        pass
    sys.exit(3)
