"""Controlled schedules: one harness thread runs at a time, switching at the framework's synchronisation points.

The free-running harness (:mod:`kstatpy.testing.race`) replays a seed's operations
but not its interleaving. :func:`controlled_race` runs the same workers and readers
under a :class:`Scheduler`: only one runs at a time, and the others may take over
only at a synchronisation point of the framework: a hold taken or released,
``ks_lock``, a :class:`~kstatpy.KMutex` taken or released, the wait in
``kstat_delete``, ``kmem_free``, and a provider ioctl's entry. Which thread runs
next is drawn from the seed, so the same seed replays the same interleaving
(:attr:`Scheduler.trace`), and a failure prints the seed and the schedule.

The choice is PCT's (Burckhardt et al., "A randomized scheduler with probabilistic
guarantees of finding bugs", ASPLOS 2010): each thread gets a distinct random
priority, the highest-priority thread that can run always runs, and at ``depth - 1``
steps drawn at random from the first ``steps_hint`` the running thread drops below
every other. A bug needing ``d`` ordering constraints among ``n`` threads and ``k``
steps is found by one schedule with probability at least ``1 / (n * k^(d-1))``;
:func:`explore` runs a budget of seeds.

A thread that cannot take what it waits for (a held KMutex, a held kstat) is
*blocked* until some thread releases something; when every unfinished thread is
blocked, that is a deadlock: the run fails with each thread's wait, its holder and
its stack. A thread that blocks outside the synchronisation points (a plain
``threading.Lock`` held across one, an ``Event.wait``) stalls the schedule: after
``stall`` seconds the run fails and names the thread (such a provider cannot be
scheduled; the free-running harness still covers it).
"""

from __future__ import annotations

import random
import sys
import threading
from collections import Counter
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from kstatpy.deadman import thread_stack
from kstatpy.lockorder import sync_point
from kstatpy.lockorder import thread_state

__all__ = ["ScheduleAborted", "Scheduler", "controlled_race", "explore", "ExploreResult"]


class ScheduleAborted(BaseException):  # not Exception: provider code catching Exception must not keep it
    """Raised in a controlled thread when its schedule ended (deadlock, stall, failure)."""


class _Thread:
    __slots__ = ("blocked", "epoch", "ident", "name", "prio", "state")

    def __init__(self, name: str, prio: int) -> None:
        self.name = name
        self.prio = prio
        self.state = "new"  # new, runnable, blocked, done
        self.ident: int | None = None
        self.epoch = 0  # the release count when it blocked
        self.blocked: tuple[str, int | None] = ("", None)  # what it waits for, and who holds it


