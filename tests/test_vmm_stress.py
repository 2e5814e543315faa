"""docs/VMM.md §6 in process: readers by kid against VMs being created and destroyed.

The scenario (:func:`churn`) runs over any transport that answers ioctls as
``(errno, result)``: here kstatd's dispatch called in process; in
``test_vmm_kstatd.py`` a real kstatd. 8 readers walk KID 0 and read every
``vmm:*`` kid; mutators create, open, destroy (while open and while closed),
drive vCPUs, close, drop connections and re-create VMs of the same few names.
"""

from __future__ import annotations

import errno
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import kstatpy_providers.vmm.ioctl as ioc

from kstatpy.constants import KstatIoctl
from kstatpy.ioctl import Conn
from kstatpy.ioctl import Cred
from kstatpy.kmem import BadTrap
from kstatpy.panic import panic_stack
from tests.test_vmm_lifecycle import Host

READ = int(KstatIoctl.READ)
NAMES = ("alpha", "beta", "gamma")
#: What a mutator may be told besides success: races with the other mutators.
MUTATOR_OK = {errno.EEXIST, errno.ENOENT, errno.ENXIO}
PANIC = -1  # an in-process "reply" for a BadTrap


@dataclass
class ChurnResult:
    cycles: int = 0
    reads: Counter[int] = field(default_factory=Counter)
    vcpu_reads_ok: int = 0
    mutator_errors: Counter[tuple[int, int]] = field(default_factory=Counter)
    panics: list[Any] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


Connect = Callable[[], Any]  # -> an object with ioctl(cmd, arg) -> (errno, result) and close()


