"""Statistic metadata: declarations, KSTATPY_IOC_DESCRIBE in-process and over a real kstatd."""

from __future__ import annotations

import errno
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import kstatpy_providers.vmm.ioctl as ioc
import pytest

from kstatpy.chain import Chain
from kstatpy.client import kstat_open
from kstatpy.client import kstat_open_chain
from kstatpy.constants import FLAG
from kstatpy.constants import KSTAT_DATA_UINT32
from kstatpy.constants import KSTAT_DATA_UINT64
from kstatpy.constants import KSTAT_TYPE_NAMED
from kstatpy.constants import KstatDataType
from kstatpy.constants import KstatIoctl
from kstatpy.constants import KstatType
from kstatpy.daemon_stats import DaemonStats
from kstatpy.describe import describe_kstat
from kstatpy.describe import kstat_describe
from kstatpy.errors import KstatError
from kstatpy.ioctl import Conn
from kstatpy.ioctl import Cred
from kstatpy.metadata import KINDS
from kstatpy.metadata import StatMeta
from kstatpy.metadata import base_unit
from kstatpy.metadata import counter
from kstatpy.metadata import data_width
from kstatpy.metadata import gauge
from kstatpy.metadata import kstat_set_meta
from kstatpy.plugins import load_providers
from kstatpy.records import kstat_named_init
from tests.kstatd_fixture import rpc
from tests.kstatd_fixture import running_kstatd

BUILTIN = ("kstatpy_providers.system", "kstatpy_providers.vmm.provider")
DESCRIBE = int(KstatIoctl.DESCRIBE)


def test_every_builtin_provider_is_covered() -> None:
    # A new built-in provider must be added to BUILTIN (and so to the test below).
    eps = {ep.value for ep in entry_points(group="kstatpy.providers") if ep.value.startswith("kstatpy_providers.")}
    assert eps == set(BUILTIN)


def test_every_statistic_of_every_builtin_provider_declares_metadata() -> None:
    providers = load_providers(modules=BUILTIN)
    assert not providers.failures
    chain = Chain()
    assert not providers.attach(chain)
    stats = DaemonStats(5.0)
    stats.install(chain)
    kc = kstat_open_chain(chain, providers=providers)
    try:
        # A VM, so the vmm kstats exist too.
        minor = kc.ioctl(ioc.VMM_CREATE_VM, {"name": "meta"})["minor"]
        seen: dict[str, int] = {}
        missing = []
        for ksp in chain.kstats():
            if ksp.ks_flags & FLAG.INVALID or ksp.ks_type == KstatType.RAW:
                continue
            desc = describe_kstat(chain, ksp.ks_kid, 0)
            seen[ksp.ks_module] = seen.get(ksp.ks_module, 0) + 1
            for st in desc["stats"]:
                where = f"{ksp.ks_module}:{ksp.ks_instance}:{ksp.ks_name}:{st['name']}"
                if st["kind"] not in KINDS or not st["description"] or st["unit"] is None:
                    missing.append(where)
        assert not missing, f"statistics without metadata: {missing}"
        for module in ("unix", "cpu", "cpu_info", "link", "kstatpy", "vmm"):
            assert seen.get(module), f"no {module} kstat on the live chain: {sorted(seen)}"
        assert seen["vmm"] == 33, minor
        kc.ioctl(ioc.VMM_DESTROY_VM, {"name": "meta"})
    finally:
        kc.close()
        stats.uninstall(chain)
        providers.detach(chain)


def test_declared_values_are_what_describe_reports() -> None:
    chain = Chain()
    ksp = chain.kstat_create("t", 0, "n", "misc", KSTAT_TYPE_NAMED, 3, 0)
    kstat_named_init(ksp.ks_data[0], "busy", KSTAT_DATA_UINT64)
    kstat_named_init(ksp.ks_data[1], "wraps", KSTAT_DATA_UINT32)
    kstat_named_init(ksp.ks_data[2], "undeclared", KSTAT_DATA_UINT64)
    kstat_set_meta(ksp, {"busy": counter("ns", "busy time"), "wraps": counter("count", "events")})
    kstat_set_meta(ksp, {"busy": gauge("pages", "resident", 4096)})  # merges, later wins
    chain.kstat_install(ksp)
    desc = describe_kstat(chain, ksp.ks_kid, 0)
    stats = {s["name"]: s for s in desc["stats"]}
    assert stats["busy"] == {"name": "busy", "kind": "gauge", "unit": "pages", "scale": 4096,
                             "description": "resident", "data_type": KSTAT_DATA_UINT64}  # fmt: skip
    assert stats["wraps"]["data_type"] == KSTAT_DATA_UINT32
    assert stats["undeclared"]["kind"] is None
    assert [s["name"] for s in desc["stats"]] == ["busy", "wraps", "undeclared", "crtime", "snaptime"]
    assert (desc["module"], desc["name"], desc["crtime"]) == ("t", "n", ksp.ks_crtime)


def test_framework_declares_io_fields_with_their_c_types() -> None:
    chain = Chain()
    ksp = chain.kstat_create("t", 0, "io", "disk", KstatType.IO, 1, 0)
    chain.kstat_install(ksp)
    stats = {s["name"]: s for s in describe_kstat(chain, ksp.ks_kid, 0)["stats"]}
    assert stats["reads"]["data_type"] == KstatDataType.UINT32  # uint_t reads in kstat_io_t
    assert stats["nread"]["unit"] == "bytes" and stats["wcnt"]["kind"] == "gauge"
    assert data_width(stats["reads"]["data_type"]) == 32 and data_width(stats["nread"]["data_type"]) == 64


