"""Bounded waits for tests: every blocking step names its bound and what did not happen.

A test that blocks (a pipe read, a thread join, an event, a child's exit) must fail
fast with a message, never lean on pytest-timeout's 300 s (issue 23).
tests/test_bounded_waits.py scans tests/ for unbounded calls.

``within(timeout, what, fn, *args)`` runs ``fn(*args)`` in a daemon thread and returns
its result, or fails the test with "``what`` did not happen within ``timeout`` s". The
thread may stay blocked after a failure (e.g. on a pipe): the caller's ``finally``
kills the process that owns it (:func:`reap`), which ends the read.

``poll(what, cond, timeout)`` is for a state another thread or process reaches with no
event to wait on (a statistic, the kernel's view in /proc): ``cond()`` is called every
``every`` seconds until it returns something true, which is returned.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any
from typing import TypeVar

import pytest

T = TypeVar("T")


def within(timeout: float, what: str, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``'s result, or a failed test naming ``what`` after ``timeout`` seconds."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = fn(*args)
        except BaseException as exc:  # re-raised in the caller's thread
            box["exc"] = exc

    t = threading.Thread(target=run, daemon=True, name=f"within: {what}")
    t.start()
    t.join(timeout)
    if t.is_alive():
        pytest.fail(f"{what} did not happen within {timeout} s", pytrace=False)
    if "exc" in box:
        raise box["exc"]
    return box["result"]


def join(thread: threading.Thread, timeout: float, what: str) -> None:
    """Join ``thread``; fail naming ``what`` if it is still running after ``timeout`` s."""
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"{what} did not happen within {timeout} s ({thread.name} still running)", pytrace=False)


def wait(event: threading.Event, timeout: float, what: str) -> None:
    """Wait for ``event``; fail naming ``what`` if it is not set within ``timeout`` s."""
    if not event.wait(timeout):
        pytest.fail(f"{what} did not happen within {timeout} s", pytrace=False)


def reap(proc: subprocess.Popen, timeout: float = 10.0) -> tuple[Any, Any]:
    """SIGKILL ``proc`` if it still runs and collect its output; fail if it does not die in ``timeout`` s."""
    if proc.poll() is None:
        proc.kill()
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"pid {proc.pid} did not exit within {timeout} s of SIGKILL", pytrace=False)


def poll(what: str, cond: Callable[[], T], timeout: float = 30.0, every: float = 0.01) -> T:
    """``cond()``'s first true result, polled every ``every`` s; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout} s", pytrace=False)
        time.sleep(every)  # polling with a deadline, not synchronisation
