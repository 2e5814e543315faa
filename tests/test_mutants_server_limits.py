"""kstatd's connection limits at their edges (issue 23: server.py's limit-carrying parts).

An in-process :class:`Kstatd` on real Unix sockets in tmp_path (fast: no daemon to spawn),
small limits: the connection cap and the zone quota admit exactly their number and refuse
the next with EBUSY naming the option; a closed connection frees its slot and leaves no
counter behind; the embedded server's limits are the kstatd command's defaults.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
from kstatd_fixture import read_reply

from kstatpy.chain import Chain
from kstatpy.constants import KSTAT_TYPE_NAMED
from kstatpy.daemon_stats import ERRNO_SLOTS
from kstatpy.hookspecs import hookimpl
from kstatpy.kmem import BadTrap
from kstatpy.plugins import load_providers
from kstatpy.protocol import pack_request
from kstatpy.server import FD_LOG_INTERVAL
from kstatpy.server import Kstatd
from kstatpy.server import ServerConfig

HELLO, READ, WRITE = 0x4B10, 0x4B02, 0x4B03


class Closes:
    """A provider that counts the connections closed (kstatpy_conn_close)."""

    def __init__(self) -> None:
        self.closed: list[int] = []

    @hookimpl
    def kstatpy_conn_close(self, chain: Chain, conn: object) -> None:
        self.closed.append(conn.id)  # type: ignore[attr-defined]


@pytest.fixture
def closes() -> Closes:
    return Closes()


@pytest.fixture
def daemon(tmp_path: Path, closes: Closes) -> Iterator[Kstatd]:
    cfg = ServerConfig(
        socket=str(tmp_path / "k.sock"), zones=[("z1", str(tmp_path / "z1.sock"))], priv_sockets=False,
        max_connections=5, reserved_connections=1, max_per_uid=2, max_per_zone=1, deadman_seconds=0,
        read_timeout=0.5,  # the watchdog's scan every 50 ms: its stop costs the teardown no 0.25 s
    )  # fmt: skip
    kd = Kstatd(Chain(), load_providers(autoload=False, plugins=[("closes", closes)]), cfg)
    kd.start()
    yield kd
    kd.stop()
    kd.shutdown(grace=1.0)


def connect(path: str) -> tuple[socket.socket, list]:
    """A connection and the reply to its first request (HELLO), or kstatd's refusal."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(path)
    try:
        s.sendall(pack_request(HELLO, 1, {"protocol": 1}))
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused and closed before the request went: the refusal is waiting to be read
    return s, read_reply(s)


def drained(kd: Kstatd) -> None:
    with kd._sessions_cv:
        assert kd._sessions_cv.wait_for(lambda: not kd._sessions, timeout=10), "sessions did not close within 10 s"


def test_the_connection_cap_admits_exactly_max_connections(daemon: Kstatd, closes: Closes) -> None:
    path = daemon.config.socket
    socks = []
    try:
        for _ in range(5):  # root: the reserve is its own, only the total counts
            s, (seq, code, result) = connect(path)
            socks.append(s)
            assert (seq, code) == (1, 0), result
        refused, (seq, code, result) = connect(path)
        refused.close()
        assert (seq, code) == (0, errno.EBUSY)
        assert result["error"] == "too many connections (kstatd --max-connections 5)"
        socks.pop(0).close()  # one slot frees: the next connection is served
        with daemon._sessions_cv:
            assert daemon._sessions_cv.wait_for(lambda: len(daemon._sessions) == 4, timeout=10)
        assert daemon._per_uid == {0: 4} and daemon._per_zone == {0: 4}  # one closed: one down
        s, (seq, code, result) = connect(path)
        socks.append(s)
        assert (seq, code) == (1, 0), result
        while socks:  # each close takes one off, down to the last
            socks.pop().close()
            with daemon._sessions_cv:
                assert daemon._sessions_cv.wait_for(lambda: len(daemon._sessions) == len(socks), timeout=10)
            assert daemon._per_uid == ({0: len(socks)} if socks else {}), len(socks)
    finally:
        for s in socks:
            s.close()
    drained(daemon)
    assert daemon._per_uid == {} and daemon._per_zone == {}  # no counter left at 0: one per uid ever seen
    assert len(set(closes.closed)) == len(closes.closed) == 6  # providers heard of every close (none refused)


