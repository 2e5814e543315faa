"""The lifetime race harness: a provider's life cycle against readers of every kstat it makes.

:func:`lifetime_race` attaches one provider to a fresh chain whose debug heap
audits every free (``Kmem(audit=True)``), then runs two kinds of threads at once:

* *workers* (``workers``, each its own connection): ``steps`` life-cycle
  operations each, picked from ``operations`` in an order drawn from
  ``random.Random(f"{seed}/{worker}")``: the same seed gives the same sequence;
  after each one (``sweep=True``) the worker reads every kstat the provider has,
  so a kstat that outlives its state is read at a deterministic point too;
* *readers* (``readers``): read every kstat the provider has, in shuffled order,
  through the read path kstatd uses (hold, ``ks_lock``, ``ks_update``, snapshot),
  until the workers are done.

Then every worker connection is closed (``kstatpy_conn_close``: a provider's last
close), ``cleanup`` runs, the readers stop, and the provider is detached. It fails
(:class:`LifetimeRaceError`, with the panic report of :mod:`kstatpy.panic` and the
seed) when any read or operation touches freed memory or frees memory a live kstat
points into (the audit), when an operation raises anything but a ``KstatError``, and
when kstats are left over: after the operations and ``cleanup``, any kstat that was
not there right after attach (leaked instances), and after detach, any at all. A
deadlock fails as one: with the lock-order checker (on with the audit) as the cycle,
the moment its second order is made; without it, as the deadman's report
(:mod:`kstatpy.deadman`) once a hold or ``kstat_delete`` has waited ``deadman``
seconds, naming both threads. The interleaving of threads is the OS's,
so a given seed replays the same operations but not the same race; the audit and the
sweeps make the 14281 class fail on every run regardless.

An operation is ``fn(ctx)`` with a :class:`RaceContext`: ``ctx.chain``, ``ctx.rng``
(the worker's), ``ctx.worker``, ``ctx.state`` (a dict per worker), ``ctx.ioctl(cmd,
arg)`` (kstatd's dispatch for this worker's connection: ``(errno, result)``) and
``ctx.reconnect()`` (drop the connection, as a client that dies).
"""

from __future__ import annotations

import errno
import random
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from kstatpy.chain import Chain
from kstatpy.constants import ALL_ZONES
from kstatpy.driver import read_kstat_data
from kstatpy.errors import KstatError
from kstatpy.ioctl import Conn
from kstatpy.ioctl import Cred
from kstatpy.ioctl import IoctlHandler
from kstatpy.kmem import BadTrap
from kstatpy.kmem import Kmem
from kstatpy.panic import format_panic
from kstatpy.plugins import load_providers

__all__ = ["LifetimeRaceError", "RaceContext", "RaceResult", "lifetime_race", "run_operation", "run_race"]

Operation = Callable[["RaceContext"], Any]


class LifetimeRaceError(AssertionError):
    """The harness found a lifetime bug; the message carries the report and the seed."""


@dataclass
class RaceResult:
    """What a passing run did: operations and reads by outcome."""

    seed: int
    ops: Counter[str] = field(default_factory=Counter)
    op_errors: Counter[tuple[str, int]] = field(default_factory=Counter)
    reads: Counter[int] = field(default_factory=Counter)  # errno -> count (0: success)
    kstats_seen: set[str] = field(default_factory=set)
    #: The controlled schedule's scheduler (kstatpy.testing.schedule), else None.
    schedule: Any = None
    #: The lock order the checker saw (``"A -> B"`` by lock class), first seen first.
    lock_edges: list[str] = field(default_factory=list)


