"""Plain providers (hooks declared in KSTATPY_HOOKS): called without pluggy, as pluggy would."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import kstatpy_providers.system as system_provider
import pytest

from kstatpy import hookimpl
from kstatpy.chain import Chain
from kstatpy.plain_providers import HOOK_ARGS
from kstatpy.plain_providers import PlainProviders
from kstatpy.plain_providers import is_plain
from kstatpy.plugins import Providers
from kstatpy.plugins import get_plugin_manager
from kstatpy.plugins import load_providers


def test_hook_args_are_the_hookspecs() -> None:
    pm = get_plugin_manager()
    specs = {name: getattr(pm.hook, name).spec.argnames for name in dir(pm.hook) if name.startswith("kstatpy_")}
    assert specs == HOOK_ARGS


def test_system_provider_is_plain_and_pluggy_registers_its_declared_hooks() -> None:
    assert is_plain(system_provider)
    pm = get_plugin_manager()
    pm.register(system_provider, name="system")
    for hook in system_provider.KSTATPY_HOOKS:
        impls = getattr(pm.hook, hook).get_hookimpls()
        assert [i.function for i in impls] == [getattr(system_provider, hook)]


def recording(name: str, log: list[Any], fail_attach: bool = False, answer: Any = None) -> Any:
    """A plain provider module whose every hook records (name, hook, args)."""

    def kstatpy_attach(chain: Chain) -> None:
        log.append((name, "attach"))
        if fail_attach:
            raise RuntimeError(f"{name} refuses")

    def kstatpy_detach(chain: Chain) -> None:
        log.append((name, "detach"))

    def kstatpy_refresh(chain: Chain) -> None:
        log.append((name, "refresh"))

    def kstatpy_ioctl(cmd: int, arg: Any) -> Any:  # a subset of the spec's arguments
        log.append((name, "ioctl", cmd, arg))
        return None if answer is None else (0, {"from": name})

    def kstatpy_conn_close(conn: Any) -> None:
        log.append((name, "close", conn))

    fns = {f.__name__: f for f in (kstatpy_attach, kstatpy_detach, kstatpy_refresh, kstatpy_ioctl, kstatpy_conn_close)}
    mod = types.ModuleType(name)
    mod.KSTATPY_HOOKS = tuple(fns)  # type: ignore[attr-defined]
    for key, fn in fns.items():
        setattr(mod, key, fn)
    return mod


def drive(providers: Providers, log: list[Any]) -> list[Any]:
    chain = Chain()
    failures = providers.attach(chain)
    attached = providers.attached[:]
    providers.refresh(chain)
    first = providers.ioctl(chain, "conn", 0x7001, {"x": 1})
    providers.conn_close(chain, "conn")
    providers.detach(chain)
    return [log[:], [(f.name, f.stage, repr(f.error)) for f in failures], attached, first, providers.names()]


@pytest.mark.parametrize("answers", [(None, None, None), (1, None, 1), (None, 1, None)])
def test_plain_providers_call_hooks_exactly_as_pluggy(answers: tuple[Any, ...]) -> None:
    outcomes = []
    for plain in (True, False):
        log: list[Any] = []
        mods = [
            ("one", recording("one", log, answer=answers[0])),
            ("two", recording("two", log, fail_attach=True, answer=answers[1])),
            ("three", recording("three", log, answer=answers[2])),
        ]
        if plain:
            providers: Providers = PlainProviders(mods)
        else:
            providers = load_providers(autoload=False, plugins=mods)
            assert type(providers) is Providers
        outcomes.append(drive(providers, log))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][2] == ["one", "three"]  # "two" failed to attach, the others did


def _plain_with(**attrs: Any) -> Any:
    mod = types.ModuleType("p")
    for key, value in attrs.items():
        setattr(mod, key, value)
    return mod


def test_what_is_not_plain() -> None:
    def attach(chain: Chain) -> None: ...

    def attach_extra(chain: Chain, other: int) -> None: ...

    def attach_kwonly(chain: Chain, *, other: int) -> None: ...

    def attach_default(chain: Chain, other: int = 1) -> None: ...

    @hookimpl
    def kstatpy_refresh(chain: Chain) -> None: ...

    assert is_plain(_plain_with(KSTATPY_HOOKS=("kstatpy_attach",), kstatpy_attach=attach))
    assert is_plain(_plain_with(KSTATPY_HOOKS=("kstatpy_attach",), kstatpy_attach=attach_default))
    assert not is_plain(_plain_with(kstatpy_attach=attach))  # nothing declared
    assert not is_plain(_plain_with(KSTATPY_HOOKS=("kstatpy_attach",)))  # declared, missing
    assert not is_plain(_plain_with(KSTATPY_HOOKS=("kstatpy_nosuch",), kstatpy_nosuch=attach))
    assert not is_plain(_plain_with(KSTATPY_HOOKS=("kstatpy_attach",), kstatpy_attach=attach_extra))
    assert not is_plain(_plain_with(KSTATPY_HOOKS=("kstatpy_attach",), kstatpy_attach=attach_kwonly))
    assert not is_plain(_plain_with(KSTATPY_HOOKS="kstatpy_attach", kstatpy_attach=attach))
    # A marked implementation next to declared ones: pluggy's options apply, so pluggy calls.
    assert not is_plain(_plain_with(KSTATPY_HOOKS=("kstatpy_attach",), kstatpy_attach=attach,
                                    kstatpy_refresh=kstatpy_refresh))  # fmt: skip


def test_a_declared_parameter_outside_the_spec_fails_registration_with_pluggy() -> None:
    def kstatpy_attach(chain: Chain, other: int) -> None: ...

    mod = _plain_with(KSTATPY_HOOKS=("kstatpy_attach",), kstatpy_attach=kstatpy_attach)
    providers = load_providers(autoload=False, plugins=[("bad", mod)])
    assert [(f.name, f.stage) for f in providers.failures] == [("bad", "register")]


def test_registering_with_pluggy_leaves_the_provider_plain() -> None:
    # kstatd-style registration must not mark the functions (a later plain load in the
    # same process would then take pluggy's path).
    get_plugin_manager().register(system_provider, name="system")
    assert is_plain(system_provider)
    assert not hasattr(system_provider.kstatpy_attach, "kstatpy_impl")


PLAIN_SRC = '''
KSTATPY_HOOKS = ("kstatpy_attach",)
def kstatpy_attach(chain):
    pass
'''
MARKED_SRC = '''
from kstatpy import hookimpl
@hookimpl
def kstatpy_attach(chain):
    pass
'''


def _entry_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, eps: dict[str, str]) -> None:
    """Install ``eps`` (name -> module source or a module name) as entry points on sys.path."""
    dist = tmp_path / "kstatpy_plaintest-0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kstatpy-plaintest\nVersion: 0\n")
    lines = ["[kstatpy.providers]"]
    for name, src in eps.items():
        if "\n" in src:
            (tmp_path / f"plaintest_{name}.py").write_text(src)
            lines.append(f"{name} = plaintest_{name}")
        else:
            lines.append(f"{name} = {src}")
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("KSTATPY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("KSTATPY_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("KSTATPY_TRACE_PLUGINS", raising=False)
    from importlib.metadata import entry_points

    others = {ep.name for ep in entry_points(group="kstatpy.providers")} - set(eps)
    monkeypatch.setenv("KSTATPY_DISABLED_PROVIDERS", ",".join(sorted(others)))


def _summary(providers: Providers) -> tuple[Any, ...]:
    return (providers.names(), [(f.name, f.stage, repr(f.error)) for f in providers.failures])


def test_plain_load_of_plain_entry_points_skips_pluggy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _entry_points(tmp_path, monkeypatch, {"one": PLAIN_SRC, "two": PLAIN_SRC})
    plain = load_providers(plain=True)
    assert type(plain) is PlainProviders
    assert _summary(plain) == _summary(load_providers()) == (["one", "two"], [])


@pytest.mark.parametrize(
    "eps",
    [
        {"one": PLAIN_SRC, "marked": MARKED_SRC, "two": PLAIN_SRC},  # one marked provider
        {"one": PLAIN_SRC, "broken": "kstatpy_plaintest_no_such_module", "two": PLAIN_SRC},  # a load failure
        {"marked": MARKED_SRC, "broken": "kstatpy_plaintest_no_such_module"},
    ],
)
def test_plain_load_falls_back_to_pluggy_with_the_same_outcome(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, eps: dict[str, str]
) -> None:
    _entry_points(tmp_path, monkeypatch, eps)
    caplog.set_level("DEBUG", logger="kstatpy.plugins")
    plain = load_providers(plain=True)
    plain_log = [r.getMessage() for r in caplog.records]
    caplog.clear()
    full = load_providers()
    assert type(plain) is Providers
    assert _summary(plain) == _summary(full)
    assert plain_log == [r.getMessage() for r in caplog.records]
