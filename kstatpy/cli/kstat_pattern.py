"""kstat(8) patterns: moved to :mod:`kstatpy.select` (the server matches them too)."""

from __future__ import annotations

from kstatpy.select import Pattern
from kstatpy.select import RegexError
from kstatpy.select import ere_to_python
from kstatpy.select import gmatch_to_python
from kstatpy.select import is_exact
from kstatpy.select import is_regex

__all__ = ["Pattern", "RegexError", "ere_to_python", "gmatch_to_python", "is_exact", "is_regex"]