class RaceContext:
    """What an operation gets: the chain, this worker's rng, connection and state."""

    def __init__(self, race: _Race, worker: int, rng: random.Random) -> None:
        self.chain = race.chain
        self.worker = worker
        self.rng = rng
        self.state: dict[str, Any] = {}
        self._race = race
        self.conn = Conn(Cred(uid=0, privileged=True), id=worker + 1)

    def ioctl(self, cmd: int, arg: Any = None) -> tuple[int, dict[str, Any]]:
        """One ioctl through kstatd's dispatch on this worker's connection."""
        return self._race.handler.dispatch(self.conn, cmd, arg)

    def reconnect(self) -> None:
        """Close this worker's connection (the provider's last close) and open a new one."""
        self._race.close_conn(self.conn)
        self.conn = Conn(Cred(uid=0, privileged=True), id=self.conn.id)


class _Race:
    def __init__(self, chain: Chain, providers: Any, seed: int) -> None:
        self.chain = chain
        self.providers = providers
        self.handler = IoctlHandler(chain, providers)
        self.baseline: set[int] = set()
        self.stop = threading.Event()
        self.lock = threading.Lock()  # guards result, failures
        self.result = RaceResult(seed)
        self.failures: list[str] = []

    def fail(self, text: str) -> None:
        with self.lock:
            self.failures.append(text)
        self.stop.set()

    def trap(self, trap: BadTrap, where: str) -> None:
        try:
            report = format_panic(trap, self.chain.kmem)
        except Exception as exc:  # a report must never hide the trap
            report = f"{trap} (no report: {exc!r})"
        self.fail(f"{where}: {trap}\n{report}")

    def close_conn(self, conn: Conn) -> None:
        try:
            self.providers.conn_close(self.chain, conn)
        except BadTrap as trap:
            self.trap(trap, "connection close (the provider's last close)")

    def provider_kids(self) -> list[int]:
        # A kstat in this snapshot may be deleted (and poisoned) by a worker at any
        # moment: its kid is read past the trap; reading it then answers ENXIO.
        kids = (object.__getattribute__(k, "ks_kid") for k in self.chain.kstats())
        return [kid for kid in kids if kid not in self.baseline]

    def read_all(self, kids: list[int], reads: Counter[int]) -> None:
        for kid in kids:
            if self.stop.is_set():
                return
            try:
                got = read_kstat_data(self.chain, kid, ALL_ZONES, None)
            except BadTrap as trap:
                self.trap(trap, f"read of kid {kid}")
                return
            except KstatError as exc:
                reads[exc.errno] += 1
            else:
                reads[0] += 1
                with self.lock:
                    self.result.kstats_seen.add(f"{got['module']}:{got['instance']}:{got['name']}")


def _describe(ksp: Any) -> str:
    buf = object.__getattribute__(ksp, "_kmem_buf")
    where = " <- ".join(buf.alloc_stack[:6]) if buf is not None else "?"
    return f"{ksp.ks_module}:{ksp.ks_instance}:{ksp.ks_name} (kid {ksp.ks_kid}), created at {where}"