def churn(
    connect: Connect,
    *,
    readers: int = 8,
    mutators: int = 3,
    cycles: int = 2000,
    seconds: float = 60.0,  # an upper bound for slow machines; runs end at `cycles`
    stop_on_panic: bool = False,
    seed: int = 14281,
    reads_per_cycle: int = 400,
) -> ChurnResult:
    """Run docs/VMM.md §6 until ``cycles`` mutator cycles or ``seconds`` passed (or a panic).

    Readers are paced to at most ``reads_per_cycle`` reads per mutator cycle (about
    twice what they do unpaced on an idle 2-core machine), so the mix of reads and
    mutations is the same on any machine: on a loaded CI host, 8 unpaced readers
    took the GIL from the mutators (21,000 reads a cycle, 210 cycles in 60 s).
    """
    res = ChurnResult()
    lock = threading.Condition()  # guards res; readers wait on it for their budget
    stop = threading.Event()
    deadline = time.monotonic() + seconds
    remaining = [cycles]

    def may_read() -> bool:  # lock held
        return stop.is_set() or res.reads.total() < (res.cycles + 1) * reads_per_cycle

    def reader() -> None:
        conn = connect()
        try:
            while not stop.is_set():
                code, result = conn.ioctl(READ, {"kid": 0})
                if code:
                    with lock:
                        res.failures.append(f"KID 0 read: {code} {result}")
                    return
                kids = [(h["kid"], h["name"]) for h in result["kstat"]["data"] if h["module"] == "vmm"]
                for kid, name in kids:
                    with lock:
                        if not lock.wait_for(may_read, timeout=0.1):
                            continue  # bounded: re-check stop and the budget
                    code, result = conn.ioctl(READ, {"kid": kid})
                    with lock:
                        res.reads[code] += 1
                        if code == 0 and name.startswith("vcpu"):
                            res.vcpu_reads_ok += 1
                        if code in (PANIC, errno.EFAULT):
                            res.panics.append(result)
                    if code in (PANIC, errno.EFAULT) and stop_on_panic:
                        stop.set()
                        return
        finally:
            conn.close()

    def mutator(rng: random.Random) -> None:
        conn = connect()

        def call(cmd: int, arg: Any) -> dict[str, Any] | None:
            code, result = conn.ioctl(cmd, arg)
            if code:
                with lock:
                    res.mutator_errors[(cmd, code)] += 1
                    if code not in MUTATOR_OK:
                        res.failures.append(f"ioctl 0x{cmd:x} {arg}: {code} {result}")
                return None
            return result

        try:
            while not stop.is_set() and time.monotonic() < deadline:
                with lock:
                    if remaining[0] <= 0:
                        return
                    remaining[0] -= 1
                    res.cycles += 1
                    lock.notify_all()
                name = rng.choice(NAMES)
                kind = rng.randrange(4)
                call(ioc.VMM_CREATE_VM, {"name": name})
                if kind == 0:  # destroy while closed
                    call(ioc.VMM_DESTROY_VM, {"name": name})
                    continue
                opened = call(ioc.VMM_OPEN, {"name": name})
                if opened is not None:
                    fd = opened["fd"]
                    for vcpu in rng.sample(range(32), 3):
                        call(ioc.VMM_VCPU_USTATE, {"fd": fd, "vcpu": vcpu, "state": rng.randrange(6)})
                call(ioc.VMM_DESTROY_VM, {"name": name})  # while open: deferred
                if kind == 1 and opened is not None:
                    call(ioc.VMM_CLOSE, {"fd": opened["fd"]})
                elif kind == 2:  # re-create the name while the old VM lingers, then drop the connection
                    call(ioc.VMM_CREATE_VM, {"name": name})
                    conn.close()
                    conn = connect()
                elif kind == 3 and opened is not None:
                    code, _ = conn.ioctl(ioc.VMM_VCPU_USTATE, {"fd": opened["fd"], "vcpu": 0, "state": 1})
                    if code != errno.ENXIO:
                        with lock:
                            res.failures.append(f"ustate on a destroyed VM: {code}")
                    call(ioc.VMM_CLOSE, {"fd": opened["fd"]})
        finally:
            conn.close()

    threads = [threading.Thread(target=reader, name=f"reader{i}") for i in range(readers)]
    threads += [
        threading.Thread(target=mutator, args=(random.Random(seed + i),), name=f"mutator{i}") for i in range(mutators)
    ]
    for t in threads:
        t.start()
    for t in threads[readers:]:
        t.join(timeout=seconds + 30)
    stop.set()
    with lock:
        lock.notify_all()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive(), f"{t.name} is stuck"
    # Clean-up: whatever VMs the last cycles left (created but not destroyed).
    conn = connect()
    for name in NAMES:
        conn.ioctl(ioc.VMM_DESTROY_VM, {"name": name})
    conn.close()
    return res


class InProcessConn:
    """kstatd's dispatch in this process; a BadTrap (panic) becomes ``(PANIC, stack)``."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.conn = Conn(Cred(uid=0, privileged=True))

    def ioctl(self, cmd: int, arg: Any) -> tuple[int, Any]:
        try:
            return self.host.handler.dispatch(self.conn, cmd, arg)
        except BadTrap as trap:
            return PANIC, " ".join(panic_stack(trap))

    def close(self) -> None:
        self.host.drop(self.conn)


def test_vmm_churn_in_process_never_panics() -> None:
    host = Host()
    res = churn(lambda: InProcessConn(host), cycles=2000)
    assert res.failures == [] and res.panics == []
    assert set(res.reads) <= {0, errno.ENXIO, errno.EAGAIN}, res.reads
    assert res.cycles >= 1000, res.cycles
    assert res.vcpu_reads_ok > 100, res.reads
    assert host.driver.instances() == []
    assert len(host.driver.minors) == 0
    assert host.kids() == host.start_kids


def test_vmm_churn_in_process_pre_14281_panics() -> None:
    host = Host("pre-14281")
    res = churn(lambda: InProcessConn(host), cycles=2000, stop_on_panic=True)
    assert res.panics, f"no panic in {res.cycles} cycles: {res.reads}"
    assert "vmm:vmm_kstat_update_vcpu" in res.panics[0]
