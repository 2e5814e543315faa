"""kstatpy: the illumos kstat framework in Python. This module only re-exports.

Names load lazily (PEP 562), so ``import kstatpy.client`` for the ``kstat`` command
pulls in neither the chain nor pluggy. ``__version__`` is the distribution's version
(``pyproject.toml`` reads it from here), bumped once per release with a new section
of CHANGELOG.md (tests/test_release.py holds them equal).
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: the kstat command's kstatd path never imports typing
if TYPE_CHECKING:
    from typing import Any

__version__ = "0.4.0"

_CONSTANTS = (
    "ALL_ZONES GLOBAL_ZONEID KSTAT_DATA_CHAR KSTAT_DATA_DOUBLE KSTAT_DATA_FLOAT KSTAT_DATA_INT32 "
    "KSTAT_DATA_INT64 KSTAT_DATA_LONG KSTAT_DATA_LONGLONG KSTAT_DATA_STRING KSTAT_DATA_UINT32 "
    "KSTAT_DATA_UINT64 KSTAT_DATA_ULONG KSTAT_DATA_ULONGLONG KSTAT_FLAG_DORMANT KSTAT_FLAG_INVALID "
    "KSTAT_FLAG_LONGSTRINGS KSTAT_FLAG_PERSISTENT KSTAT_FLAG_VAR_SIZE KSTAT_FLAG_VIRTUAL "
    "KSTAT_FLAG_WRITABLE KSTAT_INTR_HARD KSTAT_INTR_MULTSVC KSTAT_INTR_SOFT KSTAT_INTR_SPURIOUS "
    "KSTAT_INTR_WATCHDOG KSTAT_IOC_CHAIN_ID KSTAT_IOC_READ KSTAT_IOC_WRITE KSTAT_NUM_INTRS "
    "KSTAT_NUM_TYPES KSTAT_READ KSTAT_STRLEN KSTAT_TYPE_INTR KSTAT_TYPE_IO KSTAT_TYPE_NAMED "
    "KSTAT_TYPE_RAW KSTAT_TYPE_TIMER KSTAT_WRITE KSTATPY_IOC_HELLO KSTATPY_IOC_READ_MANY "
    "KstatDataType KstatFlag KstatIoctl KstatType"
).split()

_WHERE: dict[str, str] = {name: "kstatpy.constants" for name in _CONSTANTS}
_WHERE.update(
    {
        "Chain": "kstatpy.chain",
        "Served": "kstatpy.embed",
        "serve": "kstatpy.embed",
        "serve_async": "kstatpy.embed",
        "BadTrap": "kstatpy.kmem",
        "Kmem": "kstatpy.kmem",
        "KmemObject": "kstatpy.kmem",
        "hookimpl": "kstatpy.hookspecs",
        "KstatError": "kstatpy.errors",
        "KstatAccessError": "kstatpy.errors",
        "KstatCreateError": "kstatpy.errors",
        "KstatFatalError": "kstatpy.errors",
        "KstatNotFoundError": "kstatpy.errors",
        "KstatUpdateError": "kstatpy.errors",
    }
)
for _name in ("KMutex", "Kstat"):
    _WHERE[_name] = "kstatpy.kstat"
for _name in (
    "KstatIO KstatIntr KstatNamed KstatTimer kstat_named_init kstat_named_setstr "
    "kstat_runq_back_to_waitq kstat_runq_enter kstat_runq_exit kstat_timer_init kstat_timer_start "
    "kstat_timer_stop kstat_waitq_enter kstat_waitq_exit kstat_waitq_to_runq"
).split():
    _WHERE[_name] = "kstatpy.records"

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'kstatpy' has no attribute {name!r}")
    __import__(module)
    import sys

    value = getattr(sys.modules[module], name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
