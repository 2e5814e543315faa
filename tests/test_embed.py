"""Embedding: ``kstatpy.serve`` / ``serve_async`` serve this process's kstats to ``kstat --socket``."""

from __future__ import annotations

import asyncio
import struct
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import msgpack
import pytest

import kstatpy
import tests.providers_fixture.uaf as uaf
from kstatpy import KSTAT_DATA_UINT64
from kstatpy import KSTAT_TYPE_NAMED
from kstatpy import Chain
from kstatpy import kstat_named_init
from kstatpy.listener import DaemonError
from tests.examples_path import use_examples
from tests.kstatd_fixture import REPO
from tests.kstatd_fixture import hello
from tests.kstatd_fixture import kstatd_env
from tests.kstatd_fixture import rpc


def kstat(socket: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "kstatpy.cli.kstat", "--socket", socket, *args]
    return subprocess.run(cmd, cwd=str(REPO), env=kstatd_env(), capture_output=True, text=True, timeout=60)


def counter_chain() -> tuple[Chain, object]:
    chain = Chain()
    ksp = chain.kstat_create("app", 0, "counters", "misc", KSTAT_TYPE_NAMED, 1)
    kstat_named_init(ksp.ks_data[0], "hits", KSTAT_DATA_UINT64)
    chain.kstat_install(ksp)
    return chain, ksp


def test_serve_a_chain_to_kstat_and_stop(tmp_path: Path) -> None:
    chain, ksp = counter_chain()
    path = str(tmp_path / "app.sock")
    with kstatpy.serve(path, chain=chain) as served:
        assert served.running and served.chain is chain
        ksp.ks_data[0].value = 41
        res = kstat(path, "-p", "app:0:counters:hits")
        assert (res.returncode, res.stdout) == (0, "app:0:counters:hits\t41\n"), res.stderr
        ksp.ks_data[0].value += 1
        assert kstat(path, "-p", "app:0:counters:hits").stdout == "app:0:counters:hits\t42\n"
        info = hello(path)
        assert info["server"].startswith("kstatpy.serve (kstatpy ") and " pid " in info["server"]
        assert kstat(path, "-p", "kstatpy:0:requests:read").returncode == 0  # the daemon's own kstats
    assert served.stop() == 0 and not served.running
    assert not Path(path).exists()
    assert [k.ks_module for k in chain.kstats()].count("kstatpy") == 0  # unpublished at stop
    assert ksp.ks_data[0].value == 42  # the caller's kstats are the caller's


def test_serve_installed_providers_by_name(tmp_path: Path) -> None:
    path = str(tmp_path / "vmm.sock")
    with kstatpy.serve(path, providers=["vmm"], kmem_audit=True) as served:
        assert served.chain.kmem.audit
        assert rpc(path, 0x564D01, {"name": "web"})[1:] == [0, {"minor": 1}]
        assert "vmm:1:vm:vm_name\tweb" in kstat(path, "-p", "vmm:1:vm").stdout
    assert served.chain.kstat_lookup_name("vmm", 1, "vm") is None  # detached: the VM's kstats went first


def test_serve_refuses_a_live_socket_and_unknown_providers(tmp_path: Path) -> None:
    path = str(tmp_path / "x.sock")
    with kstatpy.serve(path):
        with pytest.raises(DaemonError, match="another kstatd is running"):
            kstatpy.serve(path)
    with pytest.raises(ValueError, match="no provider 'nope' installed"):
        kstatpy.serve(path, providers=["nope"])
    with pytest.raises(ValueError, match="kmem_audit and config apply"):
        kstatpy.serve(path, chain=Chain(), kmem_audit=True)


def test_a_panic_stops_the_listener_not_the_process(tmp_path: Path) -> None:
    path = str(tmp_path / "p.sock")
    served = kstatpy.serve(path, plugins=[("uaf", uaf)])
    kid = served.chain.kstat_lookup_name("test", 0, "uaf").ks_kid
    assert rpc(path, uaf.FREE)[1] == 0
    with pytest.raises((EOFError, OSError)):
        rpc(path, 0x4B02, {"kid": kid})
    assert served.stop() == 70 and served.panicked
    assert list(tmp_path.glob("kstatd.crash.*")) and list(tmp_path.glob("kstatd.vmcore.*.json"))


async def _frame_round_trip(path: str, cmd: int, arg: object) -> list:
    reader, writer = await asyncio.open_unix_connection(path)
    body = msgpack.packb([cmd, 1, arg], use_bin_type=True)
    writer.write(struct.pack(">I", len(body)) + body)
    await writer.drain()
    (length,) = struct.unpack(">I", await reader.readexactly(4))
    reply = msgpack.unpackb(await reader.readexactly(length), raw=False)
    writer.close()
    await writer.wait_closed()
    return reply


def test_serve_async_from_an_event_loop(tmp_path: Path) -> None:
    chain, ksp = counter_chain()
    path = str(tmp_path / "a.sock")

    async def service() -> tuple[list, int, str]:
        ticks = 0

        async def ticker() -> None:  # the loop keeps running while kstat reads
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        async with kstatpy.serve_async(path, chain=chain) as served:
            ksp.ks_data[0].value = 7
            reply = await _frame_round_trip(path, 0x4B02, {"kid": ksp.ks_kid})  # any socket client
            res = await asyncio.to_thread(kstat, path, "-p", "app:0:counters")
            assert served.running
        task.cancel()
        return reply, ticks, res.stdout

    reply, ticks, out = asyncio.run(service())
    assert reply[1] == 0 and reply[2]["kstat"]["data"] == [["hits", 4, 7]]
    assert "app:0:counters:hits\t7" in out
    assert ticks > 0 and not Path(path).exists()

    async def awaited() -> int:
        served = await kstatpy.serve_async(path, chain=chain)
        return await served.astop()

    assert asyncio.run(awaited()) == 0


def test_the_example_service_counts_its_requests(tmp_path: Path) -> None:
    use_examples()
    from kstatpy_example_http import HttpStats
    from kstatpy_example_http.service import build_server

    stats = HttpStats()
    path = str(tmp_path / "http.sock")
    with kstatpy.serve(path, plugins=[("http", stats)]):
        server = build_server(stats)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        base = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            codes = []
            for route in ("/", "/", "/fail", "/missing", "/slow?ms=20"):
                try:
                    with urllib.request.urlopen(base + route, timeout=10) as r:
                        codes.append(r.status)
                except urllib.error.HTTPError as exc:
                    codes.append(exc.code)
            assert codes == [200, 200, 500, 404, 200]
            out = dict(line.split("\t") for line in kstat(path, "-p", "http:0").stdout.splitlines())
        finally:
            server.shutdown()
            server.server_close()
    assert out["http:0:requests:requests"] == "5" and out["http:0:requests:errors"] == "1"
    assert (out["http:0:requests:status_2xx"], out["http:0:requests:status_4xx"]) == ("3", "1")
    assert out["http:0:server:writes"] == "5" and out["http:0:server:rcnt"] == "0"
    assert out["http:0:latency:num_events"] == "5" and int(out["http:0:latency:max_time"]) >= 20_000_000
    assert int(out["http:0:latency:min_time"]) <= int(out["http:0:latency:max_time"])
    assert stats._kstats is None  # detached at stop