def test_the_zone_quota_admits_exactly_max_per_zone_and_the_global_zone_keeps_its_slots(daemon: Kstatd) -> None:
    zone = daemon.config.zones[0][1]
    socks = []
    try:
        s, (seq, code, result) = connect(zone)  # a quota of 1: the first is admitted
        socks.append(s)
        assert (seq, code) == (1, 0), result
        s, (seq, code, result) = connect(zone)
        socks.append(s)
        assert (seq, code) == (0, errno.EBUSY)
        assert result["error"] == "too many connections from zone z1 (kstatd --max-per-zone 1)"
        s, (seq, code, result) = connect(daemon.config.socket)  # the global zone's socket is not the zone's
        socks.append(s)
        assert (seq, code) == (1, 0), result
        assert daemon._per_zone == {1: 1, 0: 1}
        # Root on the zone's socket is that zone's, unprivileged: a write is EPERM before
        # anything else; on the global socket it is privileged (a malformed write: EINVAL).
        for sock, want in ((socks[0], errno.EPERM), (socks[2], errno.EINVAL)):
            sock.sendall(pack_request(WRITE, 2, None))
            assert read_reply(sock)[:2] == [2, want]
        assert sorted(s.priv for s in daemon._sessions) == [False, False]  # public sockets: no PrivFirst
    finally:
        for s in socks:
            s.close()
    drained(daemon)
    assert daemon._per_uid == {} and daemon._per_zone == {}


def test_root_on_a_zone_socket_does_not_take_the_reserve(daemon: Kstatd) -> None:
    # The reserve is the global zone's root's: 4 of 5 taken, root on the zone's socket is refused.
    socks = []
    try:
        for _ in range(4):
            s, (seq, code, result) = connect(daemon.config.socket)
            socks.append(s)
            assert (seq, code) == (1, 0), result
        s, (seq, code, result) = connect(daemon.config.zones[0][1])
        socks.append(s)
        assert (seq, code) == (0, errno.EBUSY) and "the last 1 of 5" in result["error"], result
    finally:
        for s in socks:
            s.close()


def test_over_quota_edges_for_another_user(daemon: Kstatd) -> None:
    # Another user (not root, not kstatd's uid) at each edge: 3 of 5 taken leaves it one
    # (the last is root's reserve); its own 2 connections are its quota.
    lst = daemon._listeners[0]
    path = daemon.config.socket
    socks = []
    try:
        with daemon._lock:
            assert daemon._over_quota(65534, lst, False) is None
        for _ in range(3):
            socks.append(connect(path)[0])
        with daemon._sessions_cv:
            assert daemon._sessions_cv.wait_for(lambda: len(daemon._sessions) == 3, timeout=10)
        with daemon._lock:
            assert daemon._over_quota(65534, lst, False) is None  # 3 < 5 - 1
            assert daemon._over_quota(0, lst, True) is None
        socks.append(connect(path)[0])
        with daemon._sessions_cv:
            assert daemon._sessions_cv.wait_for(lambda: len(daemon._sessions) == 4, timeout=10)
        with daemon._lock:
            assert daemon._over_quota(65534, lst, False) == (
                "too many connections: the last 1 of 5 are kept for root and kstatd's user "
                "(kstatd --reserved-connections)"
            )
            assert daemon._over_quota(0, lst, True) is None  # root takes the reserve
            daemon.config.reserved_connections = 2  # 4 open, over the 3 others may use
            assert "the last 2 of 5" in (daemon._over_quota(65534, lst, False) or "")
            daemon.config.reserved_connections = 1
            daemon._per_uid[65534] = 1  # (as if) its first connection were open
            daemon._sessions.discard(next(iter(daemon._sessions)))
            assert daemon._over_quota(65534, lst, False) is None  # 1 of its 2
            daemon._per_uid[65534] = 2
            assert daemon._over_quota(65534, lst, False) == "too many connections from uid 65534 (kstatd --max-per-uid 2)"
            assert daemon._over_quota(0, lst, False) is None  # root has no per-uid quota
            del daemon._per_uid[65534]
    finally:
        for s in socks:
            s.close()


