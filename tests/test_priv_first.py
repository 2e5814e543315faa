"""Privileged requests first (issue 21): kstatpy.fairness.PrivFirst, alone and in a real kstatd.

While a request on root's privileged socket is in flight, public connections' expensive
work (READ_MANY, SELECT, DESCRIBE) and the public accept loop wait at their safe points,
within a bound. These tests check the rule by counts and states, never by timing (the
latency figures are bench/attacks.py's, in RELIABILITY.md).
"""

from __future__ import annotations

import errno
import os
import select
import socket
import subprocess
import threading

import pytest
from bounded import poll
from bounded import within
from kstatd_fixture import read_reply
from nobody import _env
from nobody import as_victim
from nobody import nobody_python
from nobody import nobody_tree
from nobody import shared_dir

from kstatpy import KSTAT_DATA_UINT64
from kstatpy import KSTAT_TYPE_NAMED
from kstatpy import kstat_named_init
from kstatpy.chain import Chain
from kstatpy.fairness import PausedHolding
from kstatpy.fairness import PrivFirst
from kstatpy.kmem import Kmem
from kstatpy.protocol import pack_request
from kstatpy.server import Kstatd
from kstatpy.server import ServerConfig

READ, READ_MANY, SELECT, DESCRIBE = 0x4B02, 0x4B11, 0x4B12, 0x4B13


# --- the gate alone ------------------------------------------------------------------------


def test_a_safe_point_waits_while_a_privileged_request_runs_and_goes_on_after_it():
    first = PrivFirst(burst=60.0)  # a bound the test never reaches: the pause ends with end()
    passed: list[str] = []

    def public() -> None:
        first.pausable(True)
        first.checkpoint()
        passed.append("public")

    def privileged_thread() -> None:
        first.pausable(False)  # not pausable: a privileged connection's own work
        first.checkpoint()
        passed.append("privileged")

    first.checkpoint()  # this thread never said it was pausable: never waits
    first.begin()
    t = threading.Thread(target=public, daemon=True)
    t.start()
    poll("the public thread's pause", lambda: first.waiting == 1)
    within(30, "a privileged thread's checkpoint", privileged_thread)
    assert passed == ["privileged"]  # the public one still waits
    first.end()
    t.join(30)
    assert passed == ["privileged", "public"]
    assert (first.pauses, first.cut, first.busy, first.waiting) == (1, 0, 0, 0)
    first.pausable(True)
    first.checkpoint()  # nothing privileged in flight: no pause
    assert first.pauses == 1


def test_a_flood_of_privileged_requests_never_stops_the_others():
    # A privileged request that never ends (root's flood, a hung provider): the public
    # thread's checkpoints still all pass; the bound cut the pauses.
    first = PrivFirst(burst=0.02, share=0.5)
    first.begin()
    done = []

    def public() -> None:
        first.pausable(True)
        for _ in range(300):
            first.checkpoint()
        done.append(True)

    within(60, "300 checkpoints under a privileged request that never ends", public)
    assert done and first.cut >= 1 and first.waiting == 0
    assert first.pauses < 300  # right after a cut the bucket is empty: checkpoints pass at once
    first.end()


def test_a_safe_point_holding_a_kstat_hold_is_caught():
    # The wrong order: a pause with a hold held would make the privileged request it yields
    # to wait for the paused thread (a delete, a reader). The checker names the hold.
    chain = Chain(kmem=Kmem(audit=True))
    ksp = chain.kstat_create("t21", 0, "held", "misc", KSTAT_TYPE_NAMED, 1, 0)
    kstat_named_init(ksp.ks_data[0], "value", KSTAT_DATA_UINT64)
    chain.kstat_install(ksp)
    first = PrivFirst(burst=60.0)
    first.pausable(True)
    first.begin()
    held = chain.kstat_hold_bykid(ksp.ks_kid, 0)
    assert held is not None
    try:
        with pytest.raises(PausedHolding, match=r"hold t21:\*:held"):
            first.checkpoint()
    finally:
        chain.kstat_rele(held)
    first.end()
    assert first.waiting == 0


# --- in a real kstatd ----------------------------------------------------------------------------


def _daemon(sock_dir: str, burst: float | None = None) -> tuple[Kstatd, threading.Event, int, int]:
    # A kstatd with root's privileged socket; test:0:hang blocks in ks_update until ``release``.
    chain = Chain()
    release = threading.Event()

    def hang(ksp, rw):
        release.wait(60)
        return 0

    ksp = chain.kstat_create("test", 0, "hang", "misc", KSTAT_TYPE_NAMED, 0, 0)
    ksp.ks_update = hang
    chain.kstat_install(ksp)
    hang_kid = ksp.ks_kid
    ksp = chain.kstat_create("test", 0, "ok", "misc", KSTAT_TYPE_NAMED, 1, 0)
    kstat_named_init(ksp.ks_data[0], "value", KSTAT_DATA_UINT64)
    ksp.ks_data[0].value = 42
    chain.kstat_install(ksp)
    kd = Kstatd(chain, None, ServerConfig(socket=os.path.join(sock_dir, "k.sock"), priv_sockets=True))
    if burst is not None:
        kd.first.burst = burst
    kd.start()
    assert kd.priv_paths, "no privileged socket"
    return kd, release, hang_kid, ksp.ks_kid


