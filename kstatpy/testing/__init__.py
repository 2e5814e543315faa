"""kstatpy.testing: the provider author's test kit. This package only re-exports.

The pytest plugin (``kstatpy.testing.plugin``, registered through the ``pytest11``
entry point, so installing kstatpy is enough) gives the fixtures ``kstat_chain``,
``kstatd``, ``kstat_cli`` and ``lifetime_race``; the harness itself is
:func:`lifetime_race` (``kstatpy.testing.race``); its controlled schedules are
:func:`controlled_race` and :func:`explore` (``kstatpy.testing.schedule``). docs/PROVIDERS.md shows them in use.
Names load lazily (PEP 562): pytest imports the plugin in every session, and the
harness pulls in the chain and pluggy only when a test uses it.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "LifetimeRaceError": "kstatpy.testing.race",
    "RaceContext": "kstatpy.testing.race",
    "RaceResult": "kstatpy.testing.race",
    "lifetime_race": "kstatpy.testing.race",
    "ExploreResult": "kstatpy.testing.schedule",
    "ScheduleAborted": "kstatpy.testing.schedule",
    "Scheduler": "kstatpy.testing.schedule",
    "controlled_race": "kstatpy.testing.schedule",
    "explore": "kstatpy.testing.schedule",
    "KstatdProcess": "kstatpy.testing.plugin",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'kstatpy.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
