"""The metrics server's HTTP face (kstatpy.exporter_http, issue 22), against a real
``kstatd --metrics``: a landing page at ``/`` linking to ``/metrics``, 404 on every
other path, as node_exporter does, and the connection limit on every path."""

from __future__ import annotations

import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from bounded import within
from kstatd_fixture import running_kstatd
from prometheus_client.parser import text_string_to_metric_families

from kstatpy import __version__
from kstatpy.exporter import METRICS_MAX_CONNECTIONS


@pytest.fixture
def metrics(tmp_path: Path) -> Iterator[str]:
    """A kstatd serving metrics on a free port; the base URL, read off its ready line."""
    args = ("--metrics", "127.0.0.1:0", "--metrics-select", "test:::")
    with running_kstatd(tmp_path, plugins=("tests.providers_fixture.basic",), args=args) as kd:
        assert kd.proc.stderr is not None
        line = within(30, "kstatd's ready line", kd.proc.stderr.readline).decode()
        m = re.search(r", metrics (http://127\.0\.0\.1:\d+)/metrics \(providers", line)
        assert m is not None, line
        yield m.group(1)
        assert kd.stop() == 0, kd.stderr


def get(url: str, method: str = "GET") -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=30) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_the_landing_page_links_to_the_metrics(metrics: str) -> None:
    status, ctype, page = get(metrics + "/")
    assert (status, ctype) == (200, "text/html; charset=utf-8"), page
    assert f"kstatpy {__version__}" in page and page.startswith("<!DOCTYPE html>")
    links = re.findall(r'href="([^"]+)"', page)
    assert links == ["metrics"], page
    status, ctype, text = get(urllib.parse.urljoin(metrics + "/", links[0]))
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4"), text
    names = {f.name for f in text_string_to_metric_families(text)}
    assert "kstat_test_i32" in names and "kstat_exporter_scrape_duration_seconds" in names, names
    assert get(metrics + "/", "HEAD")[:2] == (200, "text/html; charset=utf-8")


@pytest.mark.parametrize("path", ["/nope", "/metrics/", "/metrics/x", "/favicon.ico", "/index.html", "/metricsx"])
def test_other_paths_are_404(metrics: str, path: str) -> None:
    status, ctype, body = get(metrics + path)
    assert (status, ctype) == (404, "text/plain; charset=utf-8"), body
    assert body == "404 Not Found: the metrics are at /metrics\n"


def test_the_connection_limit_holds_on_every_path(metrics: str) -> None:
    host, port = urllib.parse.urlsplit(metrics).hostname, urllib.parse.urlsplit(metrics).port
    held = [socket.create_connection((host, port), timeout=30) for _ in range(METRICS_MAX_CONNECTIONS)]
    try:
        # Every slot is taken by a connection that sent nothing (accepted in order). One
        # more, for the landing page, takes the place of the oldest (issue 21: a request
        # gets through a slowloris), which the server closes: never more than the cap.
        with socket.create_connection((host, port), timeout=30) as extra:
            extra.sendall(b"GET / HTTP/1.0\r\n\r\n")
            answer = b""
            while chunk := extra.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.0 200 ") and b'href="metrics"' in answer, answer[:200]
        try:
            assert held[0].recv(1) == b""  # the oldest, closed to make room
        except ConnectionResetError:
            pass
        held[-1].setblocking(False)
        with pytest.raises(BlockingIOError):
            held[-1].recv(1)  # the newest held one is still open, unanswered
    finally:
        for s in held:
            s.close()
    assert get(metrics + "/")[0] == 200
