"""``python3 -m kstatpy``: the ``kstat`` command (same options, output and exit status).

``-m`` puts the current directory first on ``sys.path`` (unless ``-P`` or
``PYTHONSAFEPATH``). Run by root in a directory others can write (``/tmp``), the
``msgpack.py`` or ``click.py`` they left there would then be imported instead of the
real ones. So the entry point drops that entry before it imports anything else
(``kstatpy/__init__.py``, already run, imports nothing). A ``kstatpy`` directory
there would shadow the package itself, which no code of ours can prevent:
docs/READING.md says to use the ``kstat`` script or ``python3 -P -m kstatpy``.
"""

from __future__ import annotations

import os
import sys


def _drop_cwd_entry() -> None:
    # The entry -m added: the current directory ('' on some Pythons). Any later
    # entry that happens to name the same directory was put there on purpose.
    if sys.flags.safe_path or not sys.path:
        return
    try:
        cwd = os.getcwd()
    except OSError:  # the directory was removed: the entry points nowhere useful either
        cwd = None
    if sys.path[0] in ("", cwd):
        del sys.path[0]


if __name__ == "__main__":
    _drop_cwd_entry()
    from kstatpy.cli.kstat import main

    main()