def test_out_of_descriptors_is_logged_once_per_interval_with_the_count(daemon: Kstatd, caplog) -> None:
    # _shed: accept() failed with EMFILE and nobody is waiting any more (the client left):
    # the spare descriptor is closed and reopened, the loop goes on; the log line comes at
    # most every FD_LOG_INTERVAL (10 s) and counts the refusals since the last one.
    lst = daemon._listeners[0]
    with caplog.at_level(logging.ERROR, logger="kstatpy.server"):
        for _ in range(3):
            daemon._shed(lst, OSError(errno.EMFILE, "Too many open files"))
            assert daemon._spare_fd >= 0
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("accept on")]
    assert lines == [f"accept on {lst.path}: Too many open files (1 connections refused since the last report)"]
    assert daemon._fd_refused == 2  # counted for the next report
    daemon._shed(lst, OSError(errno.ENOBUFS, "No buffer space available"))  # not the fd limit: a back-off
    assert daemon._fd_refused == 3 and daemon._spare_fd >= 0
    assert FD_LOG_INTERVAL == 10.0  # docs/KSTATD.md: "at most every 10 s"



def test_at_the_fd_limit_with_no_spare_descriptor_the_acceptor_backs_off_and_reopens_it(daemon: Kstatd) -> None:
    # The spare could not be reopened (every descriptor in use): the next EMFILE has nothing
    # to shed with. _shed must back off and try to reopen it, never close descriptor -1
    # (EBADF out of the accept loop's handler would end the accept thread: no more clients).
    lst = daemon._listeners[0]
    os.close(daemon._spare_fd)
    daemon._spare_fd = -1
    daemon._shed(lst, OSError(errno.EMFILE, "Too many open files"))
    assert daemon._spare_fd >= 0  # reopened once a descriptor was free again
    s, (seq, code, result) = connect(daemon.config.socket)  # the acceptor still serves
    s.close()
    assert (seq, code) == (1, 0), result


def test_a_per_uid_quota_of_one_admits_another_users_first_connection(daemon: Kstatd) -> None:
    # kstatd's smallest --max-per-uid: a uid with no connection yet counts 0, not 1.
    lst = daemon._listeners[0]
    daemon.config.max_per_uid = 1
    with daemon._lock:
        assert daemon._over_quota(65534, lst, False) is None
        daemon._per_uid[65534] = 1
        assert daemon._over_quota(65534, lst, False) == "too many connections from uid 65534 (kstatd --max-per-uid 1)"
        del daemon._per_uid[65534]


@pytest.mark.parametrize("halt", ["halt", "".join(["ha", "lt"])], ids=["literal", "built"])
def test_after_a_halting_panic_providers_hear_of_no_more_closes(tmp_path: Path, closes: Closes, halt: str) -> None:
    # --on-panic=halt: the heap is suspect, so the connections closed on the way down are
    # not handed to the providers' conn_close (which could free what a kstat points at).
    # An embedder's on_panic (kstatpy.embed.serve) is any equal string, not the literal.
    chain = Chain()
    ksp = chain.kstat_create("t", 0, "trap", "misc", KSTAT_TYPE_NAMED, 0, 0)

    def trap(ksp: object, rw: int) -> int:
        raise BadTrap(1, None, "read x")

    ksp.ks_update = trap
    chain.kstat_install(ksp)
    cfg = ServerConfig(socket=str(tmp_path / "k.sock"), priv_sockets=False, deadman_seconds=0, read_timeout=0.5,
                       crash_dir=str(tmp_path), on_panic=halt)  # fmt: skip
    reports: list[str] = []
    kd = Kstatd(chain, load_providers(autoload=False, plugins=[("closes", closes)]), cfg, report=reports.append)
    kd.start()
    try:
        connect(cfg.socket)[0].close()  # before the panic: heard
        drained(kd)
        assert len(closes.closed) == 1
        s, (seq, code, result) = connect(cfg.socket)
        with s:
            assert (seq, code) == (1, 0), result
            s.sendall(pack_request(READ, 2, {"kid": ksp.ks_kid}))
            with pytest.raises((EOFError, ConnectionResetError)):
                read_reply(s)  # a halting panic: no reply, the connection goes
        drained(kd)
        assert kd._panicked and reports and "BAD TRAP" in reports[0]
        assert len(closes.closed) == 1, "a close after the halting panic reached the providers"
    finally:
        kd.stop()
        kd.shutdown(grace=1.0)


