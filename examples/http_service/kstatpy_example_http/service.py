"""``kstatpy-example-http``: a small HTTP service whose statistics ``kstat`` reads.

    kstatpy-example-http --port 8080 --socket /tmp/http/kstat.sock
    kstat --socket /tmp/http/kstat.sock -p http:0

Routes: ``/`` answers 200, ``/fail`` 500 (an "error"), ``/slow?ms=N`` 200 after N ms,
anything else 404. Every request goes through :class:`~kstatpy_example_http.HttpStats`
(its NAMED, IO and TIMER kstats), served by :func:`kstatpy.serve` from this process.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs
from urllib.parse import urlparse

import kstatpy
from kstatpy_example_http.stats import HttpStats

__all__ = ["build_server", "main"]


def build_server(stats: HttpStats, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """The HTTP server (not started); every request is counted in ``stats``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            token = stats.request_start()
            status, body = 500, b"internal error\n"
            try:
                status, body = route(self.path)
            finally:
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                stats.request_done(token, status, len(body))

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def route(path: str) -> tuple[int, bytes]:
    """The answer to ``GET path``: (status, body)."""
    url = urlparse(path)
    if url.path == "/":
        return 200, b"hello\n"
    if url.path == "/fail":
        return 500, b"failed on purpose\n"
    if url.path == "/slow":
        ms = int(parse_qs(url.query).get("ms", ["10"])[0])
        time.sleep(min(ms, 5000) / 1000)  # the service's work, not synchronisation
        return 200, b"slow\n"
    return 404, b"not found\n"


def main(argv: list[str] | None = None) -> int:
    """Run the service until SIGINT/SIGTERM; its kstats are served on ``--socket``."""
    ap = argparse.ArgumentParser(prog="kstatpy-example-http", description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8080, help="TCP port (0: any free one) [8080]")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on [127.0.0.1]")
    ap.add_argument("--socket", required=True, help="the kstat socket to serve the statistics on")
    args = ap.parse_args(argv)
    stats = HttpStats()
    try:
        served = kstatpy.serve(args.socket, plugins=[("http", stats)])
    except Exception as exc:  # DaemonError: a live daemon or an unusable path
        print(f"kstatpy-example-http: {exc}", file=sys.stderr)
        return 1
    server = build_server(stats, args.host, args.port)
    stopping: list[int] = []  # a signal handler only appends (Event.set could deadlock it)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: stopping.append(signum))
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    print(f"listening on http://{args.host}:{server.server_address[1]}/, kstats on {args.socket}", flush=True)
    while not stopping:
        time.sleep(0.1)  # wait for a signal
    server.shutdown()
    server.server_close()
    return served.stop()


if __name__ == "__main__":
    sys.exit(main())
