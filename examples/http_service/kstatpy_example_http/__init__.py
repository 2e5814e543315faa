"""An HTTP service that serves its own kstats (kstatpy's embedding example). Re-exports only."""

from __future__ import annotations

from kstatpy_example_http.stats import HttpStats

__all__ = ["HttpStats"]
