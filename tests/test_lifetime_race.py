"""The lifetime race harness (kstatpy.testing): it passes the examples and catches the wrong providers.

The vmm provider's runs are in ``test_vmm_race.py``.

The ``lifetime_race`` fixture comes from the installed pytest plugin (entry point
``pytest11``), seeded by ``--kstatpy-seed``.
"""

from __future__ import annotations

import errno
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from kstatpy.testing import LifetimeRaceError
from kstatpy.testing import lifetime_race as race_fn
from tests.examples_path import use_examples
from tests.providers_fixture import devices
from tests.test_vmm_race import ok as _ok


def _dev_race(mistake: str | None, audit: bool = True, seed: int = 14281) -> Any:
    prov = devices.DevProvider(mistake)
    return race_fn(prov, devices.operations(prov), name="dev", cleanup=devices.cleanup(prov), steps=150, seed=seed, audit=audit)


def test_a_right_hand_rolled_provider_passes() -> None:
    res = _dev_race(None)
    assert res.ops["destroy"] > 20 and res.reads[0] > 100


def test_the_harness_catches_free_before_delete() -> None:
    with pytest.raises(LifetimeRaceError) as info:
        _dev_race("free-before-delete")
    text = str(info.value)
    assert "operation 'destroy'" in text and "kmem_free while 1 kstat(s) point into it" in text
    assert "dev      " in text and "ks_private" in text  # the kstat that still points, and the field


@pytest.mark.parametrize("audit", [True, False])
def test_the_harness_catches_a_last_close_that_forgets_kstat_fini(audit: bool) -> None:
    with pytest.raises(LifetimeRaceError) as info:
        _dev_race("no-fini-on-last-close", audit=audit)
    text = str(info.value)
    if audit:
        assert "operation 'close'" in text and "kernel memory allocator: buffer freed while referenced" in text
    else:
        assert "BAD TRAP: type=e (#pf Page fault)" in text and "devices:dev_kstat_update+0x" in text


def test_the_harness_reports_leaked_kstats() -> None:
    with pytest.raises(LifetimeRaceError) as info:
        _dev_race("leak")
    text = str(info.value)
    assert "kstat(s) leaked" in text and "dev:1:stats" in text and "devices:create+0x" in text


def test_a_seed_replays_the_same_operations() -> None:
    prov_a, prov_b = devices.DevProvider(), devices.DevProvider()
    a = race_fn(prov_a, devices.operations(prov_a), cleanup=devices.cleanup(prov_a), workers=1, readers=1, seed=7, steps=80)
    b = race_fn(prov_b, devices.operations(prov_b), cleanup=devices.cleanup(prov_b), workers=1, readers=1, seed=7, steps=80)
    c = race_fn(prov_b, devices.operations(prov_b), cleanup=devices.cleanup(prov_b), workers=1, readers=1, seed=8, steps=80)
    assert a.ops == b.ops and a.op_errors == b.op_errors
    assert (a.ops, a.op_errors) != (c.ops, c.op_errors)


def test_the_template_provider_passes(lifetime_race) -> None:
    use_examples()
    import kstatpy_provider_template.provider as template

    names = ("w1", "w2")

    def create(ctx: Any) -> None:
        _ok(*ctx.ioctl(template.WIDGET_CREATE, {"name": ctx.rng.choice(names)}))

    def destroy(ctx: Any) -> None:
        _ok(*ctx.ioctl(template.WIDGET_DESTROY, {"name": ctx.rng.choice(names)}))

    def open_(ctx: Any) -> None:
        ctx.state.setdefault("fds", []).append(_ok(*ctx.ioctl(template.WIDGET_OPEN, {"name": ctx.rng.choice(names)}))["fd"])

    def poke(ctx: Any) -> None:
        if ctx.state.get("fds"):
            _ok(*ctx.ioctl(template.WIDGET_POKE, {"fd": ctx.rng.choice(ctx.state["fds"])}))

    def close(ctx: Any) -> None:
        if ctx.state.get("fds"):
            _ok(*ctx.ioctl(template.WIDGET_CLOSE, {"fd": ctx.state["fds"].pop()}))

    def cleanup(ctx: Any) -> None:
        for name in names:
            _ok(*ctx.ioctl(template.WIDGET_DESTROY, {"name": name}), allowed=(errno.ENOENT,))

    ops = {"create": create, "destroy": destroy, "open": open_, "poke": poke, "close": close, "drop": lambda c: c.reconnect()}
    res = lifetime_race(template, ops, name="template", cleanup=cleanup, steps=150)
    assert res.ops["create"] > 10 and "template:0:widgets" in res.kstats_seen
    assert any(k.endswith(":widget") for k in res.kstats_seen)


def test_the_example_service_passes(lifetime_race) -> None:
    # Real HTTP requests update the kstats while readers read them and the stats are re-attached.
    use_examples()
    from kstatpy_example_http import HttpStats
    from kstatpy_example_http.service import build_server

    stats = HttpStats()
    server = build_server(stats)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    restart = threading.Lock()

    def get(path: str) -> Callable[[Any], None]:
        def op(ctx: Any) -> None:
            try:
                urllib.request.urlopen(base + path, timeout=10).close()
            except urllib.error.HTTPError:
                pass

        return op

    def reattach(ctx: Any) -> None:  # the service restarting its statistics mid-traffic
        with restart:
            stats.kstatpy_detach(ctx.chain)
            stats.kstatpy_attach(ctx.chain)

    ops = {"ok": get("/"), "fail": get("/fail"), "missing": get("/x"), "reattach": reattach}
    try:
        res = lifetime_race(stats, ops, name="http", steps=60)
    finally:
        server.shutdown()
        server.server_close()
    assert res.ops["reattach"] > 3 and res.reads[0] > 50
    assert {"http:0:requests", "http:0:server", "http:0:latency"} <= res.kstats_seen
    # The lock-order checker (on with the audit) saw the service's ks_lock taken under each hold, and no cycle.
    lock = "mutex kstatpy_example_http.stats:HttpStats.__init__:"  # unnamed: the class is where it was built
    for name in ("requests", "latency"):
        assert any(e.startswith(f"hold http:*:{name} -> {lock}") for e in res.lock_edges), res.lock_edges
