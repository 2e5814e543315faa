"""Provider discovery: entry points, explicit modules, blocking, tracing, failure isolation."""

from __future__ import annotations

import logging
import sys
import types

import pytest

from kstatpy import KSTAT_DATA_UINT64
from kstatpy import KSTAT_TYPE_NAMED
from kstatpy import hookimpl
from kstatpy import kstat_named_init
from kstatpy.chain import Chain
from kstatpy.plugins import load_providers
from tests.chain_io import chain_read


class Counter:
    """A provider object with one kstat."""

    def __init__(self, module: str) -> None:
        self.module = module
        self.detached = False

    @hookimpl
    def kstatpy_attach(self, chain: Chain) -> None:
        ksp = chain.kstat_create(self.module, 0, "counters", "misc", KSTAT_TYPE_NAMED, 1, 0)
        kstat_named_init(ksp.ks_data[0], "hits", KSTAT_DATA_UINT64)
        chain.kstat_install(ksp)

    @hookimpl
    def kstatpy_detach(self, chain: Chain) -> None:
        chain.kstat_delete_byname(self.module, 0, "counters")
        self.detached = True


class Broken:
    @hookimpl
    def kstatpy_attach(self, chain: Chain) -> None:
        raise RuntimeError("cannot attach")


def names(chain: Chain) -> set[str]:
    return {f"{k.ks_module}:{k.ks_name}" for k in chain.kstats()}


def test_attach_and_detach_through_the_hooks(chain: Chain) -> None:
    one, two = Counter("one"), Counter("two")
    providers = load_providers(autoload=False, plugins=[("one", one), ("two", two)])
    assert providers.attach(chain) == []
    assert {"one:counters", "two:counters"} <= names(chain)
    providers.detach(chain)
    assert one.detached and two.detached
    assert names(chain) == {"unix:kstat_headers", "unix:kstat_types"}


def test_a_provider_raising_in_attach_is_reported_by_name_and_others_attach(chain: Chain) -> None:
    providers = load_providers(autoload=False, plugins=[("good1", Counter("g1")), ("broken", Broken()), ("good2", Counter("g2"))])
    failures = providers.attach(chain)
    assert [(f.name, f.stage) for f in failures] == [("broken", "attach")]
    assert "provider 'broken' failed to attach" in str(failures[0])
    assert {"g1:counters", "g2:counters"} <= names(chain)
    assert providers.attached == ["good1", "good2"]


def test_a_module_that_fails_to_import_is_reported_and_others_load(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    good = types.ModuleType("kstatpy_test_good_provider")
    good.kstatpy_attach = Counter("mod").kstatpy_attach  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "kstatpy_test_good_provider", good)
    providers = load_providers(autoload=False, modules=["kstatpy_test_no_such_module", "kstatpy_test_good_provider"])
    assert [(f.name, f.stage) for f in providers.failures] == [("kstatpy_test_no_such_module", "load")]
    providers.attach(chain)
    assert "mod:counters" in names(chain)


def test_entry_point_of_a_real_installed_distribution(monkeypatch: pytest.MonkeyPatch, chain: Chain) -> None:
    """tests/thirdparty_provider is installed as its own distribution (README, .ci/run)."""
    monkeypatch.delenv("KSTATPY_DISABLE_PLUGIN_AUTOLOAD")
    monkeypatch.setenv("KSTATPY_DISABLED_PROVIDERS", "system,vmm")
    providers = load_providers()
    assert "example" in providers.names()
    assert "system" not in providers.names() and "vmm" not in providers.names()
    providers.attach(chain)
    ksp = chain.kstat_lookup_name("example", 0, "counters")
    assert chain_read(chain, ksp.ks_kid)["data"] == [["hits", 4, 1]]
    assert chain_read(chain, ksp.ks_kid)["data"] == [["hits", 4, 2]]
    providers.detach(chain)
    assert chain.kstat_lookup_name("example", 0, "counters") is None


def test_autoload_off_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KSTATPY_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert load_providers().names() == []
    monkeypatch.setenv("KSTATPY_DISABLE_PLUGIN_AUTOLOAD", "0")
    monkeypatch.setenv("KSTATPY_DISABLED_PROVIDERS", "system,vmm")
    assert "example" in load_providers().names()


def test_disabled_providers_block_explicit_plugins_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KSTATPY_DISABLED_PROVIDERS", " one , three")
    providers = load_providers(autoload=False, plugins=[("one", Counter("one")), ("two", Counter("two"))])
    assert providers.names() == ["two"]


def test_trace_plugins_logs_hook_calls(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, chain: Chain) -> None:
    monkeypatch.setenv("KSTATPY_TRACE_PLUGINS", "1")
    providers = load_providers(autoload=False, plugins=[("one", Counter("one"))])
    with caplog.at_level(logging.INFO, logger="kstatpy.plugins"):
        providers.attach(chain)
    assert any("kstatpy_attach" in r.getMessage() for r in caplog.records)


def test_ioctl_is_first_result_and_unclaimed_is_none(chain: Chain) -> None:
    class Claims:
        @hookimpl
        def kstatpy_ioctl(self, chain, conn, cmd, arg):
            return (0, {"cmd": cmd}) if cmd == 0x1234 else None

    providers = load_providers(autoload=False, plugins=[("claims", Claims())])
    assert providers.ioctl(chain, None, 0x1234, None) == (0, {"cmd": 0x1234})
    assert providers.ioctl(chain, None, 0x9999, None) is None
