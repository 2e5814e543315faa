"""The metrics server's paths: ``/metrics``, a landing page at ``/``, 404 elsewhere.

As node_exporter does: ``/metrics`` is prometheus-client's WSGI app (text format or
OpenMetrics by the scrape's ``Accept``), ``/`` is a small HTML page that links to it
(relative, so a reverse proxy's prefix keeps working) and names kstatpy's version,
and any other path is ``404 Not Found`` with a one-line text body. The landing page
and the 404 read nothing from the chain: only ``/metrics`` scrapes. The connection
limits (:data:`kstatpy.exporter.METRICS_MAX_CONNECTIONS`, the per-connection
timeout) are the server's and apply to every path alike.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from typing import Any

from kstatpy import __version__

__all__ = ["LANDING_PAGE", "metrics_app", "routes"]

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
