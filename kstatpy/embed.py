"""Embedding: serve a chain's kstats from inside any Python process.

:func:`serve` runs kstatd's listener (:class:`kstatpy.server.Kstatd`, the same code
as the ``kstatd`` command) in background threads of the calling process, on a Unix
socket the caller chooses, and returns a :class:`Served` handle; ``kstat --socket
PATH`` and any client of docs/PROTOCOL.md read the process's kstats there.
:func:`serve_async` is the same for asyncio code: awaitable, and an async context
manager, so starting and stopping never block the event loop.

Threads and locks
    Requests are answered on kstatd's own threads (one a connection), never on the
    caller's thread or event loop: a slow ``ks_update`` stalls only its reader. So a
    kstat updated by the service while readers read it needs ``ks_lock``
    (:class:`kstatpy.kstat.KMutex`): the read path holds it around ``ks_update``
    and the snapshot, and the service takes it around its updates
    (``examples/http_service`` does). A single integer assignment is atomic in
    CPython, so a lone counter may go without.

Life cycle
    ``serve`` binds (raising :class:`kstatpy.listener.DaemonError` when the path is
    taken by a live daemon or unusable), attaches the providers it loaded, publishes
    ``kstatpy:0:*`` and starts accepting. ``stop`` stops accepting, finishes the
    requests in flight, closes the connections, detaches those providers, removes
    the socket and returns the status (0, or 75 when a provider did not detach in
    time). A panic (a provider touching freed memory) with ``on_panic="halt"``
    (the default) stops the listener, never the process: ``served.panicked`` tells,
    and the report goes to the ``kstatpy.embed`` logger and the crash files.

Protocol: an embedded listener is a kstatd; only HELLO's ``server`` string differs
(docs/PROTOCOL.md §9.6).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import Generator
from collections.abc import Iterable
from typing import Any

from kstatpy.chain import Chain
from kstatpy.kmem import Kmem
from kstatpy.plugins import ENTRY_POINT_GROUP
from kstatpy.plugins import ProviderFailure
from kstatpy.plugins import load_providers
from kstatpy.server import Kstatd
from kstatpy.server import ServerConfig

__all__ = ["Served", "serve", "serve_async"]

log = logging.getLogger(__name__)

#: HELLO's ``server`` string for an embedded listener (docs/PROTOCOL.md §9.6).
SERVER_FORMAT = "kstatpy.serve (kstatpy {version}) in {program} pid {pid}"


class Served:
    """A running embedded listener. Built by :func:`serve`.

    :attr chain: the chain served (the caller's, or one made by ``serve``).
    :attr socket: the socket path.
    :attr failures: providers that failed to load or attach (the others are served).
    """

    def __init__(self, daemon: Kstatd, chain: Chain, socket: str, failures: list[ProviderFailure]) -> None:
        self.daemon = daemon
        self.chain = chain
        self.socket = socket
        self.failures = failures
        self.status: int | None = None  # the exit status, once stopped
        self._thread = threading.Thread(target=self._run, name=f"kstatpy-serve {socket}", daemon=True)
        self._stopped = threading.Lock()  # stop() runs once

    def _run(self) -> None:
        self.status = self.daemon.serve_forever()

    @property
    def panicked(self) -> bool:
        """True once a provider panicked (with ``on_panic="halt"`` the listener is gone)."""
        return self.daemon.stats.panics > 0 or self.daemon._panicked

    @property
    def running(self) -> bool:
        """True while the listener serves."""
        return self._thread.is_alive()

    def stop(self) -> int:
        """Stop serving (graceful, see the module docstring); the status: 0, 70 or 75. Idempotent."""
        with self._stopped:
            if self._thread.is_alive():
                self.daemon.stop()
                self._thread.join()
        return self.status if self.status is not None else 0

    async def astop(self) -> int:
        """:meth:`stop` for asyncio code (runs in a worker thread)."""
        return await asyncio.to_thread(self.stop)

    def __enter__(self) -> Served:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Served:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.astop()

    def __repr__(self) -> str:
        return f"<Served {self.socket} {'running' if self.running else f'stopped ({self.status})'}>"


def _entry_point_plugins(names: Iterable[str]) -> list[tuple[str, object]]:
    from importlib.metadata import entry_points

    wanted = list(names)
    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name in wanted}
    missing = [n for n in wanted if n not in found]
    if missing:
        raise ValueError(f"no provider {missing[0]!r} installed (entry-point group {ENTRY_POINT_GROUP!r})")
    return [(n, found[n].load()) for n in wanted]


def _report(text: str) -> None:
    log.error("%s", text.rstrip("\n"))


def serve(
    socket: str | os.PathLike[str],
    *,
    chain: Chain | None = None,
    providers: Iterable[str] = (),
    plugins: Iterable[tuple[str, object]] = (),
    kmem_audit: bool = False,
    on_panic: str = "halt",
    read_timeout: float = 5.0,
    max_connections: int = 256,
    crash_dir: str | None = None,
    config: dict[str, Any] | None = None,
) -> Served:
    """Serve ``chain`` (or a new one) on the Unix socket ``socket``, from background threads.

    :param chain: the chain to serve; None makes one (``Chain(kmem=Kmem(audit=kmem_audit),
        config=config)``).
    :param providers: installed providers to load and attach, by entry-point name
        (``"system"``, ``"vmm"``, a third-party one); none by default.
    :param plugins: ``(name, object)`` providers to attach as they are (the service's own).
    :param kmem_audit: the debug heap's reference audit, for a chain made here.
    :param on_panic: ``"halt"`` (stop the listener) or ``"continue"`` (answer EFAULT).
    :param read_timeout: seconds before a read stuck in ``ks_update`` is answered EAGAIN.
    :param crash_dir: where panic reports and dumps go (default: the socket's directory).
    :param config: ``chain.config`` for a chain made here (e.g. ``{"vmm_teardown": "fixed"}``).
    :returns: the running :class:`Served`; ``with serve(...) as served:`` stops it on exit.
    :raises DaemonError: the socket path is in use by a live daemon, or unusable.
    :raises ValueError: an unknown provider name, or a chain given together with
        ``kmem_audit``/``config``.
    """
    if chain is not None and (kmem_audit or config):
        raise ValueError("serve(): kmem_audit and config apply to a chain serve() makes; pass them to Chain()")
    if chain is None:
        chain = Chain(kmem=Kmem(audit=kmem_audit), config=config)
    path = os.fspath(socket)
    loaded = load_providers(autoload=False, plugins=[*_entry_point_plugins(providers), *plugins])
    cfg = ServerConfig(
        socket=path, on_panic=on_panic, read_timeout=read_timeout, max_connections=max_connections,
        crash_dir=crash_dir,
    )  # fmt: skip
    daemon = Kstatd(chain, loaded, cfg, report=_report)
    daemon.handler.server = SERVER_FORMAT.format(
        version=_version(), program=os.path.basename(sys.argv[0] or "python"), pid=os.getpid()
    )
    daemon.bind()  # before attach: a taken path fails having touched nothing
    failures = list(loaded.failures)
    failures += loaded.attach(chain)
    for failure in failures:
        log.error("%s", failure)
    daemon.start()
    served = Served(daemon, chain, path, failures)
    served._thread.start()
    return served


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("kstatpy")
    except Exception:
        return "0+unknown"


class _AsyncServe:
    """``await serve_async(...)`` or ``async with serve_async(...) as served:``."""

    def __init__(self, socket: str | os.PathLike[str], kwargs: dict[str, Any]) -> None:
        self._socket = socket
        self._kwargs = kwargs
        self._served: Served | None = None

    async def _start(self) -> Served:
        self._served = await asyncio.to_thread(serve, self._socket, **self._kwargs)
        return self._served

    def __await__(self) -> Generator[Any, None, Served]:
        return self._start().__await__()

    async def __aenter__(self) -> Served:
        return await self._start()

    async def __aexit__(self, *exc: object) -> None:
        if self._served is not None:
            await self._served.astop()


def serve_async(socket: str | os.PathLike[str], **kwargs: Any) -> _AsyncServe:
    """:func:`serve` for asyncio: ``served = await serve_async(path, ...)`` then
    ``await served.astop()``, or ``async with serve_async(path, ...) as served:``.

    Starting and stopping run in a worker thread (``asyncio.to_thread``), so the
    event loop never blocks; requests are served on kstatd's threads as with
    :func:`serve`. Same arguments and errors as :func:`serve`.
    """
    return _AsyncServe(socket, kwargs)