def _send(path: str, cmd: int, arg) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(60)
    s.connect(path)
    s.sendall(pack_request(cmd, 1, arg))
    return s


def _stop(kd: Kstatd, release: threading.Event) -> None:
    release.set()
    kd.stop()
    kd.shutdown(grace=5.0)


def test_public_read_many_pauses_while_roots_read_is_in_flight():
    with shared_dir() as d:
        kd, release, hang_kid, ok_kid = _daemon(d, burst=60.0)
        try:
            root = _send(kd.priv_paths[0], READ, {"kid": hang_kid})  # in flight until released
            poll("root's request in flight", lambda: kd.first.busy >= 1)
            public = _send(kd.config.socket, READ_MANY, {"kids": [ok_kid] * 1000})
            poll("the public READ_MANY's pause", lambda: kd.first.waiting == 1)
            assert select.select([public], [], [], 0)[0] == []  # paused: no reply yet
            release.set()
            assert within(30, "root's reply", read_reply, root)[1] == 0
            _, code, result = within(30, "the public READ_MANY's reply", read_reply, public)
            assert code == 0 and [e[0] for e in result["results"]] == [0] * 1000
            assert kd.first.cut == 0 and kd.first.pauses >= 1
            root.close()
            public.close()
            poll("no privileged request left in flight", lambda: kd.first.busy == 0)
        finally:
            _stop(kd, release)


def test_every_public_request_and_hang_up_waits_while_roots_read_is_in_flight():
    # Cheap requests too (a READ of one kstat), and a connection's hang-up (its close and
    # bookkeeping): under connection churn, every public session thread would otherwise
    # take the GIL from root's request in turn. Both sessions are accepted before root's
    # read goes in flight (the accept loop waits too).
    with shared_dir() as d:
        kd, release, hang_kid, ok_kid = _daemon(d, burst=60.0)
        try:
            reader = _send(kd.config.socket, READ, {"kid": ok_kid})
            assert within(30, "the public READ's reply", read_reply, reader)[1] == 0
            leaver = _send(kd.config.socket, READ, {"kid": ok_kid})
            assert within(30, "the other public READ's reply", read_reply, leaver)[1] == 0
            root = _send(kd.priv_paths[0], READ, {"kid": hang_kid})  # in flight until released
            poll("root's request in flight", lambda: kd.first.busy >= 1)
            reader.sendall(pack_request(READ, 2, {"kid": ok_kid}))
            poll("the public READ's pause", lambda: kd.first.waiting == 1)
            assert select.select([reader], [], [], 0)[0] == []  # paused: no reply yet
            leaver.close()
            poll("the hang-up's pause", lambda: kd.first.waiting == 2)
            release.set()
            assert within(30, "root's reply", read_reply, root)[1] == 0
            assert within(30, "the public READ's reply after root's", read_reply, reader)[:2] == [2, 0]
            poll("both pauses over", lambda: kd.first.waiting == 0)
            assert kd.first.cut == 0 and kd.first.pauses >= 2
            root.close()
            reader.close()
        finally:
            _stop(kd, release)


def test_a_privileged_request_that_never_ends_does_not_stop_public_work():
    # The bound, in kstatd: root's read hangs; the public READ_MANY, SELECT and DESCRIBE
    # are answered all the same, their pauses cut by the bound.
    with shared_dir() as d:
        kd, release, hang_kid, ok_kid = _daemon(d)
        try:
            root = _send(kd.priv_paths[0], READ, {"kid": hang_kid})
            poll("root's request in flight", lambda: kd.first.busy >= 1)
            for cmd, arg in [
                (READ_MANY, {"kids": [ok_kid] * 2000}),
                (DESCRIBE, {"kids": [ok_kid] * 2000}),
                (SELECT, {"selectors": [[f"te*{i}", "*", "o?", "*"] for i in range(16)] + [["test", "0", "ok"]]}),
            ]:
                with _send(kd.config.socket, cmd, arg) as public:
                    _, code, result = within(30, f"public 0x{cmd:x} under a hung root request", read_reply, public)
                assert code == 0 and result["results"] and all(e[0] == 0 for e in result["results"])
            assert kd.first.busy >= 1 and kd.first.cut >= 1  # root's read still in flight; pauses were cut
            release.set()
            assert within(30, "root's reply", read_reply, root)[1] == 0
            root.close()
        finally:
            _stop(kd, release)