def test_a_refusal_to_a_client_already_gone_is_counted_and_closed_quietly(daemon: Kstatd) -> None:
    # _refuse runs on the accept path (and inside the accept loop's fd-limit handler): a
    # client that hung up before its EBUSY went (EPIPE) must cost nothing but its socket.
    a, b = socket.socketpair()
    b.close()
    before = daemon.stats.connections_refused
    daemon._refuse(a, "too many connections")
    assert a.fileno() == -1 and daemon.stats.connections_refused == before + 1


def test_at_the_fd_limit_the_spare_that_cannot_be_reopened_is_tried_again_later(daemon: Kstatd) -> None:
    # A real EMFILE: the soft RLIMIT_NOFILE lowered to the lowest free descriptor. With no
    # spare to shed, _shed backs off and its reopen fails quietly (an OSError out of the
    # accept loop's handler would end the accept thread); the next one, with room, reopens it.
    import resource

    lst = daemon._listeners[0]
    os.close(daemon._spare_fd)
    daemon._spare_fd = -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest = os.open(os.devnull, os.O_RDONLY)
    os.close(lowest)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest, hard))
    try:
        with pytest.raises(OSError) as full:
            os.close(os.open(os.devnull, os.O_RDONLY))
        assert full.value.errno == errno.EMFILE
        daemon._shed(lst, OSError(errno.EMFILE, "Too many open files"))
        assert daemon._spare_fd == -1
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    daemon._shed(lst, OSError(errno.EMFILE, "Too many open files"))
    assert daemon._spare_fd >= 0


def test_an_accept_error_that_is_not_the_fd_limit_refuses_no_one(daemon: Kstatd, tmp_path: Path) -> None:
    # ENOBUFS and the like: a back-off, the waiting client stays in the backlog (served
    # later), never accepted and told "out of file descriptors".
    path = str(tmp_path / "shed.sock")
    with socket.socket(socket.AF_UNIX) as srv, socket.socket(socket.AF_UNIX) as client:
        srv.bind(path)
        srv.listen(4)
        srv.setblocking(False)
        client.connect(path)
        lst = type("L", (), {"sock": srv, "path": path})()
        daemon._shed(lst, OSError(errno.ENOBUFS, "No buffer space available"))  # type: ignore[arg-type]
        client.setblocking(False)
        with pytest.raises(BlockingIOError):
            client.recv(1)  # no EBUSY, no close
        srv.accept()[0].close()  # still waiting in the backlog
    assert daemon.stats.connections_refused == 0


class ClosePanics:
    """A provider whose conn_close touches freed memory (a BadTrap)."""

    @hookimpl
    def kstatpy_conn_close(self, chain: Chain, conn: object) -> None:
        raise BadTrap(1, None, "read x")


def test_a_panic_in_a_providers_conn_close_is_handled_and_the_slot_freed(tmp_path: Path) -> None:
    cfg = ServerConfig(socket=str(tmp_path / "k.sock"), priv_sockets=False, deadman_seconds=0, read_timeout=0.5,
                       crash_dir=str(tmp_path), on_panic="continue")  # fmt: skip
    reports: list[str] = []
    kd = Kstatd(Chain(), load_providers(autoload=False, plugins=[("panics", ClosePanics())]), cfg, report=reports.append)
    kd.start()
    try:
        connect(cfg.socket)[0].close()
        drained(kd)  # its slot is free, and its counters closed
        assert kd._per_uid == {} and kd.stats.connections_current == 0
        assert kd.stats.panics == 1 and "BAD TRAP" in reports[0]
        s, (seq, code, result) = connect(cfg.socket)  # kstatd goes on (--on-panic=continue)
        s.close()
        assert (seq, code) == (1, 0), result
    finally:
        kd.stop()
        kd.shutdown(grace=1.0)

