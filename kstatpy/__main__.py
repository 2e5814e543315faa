"""``python3 -m kstatpy``: the ``kstat`` command (same options, output and exit status)."""

from __future__ import annotations

from kstatpy.cli.kstat import main

if __name__ == "__main__":
    main()
