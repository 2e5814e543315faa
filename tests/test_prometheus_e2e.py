"""A real Prometheus scraping ``kstatd --metrics``, configured with the README's own files.

Needs Debian's ``prometheus`` package (``.ci/run`` installs it); skipped, saying so,
only when the binary is not there. Prometheus runs on loopback with a random port,
a temporary storage directory and docs/EXPORT.md's ``prometheus.yml`` and
``kstat-rules.yml`` (scrape and evaluation intervals cut to 1 s, the target pointed at
the test's kstatd). The assertions go through Prometheus' HTTP API.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kstatpy_providers.vmm.ioctl as ioc
import pytest

from kstatpy.transport import SocketTransport
from tests.bounded import reap
from tests.kstatd_fixture import REPO
from tests.kstatd_fixture import running_kstatd

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None,
    reason="Debian's prometheus package is not installed (.ci/run installs it: apt-get install -y prometheus)",
)
README_PORT = "localhost:9471"


def readme_file(name: str) -> str:
    """The fenced block that follows ``<!-- file: NAME -->`` in the README."""
    text = (REPO / "docs" / "EXPORT.md").read_text(encoding="utf-8")
    m = re.search(rf"<!-- file: {re.escape(name)} -->\n```[a-z]*\n(.*?)```", text, re.S)
    assert m, f"docs/EXPORT.md has no block for {name}"
    return m.group(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(base: str, path: str, **params: str) -> Any:
    url = f"{base}/api/v1/{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
    with urllib.request.urlopen(url, timeout=30) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    return body["data"]


def wait_for(what: str, fn: Callable[[], Any], proc: subprocess.Popen[bytes], timeout: float = 90.0) -> Any:
    """Poll an external server with a deadline (readiness, not synchronisation)."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"prometheus exited with {proc.returncode}"
        try:
            got = fn()
        except OSError:
            got = None
        if got:
            return got
        assert time.monotonic() < deadline, f"prometheus: {what} not seen within {timeout} s"
        time.sleep(0.25)


