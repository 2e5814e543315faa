"""The ``kstatd`` command: host a chain and its providers, serve them on Unix sockets.

Exit status (kstat(8)'s 2 and 3, issue 21): 0 after SIGTERM/SIGINT (clean shutdown),
2 on usage errors, 3 on fatal errors: it cannot start (the message names the socket or
address) or its own output fails (kstatpy.cli.guard), 70 after a panic with
``--on-panic=halt``, 75 when a provider did not detach within ``--detach-timeout``.
``KSTATPY_TRACE_PLUGINS`` traces go to stderr whatever ``-v`` says.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

import click

from kstatpy import __version__
from kstatpy.cli.guard import FATAL
from kstatpy.cli.guard import GuardedCommand
from kstatpy.cli.kstatd_options import MAX_BYTES
from kstatpy.cli.kstatd_options import MAX_CONNECTIONS
from kstatpy.cli.kstatd_options import Seconds
from kstatpy.cli.kstatd_options import _bytes
from kstatpy.cli.kstatd_options import _check_allow
from kstatpy.cli.kstatd_options import _check_metrics
from kstatpy.cli.kstatd_options import _check_select
from kstatpy.cli.kstatd_options import _check_socket
from kstatpy.cli.kstatd_options import _crash_dir
from kstatpy.cli.kstatd_options import _each
from kstatpy.cli.kstatd_options import _gid
from kstatpy.cli.kstatd_options import _metrics_options
from kstatpy.cli.kstatd_options import _uid
from kstatpy.cli.kstatd_options import _zone
from kstatpy.config import config_option
from kstatpy.ioctl import DEFAULT_MAX_REPLY
from kstatpy.protocol import DEFAULT_MAX_REQUEST
from kstatpy.protocol import default_socket_path
from kstatpy.safepath import priv_socket_path
from kstatpy.safepath import root_run_dir

__all__ = ["main"]


def _say(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def _tune_gc() -> None:
    # The chain, the providers and the modules live as long as the daemon: freeze them
    # out of the cyclic collector's scans (a full collection over a 10^5-kstat chain
    # cost 43-63% of a full dump's dispatch, issue 10). Requests allocate short-lived,
    # acyclic maps and lists, so young collections are made rarer too.
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    _fix_mmap_threshold()


def _fix_mmap_threshold() -> None:
    # glibc raises its mmap threshold to the size of each freed mmapped block (up to
    # 32 MiB); after one full dump, later multi-megabyte reply buffers come from the
    # heap and stay resident. A fixed threshold (mallopt(3) M_MMAP_THRESHOLD, the
    # default 128 KiB) keeps them mmapped, returned at free. Not glibc: nothing to do.
    import ctypes

    try:
        ctypes.CDLL(None).mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


@click.command(cls=GuardedCommand, name="kstatd", context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="kstatd", message="%(prog)s (kstatpy %(version)s)")
@config_option()
@click.option(
    "--socket", "socket_path", metavar="PATH", envvar="KSTAT_SOCKET", show_envvar=True, callback=_each(_check_socket),
    help="The global zone's socket [default: /run/kstatpy/kstat.sock as root (with root's privileged "
    "/run/kstatpy/priv/kstat.sock), else $XDG_RUNTIME_DIR/kstatpy/kstat.sock, else /tmp/kstatpy-UID/kstat.sock]. "
    "Run as root, kstatd also listens at DIR/priv/NAME (directory 0700) beside every socket.",
)  # fmt: skip
@click.option(
    "--zone",
    "zones",
    metavar="NAME=PATH",
    multiple=True,
    callback=_each(_zone),
    help="Add a socket for zone NAME (repeatable).",
)
@click.option(
    "--plugin", "plugins", metavar="MODULE", multiple=True, help="Load a provider module by import name (repeatable)."
)
@click.option(
    "--allow-write",
    "allow",
    metavar="UID|@GROUP",
    multiple=True,
    callback=_each(_check_allow),
    help="Also privilege this user or group (repeatable).",
)
@click.option(
    "--max-request",
    type=click.IntRange(16, MAX_BYTES),
    default=DEFAULT_MAX_REQUEST,
    show_default=True,
    help="Largest request body in bytes.",
)
@click.option(
    "--max-reply",
    type=click.IntRange(1, MAX_BYTES),
    default=DEFAULT_MAX_REPLY,
    show_default=True,
    help="Byte budget of one READ_MANY, SELECT or DESCRIBE reply; later entries are answered E2BIG.",
)
@click.option(
    "--max-connections", type=click.IntRange(1, MAX_CONNECTIONS), default=256, show_default=True, help="Connections served at once."
)
@click.option(
    "--read-timeout",
    type=Seconds(0.01),
    default=5.0,
    show_default=True,
    help="Seconds before a stuck read is answered EAGAIN.",
)
@click.option(
    "--on-panic",
    type=click.Choice(["halt", "continue"]),
    default="halt",
    show_default=True,
    help="What a BAD TRAP in a provider does.",
)
@click.option(
    "--crash-dir", metavar="DIR", callback=_crash_dir,
    help="Where panic reports go, an existing directory [default: the socket's directory].",
)  # fmt: skip
@click.option(
    "--vmm-teardown",
    type=click.Choice(["fixed", "pre-14281"]),
    default="fixed",
    show_default=True,
    help="vmm provider teardown order.",
)
@click.option(
    "--kmem-audit",
    is_flag=True,
    help="Reference audit on the debug heap: freeing memory a live kstat points at panics at the free.",
)
@click.option(
    "--detach-timeout",
    type=Seconds(0),
    default=10.0,
    show_default=True,
    help="Seconds providers get to detach at shutdown; past that kstatd exits 75 without them.",
)
@click.option(
    "--metrics",
    "metrics",
    metavar="HOST:PORT",
    callback=_each(_check_metrics),
    help="Serve Prometheus/OpenMetrics /metrics on HOST:PORT (HTTP).",
)
@click.option(
    "--metrics-select", "metrics_select", metavar="SELECTOR", multiple=True, callback=_each(_check_select),
    help="Export only kstats matching module:instance:name:statistic (kstat operand syntax; repeatable).",
)  # fmt: skip
@click.option(
    "--idle-timeout",
    type=Seconds(0.01),
    default=300.0,
    show_default=True,
    help="Seconds a connection may sit with nothing in flight before kstatd closes it (ETIMEDOUT).",
)
@click.option(
    "--frame-timeout",
    type=Seconds(0.01),
    default=10.0,
    show_default=True,
    help="Seconds a request may take to arrive, and a reply to be read, before the connection is closed.",
)
@click.option(
    "--max-per-uid",
    type=click.IntRange(1, MAX_CONNECTIONS),
    help="Connections one peer uid may hold (root and kstatd's own uid excepted) [default: a quarter of --max-connections].",
)
@click.option(
    "--max-per-zone",
    type=click.IntRange(1, MAX_CONNECTIONS),
    help="Connections one non-global zone socket may hold [default: a quarter of --max-connections].",
)
@click.option(
    "--reserved-connections",
    type=click.IntRange(0, MAX_CONNECTIONS),
    help="Of --max-connections, slots only root and kstatd's own uid may take [default: an eighth, at most 16].",
)
@click.option(
    "--kmem-history",
    metavar="BYTES",
    callback=_bytes,
    help="Bookkeeping kept for freed buffers (::whatis history), e.g. 16M; 0 keeps none [default: 1M].",
)
@click.option(
    "--deadman-seconds",
    type=Seconds(0),
    default=10.0,
    show_default=True,
    help="Report a kstat_delete or hold that has waited this long, with both threads' stacks (0: off).",
)
@click.option(
    "--switch-interval",
    type=Seconds(0.00001, 0.1),
    default=0.0005,
    show_default=True,
    help="Python's thread switch interval (sys.setswitchinterval): how long a thread waiting for the "
    "interpreter lock (root's request) may wait for the running one (another user's expensive request).",
)
@click.option(
    "--priv-slice",
    type=Seconds(0, 0.1),
    default=0.0001,
    show_default=True,
    help="The kernel time slice asked for the threads serving privileged sockets (Linux 6.12+; 0: the "
    "kernel's default): root's requests preempt other users' processes sooner, with no more CPU.",
)
@click.option("-v", "--verbose", count=True, help="Log more (-vv: debug).")
def main(
    socket_path: str | None,
    zones: tuple[str, ...],
    plugins: tuple[str, ...],
    allow: tuple[str, ...],
    max_request: int,
    max_reply: int,
    max_connections: int,
    read_timeout: float,
    on_panic: str,
    crash_dir: str | None,
    vmm_teardown: str,
    kmem_audit: bool,
    detach_timeout: float,
    metrics: str | None,
    metrics_select: tuple[str, ...],
    idle_timeout: float,
    frame_timeout: float,
    max_per_uid: int | None,
    max_per_zone: int | None,
    reserved_connections: int | None,
    kmem_history: int | None,
    deadman_seconds: float,
    switch_interval: float,
    priv_slice: float,
    verbose: int,
) -> None:
    """kstatd: serve the kstat chain over a Unix socket (docs/PROTOCOL.md, version 1)."""
    logging.basicConfig(
        level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)], format="kstatd: %(message)s"
    )
    zone_list = [_zone(z) for z in zones]
    uids = frozenset(_uid(a) for a in allow if not a.startswith("@"))
    gids = frozenset(_gid(a[1:]) for a in allow if a.startswith("@"))
    if socket_path == "":
        raise click.BadParameter("the socket path must not be empty", param_hint="--socket")
    path = socket_path or (os.path.join(root_run_dir(), "kstat.sock") if os.geteuid() == 0 else default_socket_path())
    listen, selectors = _metrics_options(metrics, metrics_select)
    quarter = max(1, max_connections // 4)
    max_per_uid = quarter if max_per_uid is None else max_per_uid
    max_per_zone = quarter if max_per_zone is None else max_per_zone
    if reserved_connections is None:
        reserved_connections = min(16, max_connections // 8)
    if reserved_connections >= max_connections:
        raise click.BadParameter(
            f"{reserved_connections} must be below --max-connections ({max_connections})",
            param_hint="--reserved-connections",
        )
    if len({path, *(p for _, p in zone_list)}) != 1 + len(zone_list):
        raise click.UsageError("every socket path must differ")
    from kstatpy.systemd import ActivationError
    from kstatpy.systemd import assign
    from kstatpy.systemd import listen_fds

    try:  # socket activation: sockets systemd bound for us (kstatd.socket)
        inherited = assign(listen_fds(), {"global": path, **dict(zone_list)})
    except ActivationError as exc:
        _say(f"kstatd: {exc}\n")
        sys.exit(FATAL)

    from kstatpy.chain import Chain
    from kstatpy.kmem import Kmem
    from kstatpy.plugins import load_providers
    from kstatpy.plugins import trace_to_stderr
    from kstatpy.server import DaemonError
    from kstatpy.server import Kstatd
    from kstatpy.server import ServerConfig

    config = ServerConfig(
        socket=path, zones=zone_list, max_request=max_request, max_reply=max_reply, max_connections=max_connections,
        read_timeout=read_timeout, allow_uids=uids, allow_gids=gids, on_panic=on_panic, crash_dir=crash_dir,
        detach_timeout=detach_timeout, idle_timeout=idle_timeout, frame_timeout=frame_timeout,
        max_per_uid=max_per_uid, max_per_zone=max_per_zone, reserved_connections=reserved_connections,
        inherited=inherited,
        deadman_seconds=deadman_seconds, priv_slice=priv_slice,
    )  # fmt: skip
    chain = Chain(kmem=Kmem(audit=kmem_audit), config={"vmm_teardown": vmm_teardown, "zones": config.zone_ids()})
    trace_to_stderr("kstatd")  # $KSTATPY_TRACE_PLUGINS: whatever -v says
    if kmem_history is not None:
        chain.kmem.history_bytes = kmem_history
    providers = load_providers(modules=plugins)
    daemon = Kstatd(chain, providers, config, report=_say)
    # A thread waiting for the GIL gets it within the interval (default 0.5 ms, Python's
    # is 5): a small request (root's) queued behind another user's expensive one waits
    # less (issue 21; measured in RELIABILITY.md, "expensive floods").
    sys.setswitchinterval(switch_interval)
    # Before anything can answer a client: a SIGTERM sent as soon as kstatd answers
    # must find the handler (stop() only sets a flag; serve_forever acts on it).
    signal.signal(signal.SIGTERM, lambda *_: daemon.stop())
    signal.signal(signal.SIGINT, lambda *_: daemon.stop())
    exporter = None
    metrics_url = "off"
    if listen is not None:  # bound first: a busy port costs nothing else
        from kstatpy.exporter import Exporter

        exporter = Exporter(daemon.handler, listen[0], listen[1], selectors, on_panic=daemon.panic)
        try:
            host, port = exporter.start()
        except OSError as exc:
            _say(f"kstatd: --metrics {metrics}: cannot listen: {exc.strerror or exc}\n")
            sys.exit(FATAL)
        metrics_url = f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"
    try:
        daemon.bind()  # before attach: a second kstatd fails here, having touched nothing
    except DaemonError as exc:
        _say(f"kstatd: {exc}\n")
        if exporter is not None:
            exporter.stop()
        sys.exit(FATAL)
    # Load and attach failures are logged once by kstatpy.plugins ("kstatd: provider ...").
    providers.attach(chain)
    _tune_gc()
    daemon.start()
    from kstatpy.systemd import notify

    # The one line that says kstatd is ready (and where), also systemd's STATUS=.
    ready = "ready: listening on {}{}, zones {}, privileged {}, metrics {} (providers: {})".format(
        path, " (passed by systemd)" if path in inherited else "",
        ", ".join(f"{name}={zpath}" for name, zpath in zone_list) or "none",
        priv_socket_path(path) if priv_socket_path(path) in daemon.priv_paths else "none",  # zones': beside theirs
        metrics_url, ", ".join(providers.names()) or "none",
    )  # fmt: skip
    _say(f"kstatd: {ready}\n")
    notify(f"READY=1\nSTATUS={ready}\nMAINPID={os.getpid()}")
    status = daemon.serve_forever()
    if exporter is not None and not status:
        exporter.stop()
    sys.stderr.flush()
    if status:
        os._exit(status)  # a panicking kernel runs no teardown: no atexit, no thread joins


if __name__ == "__main__":
    main()