class Scheduler:
    """PCT over named threads (see the module docstring). Build, :meth:`add` every thread, run.

    :param seed: draws the priorities and the change points.
    :param depth: PCT's d: ``depth - 1`` priority change points.
    :param steps_hint: PCT's k: change points fall in steps ``1..steps_hint``.
    """

    def __init__(self, seed: int | str, depth: int = 2, steps_hint: int = 200, stall: float = 20.0) -> None:
        self.rng = random.Random(f"pct/{seed}")
        self.depth = depth
        self.stall = stall
        self.change_points = sorted(self.rng.sample(range(1, max(steps_hint, depth) + 1), depth - 1))
        self._cv = threading.Condition()  # guards everything below
        self._threads: list[_Thread] = []
        self._by_ident: dict[int, _Thread] = {}
        self._running: _Thread | None = None
        self._epoch = 0
        self.step = 0
        #: Every synchronisation point passed: (thread name, what), in order.
        self.trace: list[tuple[str, str]] = []
        #: Why the schedule ended early (deadlock, stall), else None.
        self.failure: str | None = None
        self._started = False

    # --- set-up -----------------------------------------------------------------

    def add(self, name: str) -> None:
        """Register a thread by name, before any starts; priorities follow the seed."""
        self._threads.append(_Thread(name, 0))

    def _begin(self) -> None:
        # All threads have arrived: priorities d..d+n-1 in a seeded order (PCT).
        prios = list(range(self.depth, self.depth + len(self._threads)))
        self.rng.shuffle(prios)
        for t, p in zip(self._threads, prios, strict=True):
            t.prio = p
            t.state = "runnable"
        self._started = True
        self._run_next()

    def thread_main(self, name: str, body: Callable[[], None]) -> None:
        """Run ``body`` as the controlled thread ``name`` (call from that thread)."""
        st = thread_state(create=True)
        assert st is not None
        me = next(t for t in self._threads if t.name == name)
        with self._cv:
            me.ident = threading.get_ident()
            self._by_ident[me.ident] = me
            if all(t.ident is not None for t in self._threads):
                self._begin()
        try:
            with self._cv:
                self._wait_turn(me)
            st.sched = self
            body()
        except ScheduleAborted:
            pass
        finally:
            st.sched = None
            with self._cv:
                me.state = "done"
                self._epoch += 1  # a finished thread released whatever it held
                if self._running is me and self.failure is None:
                    self._run_next()

    # --- the synchronisation points (called by the framework) -------------------

    def point(self, what: str) -> None:
        """A synchronisation point: the running thread may be switched out here."""
        with self._cv:
            me = self._me()
            if me is None:
                return
            self._count(me, what)
            self._run_next()
            self._wait_turn(me)

    def released(self, what: str) -> None:
        """Something was released (waiters may proceed); a synchronisation point."""
        with self._cv:
            self._epoch += 1
        self.point(what)

    def progress(self) -> None:
        """Something was released; no switch here (the caller holds a framework lock)."""
        with self._cv:
            self._epoch += 1

    def block(self, what: str, owner: int | None) -> None:
        """The running thread cannot proceed (``owner`` holds it); returns when it should retry."""
        with self._cv:
            me = self._me()
            if me is None:
                return
            self._count(me, f"blocked: {what}")
            me.state = "blocked"
            me.epoch = self._epoch
            me.blocked = (what, owner)
            self._run_next()
            self._wait_turn(me)
            me.state = "runnable"

    # --- internals (under _cv) --------------------------------------------------

    def _me(self) -> _Thread | None:
        if self.failure is not None:
            raise ScheduleAborted
        return self._by_ident.get(threading.get_ident())

    def _count(self, me: _Thread, what: str) -> None:
        self.step += 1
        self.trace.append((me.name, what))
        for i, cp in enumerate(self.change_points):
            if cp == self.step:  # PCT: the running thread drops below every other
                me.prio = self.depth - 1 - i

    def _can_run(self, t: _Thread) -> bool:
        return t.state == "runnable" or (t.state == "blocked" and self._epoch > t.epoch)

    def _run_next(self) -> None:
        ready = [t for t in self._threads if self._can_run(t)]
        if not ready:
            if any(t.state == "blocked" for t in self._threads):
                self._fail(self._deadlock_report())
            self._running = None
            return
        self._running = max(ready, key=lambda t: t.prio)
        self._cv.notify_all()

    def _wait_turn(self, me: _Thread) -> None:
        while self._running is not me and self.failure is None:
            step = self.step  # no step for a whole stall period: the running thread is stuck
            if not self._cv.wait(self.stall) and self.step == step and self._running is not me:
                self._fail(self._stall_report())
        if self.failure is not None:
            raise ScheduleAborted

    def _fail(self, text: str) -> None:
        if self.failure is None:
            self.failure = text
        self._cv.notify_all()

    def _names(self) -> dict[int | None, str]:
        return {t.ident: t.name for t in self._threads}

    def _deadlock_report(self) -> str:
        frames = sys._current_frames()
        names = self._names()
        lines = [f"deadlock at step {self.step}: every thread that has not finished is blocked"]
        for t in self._threads:
            if t.state != "blocked":
                continue
            what, owner = t.blocked
            lines.append(f"  {t.name}: {what}, held by {names.get(owner, 'nobody known') if owner else 'nobody known'}")
            lines += [f"        {sym}" for sym in _trim(thread_stack(frames.get(t.ident or 0)))]
        return "\n".join(lines)

    def _stall_report(self) -> str:
        run = self._running
        frames = sys._current_frames()
        lines = [
            f"schedule stalled at step {self.step}: {run.name if run else 'no thread'} has reached no "
            f"synchronisation point for {self.stall:g} s (blocked outside them, e.g. on a plain threading.Lock "
            "held across one); this provider cannot run under controlled schedules"
        ]
        if run is not None:
            lines += [f"        {sym}" for sym in thread_stack(frames.get(run.ident or 0))]
        return "\n".join(lines)

    def schedule_text(self, last: int = 60) -> str:
        """The schedule: PCT's parameters, then the switches (the last ``last`` steps' threads)."""
        prios = ", ".join(f"{t.name}={t.prio}" for t in self._threads)
        out = [f"schedule: depth {self.depth}, change points {self.change_points}, final priorities {prios}"]
        switches = []
        prev = None
        for i, (name, what) in enumerate(self.trace, start=1):
            if name != prev:
                switches.append(f"  step {i}: {name} ({what})")
                prev = name
        out += switches[-last:]
        return "\n".join(out)


def _trim(stack: list[str]) -> list[str]:
    # The scheduler's own frames say nothing: start at the framework's synchronisation point.
    i = 0
    while i < len(stack) and stack[i].startswith(("schedule:", "threading:")):
        i += 1
    return stack[i:]


