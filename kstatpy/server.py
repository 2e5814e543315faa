"""kstatd: the daemon's sessions (a thread per connection), deadlines, panics and shutdown.

Requests are answered by :meth:`kstatpy.ioctl.IoctlHandler.dispatch` (shared with the
in-process client); framing and shapes are :mod:`kstatpy.protocol`'s; the listening
sockets, their lock files and peer credentials are :mod:`kstatpy.listener`'s; the
``kstatpy:0:*`` counters :mod:`kstatpy.daemon_stats`'; the report of a panic
:mod:`kstatpy.panic`'s.

Concurrency model: one thread per connection, blocking sockets
    Measured on the 2-vCPU build VM with a probe serving the same framing and a
    262-byte reply from its own process (median round trip; reads/s with 1 and 16
    client processes): thread per connection 51.6 µs, 22.8k/s, 72.0k/s; asyncio
    streams 80.7 µs, 13.1k/s, 58.3k/s; asyncio handing each request to a thread pool
    (needed so a slow ks_update cannot stall the loop) 139 µs, 7.1k/s, 16.4k/s.
    So each connection gets a thread that reads, dispatches and replies itself, with
    no hand-off on the hot path; the watchdog below covers hung providers instead.

Deadlines (``--read-timeout``)
    A READ or READ_MANY running longer than the deadline is answered EAGAIN by the
    watchdog, which hands the connection to a fresh thread; the stuck thread drops its
    result when (if) its ``ks_update`` returns. The kid it was reading is marked
    stuck: further reads of it answer EAGAIN at once, so a hung provider costs one
    thread per kstat, not one per retry. Other kstats and connections are unaffected.
    ``Session.lock`` guards ``gen`` and ``t0`` (the takeover hand-shake); replies
    are sent outside it, by the one thread that currently owns the session.
    A reply in pieces (docs/PROTOCOL.md §9.8, :mod:`kstatpy.pieces`) reads its
    entries as it goes: its thread appends each entry to ``Session.stream`` under the
    lock after checking ``gen``, and the watchdog, taking over while that thread is in
    a ``ks_update``, finishes the stream with ``[EAGAIN, ...]`` entries and sends the
    rest from a fresh thread; the late thread then leaves without a byte.

Life cycle
    :meth:`Kstatd.bind` binds every socket (refusing a live one, replacing a stale
    one; ``PATH.lock`` is flock()ed for the daemon's life); :meth:`Kstatd.start`
    publishes ``kstatpy:0:*`` and starts the acceptor and the watchdog;
    :meth:`Kstatd.serve_forever` returns the exit status after :meth:`stop` (graceful:
    stop accepting, finish in-flight requests, close connections, detach providers,
    remove the sockets: 0, or 75 when a provider did not detach within
    ``detach_timeout``) or after a panic with ``on_panic="halt"`` (no teardown: 70).

Size
    Over 400 lines on purpose: the session loop, the watchdog's takeover and the
    shutdown all follow one hand-over protocol (``Session.lock``, ``gen``, ``t0``, and
    the server's ``_lock`` over the session table); split apart, no single module
    would show who may send on a session when. What a session is, its socket calls
    and its replies' encoding are :mod:`kstatpy.session`'s.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from typing import TYPE_CHECKING
from typing import Any

import msgpack

from kstatpy.constants import GLOBAL_ZONEID
from kstatpy.constants import KstatIoctl
from kstatpy.daemon_stats import SLOT_BAD_FRAME
from kstatpy.daemon_stats import DaemonStats
from kstatpy.daemon_stats import cmd_slot
from kstatpy.fairness import FairGate
from kstatpy.fairness import PrivFirst
from kstatpy.fairness import RateLimitedLog
from kstatpy.fairness import ReplyBudget
from kstatpy.ioctl import DEFAULT_MAX_REPLY
from kstatpy.ioctl import Conn
from kstatpy.ioctl import Cred
from kstatpy.ioctl import IoctlHandler
from kstatpy.kmem import BadTrap
from kstatpy.listener import DaemonError
from kstatpy.listener import Listener
from kstatpy.listener import is_privileged
from kstatpy.listener import peer_cred
from kstatpy.packed import PackedResults
from kstatpy.pieces import PIECE_SIZE
from kstatpy.pieces import LazyEntries
from kstatpy.pieces import Stream
from kstatpy.pieces import head_and_tail
from kstatpy.protocol import DEFAULT_MAX_REQUEST
from kstatpy.protocol import FrameError
from kstatpy.protocol import check_request
from kstatpy.protocol import pack_frame
from kstatpy.safepath import priv_socket_path
from kstatpy.session import DISPATCHING
from kstatpy.session import READING
from kstatpy.session import SENDING
from kstatpy.session import Session
from kstatpy.session import pack_packed_reply
from kstatpy.session import pack_read_many_reply
from kstatpy.session import send_reply
from kstatpy.session import set_recv_timeout

if TYPE_CHECKING:
    from kstatpy.chain import Chain
    from kstatpy.plugins import Providers

__all__ = ["EXIT_DETACH_TIMEOUT", "EXIT_PANIC", "DaemonError", "Kstatd", "ServerConfig", "peer_cred"]

log = logging.getLogger(__name__)

EXIT_PANIC = 70
#: Exit status when a provider did not detach in time at shutdown.
EXIT_DETACH_TIMEOUT = 75
RECV_SIZE = 65536
#: At shutdown, seconds a reply already being sent gets before its connection is cut.
SEND_GRACE = 0.5
#: Seconds between two "out of file descriptors" log lines (with the count refused since).
FD_LOG_INTERVAL = 10.0
_TIMED = frozenset({int(KstatIoctl.READ), int(KstatIoctl.READ_MANY), int(KstatIoctl.SELECT)})
#: Requests whose cost grows with their argument or the chain: they take turns (FairGate).
_EXPENSIVE = frozenset({int(KstatIoctl.READ_MANY), int(KstatIoctl.SELECT), int(KstatIoctl.DESCRIBE)})
_READ_MANY = int(KstatIoctl.READ_MANY)
_BY_ENTRY = frozenset({_READ_MANY, int(KstatIoctl.DESCRIBE)})  # {"results": [[errno, obj], ...], ...} replies


@dataclass
class ServerConfig:
    """kstatd's options (the CLI's flags)."""

    socket: str
    zones: list[tuple[str, str]] = field(default_factory=list)  # (name, path); zoneids 1, 2, ...
    max_request: int = DEFAULT_MAX_REQUEST
    max_reply: int = DEFAULT_MAX_REPLY  # byte budget of one READ_MANY reply
    max_connections: int = 256
    read_timeout: float = 5.0
    allow_uids: frozenset[int] = frozenset()
    allow_gids: frozenset[int] = frozenset()
    on_panic: str = "halt"  # or "continue"
    crash_dir: str | None = None
    detach_timeout: float = 10.0  # seconds providers get to detach at shutdown
    # Fair sharing (docs/PROTOCOL.md §9.4): no user or zone can hold every slot or a slot forever.
    idle_timeout: float = 300.0  # a connection with nothing in flight is closed after this
    frame_timeout: float = 10.0  # a request must arrive, and a reply be drained, within this
    max_per_uid: int = 64  # connections per peer uid (not root, not kstatd's own uid)
    max_per_zone: int = 64  # connections per non-global zone socket
    reserved_connections: int = 16  # of max_connections, kept for root and kstatd's uid
    inherited: dict[str, Any] = field(default_factory=dict)  # path -> socket.socket systemd passed (kstatpy.systemd)
    priv_sockets: bool | None = None  # DIR/priv/NAME beside each socket; None: when run as root
    # Fair sharing, part 2 (issue 21; kstatpy.fairness): expensive requests of other users
    # take turns by uid, this many at once; replies parked for readers that do not read
    # are bounded in bytes (a uid may park half), past which their connections are closed.
    expensive_slots: int = 1
    reply_memory: int = 64 << 20
    deadman_seconds: float = 10.0  # a hold waited for this long is reported (kstatpy.deadman); 0: off
    # The kernel time slice asked for the threads serving privileged sockets (s; 0: the
    # kernel's default): their wakeups preempt other users' processes (kstatpy.sched_slice).
    priv_slice: float = 0.0001

    def zone_ids(self) -> dict[str, int]:
        """Zone name -> zoneid: global 0, then 1, 2, ... in the order given."""
        ids = {"global": GLOBAL_ZONEID}
        for i, (name, _) in enumerate(self.zones, start=1):
            ids[name] = i
        return ids


class Kstatd:
    """The daemon over one chain and its providers.

    :param report: called with the panic report and other fatal news (the CLI writes
        it to stderr).
    """

    def __init__(
        self,
        chain: Chain,
        providers: Providers | None,
        config: ServerConfig,
        report: Callable[[str], None] | None = None,
    ) -> None:
        self.chain = chain
        self.providers = providers
        self.config = config
        self.report = report
        self.handler = IoctlHandler(chain, providers)
        self.handler.reading = {}
        self.handler.limits = {
            "idle_timeout_ms": int(config.idle_timeout * 1000),
            "frame_timeout_ms": int(config.frame_timeout * 1000),
            "max_request": config.max_request,
            "max_reply": config.max_reply,
        }
        self.handler.max_reply = config.max_reply
        self.stats = DaemonStats(config.read_timeout)
        self._trusted = frozenset({0, os.geteuid()})
        self.gate = FairGate(config.expensive_slots)
        self.replies = ReplyBudget(config.reply_memory, config.reply_memory // 2, self._trusted)
        self._errlog = RateLimitedLog(log, FD_LOG_INTERVAL)
        # Privileged connections being accepted or served: while any is, the public
        # acceptor and public connections' expensive work wait at their safe points
        # (kstatpy.fairness.PrivFirst, bounded), so churn and floods on the public socket
        # cost root's request no CPU (the GIL) beyond what is already running.
        self.first = PrivFirst()
        self._slice_logged = False  # _short_slice's one log line
        self.handler.pause = self.first.checkpoint
        zone_ids = config.zone_ids()
        public = [Listener(config.socket, "global", GLOBAL_ZONEID)] + [
            Listener(path, name, zone_ids[name]) for name, path in config.zones
        ]
        privileged = os.geteuid() == 0 if config.priv_sockets is None else config.priv_sockets
        # Root's (and each zone admin's) own socket in DIR/priv/ (0700), accepted by a
        # thread of its own: churn on a public backlog cannot delay it (§9.7).
        self._priv = (
            [Listener(priv_socket_path(lst.path), lst.zone, lst.zoneid, lst) for lst in public] if privileged else []
        )
        self._listeners = public + self._priv
        for lst in public:  # socket activation: sockets systemd bound (kstatpy.systemd)
            lst.adopted = config.inherited.get(lst.path)
        self._lock = threading.Lock()  # guards _sessions, _per_uid, _per_zone, _next_id, handler.stuck, _panicked
        self._per_uid: dict[int, int] = {}  # open connections by peer uid
        self._per_zone: dict[int, int] = {}  # open connections by zoneid
        self._spare_fd = -1  # kept open so a client beyond the fd limit can still be told EBUSY
        self._fd_log_at = 0.0  # rate limit of the "out of file descriptors" log line
        self._fd_refused = 0
        self._sessions_cv = threading.Condition(self._lock)
        self._sessions: set[Session] = set()
        self._next_id = 0
        self._stop = threading.Event()  # set by a halting panic (any thread)
        self._stop_requested = False  # set by stop() (signal handlers)
        self._stopping = False
        self._panicked = False
        self._wake_r, self._wake_w = os.pipe()
        self._threads: list[threading.Thread] = []
        self._bound = False
        self._drained = False

    # --- start and stop ---------------------------------------------------------

    def bind(self) -> None:
        """Bind every socket (connections queue until :meth:`start`). :raises DaemonError."""
        if self._bound:
            return
        try:
            for lst in self._listeners:
                if not lst.priv:
                    lst.bind()
            for lst in list(self._priv):
                try:
                    lst.bind()
                except DaemonError as exc:
                    # A privileged socket is an addition: where another user could block
                    # its directory (a --socket in /tmp), kstatd serves without it, and says so.
                    log.warning("privileged socket not served: %s", exc)
                    lst.close()
                    self._priv.remove(lst)
                    self._listeners.remove(lst)
        except BaseException:
            self._close_listeners()
            raise
        self._bound = True

    @property
    def priv_paths(self) -> list[str]:
        """The privileged sockets served (``DIR/priv/NAME``): after :meth:`bind`, those it could bind."""
        return [lst.path for lst in self._priv]

    def start(self) -> None:
        """Bind if not yet done, publish the daemon's kstats and start accepting."""
        self.bind()
        self._reopen_spare()
        self.stats.install(self.chain, self._reply_figures)
        public = [lst for lst in self._listeners if not lst.priv]
        loops: list[tuple[str, Callable[..., None], tuple[Any, ...]]] = [("accept", self._accept_loop, (public,))]
        if self._priv:
            loops.append(("accept-priv", self._accept_loop, (self._priv,)))
        loops.append(("watchdog", self._watchdog, ()))
        for name, target, args in loops:
            t = threading.Thread(target=target, args=args, name=f"kstatd-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        if self.config.deadman_seconds > 0:  # not joined: it only reads, and ends with the daemon
            from kstatpy.deadman import Deadman

            deadman = Deadman(self.chain, self.config.deadman_seconds, self._deadman_report, self.handler.reading)
            threading.Thread(target=deadman.run, args=(lambda: self._drained,), name="kstatd-deadman", daemon=True).start()

    def _deadman_report(self, text: str) -> None:
        if self.report is not None:
            self.report("kstatd: " + text)
        else:
            log.error("%s", text.rstrip("\n"))

    def _close_listeners(self) -> None:
        for lst in reversed(self._listeners):  # privileged ones first: they rmdir through their parent's fd
            lst.close()

    def stop(self) -> None:
        """Ask for a graceful shutdown (safe from a signal handler: only sets a flag)."""
        self._stop_requested = True

    def serve_forever(self, grace: float | None = None) -> int:
        """Serve until :meth:`stop` or a halting panic; the exit status (0 or 70)."""
        # Event.set() from a signal handler could deadlock on the Event's own lock if
        # the signal lands while this thread holds it, so stop() sets a flag polled here.
        while not self._stop_requested and not self._stop.wait(0.1):
            pass
        if self._panicked and self.config.on_panic == "halt":
            self._stopping = True
            os.write(self._wake_w, b"x")
            self._close_listeners()
            return EXIT_PANIC
        return self.shutdown(grace)

    def shutdown(self, grace: float | None = None) -> int:
        """Stop accepting, let in-flight requests finish, close connections, detach providers.

        Returns 0, or EXIT_DETACH_TIMEOUT when a provider did not detach within
        ``detach_timeout`` (its ``kstat_delete`` waits for a ``ks_update`` that never
        returns): the daemon then reports the provider and exits all the same.
        """
        self._stopping = True
        os.write(self._wake_w, b"x")
        *acceptors, watchdog = self._threads
        for acceptor in acceptors:
            acceptor.join()
        self._close_listeners()
        grace = self.config.read_timeout + 1.0 if grace is None else grace
        with self._lock:
            sessions = list(self._sessions)
        for sess in sessions:  # a thread blocked in recv wakes with EOF; one mid-request replies first
            try:
                sess.sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass
        deadline = time.monotonic() + grace
        with self._sessions_cv:
            # Wait for requests being dispatched (up to grace), then give replies being
            # sent a short moment: a client that does not read must not delay the exit.
            # (A periodic check during shutdown only: phases change without the lock.)
            while any(s.phase == DISPATCHING for s in self._sessions) and time.monotonic() < deadline:
                self._sessions_cv.wait(0.02)
            send_deadline = min(deadline, time.monotonic() + SEND_GRACE)
            while any(s.phase != READING for s in self._sessions) and time.monotonic() < send_deadline:
                self._sessions_cv.wait(0.02)
            for sess in self._sessions:  # idle, or sending to a client that does not read
                try:
                    sess.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._sessions_cv.wait_for(lambda: not self._sessions, timeout=1.0)
        self._drained = True  # the watchdog answers stuck readers until here
        watchdog.join()
        self.stats.uninstall(self.chain)
        os.close(self._wake_r)
        os.close(self._wake_w)
        if self._spare_fd >= 0:
            os.close(self._spare_fd)
            self._spare_fd = -1
        return self._detach_providers()

    def _detach_providers(self) -> int:
        # In a thread of its own, so a provider wedged in ks_update (kstat_delete waits
        # for its hold forever) costs a clean exit, not the exit itself.
        providers = self.providers
        if providers is None:
            return 0
        detacher = threading.Thread(target=providers.detach, args=(self.chain,), name="kstatd-detach", daemon=True)
        detacher.start()
        detacher.join(self.config.detach_timeout)
        if not detacher.is_alive():
            return 0
        msg = (
            f"kstatd: provider {providers.detaching!r} did not detach within {self.config.detach_timeout:g} s "
            "(a ks_update that never returns?); exiting without it\n"
        )
        log.error("%s", msg.strip())
        if self.report is not None:
            self.report(msg)
        return EXIT_DETACH_TIMEOUT

    # --- accepting --------------------------------------------------------------

    def _short_slice(self) -> None:
        # This thread serves a privileged socket: a short time slice (ServerConfig.priv_slice),
        # asked once per thread; a kernel that keeps none is logged once.
        if self.config.priv_slice <= 0:
            return
        from kstatpy.sched_slice import request_slice

        ok, why = request_slice(round(self.config.priv_slice * 1e9))
        if not ok and not self._slice_logged:
            self._slice_logged = True
            log.info("--priv-slice: %s; privileged threads keep the default slice", why)

    def _priv_mark(self, sess: Session, busy: bool) -> None:
        # A privileged session starts or ends being busy (PrivFirst.begin/end): from its
        # accept to its first reply, and from each request's decoding to its reply's send.
        if sess.busy == busy:
            return
        sess.busy = busy
        if busy:
            self.first.begin()
        else:
            self.first.end()

    def _accept_loop(self, listeners: list[Listener]) -> None:
        public = not any(lst.priv for lst in listeners)
        first = self.first
        if not public:
            self._short_slice()
        first.pausable(public)  # public accepts wait while privileged requests run (bounded)
        sel = selectors.DefaultSelector()
        sel.register(self._wake_r, selectors.EVENT_READ, None)
        for lst in listeners:
            sel.register(lst.sock, selectors.EVENT_READ, lst)  # type: ignore[arg-type]
        try:
            while not self._stopping:
                for key, _ in sel.select():
                    lst = key.data
                    if lst is None:
                        return
                    sock = None
                    first.checkpoint()  # a safe point: this thread holds nothing
                    try:
                        sock, _ = lst.sock.accept()
                        self._admit(sock, lst)
                    except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                        continue
                    except OSError as exc:  # EMFILE, ENFILE, ENOBUFS, ENOMEM
                        if sock is not None:  # after accept: this connection goes
                            sock.close()
                            continue
                        self._shed(lst, exc)
                    except Exception as exc:  # MemoryError and the like: one connection, never the listener
                        if sock is not None:
                            try:
                                sock.close()
                            except Exception:
                                pass
                        self._errlog.error("accept", "accept on %s: %s; connection dropped", lst.path, _why(exc))
                        time.sleep(0.01)  # let memory come back before the next accept
        finally:
            sel.close()

    def _refuse(self, sock: socket.socket, msg: str) -> None:
        # EBUSY with seq 0, then close (the client reads it as the answer to its first request).
        self.stats.refused()
        try:
            sock.settimeout(1.0)
            sock.sendall(pack_frame([0, errno.EBUSY, {"error": msg}]))
        except OSError:
            pass
        sock.close()

    def _shed(self, lst: Listener, exc: OSError) -> None:
        # accept() failed. At the fd limit, the spare descriptor makes room to accept the
        # waiting client and tell it EBUSY (else it would wait, unserved, in the backlog
        # and the listener would stay readable: a busy loop). Logged at most every 10 s.
        now = time.monotonic()
        self._fd_refused += 1
        if now - self._fd_log_at >= FD_LOG_INTERVAL:
            log.error("accept on %s: %s (%d connections refused since the last report)",
                      lst.path, exc.strerror or exc, self._fd_refused)  # fmt: skip
            self._fd_log_at = now
            self._fd_refused = 0
        if exc.errno not in (errno.EMFILE, errno.ENFILE) or self._spare_fd < 0:
            time.sleep(0.05)  # nothing to shed with: back off
            self._reopen_spare()
            return
        os.close(self._spare_fd)
        self._spare_fd = -1
        try:
            sock, _ = lst.sock.accept()  # type: ignore[union-attr]
        except OSError:
            time.sleep(0.05)
        else:
            sock.setblocking(True)
            self._refuse(sock, f"kstatd is out of file descriptors ({exc.strerror or exc}); try again later")
        self._reopen_spare()

    def _reopen_spare(self) -> None:
        if self._spare_fd < 0:
            try:
                self._spare_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                pass

    def _admit(self, sock: socket.socket, lst: Listener) -> None:
        sock.setblocking(True)
        try:
            pid, uid, gid = peer_cred(sock)
        except OSError:
            sock.close()
            return
        cfg = self.config
        trusted = lst.zoneid == GLOBAL_ZONEID and uid in (0, os.geteuid())
        priv = lst.zoneid == GLOBAL_ZONEID and is_privileged(uid, gid, cfg.allow_uids, cfg.allow_gids, sock)
        with self._lock:
            why = self._over_quota(uid, lst, trusted)
            if why is None:
                self._next_id += 1
                conn = Conn(Cred(uid, gid, pid, lst.zone, lst.zoneid, priv), id=self._next_id, packed=True)
                sess = Session(sock, conn, self.stats.conn_open(), cfg.max_request)
                if lst.priv:
                    sess.priv = True
                    self._priv_mark(sess, True)
                self._sessions.add(sess)
                self._per_uid[uid] = self._per_uid.get(uid, 0) + 1
                self._per_zone[lst.zoneid] = self._per_zone.get(lst.zoneid, 0) + 1
        if why is not None:
            self._refuse(sock, why)
            return
        self._spawn(sess, 0, None)

    def _over_quota(self, uid: int, lst: Listener, trusted: bool) -> str | None:
        # Caller holds _lock. The first limit this connection passes, as the EBUSY message.
        cfg = self.config
        total = len(self._sessions)
        if total >= cfg.max_connections:
            return f"too many connections (kstatd --max-connections {cfg.max_connections})"
        if not trusted and total >= cfg.max_connections - cfg.reserved_connections:
            return (
                f"too many connections: the last {cfg.reserved_connections} of {cfg.max_connections} are kept "
                "for root and kstatd's user (kstatd --reserved-connections)"
            )
        if lst.zoneid != GLOBAL_ZONEID and self._per_zone.get(lst.zoneid, 0) >= cfg.max_per_zone:
            return f"too many connections from zone {lst.zone} (kstatd --max-per-zone {cfg.max_per_zone})"
        if uid not in (0, os.geteuid()) and self._per_uid.get(uid, 0) >= cfg.max_per_uid:
            return f"too many connections from uid {uid} (kstatd --max-per-uid {cfg.max_per_uid})"
        return None

    def _spawn(self, sess: Session, gen: int, first: bytes | None) -> None:
        t = threading.Thread(
            target=self._serve, args=(sess, gen, first), name=f"kstatd-conn-{sess.conn.id}", daemon=True
        )
        try:
            t.start()
        except Exception as exc:  # out of threads or memory: this connection goes, the daemon stays
            self._errlog.error("thread", "connection %d: cannot start a thread: %s", sess.conn.id, _why(exc))
            self._close_session(sess)

    # --- one connection ---------------------------------------------------------

    def _serve(self, sess: Session, gen: int, first: bytes | None) -> None:
        sock = sess.sock
        decoder = sess.decoder
        decode = sess.body_decoder.decode
        conn = sess.conn
        requests = sess.counters.requests
        count_error = sess.counters.count_error
        dispatch = self.handler.dispatch
        packer = msgpack.Packer(use_bin_type=True)
        monotonic = time.monotonic
        cfg = self.config
        idle_timeout, frame_timeout = cfg.idle_timeout, cfg.frame_timeout
        sess.tid = threading.get_ident()
        uid = conn.cred.uid
        trusted = self._trusted
        gate = self.gate
        # Public connections' expensive work waits at safe points while privileged
        # requests run (PrivFirst); a privileged connection's never does.
        self.first.pausable(not sess.priv)
        pause = self.first.checkpoint
        if sess.priv:
            self._short_slice()
        reply: bytes | bytearray | None = None
        owner = True
        last = monotonic()  # end of the last reply (or connect): the idle clock
        frame_t0 = 0.0  # when the buffered partial request began
        try:
            # recv wakes at least this often to check the deadlines; a reply that does not
            # fit the socket buffer must go within frame_timeout (send_reply), so a client
            # that does not read costs at most that. OSError here closes the session.
            set_recv_timeout(sock, min(idle_timeout, frame_timeout))
            if first is not None:
                sess.phase = SENDING
                send_reply(sock, first, frame_timeout)
                sess.phase = READING
            while True:
                try:
                    body = decoder.next_body()
                    if body is None:
                        if self._stopping:
                            break
                        try:
                            data = sock.recv(RECV_SIZE)
                        except BlockingIOError:  # SO_RCVTIMEO expired
                            data = None
                        now = monotonic()
                        if data is not None:
                            if not data:
                                pause()  # a safe point (nothing held): the hang-up's close waits for root's request
                                break
                            if not decoder.pending():
                                frame_t0 = now
                            decoder.feed(data)
                        why = None
                        if decoder.pending():
                            if now - frame_t0 >= frame_timeout:
                                why = f"request incomplete after {frame_timeout:g} s (kstatd --frame-timeout)"
                        elif now - last >= idle_timeout:
                            why = f"idle for {idle_timeout:g} s (kstatd --idle-timeout)"
                        if why is not None:
                            count_error(errno.ETIMEDOUT)
                            send_reply(sock, pack_frame([0, errno.ETIMEDOUT, {"error": why}], packer), frame_timeout)
                            break
                        continue
                    # A safe point before every public request, cheap ones too (nothing
                    # held): under churn, each session thread would take the GIL from
                    # root's request in turn, and a big body's decoding holds it (65,536
                    # kids: about 1 ms).
                    pause()
                    cmd, seq, arg = check_request(decode(body))
                    if sess.priv:
                        self._priv_mark(sess, True)
                except FrameError as exc:
                    requests[SLOT_BAD_FRAME] += 1
                    count_error(exc.errno)
                    send_reply(sock, pack_frame([exc.seq, exc.errno, {"error": exc.message}], packer), frame_timeout)
                    break
                if self._stopping or (self._panicked and cfg.on_panic == "halt"):
                    break  # requests not yet begun are not served during shutdown
                if decoder.pending():
                    frame_t0 = monotonic()  # the rest of the buffer starts the next request
                requests[cmd_slot(cmd)] += 1
                sess.seq = seq
                sess.phase = DISPATCHING
                gated = cmd in _EXPENSIVE and uid not in trusted
                if gated:  # other users' expensive requests take turns (kstatpy.fairness)
                    gate.acquire(uid)
                streaming = False  # a reply in pieces: _stream releases the gate
                try:
                    if cmd in _TIMED:
                        sess.t0 = monotonic()
                    result: Any
                    try:
                        code, result = dispatch(conn, cmd, arg)
                    except BadTrap as trap:
                        code, result = self._panic(trap)
                    arg = body = None  # the request is not kept while its reply is made and sent
                    lazy = not code and type(result.get("results")) is LazyEntries
                    with sess.lock:
                        if sess.gen != gen:  # the watchdog answered for us and gave the session away
                            owner = False
                            self._unstick(sess)
                            return
                        if lazy:  # t0 stays: its entries are read as the reply goes
                            sess.stream = Stream(*head_and_tail(seq, result, packer))
                        else:
                            sess.t0 = None
                    if not lazy:
                        reply = self._encode(cmd, seq, code, result, packer, count_error, pause)
                    result = None  # only the encoded reply is kept while it waits for its reader
                    streaming = lazy
                finally:
                    if gated and not streaming:
                        gate.release()
                if streaming:
                    if not self._stream(sess, gen, frame_timeout, gated, cmd == _READ_MANY):
                        owner = False
                        return
                    if sess.priv:
                        self._priv_mark(sess, False)
                    sess.phase = READING
                    last = monotonic()
                    continue
                if reply is None:  # halting panic: no reply
                    break
                sess.phase = SENDING
                if cmd in _EXPENSIVE:
                    pause()  # a safe point: the gate's slot is given back, nothing else held
                self._send(sess, reply, frame_timeout)
                reply = None
                if sess.priv:
                    self._priv_mark(sess, False)
                sess.phase = READING
                last = monotonic()
        except OSError:
            pass
        except Exception as exc:  # MemoryError and the like: this connection goes, never the daemon
            self._errlog.error("session", "connection %d: %s; closed", conn.id, _why(exc))
        finally:
            if owner:
                self._close_session(sess)

    def _encode(
        self, cmd: int, seq: int, code: int, result: Any, packer: Any, count_error: Any, pause: Any
    ) -> bytes | bytearray | None:
        # The reply frame of a dispatched request (None: a halting panic, no reply).
        if code < 0:
            return None
        if code:
            count_error(code)
        elif cmd == _READ_MANY:  # each entry is a read: its errno counts too
            entries = result["results"]
            for err in entries.errnos if isinstance(entries, PackedResults) else (e[0] for e in entries):
                if err:
                    count_error(err)
        try:
            if not code and isinstance(result.get("results"), PackedResults):
                reply = pack_packed_reply(seq, result, packer)
                result.clear()  # the packed entries go now, before the send
                return reply
            if cmd in _BY_ENTRY and not code and isinstance(result.get("results"), list):
                # Entry by entry: no single C call holds the GIL for a multi-megabyte reply.
                return pack_read_many_reply(seq, result, packer, pause)
            return pack_frame([seq, code, result], packer)
        except (ValueError, TypeError, OverflowError) as exc:  # e.g. a provider's lone surrogate
            count_error(errno.EIO)
            return pack_frame([seq, errno.EIO, {"error": f"reply cannot be encoded: {exc}"}], packer)

    def _reply_figures(self) -> tuple[int, int, int, int]:
        # kstatpy:0:replies (kstatpy.daemon_stats).
        r = self.replies
        return max(r.held, 0), r.peak, r.refused, r.in_pieces

    def _stream(self, sess: Session, gen: int, timeout: float, gated: bool, count: bool) -> bool:
        # Make and send sess.stream's reply in pieces (kstatpy.pieces): the next entry is
        # read only once the pieces before it went, so at most a piece (or one entry
        # larger than a piece) waits here for the reader. The gate (gated: held on entry,
        # released here) is given up while a piece is sent. False: the watchdog took the
        # session over (it finishes the reply); this thread must leave it alone.
        st = sess.stream
        assert st is not None
        uid = sess.conn.cred.uid
        lock = sess.lock
        gate = self.gate
        held = gated
        entries = st.entries
        buf = st.buf  # the same bytearray for the whole stream (take_full cuts it in place)
        it = iter(entries)
        pause = self.first.checkpoint  # PrivFirst: a public connection's reply waits for root's
        self.replies.count_in_pieces()
        try:
            while True:
                fail = 0
                pause()  # a safe point: no lock, no hold (an entry is read inside next())
                try:
                    chunk = next(it, None)
                except BadTrap as trap:
                    code, _ = self._panic(trap)
                    if code < 0:  # halting panic: no reply
                        raise OSError(errno.ECONNABORTED, "panic") from None
                    chunk, fail = None, code
                except Exception as exc:  # a provider's bug: this entry and the rest are EIO
                    self._errlog.error("stream", "connection %d: reply in pieces: %s", sess.conn.id, _why(exc))
                    chunk, fail = None, errno.EIO
                with lock:
                    if sess.gen != gen:  # the watchdog answered the rest and gave the session away
                        self._unstick(sess)
                        return False
                    if chunk is None:
                        frames = st.rest_failed(fail) if fail else st.last_frames()
                        sess.stream = None
                        sess.t0 = None
                        break
                    buf += chunk
                    st.done += 1
                    if len(buf) <= PIECE_SIZE:
                        continue
                    frames = st.take_full()  # type: ignore[assignment]
                if held:
                    gate.release()
                    held = False
                sess.phase = SENDING
                pause()  # a safe point: the gate's slot is given back, nothing held
                self._send(sess, frames, timeout)
                frames = None  # type: ignore[assignment]
                sess.phase = DISPATCHING
                if gated:
                    gate.acquire(uid)
                    held = True
            if held:
                gate.release()
                held = False
            if fail:
                sess.counters.count_error(fail)
            if count:
                for err in entries.errnos:
                    sess.counters.count_error(err)
            sess.phase = SENDING
            pause()
            self._send(sess, frames, timeout)
            return True
        finally:
            if held:
                gate.release()

    def _send(self, sess: Session, reply: bytes | bytearray, timeout: float) -> None:
        # One non-blocking send; a reply its reader does not take at once is parked, within
        # ReplyBudget's bounds, else its connection is closed (OSError ends the session).
        sock = sess.sock
        try:
            n = sock.send(reply, socket.MSG_DONTWAIT)
        except BlockingIOError:
            n = 0
        if n >= len(reply):
            return
        uid = sess.conn.cred.uid
        size = len(reply)
        if not self.replies.park(uid, size):  # counted in replies:refused (no EBUSY is sent)
            raise OSError(errno.ENOBUFS, "reply memory for readers that do not read is used up")
        try:
            send_reply(sock, memoryview(reply)[n:], timeout)
        finally:
            self.replies.unpark(uid, size)

    def _close_session(self, sess: Session) -> None:
        if sess.priv:
            self._priv_mark(sess, False)
        try:
            sess.sock.close()
        except OSError:
            pass
        if not (self._panicked and self.config.on_panic == "halt") and self.providers is not None:
            try:
                self.providers.conn_close(self.chain, sess.conn)
            except BadTrap as trap:  # a last close that frees what a kstat points at
                self._panic(trap)
        self.stats.conn_close(sess.counters)
        cred = sess.conn.cred
        with self._sessions_cv:
            if sess in self._sessions:
                self._sessions.discard(sess)
                for table, key in ((self._per_uid, cred.uid), (self._per_zone, cred.zoneid)):
                    n = table.get(key, 0) - 1
                    if n > 0:
                        table[key] = n
                    else:
                        table.pop(key, None)
            self._sessions_cv.notify_all()

    # --- deadlines --------------------------------------------------------------

    def _watchdog(self) -> None:
        # A request is taken over only when its thread has been inside ONE provider's
        # ks_update (handler.reading: thread -> kid) for read_timeout: a reader that waits
        # for its turn, the GIL or a lock, or moves from kid to kid, is starved, not hung,
        # and is never answered EAGAIN for it (issue 21). ``watched`` maps a session to
        # (kid, when this scan first saw its thread in that kid's ks_update).
        timeout = self.config.read_timeout
        tick = min(max(timeout / 10, 0.01), 0.25)
        reading = self.handler.reading
        assert reading is not None
        watched: dict[Session, tuple[int, float]] = {}
        while not self._drained:
            time.sleep(tick)  # a periodic scan, not synchronisation
            now = time.monotonic()
            with self._lock:
                sessions = list(self._sessions)
            seen: dict[Session, tuple[int, float]] = {}
            for sess in sessions:
                if sess.t0 is None:
                    continue
                kid = reading.get(sess.tid)
                if kid is None:
                    continue  # not in a provider: nothing is hung
                prev = watched.get(sess)
                since = prev[1] if prev is not None and prev[0] == kid else now
                seen[sess] = (kid, since)
                if now - since >= timeout:
                    self._take_over(sess, kid, now - since)
            watched = seen

    def _take_over(self, sess: Session, kid: int, waited: float) -> None:
        if not sess.lock.acquire(blocking=False):
            return  # its thread is finishing the request right now
        try:
            # Under sess.lock: the thread is still in this kid's ks_update (it leaves
            # ``reading`` as the provider returns, before it takes the lock): an answered
            # read is never failed.
            if sess.t0 is None or self.handler.reading.get(sess.tid) != kid:  # type: ignore[union-attr]
                return
            sess.t0 = None
            sess.gen += 1
            gen = sess.gen
            rest = None if sess.stream is None else bytes(sess.stream.rest_failed(errno.EAGAIN))
            sess.stream = None
            with self._lock:
                sess.stuck_kid = kid
                self.handler.stuck[kid] = self.handler.stuck.get(kid, 0) + 1
            self.stats.stuck(+1)
        finally:
            sess.lock.release()
        sess.counters.count_error(errno.EAGAIN)
        if rest is not None:  # a reply in pieces: its other entries stand, the rest are EAGAIN
            self._spawn(sess, gen, rest)
            return
        msg = f"kid {kid}: ks_update has not returned after {waited:.1f} s (kstatd --read-timeout)"
        self._spawn(sess, gen, pack_frame([sess.seq, errno.EAGAIN, {"error": msg}]))

    def _unstick(self, sess: Session) -> None:
        # The abandoned thread's request finally returned.
        self.stats.stuck(-1)
        with self._lock:
            kid = sess.stuck_kid
            if kid is not None:
                n = self.handler.stuck.get(kid, 0) - 1
                if n > 0:
                    self.handler.stuck[kid] = n
                else:
                    self.handler.stuck.pop(kid, None)

    # --- panics -----------------------------------------------------------------

    def panic(self, trap: BadTrap) -> None:
        """A BadTrap met outside a session (the metrics exporter's reads): handled as in one."""
        self._panic(trap)

    def _panic(self, trap: BadTrap) -> tuple[int, dict[str, Any]]:
        # (-1, {}) tells the caller not to reply (halt); else EFAULT for this reader.
        from kstatpy.crashdump import dump_path_for
        from kstatpy.panic import format_panic
        from kstatpy.panic import write_crash_file

        report = format_panic(trap, self.chain.kmem)
        crash_dir = self.config.crash_dir or os.path.dirname(os.path.abspath(self.config.socket))
        try:
            where = str(write_crash_file(report, crash_dir))
        except OSError as exc:
            where = f"(no crash file: {exc})"
        else:
            report += _write_dump(trap, self.chain, report, dump_path_for(where))
        if self.report is not None:
            self.report(report + f"crash dump written to {where}\n")
        if self.config.on_panic == "halt":
            with self._lock:
                self._panicked = True
            self._stop.set()
            return -1, {}
        self.stats.panic()
        return errno.EFAULT, {"error": f"panic: {trap} (crash dump {where}); kstatd continues (--on-panic=continue)"}


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _write_dump(trap: BadTrap, chain: Chain, report: str, path: str) -> str:
    # The structured dump beside the report (kstatpy.crashdump); a line for the report.
    from kstatpy.crashdump import build_dump
    from kstatpy.crashdump import write_dump

    try:
        write_dump(build_dump(trap, chain, report), path)
    except Exception as exc:  # the panic path must finish whatever the dump does: one line
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"
        log.error("crash dump %s not written: %s", path, why)
        return f"no structured crash dump ({path}: {why})\n"
    return f"structured crash dump written to {path} (kstatpy-mdb {path})\n"