@pytest.mark.parametrize(
    ("cmd", "arg", "least"),
    [
        (READ_MANY, {"kids": "OK*40"}, 40),  # between kstats
        (DESCRIBE, {"kids": "OK*40"}, 80),  # between kstats, then between the reply's entries
        (SELECT, {"selectors": [[f"te*{i}?", "*", "*"] for i in range(30)] + [["test", "0", "ok"]]}, 31),  # compiles
        (READ_MANY, {"kids": "OK*40", "pieces": True}, 40),  # a reply in pieces: between entries
        (DESCRIBE, {"kids": "OK*40", "pieces": True}, 40),
    ],
    ids=["read_many", "describe", "select", "read_many_in_pieces", "describe_in_pieces"],
)
def test_every_expensive_request_reaches_a_safe_point_per_kstat(cmd, arg, least):
    # Each pause is cut at once and the bucket refills between two safe points (burst 2 ms,
    # refilled 1,000 s a second): every safe point reached while root's read hangs is one
    # pause, whatever the timing. A loop without its safe point would count 1 (the send's).
    with shared_dir() as d:
        kd, release, hang_kid, ok_kid = _daemon(d, burst=0.002)
        kd.first.share = 1000.0
        try:
            if arg.get("kids") == "OK*40":
                arg = {**arg, "kids": [ok_kid] * 40}
            root = _send(kd.priv_paths[0], READ, {"kid": hang_kid})
            poll("root's request in flight", lambda: kd.first.busy >= 1)
            before = kd.first.pauses
            with _send(kd.config.socket, cmd, arg) as public:
                _, code, result = within(60, f"public 0x{cmd:x}", read_reply, public)
            assert code == 0 and all(e[0] == 0 for e in result["results"])
            assert kd.first.pauses - before >= least
            release.set()
            assert within(30, "root's reply", read_reply, root)[1] == 0
            root.close()
        finally:
            _stop(kd, release)


CLIENT = r"""
import msgpack, socket, sys
path, kid, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def rpc(s, cmd, arg):
    body = msgpack.packb([cmd, 1, arg], use_bin_type=True)
    s.sendall(len(body).to_bytes(4, "big") + body)
    def exact(n):
        buf = b""
        while len(buf) < n:
            c = s.recv(n - len(buf))
            if not c: raise EOFError
            buf += c
        return buf
    return msgpack.unpackb(exact(int.from_bytes(exact(4), "big")), raw=False)
s = socket.socket(socket.AF_UNIX); s.settimeout(60); s.connect(path)
for i in range(rounds):
    for cmd, arg in [(0x4B11, {"kids": [kid] * 300}), (0x4B13, {"kids": [kid] * 300}),
                     (0x4B12, {"selectors": [[f"t*{i}", "*", "*"], ["test", "0", "ok"]]})]:
        seq, code, result = rpc(s, cmd, arg)
        assert code == 0 and all(e[0] == 0 for e in result["results"]), (cmd, code, result)
print("ok")
"""


def test_stress_many_uids_and_root():
    # Five users' expensive requests and four root threads' reads on the privileged socket,
    # all at once: every request answered right, and nothing left counted as in flight or paused.
    nobody_python()
    with shared_dir() as d:
        kd, release, _, ok_kid = _daemon(d)
        release.set()  # test:0:hang answers at once here
        procs = []
        try:
            for uid in range(42101, 42106):
                procs.append(subprocess.Popen(
                    [*as_victim(uid), nobody_python(), "-s", "-c", CLIENT, kd.config.socket, str(ok_kid), "15"],
                    cwd=str(nobody_tree()), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                ))  # fmt: skip
            errors: list[str] = []

            def root_reads() -> None:
                for _ in range(150):
                    try:
                        with _send(kd.priv_paths[0], READ, {"kid": ok_kid}) as s:
                            _, code, result = read_reply(s)
                        if code != 0 or result["kstat"]["data"][0][2] != 42:
                            errors.append(f"root READ: {code} {result}")
                    except (OSError, EOFError) as exc:
                        errors.append(f"root READ: {exc!r}")

            roots = [threading.Thread(target=root_reads, daemon=True) for _ in range(4)]
            for t in roots:
                t.start()
            for t in roots:
                t.join(240)
            assert not any(t.is_alive() for t in roots), "root's reads did not finish within 240 s"
            for p in procs:
                out, err = p.communicate(timeout=240)
                assert p.returncode == 0 and out == b"ok\n", err.decode(errors="replace")[-2000:]
            assert not errors, errors[:5]
            poll("no privileged request left in flight", lambda: kd.first.busy == 0)
            assert kd.first.waiting == 0
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(30)
            _stop(kd, release)


def test_a_public_request_with_a_bad_kid_is_still_answered_while_root_waits():
    # A safe point is also passed on the error paths (EINVAL, ENXIO entries).
    with shared_dir() as d:
        kd, release, hang_kid, ok_kid = _daemon(d)
        try:
            root = _send(kd.priv_paths[0], READ, {"kid": hang_kid})
            poll("root's request in flight", lambda: kd.first.busy >= 1)
            with _send(kd.config.socket, READ_MANY, {"kids": ["x", 999_999, ok_kid]}) as public:
                _, code, result = within(30, "the public READ_MANY's reply", read_reply, public)
            assert code == 0 and [e[0] for e in result["results"]] == [errno.EINVAL, errno.ENXIO, 0]
            release.set()
            assert within(30, "root's reply", read_reply, root)[1] == 0
            root.close()
        finally:
            _stop(kd, release)
