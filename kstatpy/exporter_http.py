"""The metrics server's paths: ``/metrics``, a landing page at ``/``, 404 elsewhere.

As node_exporter does: ``/metrics`` is prometheus-client's WSGI app (text format or
OpenMetrics by the scrape's ``Accept``), ``/`` is a small HTML page that links to it
(relative, so a reverse proxy's prefix keeps working) and names kstatpy's version,
and any other path is ``404 Not Found`` with a one-line text body. The landing page
and the 404 read nothing from the chain: only ``/metrics`` scrapes. The connection
limits (:data:`METRICS_MAX_CONNECTIONS`, :data:`METRICS_CONN_TIMEOUT`) are the
server's (:func:`start_server`) and apply to every path alike.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from collections.abc import Iterable
from typing import Any

from prometheus_client.registry import CollectorRegistry

from kstatpy import __version__

__all__ = ["LANDING_PAGE", "METRICS_CONN_TIMEOUT", "METRICS_MAX_CONNECTIONS", "SLOT_WAIT", "metrics_app", "routes", "start_server"]

LANDING_PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>kstatd exporter</title></head>
<body>
<h1>kstatd exporter</h1>
<p>kstat statistics for Prometheus, from kstatd (kstatpy {__version__}).</p>
<ul><li><a href="metrics">Metrics</a></li></ul>
</body>
</html>
""".encode()

_NOT_FOUND = b"404 Not Found: the metrics are at /metrics\n"

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def routes(metrics_app: WSGIApp) -> WSGIApp:
    """A WSGI app serving ``metrics_app`` at ``/metrics``, the landing page at ``/``, 404 elsewhere."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == "/metrics":
            return metrics_app(environ, start_response)
        if path == "/":
            status, ctype, body = "200 OK", "text/html; charset=utf-8", LANDING_PAGE
        else:
            status, ctype, body = "404 Not Found", "text/plain; charset=utf-8", _NOT_FOUND
        start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
        return [b""] if environ.get("REQUEST_METHOD") == "HEAD" else [body]

    return app


def metrics_app(registry: Any) -> WSGIApp:
    """prometheus-client's WSGI app over ``registry`` at ``/metrics``, behind :func:`routes`."""
    from prometheus_client.exposition import make_wsgi_app

    return routes(make_wsgi_app(registry))


log = logging.getLogger("kstatpy.exporter")

#: Seconds a metrics connection may take in all, its request read and its answer written
#: (issue 21: a per-read timeout let one byte every 8 s hold a connection forever).
METRICS_CONN_TIMEOUT = 10.0
#: Connections served at once. At the cap, a new connection takes the place of the oldest
#: one still sending its request (a slowloris), so a scrape is served during one.
METRICS_MAX_CONNECTIONS = 16
#: Seconds a new connection over the cap waits for the slot of the slowloris cut to make
#: room for it (its thread ends at once) before it is closed unanswered.
SLOT_WAIT = 1.0


def start_server(host: str, port: int, registry: CollectorRegistry, timeout: float,
                  max_connections: int) -> tuple[Any, threading.Thread]:  # fmt: skip
    """prometheus-client's start_http_server, bounded; returns (server, serving thread)."""
    # Bounded: a whole-connection deadline (a
    # timer shuts the socket down), a per-read socket timeout, and a semaphore taken at
    # accept, released when the connection's answer is written, before its socket is
    # shut down (a client that reads its answer to the end and connects again at once
    # finds its slot free). prometheus-client still does the exposition. ``reading``: connections
    # whose request is not parsed yet, by the time they were accepted (guarded by ``lock``).
    import socket as socket_mod
    from wsgiref.simple_server import make_server

    from prometheus_client.exposition import ThreadingWSGIServer
    from prometheus_client.exposition import _get_best_family
    from prometheus_client.exposition import _SilentHandler

    slots = threading.BoundedSemaphore(max_connections)
    lock = threading.Lock()
    reading: dict[Any, float] = {}

    def cut(request: Any) -> None:
        try:
            request.shutdown(socket_mod.SHUT_RDWR)
        except OSError:
            pass

    class Handler(_SilentHandler):
        def parse_request(self) -> bool:
            ok = bool(super().parse_request())  # it reads the headers: until here, a slowloris
            with lock:  # the request is in, headers too: from here on, not a slowloris
                reading.pop(self.connection, None)
            return ok

    Handler.timeout = timeout

    class Server(ThreadingWSGIServer):
        def process_request(self, request: Any, client_address: Any) -> None:
            if not slots.acquire(blocking=False):
                with lock:
                    victim = min(reading, key=reading.__getitem__) if reading else None
                    if victim is not None:
                        reading.pop(victim)
                if victim is not None:
                    cut(victim)  # its thread ends and frees a slot
                # With no victim every slot is answering: refused at once. Waiting here for
                # one to finish would hold the accept loop, and a user who keeps every slot
                # answering (never reading) would keep the listen queue full with one
                # connection a second: scrapes would hang in it, not fail at once.
                if victim is None or not slots.acquire(timeout=SLOT_WAIT):
                    self.shutdown_request(request)  # over the cap: refused
                    return
            with lock:
                reading[request] = time.monotonic()
            try:
                super().process_request(request, client_address)
            except BaseException:
                with lock:
                    reading.pop(request, None)
                slots.release()
                raise

        def process_request_thread(self, request: Any, client_address: Any) -> None:
            # socketserver's, but the slot is given back before the socket is shut down and
            # closed, not after: the client sees its connection end only once its slot is free.
            deadline = threading.Timer(timeout, cut, args=(request,))
            deadline.daemon = True
            deadline.start()
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                deadline.cancel()
                with lock:
                    reading.pop(request, None)
                slots.release()
                self.shutdown_request(request)

        def handle_error(self, request: Any, client_address: Any) -> None:
            log.debug("metrics connection from %s dropped", client_address, exc_info=True)

    Server.address_family, addr = _get_best_family(host, port)
    httpd = make_server(addr, port, metrics_app(registry), Server, handler_class=Handler)
    thread = threading.Thread(target=httpd.serve_forever, name="kstatd-metrics", daemon=True)
    thread.start()
    return httpd, thread
