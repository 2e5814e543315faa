"""A provider module for kstatd (``--plugin cli_provider``): installs tests/cli_chain.py's kstats.

kstatd must find both modules: run it with ``tests/`` on PYTHONPATH.
"""

from __future__ import annotations

from cli_chain import build_chain

from kstatpy.hookspecs import hookimpl


@hookimpl
def kstatpy_attach(chain):
    build_chain(chain)