def test_prometheus_scrapes_kstatd(tmp_path: Path) -> None:
    metrics_port, web_port = free_port(), free_port()
    rules = tmp_path / "kstat-rules.yml"
    rules.write_text(readme_file("kstat-rules.yml"))
    config = readme_file("prometheus.yml")
    assert README_PORT in config and "15s" in config and "kstat-rules.yml" in config
    config = config.replace(README_PORT, f"127.0.0.1:{metrics_port}").replace("15s", "1s")
    config = config.replace("kstat-rules.yml", str(rules))
    (tmp_path / "prometheus.yml").write_text(config)
    check = subprocess.run([PROMTOOL, "check", "config", str(tmp_path / "prometheus.yml")],  # type: ignore[list-item]
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr

    plugins = ("kstatpy_providers.system", "kstatpy_providers.vmm.provider")
    with running_kstatd(tmp_path, plugins=plugins, args=("--metrics", f"127.0.0.1:{metrics_port}")) as kd:
        vm = SocketTransport(kd.socket, timeout=30)
        vm.ioctl(ioc.VMM_CREATE_VM, {"name": "prom"})
        fd = vm.ioctl(ioc.VMM_OPEN, {"name": "prom"})["fd"]
        vm.ioctl(ioc.VMM_VCPU_USTATE, {"fd": fd, "vcpu": 0, "state": 1})

        # promtool's lint over the exposition kstatd serves.
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30) as resp:
            exposition = resp.read()
        lint = subprocess.run([PROMTOOL, "check", "metrics"], input=exposition, capture_output=True, timeout=60)  # type: ignore[list-item]
        assert lint.returncode == 0, (lint.stdout + lint.stderr).decode()

        proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{web_port}", "--log.level=warn"],  # type: ignore[list-item]
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        base = f"http://127.0.0.1:{web_port}"
        try:
            targets = wait_for(
                "the kstatd target up",
                lambda: [t for t in api(base, "targets")["activeTargets"] if t["health"] == "up"],
                proc,
            )
            assert targets[0]["scrapeUrl"] == f"http://127.0.0.1:{metrics_port}/metrics"

            def series(match: str) -> list[dict[str, str]]:
                return api(base, "series", **{"match[]": match})

            cpu = wait_for("cpu series", lambda: series('{module="cpu"}'), proc)
            vmm = wait_for("vmm series", lambda: series('{module="vmm"}'), proc)
            cpu_names = {s["__name__"] for s in cpu}
            vmm_names = {s["__name__"] for s in vmm}
            assert "kstat_cpu_cpu_nsec_idle_seconds_total" in cpu_names
            assert "kstat_vmm_time_run_seconds_total" in vmm_names
            assert "kstat_vmm_vm_name_info" in vmm_names
            run = [s for s in vmm if s["__name__"] == "kstat_vmm_time_run_seconds_total"]
            assert {s["name"] for s in run} == {f"vcpu{i}" for i in range(32)}
            assert all(s["module"] == "vmm" and s["class"] == "misc" and "kstat_instance" in s for s in run)
            assert all(s["instance"] == f"127.0.0.1:{metrics_port}" for s in run)  # the target's, not ours

            meta = wait_for("metadata", lambda: api(base, "metadata"), proc)
            types = {name: entries[0]["type"] for name, entries in meta.items()}
            assert types["kstat_cpu_cpu_nsec_idle_seconds"] == "counter", types
            assert types["kstat_vmm_time_run_seconds"] == "counter"
            assert types["kstat_unix_freemem_bytes"] == "gauge"
            assert types["kstat_vmm_vm_name"] == "info"
            assert types["kstat_cpu_info_brand"] == "info"
            assert meta["kstat_cpu_cpu_nsec_idle_seconds"][0]["unit"] == "seconds"

            def instant(query: str) -> list[dict[str, Any]]:
                return api(base, "query", query=query)["result"]

            # rate() over a window its samples fill (5 scrapes 1 s apart in 5 s), so that
            # Prometheus' extrapolation to the window's edges stays small.
            wait_for("5 samples", lambda: instant("count_over_time(kstat_unix_lbolt_seconds_total[5s]) >= 5"), proc)
            # lbolt counts clock ticks; in seconds its rate is 1 s per s.
            lbolt = instant("rate(kstat_unix_lbolt_seconds_total[5s])")
            assert 0.8 < float(lbolt[0]["value"][1]) < 1.25, lbolt
            # Each CPU is idle, busy or waiting: per CPU the rates add up to about 1 s/s.
            total = instant(
                "rate(kstat_cpu_cpu_nsec_idle_seconds_total[5s]) + rate(kstat_cpu_cpu_nsec_user_seconds_total[5s])"
                " + rate(kstat_cpu_cpu_nsec_kernel_seconds_total[5s]) + rate(kstat_cpu_wait_ticks_io_seconds_total[5s])"
            )
            assert total and all(0.5 < float(r["value"][1]) < 1.3 for r in total), total
            # docs/EXPORT.md's recording rules evaluate.
            busy = wait_for("the recording rule", lambda: instant("cpu:kstat_cpu_busy:ratio_rate1m"), proc)
            assert len(busy) == len(total) and all(0 <= float(r["value"][1]) <= 1.05 for r in busy), busy
            host = wait_for("the average", lambda: instant("instance:kstat_cpu_busy:avg_ratio_rate1m"), proc)
            assert len(host) == 1
            up = instant('up{job="kstatd"}')
            assert [r["value"][1] for r in up] == ["1"]
            scrapes = instant("kstat_exporter_series")
            assert float(scrapes[0]["value"][1]) > 100
        finally:
            proc.terminate()
            try:
                _, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                _, err = reap(proc)
            vm.close()
        assert proc.returncode == 0, err.decode(errors="replace")