def lifetime_race(
    provider: object,
    operations: Mapping[str, Operation],
    *,
    name: str = "provider",
    seed: int = 0,
    steps: int = 200,
    workers: int = 3,
    readers: int = 4,
    cleanup: Operation | None = None,
    sweep: bool = True,
    audit: bool = True,
    config: dict[str, Any] | None = None,
    timeout: float = 120.0,
    deadman: float = 5.0,
    lockorder: bool | None = None,
) -> RaceResult:
    """Race ``operations`` of ``provider`` against readers of its kstats (see the module docstring).

    :param provider: a provider plugin (module or object with ``@hookimpl`` hooks).
    :param operations: name -> ``fn(ctx)``; a ``KstatError`` from one is an expected
        refusal (counted), anything else a failure.
    :param cleanup: run once after the workers and their connections are done, to end
        whatever instances they left (e.g. destroy every VM); leaks are judged after it.
    :param audit: the heap's reference audit (on by default; off shows what the
        readers and sweeps alone catch).
    :param config: ``chain.config`` (e.g. ``{"vmm_teardown": "pre-14281"}``).
    :param deadman: a hold or ``kstat_delete`` waiting this long (s) is a deadlock:
        the failure is the deadman's report (:mod:`kstatpy.deadman`), both threads named.
    :param lockorder: the lock-order checker (default: on with ``audit``); its cycle
        is the failure's report when a wrong order is made.
    :returns: a :class:`RaceResult` when nothing was found.
    :raises LifetimeRaceError: with the panic report (or the leaked kstats) and the seed.
    """

    def run(race: _Race, contexts: list[RaceContext], names: list[str]) -> Callable[[], None]:
        def worker(ctx: RaceContext) -> None:
            reads: Counter[int] = Counter()
            for _ in range(steps):
                if race.stop.is_set() or not run_operation(race, ctx, operations, ctx.rng.choice(names)):
                    break
                if sweep:
                    race.read_all(race.provider_kids(), reads)
            with race.lock:
                race.result.reads.update(reads)

        readers_done = threading.Event()

        def reader(i: int) -> None:
            rng = random.Random(f"{seed}/reader{i}")
            reads: Counter[int] = Counter()
            try:
                while not race.stop.is_set() and not readers_done.is_set():
                    kids = race.provider_kids()
                    rng.shuffle(kids)
                    race.read_all(kids, reads)
                    if not kids:
                        readers_done.wait(0.001)  # nothing to read yet: yield to the workers
            except Exception:
                race.fail(f"reader {i} raised:\n{traceback.format_exc()}")
            with race.lock:
                race.result.reads.update(reads)

        rthreads = [threading.Thread(target=reader, args=(i,), name=f"race-reader{i}", daemon=True) for i in range(readers)]
        wthreads = [threading.Thread(target=worker, args=(c,), name=f"race-worker{c.worker}", daemon=True) for c in contexts]
        for t in rthreads + wthreads:
            t.start()
        if _join_or_deadman(race, wthreads, timeout, deadman):
            raise LifetimeRaceError(_message(name, seed, race.failures[0]))  # wedged threads are left behind

        def finish() -> None:  # after the last closes and cleanup, which the readers race too
            readers_done.set()
            for t in rthreads:
                t.join(timeout)

        return finish

    return run_race(provider, operations, run, name=name, seed=seed, workers=workers, cleanup=cleanup,
                    audit=audit, lockorder=lockorder, config=config)  # fmt: skip


def run_operation(race: _Race, ctx: RaceContext, operations: Mapping[str, Operation], op: str) -> bool:
    """Run one operation and count it; False when the run must stop (a failure was recorded)."""
    try:
        operations[op](ctx)
    except BadTrap as trap:
        race.trap(trap, f"operation {op!r} (worker {ctx.worker})")
        return False
    except KstatError as exc:
        with race.lock:
            race.result.op_errors[(op, exc.errno)] += 1
    except Exception:
        race.fail(f"operation {op!r} (worker {ctx.worker}) raised:\n{traceback.format_exc()}")
        return False
    with race.lock:
        race.result.ops[op] += 1
    return True