def test_bad_declarations_are_refused() -> None:
    with pytest.raises(TypeError):
        counter("ns", None)  # type: ignore[arg-type]
    chain = Chain()
    ksp = chain.kstat_create("t", 0, "n", "misc", KSTAT_TYPE_NAMED, 0, 0)
    with pytest.raises(TypeError):
        kstat_set_meta(ksp, {"x": ("counter", "ns", "not a StatMeta")})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        (counter("ns", "x"), ("seconds", 1e-9)),
        (counter("ticks", "x", 0.01), ("seconds", 0.01)),
        (gauge("pages", "x", 4096), ("bytes", 4096.0)),
        (gauge("pages", "x"), ("pages", 1.0)),
        (gauge("MHz", "x"), ("hertz", 1e6)),
        (gauge("1/256", "x"), ("", 1 / 256)),
        (counter("count", "x"), ("", 1.0)),
    ],
)
def test_base_units(meta: StatMeta, expected: tuple[str, float]) -> None:
    assert base_unit(meta) == expected


def test_describe_in_process_follows_zones_and_errors() -> None:
    chain = Chain()
    zoned = chain.kstat_create_zone("t", 0, "zoned", "misc", KSTAT_TYPE_NAMED, 0, 0, 3)
    chain.kstat_install(zoned)
    invalid = chain.kstat_create("t", 0, "invalid", "misc", KSTAT_TYPE_NAMED, 0, 0)
    kc = kstat_open_chain(chain)
    try:
        got = kstat_describe(kc, [zoned.ks_kid, invalid.ks_kid, 999, 1])
        assert [code for code, _ in got] == [errno.ENXIO, errno.EAGAIN, errno.ENXIO, 0]
        assert {s["name"] for s in got[3][1]["stats"]} >= {"raw", "i/o"}  # unix:0:kstat_types
    finally:
        kc.close()
    handler_conn = Conn(Cred(zone="z3", zoneid=3, privileged=False))
    from kstatpy.ioctl import IoctlHandler

    code, result = IoctlHandler(chain).dispatch(handler_conn, DESCRIBE, {"kids": [zoned.ks_kid]})
    assert code == 0 and result["results"][0][0] == 0
    with pytest.raises(KstatError) as exc:
        kc2 = kstat_open_chain(chain)
        try:
            kc2.ioctl(DESCRIBE, {"kids": "nope"})
        finally:
            kc2.close()
    assert exc.value.errno == errno.EINVAL


def _by_name(desc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in desc["stats"]}


def test_describe_round_trip_over_the_socket(tmp_path: Path) -> None:
    with running_kstatd(tmp_path, plugins=BUILTIN) as kd:
        kc = kstat_open(kd.socket)
        try:
            kc.ioctl(ioc.VMM_CREATE_VM, {"name": "wire"})
            kc.chain_update()
            wanted = {
                (k.ks_module, k.ks_name): k for k in kc.kc_chain if (k.ks_module, k.ks_instance) != ("vmm", -1)
            }
            cpu = wanted[("cpu", "sys")]
            vcpu = wanted[("vmm", "vcpu0")]
            reqs = wanted[("kstatpy", "requests")]
            hdr = kc.kc_chain[0]
            (c1, cpu_d), (c2, vcpu_d), (c3, req_d), (c4, hdr_d) = kstat_describe(
                kc, [cpu.ks_kid, vcpu.ks_kid, reqs.ks_kid, hdr.ks_kid]
            )
            assert (c1, c2, c3, c4) == (0, 0, 0, 0)
            ticks = _by_name(cpu_d)["cpu_ticks_user"]
            assert ticks["kind"] == "counter" and ticks["unit"] == "ticks" and ticks["scale"] > 0
            assert ticks["data_type"] == KSTAT_DATA_UINT64
            run = _by_name(vcpu_d)["time_run"]
            assert (run["kind"], run["unit"]) == ("counter", "ns")
            assert _by_name(vcpu_d)["vcpu"]["kind"] == "identifier"
            assert _by_name(req_d)["describe"]["kind"] == "counter"
            assert [s["name"] for s in hdr_d["stats"]] == ["crtime", "snaptime"]  # RAW: pseudo only
            assert cpu_d["crtime"] == cpu.ks_crtime and cpu_d["kid"] == cpu.ks_kid
            # The request was counted as a describe, not as "unknown".
            kc.read(reqs)
            assert reqs.data_lookup("describe").value >= 1
            assert reqs.data_lookup("unknown").value == 0
        finally:
            kc.close()
        # A client that never asks is unaffected; a bad argument is EINVAL, the connection lives.
        _seq, code, result = rpc(kd.socket, DESCRIBE, {"kids": [1, "x"]})
        assert code == 0 and [r[0] for r in result["results"]] == [0, errno.EINVAL]
        _seq, code, result = rpc(kd.socket, DESCRIBE, None)
        assert code == errno.EINVAL, result
        _seq, code, result = rpc(kd.socket, DESCRIBE, {"kids": list(range(65537))})
        assert code == errno.E2BIG, result


def test_describe_ioctl_number_is_the_reserved_one() -> None:
    from kstatpy import constants

    assert constants.KSTATPY_IOC_DESCRIBE == 0x4B13 == DESCRIBE
