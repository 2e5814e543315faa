"""libkstat: the illumos kstat_open(3KSTAT) C library over kstatd, shipped as sources.

The C sources and headers here are package data; ``kstatpy-libkstat install --prefix
DIR`` (:mod:`kstatpy.cli.libkstat`) compiles them with the system's C compiler. The
RAW struct headers (``<sys/sysinfo.h>``, ``<sys/var.h>``) are generated from
:mod:`kstatpy.raw`'s layout table at install time (:mod:`kstatpy.libkstat.gen`), so C
and Python read the same bytes the same way. docs/CLIENTS.md, "C and other languages:
libkstat", is the user's guide.
"""

from __future__ import annotations

from kstatpy.libkstat.build import BuildError
from kstatpy.libkstat.build import install
from kstatpy.libkstat.gen import generated_headers

__all__ = ["BuildError", "generated_headers", "install"]