def _read_rounds(race: Any, sched: Scheduler, rounds: int, reads: Any) -> None:
    for _ in range(rounds):
        kids = race.provider_kids()
        if not kids:
            sched.point("idle: no kstat to read")
        race.read_all(kids, reads)


def controlled_race(
    provider: object,
    operations: Mapping[str, Callable[[Any], Any]],
    *,
    name: str = "provider",
    seed: int = 0,
    steps: int = 6,
    workers: int = 2,
    readers: int = 1,
    reader_rounds: int = 3,
    depth: int = 2,
    steps_hint: int = 200,
    cleanup: Callable[[Any], Any] | None = None,
    audit: bool = False,
    lockorder: bool | None = None,
    config: dict[str, Any] | None = None,
    stall: float = 20.0,
) -> Any:
    """One controlled schedule of ``seed`` (see the module docstring); the harness's checks otherwise.

    Workers run ``steps`` operations each (drawn from ``random.Random(f"{seed}/{worker}")``,
    as the free-running harness) with a sweep after each; readers read every provider
    kstat ``reader_rounds`` times. Then, uncontrolled: last closes, ``cleanup``, detach.

    :param stall: seconds the running thread may go without a synchronisation point
        before the schedule fails as stalled (it blocks outside them).
    :returns: the :class:`~kstatpy.testing.race.RaceResult`, with ``schedule`` (the
        scheduler) set.
    :raises LifetimeRaceError: with the report, the seed and the schedule.
    """
    from kstatpy.testing import race as rmod

    sched = Scheduler(seed, depth=depth, steps_hint=steps_hint, stall=stall)

    def run(race: Any, contexts: list[Any], names: list[str]) -> None:
        # The threads, controlled; nothing to finish after cleanup (the readers are done).
        race.chain.lockhooks = True
        race.chain.kmem.sync = sync_point
        threads = []
        for ctx in contexts:
            sched.add(f"worker{ctx.worker}")
        for i in range(readers):
            sched.add(f"reader{i}")
        for ctx in contexts:
            threads.append(threading.Thread(target=sched.thread_main, args=(f"worker{ctx.worker}", _worker(race, ctx, operations, names, steps)), daemon=True))  # fmt: skip
        for i in range(readers):
            body = _reader(race, sched, reader_rounds)
            threads.append(threading.Thread(target=sched.thread_main, args=(f"reader{i}", body), daemon=True))
        for t in threads:
            t.start()
        for t in threads:  # each ends: done, or aborted by a deadlock; a stalled one is left behind
            while t.is_alive() and sched.failure is None:
                t.join(1.0)
            t.join(1.0)
        race.chain.kmem.sync = None
        if sched.failure is not None:
            race.fail(sched.failure)
            raise rmod.LifetimeRaceError(rmod._message(name, seed, sched.failure))
        return None

    try:
        res = rmod.run_race(provider, operations, run, name=name, seed=seed, workers=workers, cleanup=cleanup,
                            audit=audit, lockorder=lockorder, config=config)  # fmt: skip
    except rmod.LifetimeRaceError as exc:
        raise rmod.LifetimeRaceError(f"{exc}\n{sched.schedule_text()}") from None
    res.schedule = sched
    return res


def _worker(race: Any, ctx: Any, operations: Mapping[str, Any], names: list[str], steps: int) -> Callable[[], None]:
    from kstatpy.testing.race import run_operation

    def body() -> None:
        reads: Counter[int] = Counter()
        for _ in range(steps):
            if race.stop.is_set() or not run_operation(race, ctx, operations, ctx.rng.choice(names)):
                break
            race.read_all(race.provider_kids(), reads)
        with race.lock:
            race.result.reads.update(reads)

    return body


def _reader(race: Any, sched: Scheduler, rounds: int) -> Callable[[], None]:
    def body() -> None:
        reads: Counter[int] = Counter()
        _read_rounds(race, sched, rounds, reads)
        with race.lock:
            race.result.reads.update(reads)

    return body


@dataclass
class ExploreResult:
    """What :func:`explore` did: schedules run, and the first failure (seed, report) if any."""

    schedules: int = 0
    failed_seed: int | None = None
    report: str = ""
    steps: list[int] = field(default_factory=list)  # steps of each schedule


def explore(
    provider: object, operations: Mapping[str, Any], *, budget: int, seed: int = 0, **kwargs: Any
) -> ExploreResult:
    """Run up to ``budget`` controlled schedules, seeds ``seed, seed+1, ...``; stop at the first failure."""
    from kstatpy.testing.race import LifetimeRaceError

    out = ExploreResult()
    for s in range(seed, seed + budget):
        out.schedules += 1
        try:
            res = controlled_race(provider, operations, seed=s, **kwargs)
        except LifetimeRaceError as exc:
            out.failed_seed = s
            out.report = str(exc)
            return out
        out.steps.append(res.schedule.step)
    return out
