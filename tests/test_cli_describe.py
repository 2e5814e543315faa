"""``kstat --describe`` through the real command against a real kstatd."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.console_scripts import console_script
from tests.console_scripts import missing_script
from tests.kstatd_fixture import running_kstatd

KSTAT = console_script("kstat")
PLUGINS = ("tests.providers_fixture.ratetest", "kstatpy_providers.system")


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    assert KSTAT, missing_script("kstat")
    env = {k: v for k, v in os.environ.items() if k != "KSTAT_SOCKET"}
    return subprocess.run([KSTAT, *argv], env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def sock(tmp_path_factory: pytest.TempPathFactory):
    with running_kstatd(tmp_path_factory.mktemp("describe"), plugins=PLUGINS) as kd:
        yield kd.socket


def test_text(sock: str) -> None:
    r = run("--socket", sock, "--describe", "rate:0:steady")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "module: rate                            instance: 0     ",
        "name:   steady                          class:    misc",
        "\tcrtime                          gauge       int64   ns       creation time of the kstat (monotonic)",
        "\tevents                          counter     uint64  count    scripted events",
        "\tlabel                           text        string  -        a constant label",
        "\tlevel                           gauge       uint64  count    a constant level",
        "\tplain                           -           uint64  -        (no metadata declared)",
        "\tsnaptime                        gauge       int64   ns       time of the last data snapshot (monotonic)",
        "",
    ]


def test_statistic_pattern_class_and_host_sized_units(sock: str) -> None:
    r = run("--socket", sock, "--describe", "-c", "misc", "cpu:0:sys:cpu_ticks_idle")
    assert r.returncode == 0, r.stderr
    line = r.stdout.splitlines()[2]
    tick = 1 / os.sysconf("SC_CLK_TCK")
    assert line.split()[:3] == ["cpu_ticks_idle", "counter", "uint64"]
    assert line.endswith(f"idle time [1 tick = {tick:g} seconds]")


def test_json(sock: str) -> None:
    r = run("--socket", sock, "--describe", "-j", "rate:0:wrap", "unix:0:system_pages:physmem")
    assert r.returncode == 0, r.stderr
    wrap, pages = json.loads(r.stdout)
    assert (wrap["module"], wrap["name"], wrap["class"], wrap["type"]) == ("rate", "wrap", "misc", 1)
    events = next(s for s in wrap["stats"] if s["name"] == "events")
    assert events == {"name": "events", "kind": "counter", "unit": "count", "scale": None,
                      "description": "scripted events", "data_type": 2}  # fmt: skip
    assert pages["stats"] == [{"name": "physmem", "kind": "gauge", "unit": "pages", "scale": os.sysconf("SC_PAGE_SIZE"),
                               "description": "physical memory", "data_type": 4}]  # fmt: skip


def test_nothing_matched_exits_1(sock: str) -> None:
    r = run("--socket", sock, "--describe", "nosuch:::")
    assert (r.returncode, r.stdout) == (1, "")


@pytest.mark.parametrize("extra", [["-p"], ["-q"], ["--rate"], ["--ndjson"], ["5"]])
def test_usage_errors(extra: list[str]) -> None:
    r = run("--describe", *extra)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("kstat: --describe ") and r.stderr.count("\n") == 1


def test_a_kstatd_without_describe_is_a_fatal_error() -> None:
    # A kstatd that predates KSTATPY_IOC_DESCRIBE answers EINVAL (unknown kstat ioctl):
    # the same dispatch code with the ioctl taken out of its table.
    import io

    from kstatpy.chain import Chain
    from kstatpy.cli.kstat import run as kstat_run
    from kstatpy.client import KstatCtl
    from kstatpy.constants import KSTAT_TYPE_NAMED
    from kstatpy.ioctl import Conn
    from kstatpy.ioctl import Cred
    from kstatpy.ioctl import IoctlHandler
    from kstatpy.transport import ChainTransport

    chain = Chain()
    chain.kstat_install(chain.kstat_create("old", 0, "k", "misc", KSTAT_TYPE_NAMED, 0, 0))
    handler = IoctlHandler(chain)
    del handler._table[0x4B13]
    kc = KstatCtl(ChainTransport(handler, Conn(Cred())))
    kc.chain_update()
    out, err = io.BytesIO(), io.BytesIO()
    assert kstat_run(["--describe"], out, err, kc=kc) == 3
    assert err.getvalue().startswith(b"kstat: this kstatd cannot describe statistics")
    assert err.getvalue().count(b"\n") == 1 and out.getvalue() == b""