def test_an_embedded_kstatd_gets_the_kstatd_commands_limits() -> None:
    # kstatpy.embed.serve() and in-process users build ServerConfig with its defaults; the
    # kstatd command's are documented (docs/KSTATD.md): the two must not drift apart.
    from kstatpy.cli.kstatd import main

    opts = {p.name: p.default for p in main.params}
    cfg = ServerConfig(socket="x")
    for name in ("max_request", "max_reply", "max_connections", "read_timeout", "on_panic", "detach_timeout",
                 "idle_timeout", "frame_timeout", "deadman_seconds", "priv_slice"):  # fmt: skip
        assert getattr(cfg, name) == opts[name], name
    assert cfg.max_per_uid == cfg.max_per_zone == opts["max_connections"] // 4  # "a quarter"
    assert cfg.reserved_connections == min(16, opts["max_connections"] // 8)  # "an eighth, at most 16"
    # Not options: one expensive request of other users at a time, 64 MiB of parked replies.
    assert cfg.expensive_slots == 1 and cfg.reply_memory == 64 << 20
    assert cfg.zones == [] and cfg.allow_uids == frozenset() and cfg.priv_sockets is None
    assert ServerConfig(socket="y", zones=[("a", "p"), ("b", "q")]).zone_ids() == {"global": 0, "a": 1, "b": 2}


def test_a_connection_whose_admission_fails_is_closed_not_left_waiting(daemon: Kstatd, monkeypatch) -> None:
    # A MemoryError while admitting costs that connection: its client reads EOF at once
    # (not its own 10 s timeout: kstatd must close what it accepted), the next is served.
    real_admit = daemon._admit
    fail = [True]

    def admit(sock: socket.socket, lst: object) -> None:
        if fail.pop() if fail else False:
            raise MemoryError()
        real_admit(sock, lst)  # type: ignore[arg-type]

    monkeypatch.setattr(daemon, "_admit", admit)
    # The real back-off after a MemoryError (10 ms): a bad one (negative: ValueError inside
    # the handler) would end the accept thread, and the next connection would wait.
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(daemon.config.socket)
        assert s.recv(1) == b""  # EOF: a mutant that keeps the socket open times out here
    s, (seq, code, result) = connect(daemon.config.socket)
    s.close()
    assert (seq, code) == (1, 0), result


def test_public_accepts_pause_for_privileged_requests_and_privileged_accepts_do_not(tmp_path: Path, monkeypatch) -> None:
    # kstatpy.fairness.PrivFirst: the public acceptor's checkpoints may pause it while root's
    # requests run; the privileged acceptor's never do (it serves root).
    kd = Kstatd(Chain(), None, ServerConfig(socket=str(tmp_path / "k.sock"), priv_sockets=True, deadman_seconds=0))
    seen: dict[str, bool] = {}
    real = kd.first.pausable

    def pausable(on: bool) -> None:
        seen[threading.current_thread().name] = on
        real(on)

    monkeypatch.setattr(kd.first, "pausable", pausable)
    kd.start()
    try:
        assert kd.priv_paths, "no privileged socket"
        connect(kd.config.socket)[0].close()  # both acceptors are running by now
        connect(kd.priv_paths[0])[0].close()
        drained(kd)  # the two above are gone: the session seen below is the new one
        # A privileged connection counts in PrivFirst from its accept to its first reply.
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(kd.priv_paths[0])
            with kd._sessions_cv:  # _admit does not notify: look every 10 ms, 10 s at most
                assert any(kd._sessions_cv.wait_for(lambda: any(x.priv for x in kd._sessions), timeout=0.01)
                           for _ in range(1000)), "the privileged session was not admitted within 10 s"
            assert kd.first.busy == 1
            s.sendall(pack_request(HELLO, 1, {"protocol": 1}))
            assert read_reply(s)[:2] == [1, 0]
            with kd.first._cv:
                assert kd.first._cv.wait_for(lambda: not kd.first.busy, timeout=10), "still counted after its reply"
        assert {k: v for k, v in seen.items() if k.startswith("kstatd-accept")} == {
            "kstatd-accept": True, "kstatd-accept-priv": False}  # fmt: skip
    finally:
        kd.stop()
        kd.shutdown(grace=1.0)


# --- the reply budget (Kstatd._send, kstatpy.fairness.ReplyBudget) -------------------------


@pytest.fixture
def budget_daemon(tmp_path: Path) -> Iterator[Kstatd]:
    # A frame timeout far past the tests' bounds: a reply over the budget must cost its
    # connection at once, not wait. (The budget itself is set by each test.)
    cfg = ServerConfig(socket=str(tmp_path / "k.sock"), priv_sockets=False, deadman_seconds=0, read_timeout=0.5,
                       frame_timeout=60.0)  # fmt: skip
    kd = Kstatd(Chain(), None, cfg)
    kd.start()
    yield kd
    kd.stop()
    kd.shutdown(grace=1.0)


def _unread_requests(s: socket.socket, stop) -> int:
    """Send READ kid 0 requests (seq 1, 2, ...) on ``s`` without reading any reply, until
    ``stop()`` or kstatd closes the connection; how many went. Bounded: 10 s."""
    s.setblocking(False)
    seq = 0
    deadline = time.monotonic() + 10
    while not stop():
        assert time.monotonic() < deadline, "kstatd neither parked nor refused a reply within 10 s"
        req = pack_request(READ, seq + 1, {"kid": 0})
        try:
            n = s.send(req)
        except BlockingIOError:
            select.select([], [s], [], 0.05)  # kstatd reads requests only as its replies go
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
        assert n == len(req), "a request cut in two"  # small frames on a Unix socket go whole
        seq += 1
    s.settimeout(10)
    return seq


def test_a_reply_that_fits_the_socket_buffer_is_never_parked_whatever_its_size(budget_daemon: Kstatd) -> None:
    # Only a reply its reader does not take at once is counted: one larger than another
    # user's whole budget still goes when the socket buffer takes it.
    kd = budget_daemon
    kd.replies.trusted = frozenset()  # the in-process client is root: as if it were another user
    kd.replies.total = kd.replies.per_uid = 64
    s, (seq, code, _result) = connect(kd.config.socket)
    with s:
        s.sendall(pack_request(READ, 2, {"kid": 0}))
        seq, code, result = read_reply(s)
        assert (seq, code) == (2, 0), result
        assert len(msgpack.packb(result)) > 64
    assert (kd.replies.refused, kd.replies.peak, kd.replies.held) == (0, 0, 0)
    drained(kd)


def test_a_reply_over_another_users_budget_closes_its_connection_at_once(budget_daemon: Kstatd) -> None:
    kd = budget_daemon
    kd.replies.trusted = frozenset()  # as if root were another user (the budget is for others)
    kd.replies.total = kd.replies.per_uid = 64  # under one reply: the first one parked is over it
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(kd.config.socket)
    with s:
        sent = _unread_requests(s, lambda: kd.replies.refused > 0)
        with kd._sessions_cv:  # closed at once: not after the 60 s frame timeout
            assert kd._sessions_cv.wait_for(lambda: not kd._sessions, timeout=10), "the connection was kept"
        got = 0
        try:
            while True:  # the replies that went, in order, then EOF (ECONNRESET: requests were left unread)
                seq, code, _result = read_reply(s)
                assert (seq, code) == (got + 1, 0)
                got += 1
        except (EOFError, ConnectionResetError):
            pass
        assert got < sent
    assert kd.replies.refused == 1 and kd.replies.held == 0 and kd.replies.parked == 0
    # Counted once, in replies:refused: no EBUSY was sent, so neither connections:refused
    # nor errors:EBUSY (docs/KSTATD.md: those count EBUSY refusals only).
    assert kd.stats.connections_refused == 0 and kd.stats._closed.errors[ERRNO_SLOTS[errno.EBUSY]] == 0


def test_a_reply_its_reader_takes_late_is_parked_then_sent_whole(budget_daemon: Kstatd) -> None:
    # Root's replies are never refused: a reply the socket buffer does not take is parked
    # (counted), sent whole as the reader reads, and its bytes are freed once it went.
    kd = budget_daemon
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(kd.config.socket)
    with s:
        sent = _unread_requests(s, lambda: kd.replies.held > 0)
        assert kd.replies.held > 0 and kd.replies._by_uid == {0: kd.replies.held}
        assert kd.replies.parked == 0  # root's bytes count for root, never in others' total
        for i in range(1, sent + 1):
            seq, code, result = read_reply(s)
            assert (seq, code) == (i, 0), (i, result)
            assert any(h["module"] == "kstatpy" for h in result["kstat"]["data"])
        s.setblocking(False)
        with pytest.raises(BlockingIOError):
            s.recv(1)  # nothing more: no reply twice, none cut
    with kd._sessions_cv:
        assert kd._sessions_cv.wait_for(lambda: kd.replies.held == 0 or not kd._sessions, timeout=10)
    assert kd.replies.held == 0 and kd.replies._by_uid == {} and kd.replies.refused == 0
    assert kd.replies.peak > 0


def test_a_privileged_connection_that_hangs_up_before_asking_stops_counting_for_privfirst(tmp_path: Path) -> None:
    # Counted busy from its accept; its close must end that, else every public request
    # would wait at its safe points (PrivFirst) for a root request that never comes.
    kd = Kstatd(Chain(), None, ServerConfig(socket=str(tmp_path / "k.sock"), priv_sockets=True, deadman_seconds=0,
                                            read_timeout=0.5))  # fmt: skip
    kd.start()
    try:
        assert kd.priv_paths, "no privileged socket"
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(kd.priv_paths[0])
            with kd._sessions_cv:  # _admit does not notify: look every 10 ms, 10 s at most
                assert any(
                    kd._sessions_cv.wait_for(lambda: any(x.priv for x in kd._sessions), timeout=0.01)
                    for _ in range(1000)
                ), "the privileged session was not admitted within 10 s"
            assert kd.first.busy == 1
        drained(kd)  # hung up without a request
        assert kd.first.busy == 0, "a closed privileged session still counts as busy"
    finally:
        kd.stop()
        kd.shutdown(grace=1.0)


def test_a_client_refused_at_the_fd_limit_reads_why_in_plain_words(daemon: Kstatd, tmp_path: Path) -> None:
    # _shed at EMFILE with a client waiting: the spare makes room to accept it and tell it
    # EBUSY with the system's words (strerror), then the spare is taken again. (A listening
    # socket of its own: the daemon's acceptor would take the client first.)
    path = str(tmp_path / "shed.sock")
    with socket.socket(socket.AF_UNIX) as srv, socket.socket(socket.AF_UNIX) as client:
        srv.bind(path)
        srv.listen(4)
        srv.setblocking(False)
        client.settimeout(10)
        client.connect(path)
        lst = type("L", (), {"sock": srv, "path": path})()
        spare = daemon._spare_fd
        daemon._shed(lst, OSError(errno.EMFILE, "Too many open files"))  # type: ignore[arg-type]
        assert read_reply(client) == [0, errno.EBUSY, {
            "error": "kstatd is out of file descriptors (Too many open files); try again later"}]  # fmt: skip
        assert client.recv(1) == b""  # then closed
        assert daemon._spare_fd >= 0 and daemon._spare_fd == spare  # the same slot, taken again


def test_a_back_off_that_is_not_the_fd_limit_keeps_the_spare_and_leaks_nothing(daemon: Kstatd) -> None:
    lst = daemon._listeners[0]
    spare = daemon._spare_fd
    fds = _devnull_fds()
    for _ in range(3):
        daemon._shed(lst, OSError(errno.ENOBUFS, "No buffer space available"))
    assert daemon._spare_fd == spare and _devnull_fds() == fds


def _devnull_fds() -> list[int]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor, gone already
            if os.readlink(f"/proc/self/fd/{fd}") == os.devnull:
                out.append(int(fd))
    return sorted(out)


def test_root_keeps_the_reserve_when_kstatd_runs_as_another_user(tmp_path: Path, monkeypatch) -> None:
    # The reserve, and no per-uid quota, are root's and kstatd's own uid's: with kstatd as
    # (say) uid 65534, root still has both. (In-process the daemon is root: its euid is what os.geteuid tells it.)
    monkeypatch.setattr("kstatpy.server.os.geteuid", lambda: 65534)
    cfg = ServerConfig(socket=str(tmp_path / "k.sock"), priv_sockets=False, deadman_seconds=0, read_timeout=0.5,
                       max_connections=3, reserved_connections=1, max_per_uid=1)  # fmt: skip
    kd = Kstatd(Chain(), None, cfg)
    kd.start()
    socks = []
    try:
        for _ in range(3):
            s, (seq, code, result) = connect(cfg.socket)
            socks.append(s)
            assert (seq, code) == (1, 0), result  # past the per-uid quota, then the reserve: root's
    finally:
        for s in socks:
            s.close()
        kd.stop()
        kd.shutdown(grace=1.0)


def test_caps_past_256_are_compared_by_value(daemon: Kstatd) -> None:
    # Counts are ints computed at run time; a cap over 256 is no cached small int.
    lst, zone = daemon._listeners
    cap = int("300")
    daemon.config.max_connections, daemon.config.max_per_zone = cap, cap
    daemon.config.reserved_connections = 0
    fake = [object() for _ in range(cap)]
    with daemon._lock:
        try:
            daemon._sessions.update(fake)  # type: ignore[arg-type]
            assert daemon._over_quota(0, lst, True) == "too many connections (kstatd --max-connections 300)"
            daemon._sessions.difference_update(fake[:1])  # type: ignore[arg-type]
            daemon._per_zone[zone.zoneid] = len(fake) - 1 + 1
            assert daemon._over_quota(0, zone, False) == "too many connections from zone z1 (kstatd --max-per-zone 300)"
            daemon.config.max_per_uid = cap
            daemon._per_uid[65534] = len(fake) - 1 + 1
            assert daemon._over_quota(65534, lst, False) == "too many connections from uid 65534 (kstatd --max-per-uid 300)"
        finally:
            daemon._sessions.difference_update(fake)  # type: ignore[arg-type]
            daemon._per_zone.pop(zone.zoneid, None)
            daemon._per_uid.pop(65534, None)


def test_a_reply_into_a_full_socket_buffer_is_parked_and_arrives_whole(daemon: Kstatd) -> None:
    # send() finds no room at all (EAGAIN): nothing of the reply went, so all of it is
    # parked and sent as the reader reads. A real Session on a socket pair.
    from kstatpy.ioctl import Conn
    from kstatpy.ioctl import Cred
    from kstatpy.session import Session

    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        filler = 0
        while True:  # fill the buffer until the kernel takes nothing more
            try:
                filler += a.send(b"x" * 4096)
            except BlockingIOError:
                break
        a.setblocking(True)
        sess = Session(a, Conn(Cred(uid=0)), daemon.stats.conn_open(), 1 << 20)
        reply = bytes(range(256)) * 64
        t = threading.Thread(target=daemon._send, args=(sess, reply, 10.0))
        t.start()
        deadline = time.monotonic() + 10
        while daemon.replies.held != len(reply):  # parked whole before the reader reads a byte
            assert time.monotonic() < deadline, "the reply was not parked within 10 s"
            time.sleep(0.005)  # polling with a deadline, not synchronisation
        b.settimeout(10)
        got = bytearray()
        while len(got) < filler + len(reply):
            chunk = b.recv(65536)
            assert chunk, "the reply was cut"
            got += chunk
        t.join(10)
        assert not t.is_alive()
        assert bytes(got[filler:]) == reply and got[:filler] == b"x" * filler
    assert daemon.replies.held == 0 and daemon.replies.peak == len(reply)


def _slice_of(tid: int) -> int:
    with open(f"/proc/self/task/{tid}/sched") as f:
        return next(int(line.split(":")[1]) for line in f if line.startswith("se.slice"))


def test_only_the_privileged_acceptor_asks_for_the_short_slice(tmp_path: Path) -> None:
    # --priv-slice is for the threads that serve root: the privileged acceptor, never the
    # public one (whose churn must not preempt other processes sooner).
    from kstatpy.sched_slice import request_slice

    kept: list[bool] = []
    probe = threading.Thread(target=lambda: kept.append(request_slice(3_000_000)[0]))  # does the kernel keep slices?
    probe.start()
    probe.join(10)
    kd = Kstatd(Chain(), None, ServerConfig(socket=str(tmp_path / "k.sock"), priv_sockets=True, deadman_seconds=0,
                                            read_timeout=0.5, priv_slice=0.002))  # fmt: skip
    kd.start()
    try:
        assert kd.priv_paths, "no privileged socket"
        connect(kd.priv_paths[0])[0].close()  # both acceptors are in their loops by now
        connect(kd.config.socket)[0].close()
        tids = {t.name: t.native_id for t in threading.enumerate() if t.name.startswith("kstatd-accept")}
        assert set(tids) == {"kstatd-accept", "kstatd-accept-priv"}
        if kept and kept[0]:
            assert _slice_of(tids["kstatd-accept-priv"]) == 2_000_000  # type: ignore[arg-type]
            assert _slice_of(tids["kstatd-accept"]) != 2_000_000  # type: ignore[arg-type]
        else:  # a kernel that keeps no slice: nothing changes
            assert _slice_of(tids["kstatd-accept-priv"]) == _slice_of(tids["kstatd-accept"])  # type: ignore[arg-type]
    finally:
        kd.stop()
        kd.shutdown(grace=1.0)
