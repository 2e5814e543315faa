"""A logger that imports :mod:`logging` on its first use.

``logging`` imports ``re``, ``traceback``, ``string``, ``weakref`` and more: a quarter
of the embedded ``kstat``'s start-up, for messages almost no run writes. Modules on
that path name their logger with :func:`get_logger` instead of
``logging.getLogger``; each attribute access (``log.warning``, ``log.error``, ...)
is the real logger's, so levels, handlers and ``caplog`` behave as with a logger
made at import.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: kept off the embedded kstat's start-up path
if TYPE_CHECKING:
    from typing import Any

__all__ = ["LazyLogger", "get_logger"]


class LazyLogger:
    """``logging.getLogger(name)``, looked up when an attribute is first wanted."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __getattr__(self, attr: str) -> Any:
        import logging

        return getattr(logging.getLogger(self.name), attr)

    def __repr__(self) -> str:
        return f"<LazyLogger {self.name}>"


def get_logger(name: str) -> Any:
    """A :class:`LazyLogger` for ``name`` (typed as ``logging.Logger`` for callers)."""
    return LazyLogger(name)
