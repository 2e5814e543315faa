"""A provider that fails to attach (kstatd must name it on stderr and keep going)."""

from __future__ import annotations

from kstatpy import hookimpl


@hookimpl
def kstatpy_attach(chain):
    raise RuntimeError("broken provider cannot attach")
