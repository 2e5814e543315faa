"""The deadman for waits: a hold or ``kstat_delete`` waiting too long, explained with both threads' stacks.

The lock-order checker (:mod:`kstatpy.lockorder`) catches a bad order when it is
made, with the reference audit on. In production it is off, and a deadlock shows as
a wait that never ends. The deadman makes that wait explain itself: every thread
waiting for a kstat's hold is in ``chain.waits`` (thread id -> kstat, why, since;
the chain lock guards it), and a Python process can read every thread's current
frames (``sys._current_frames()``).

:func:`wait_report` names, for one kstat whose hold has been waited for longer than
the threshold: each waiter (``kstat_delete``, a reader, ``kstat_install``) with its
stack; the holder, with its stack, what it is (a reader in ``ks_update`` of that
kstat, when kstatd's ``reading`` table says so), where in the provider it is blocked
(the innermost frame outside kstatpy and the standard library) and on what (a
:class:`~kstatpy.KMutex` and its owner, or another kstat's hold and its holder), hop
by hop; when the chain of waits comes back to a waiter, it says *deadlock* and shows
the cycle. :class:`Deadman` is kstatd's thread (``kstatd --deadman-seconds``): one
report per stuck kstat and holder, then it goes on waiting; nothing is broken or
released. The race harness uses :func:`stuck_waits` and :func:`wait_report` too.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from kstatpy.kmem import BadTrap
from kstatpy.kmem import frame_symbol
from kstatpy.lockorder import kstat_label

__all__ = ["DEFAULT_DEADMAN_SECONDS", "Deadman", "stuck_waits", "thread_stack", "wait_report"]

#: kstatd's default threshold (``--deadman-seconds``): long past any sane ks_update.
DEFAULT_DEADMAN_SECONDS = 10.0
#: Frames shown of each thread's stack.
STACK_DEPTH = 14
_OURS = ("kstatpy.", "threading", "pluggy", "selectors", "socketserver")


def stuck_waits(chain: Any, threshold: float, now: float | None = None) -> dict[int, list[tuple[int, str, float]]]:
    """Kstats whose hold someone waited for at least ``threshold`` s: kid -> [(thread, why, waited s)].

    Kstats a ``kstat_delete`` waits for come first.
    """
    now = time.monotonic() if now is None else now
    out: dict[int, list[tuple[int, str, float]]] = {}
    with chain.lock:
        for tid, (ksp, why, since) in chain.waits.items():
            if now - since >= threshold:
                out.setdefault(ksp.ks_kid, []).append((tid, why, now - since))
    return dict(sorted(out.items(), key=lambda kv: all(w[1] != "kstat_delete" for w in kv[1])))


def thread_stack(frame: Any, depth: int = STACK_DEPTH) -> list[str]:
    """A thread's current stack, innermost first, as ``module:function+0xOFF``."""
    out: list[str] = []
    while frame is not None and len(out) < depth:
        out.append(frame_symbol(frame))
        frame = frame.f_back
    return out


def _label(ksp: Any) -> str:
    # A kstat named in a report may be deleted meanwhile (its memory traps): never trap here.
    try:
        return kstat_label(ksp)
    except BadTrap:
        return "a kstat deleted meanwhile"


def _owner(ksp: Any) -> int | None:
    try:
        return ksp.e_owner  # type: ignore[no-any-return]
    except BadTrap:
        return None


def _names() -> dict[int, str]:
    return {t.ident: t.name for t in threading.enumerate() if t.ident is not None}


def _who(tid: int | None, names: dict[int, str]) -> str:
    return "nobody" if tid is None else f"thread 0x{tid:x} ({names.get(tid, '?')})"


def _blocked_on(frame: Any, chain: Any) -> tuple[str, str, int | None]:
    # Where the thread is blocked in the provider, on what, and who holds that.
    where = ""
    f = frame
    while f is not None:
        if not where and not f.f_globals.get("__name__", "").startswith(_OURS):
            where = frame_symbol(f)
        f = f.f_back
    f = frame
    while f is not None:
        name = f.f_code.co_name
        loc = f.f_locals
        m = loc.get("m") if name == "mutex_enter" else loc.get("self") if name == "acquire" else None
        if m is not None and hasattr(m, "_witness"):  # a KMutex
            return where, f"mutex_enter({m.name or ':'.join(map(str, m._site))})", m._owner
        f = f.f_back
    return where, "", None


