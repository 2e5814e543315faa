"""Rate-limited logging of failures any local user can trigger (issue 13).

A provider that raises on a read or an ioctl is logged, but a caller repeating that
request must not flood the log (or block the daemon on a full stderr pipe): per key,
at most ``burst`` lines per ``interval`` seconds; the next line allowed after a
quiet spell says how many were suppressed. Thread-safe (one lock per limiter).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable

TYPE_CHECKING = False  # not typing's: kept off the embedded kstat's start-up path
if TYPE_CHECKING:
    import logging
    from typing import Any

__all__ = ["ERROR", "WARNING", "RateLimitedLog"]

#: ``logging.WARNING`` and ``logging.ERROR``, for callers that import logging only to log.
WARNING, ERROR = 30, 40


class RateLimitedLog:
    """``log(key, level, msg, *args, exc_info=False)`` with a per-key budget."""

    def __init__(self, logger: logging.Logger, interval: float = 60.0, burst: int = 5) -> None:
        self.logger = logger
        self.interval = interval
        self.burst = burst
        self._lock = threading.Lock()  # guards _state
        self._state: dict[Hashable, list[float | int]] = {}  # key -> [window start, logged, suppressed]

    def __call__(self, key: Hashable, level: int, msg: str, *args: Any, exc_info: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            state = self._state.get(key)
            if state is None or now - state[0] >= self.interval:
                suppressed = int(state[2]) if state is not None else 0
                if len(self._state) > 1024:  # keys are bounded too
                    self._state.clear()
                self._state[key] = state = [now, 0, 0]
            else:
                suppressed = 0
            if state[1] >= self.burst:
                state[2] += 1
                return
            state[1] += 1
        if suppressed:
            msg = f"{msg} ({suppressed} more like it suppressed)"
        self.logger.log(level, msg, *args, exc_info=exc_info)