def run_race(
    provider: object,
    operations: Mapping[str, Operation],
    run_threads: Callable[[_Race, list[RaceContext], list[str]], Callable[[], None] | None],
    *,
    name: str,
    seed: int,
    workers: int,
    cleanup: Operation | None,
    audit: bool,
    lockorder: bool | None,
    config: dict[str, Any] | None,
) -> RaceResult:
    """The harness around its threads: attach, ``run_threads`` (returns a finisher, called after
    cleanup), last closes, ``cleanup``, the checks, detach. Used by :func:`lifetime_race` and by
    :func:`kstatpy.testing.schedule.controlled_race`."""
    if not operations:
        raise ValueError("lifetime_race: no operations")
    chain = Chain(kmem=Kmem(audit=audit, lockorder=lockorder), config=config)
    providers = load_providers(autoload=False, plugins=[(name, provider)])
    race = _Race(chain, providers, seed)
    race.baseline = {k.ks_kid for k in chain.kstats()}
    failed = providers.attach(chain)
    if providers.failures or failed:
        raise LifetimeRaceError(f"{name}: {(providers.failures or failed)[0]}")
    attached = {_name_of(k) for k in chain.kstats() if k.ks_kid not in race.baseline}
    names = sorted(operations)
    contexts = [RaceContext(race, i, random.Random(f"{seed}/{i}")) for i in range(workers)]
    finish = run_threads(race, contexts, names)
    if not race.stop.is_set():
        for ctx in contexts:  # last closes, with the readers still reading
            race.close_conn(ctx.conn)
    if cleanup is not None and not race.stop.is_set():
        ctx = RaceContext(race, workers, random.Random(f"{seed}/cleanup"))
        try:
            cleanup(ctx)
        except BadTrap as trap:
            race.trap(trap, "cleanup")
        except Exception:
            race.fail(f"cleanup raised:\n{traceback.format_exc()}")
        race.close_conn(ctx.conn)
    if finish is not None:
        finish()
    if race.failures:
        raise LifetimeRaceError(_message(name, seed, race.failures[0]))
    mine = [k for k in chain.kstats() if k.ks_kid not in race.baseline]
    dangling = [_describe(k) for k in mine if _points_into_freed(chain, k)]
    left = [_describe(k) for k in mine if _name_of(k) not in attached]  # the attach-time set is the provider's own
    try:
        providers.detach(chain)
    except BadTrap as trap:
        race.trap(trap, "detach")
        raise LifetimeRaceError(_message(name, seed, race.failures[0])) from None
    after_detach = [k for k in chain.kstats() if k.ks_kid not in race.baseline]
    if chain.witness is not None:
        race.result.lock_edges = [f"{e.a.name} -> {e.b.name}" for e in chain.witness.edges()]
    problems = []
    if dangling:
        problems.append("kstats whose ks_private points into freed memory (::kstat -d):")
        problems += [f"  {k}" for k in dangling]
    if left:
        problems.append(f"{len(left)} kstat(s) leaked: still in the chain after the operations, their connections and cleanup:")
        problems += [f"  {k}" for k in left[:20]]  # described before detach freed them
    if after_detach:
        problems.append(f"{len(after_detach)} kstat(s) still in the chain after kstatpy_detach:")
        problems += [f"  {_describe(k)}" for k in after_detach[:20]]
    if problems:
        raise LifetimeRaceError(_message(name, seed, "\n".join(problems)))
    return race.result


def _join_or_deadman(race: _Race, threads: list[threading.Thread], timeout: float, deadman: float) -> bool:
    # Join the workers; True when they are wedged: a wait past the deadman (its report is
    # the failure) or past the timeout. A periodic check, not synchronisation.
    from kstatpy.deadman import stuck_waits
    from kstatpy.deadman import wait_report

    deadline = time.monotonic() + timeout
    for t in threads:
        while t.is_alive():
            t.join(min(0.1, deadman / 4))
            stuck = stuck_waits(race.chain, deadman)
            if stuck:
                kid, waiters = next(iter(stuck.items()))
                race.fail("deadlock: " + wait_report(race.chain, kid, waiters, deadman))
                return True
            if time.monotonic() > deadline:
                race.fail(f"{t.name} did not finish within {timeout} s, and no hold was waited for (a livelock?)")
                return True
    return False


def _name_of(ksp: Any) -> tuple[str, int, str]:
    return (ksp.ks_module, ksp.ks_instance, ksp.ks_name)


def _points_into_freed(chain: Chain, ksp: Any) -> bool:
    private = ksp.ks_private
    try:
        buf = object.__getattribute__(private, "_kmem_buf")
    except (AttributeError, TypeError):
        return False
    return buf is not None and buf.freed


def _message(name: str, seed: int, body: str) -> str:
    return f"lifetime race of {name!r} failed (seed={seed}; rerun with the same seed to replay the operations)\n{body}"


#: Reads a harness counts as healthy: success, gone (ENXIO), not yet installed (EAGAIN).
HEALTHY_READS = frozenset({0, errno.ENXIO, errno.EAGAIN})