def wait_report(chain: Any, kid: int, waiters: list[tuple[int, str, float]], threshold: float,
                reading: dict[int, int] | None = None) -> str:  # fmt: skip
    """The deadman's report for kstat ``kid`` (see the module docstring); text ending in a newline."""
    frames = sys._current_frames()
    names = _names()
    with chain.lock:
        ksp = chain.kstat_lookup_kid(kid)
        label = _label(ksp) if ksp is not None else f"kid {kid}"
        owner = ksp.e_owner if ksp is not None else None
        waits = dict(chain.waits)
        now = time.monotonic()
        known = {w[0] for w in waiters}
        waiters = waiters + [(t, why, now - since) for t, (k, why, since) in waits.items() if k is ksp and t not in known]
    waiters = sorted(waiters, key=lambda w: (w[1] != "kstat_delete", -w[2]))  # a kstat_delete first
    first = waiters[0]
    lines = [
        f"deadman: {first[1]} has waited {first[2]:.1f} s for the hold of {label} (kid {kid}; "
        f"threshold {threshold:g} s, kstatd --deadman-seconds)"
    ]
    for tid, why, waited in waiters:
        lines.append(f"  waiter: {_who(tid, names)}: {why}({label}), waiting {waited:.1f} s")
        lines += [f"        {sym}" for sym in thread_stack(frames.get(tid))]
    seen = {tid for tid, _, _ in waiters}
    hop, holds = owner, f"the hold of {label}"
    for _ in range(8):  # hop by hop along the chain of waits
        if hop is None:
            break
        role = f"a reader in ks_update of kid {reading[hop]}" if reading is not None and hop in reading else "holder"
        lines.append(f"  holder: {_who(hop, names)}: {role}, holding {holds}")
        frame = frames.get(hop)
        where, on, nxt = _blocked_on(frame, chain)
        nholds = on[len("mutex_enter(") : -1] if on else ""
        if hop in waits:  # itself waiting for another kstat's hold
            # `waits` is a copy: that kstat may have been deleted (and freed) since.
            other, why, _ = waits[hop]
            on, nxt, nholds = f"{why}: the hold of {_label(other)}", _owner(other), f"the hold of {_label(other)}"
        elif on:
            nholds = f"mutex {nholds}"
        lines.append(f"        blocked at {where or '?'}" + (f", in {on}, held by {_who(nxt, names)}" if on else ""))
        lines += [f"        {sym}" for sym in thread_stack(frame)]
        if nxt is not None and nxt in seen:
            lines.append(
                f"  deadlock: {_who(nxt, names)} waits for the hold of {label} while holding {nholds}, "
                f"which {_who(hop, names)} waits for: the waits form a cycle and never end (illumos 8149: "
                "kstat_delete called holding a lock that ks_update takes; docs/PROVIDERS.md, locking rules)"
            )
            break
        seen.add(hop)
        hop, holds = nxt, nholds
    return "\n".join(lines) + "\n"


class Deadman:
    """kstatd's deadman thread: one :func:`wait_report` per stuck kstat and holder.

    :param report: called with each report (kstatd writes it to stderr).
    :param reading: kstatd's thread id -> kid being read (names readers as such).
    """

    def __init__(self, chain: Any, threshold: float, report: Callable[[str], None],
                 reading: dict[int, int] | None = None) -> None:  # fmt: skip
        self.chain = chain
        self.threshold = threshold
        self.report = report
        self.reading = reading
        self._reported: set[tuple[int, int | None]] = set()  # (kid, holder) already reported
        self.reports = 0

    def scan(self, now: float | None = None) -> int:
        """Report what is newly stuck; the number of reports written."""
        stuck = stuck_waits(self.chain, self.threshold, now)
        keys = set()
        n = 0
        for kid, waiters in stuck.items():
            with self.chain.lock:  # a kstat still on the chain is not freed while it is held
                ksp = self.chain.kstat_lookup_kid(kid)
                key = (kid, ksp.e_owner if ksp is not None else None)
            keys.add(key)
            if key in self._reported:
                continue
            self._reported.add(key)
            self.report(wait_report(self.chain, kid, waiters, self.threshold, self.reading))
            n += 1
        self._reported &= keys  # a wait that ended may be reported again if it recurs
        self.reports += n
        return n

    def run(self, done: Callable[[], bool]) -> None:
        """Scan every quarter threshold (at most every second) until ``done()``."""
        tick = min(max(self.threshold / 4, 0.05), 1.0)
        while not done():
            time.sleep(tick)  # a periodic scan, not synchronisation
            try:
                self.scan()
            except Exception as exc:  # the deadman must never take kstatd down
                self.report(f"deadman: scan failed: {exc!r}\n")
