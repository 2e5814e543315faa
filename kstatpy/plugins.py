"""Provider discovery and calling: the plugin manager factory and a typed façade.

Providers are pluggy plugins found through the entry-point group
``kstatpy.providers`` (the entry-point name is the provider's name), plus modules
named explicitly (``kstatd --plugin MODULE``). Environment:

``KSTATPY_DISABLE_PLUGIN_AUTOLOAD``
    any non-empty value but ``0``: load no entry points (explicit modules still load).
``KSTATPY_DISABLED_PROVIDERS``
    comma-separated provider names never to load (``pm.set_blocked``).
``KSTATPY_TRACE_PLUGINS``
    any non-empty value but ``0``: log every hook call and its result or exception,
    one line each, naming the providers called (logger ``kstatpy.plugins.trace``, level
    INFO). The commands send that logger to stderr (:func:`trace_to_stderr`), ``kstatd``
    without ``-v`` and the embedded ``kstat`` alike.

A provider that fails to import, to register or in ``kstatpy_attach`` is reported
by name in :attr:`Providers.failures` and logged; the others still load. A module
both named explicitly and found as an entry point is loaded once, under the
entry point's (the provider's) name; the same module object offered twice under
different names is registered once, under the first.

Plain providers (:mod:`kstatpy.plain_providers`): a provider module may name its
hook functions in ``KSTATPY_HOOKS`` instead of marking them ``@hookimpl``; pluggy
registers them as if marked. ``load_providers(plain=True)`` (the embedded ``kstat``)
calls such providers without pluggy when every provider loaded is plain and tracing
is off. This module imports pluggy and logging only when it needs them.
"""

from __future__ import annotations

import os
import sys
from types import FunctionType

from kstatpy.kmem import BadTrap
from kstatpy.lazylog import get_logger

TYPE_CHECKING = False  # not typing's: kept off the embedded kstat's start-up path
if TYPE_CHECKING:
    from collections.abc import Callable
    from collections.abc import Iterable
    from collections.abc import Mapping
    from collections.abc import Sequence
    from typing import Any

    import pluggy
    from pluggy import HookImpl

    from kstatpy.chain import Chain

__all__ = [
    "ENTRY_POINT_GROUP",
    "TRACE_LOGGER",
    "WANTS_MODULE",
    "ProviderFailure",
    "Providers",
    "get_plugin_manager",
    "load_providers",
    "trace_enabled",
    "trace_to_stderr",
]

log = get_logger(__name__)
TRACE_LOGGER = "kstatpy.plugins.trace"
trace_log = get_logger(TRACE_LOGGER)

ENTRY_POINT_GROUP = "kstatpy.providers"

#: ``chain.config`` key of a host that reads only some kstat modules (the embedded
#: ``kstat``): a predicate ``(module: str) -> bool`` passing every module it may read.
#: A provider may skip creating the kstats of modules it fails (docs/WRITING-PROVIDERS.md, "Provider
#: hooks"); kstatd never sets it.
WANTS_MODULE = "wants_module"


def _env_true(name: str) -> bool:
    value = os.environ.get(name, "")
    return value not in ("", "0")


def trace_enabled() -> bool:
    """True when ``$KSTATPY_TRACE_PLUGINS`` asks for hook tracing."""
    return _env_true("KSTATPY_TRACE_PLUGINS")


def trace_to_stderr(prog: str) -> None:
    """For a command: when tracing is on, write the trace lines to stderr as ``PROG: trace: ...``.

    Idempotent; the lines bypass the root logger, so they appear whatever its level.
    """
    if not trace_enabled() or trace_log.handlers:
        return
    import logging

    logger = logging.getLogger(TRACE_LOGGER)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{prog}: trace: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _short(kwargs: Mapping[str, Any]) -> str:
    # The hook's arguments worth a trace line: not the chain and connection objects.
    parts = []
    for key, value in kwargs.items():
        if key in ("chain", "conn"):
            continue
        text = f"0x{value:x}" if key == "cmd" and isinstance(value, int) else repr(value)
        parts.append(f"{key}={text[:80]}")
    return ", ".join(parts)


def _names(hook_impls: Sequence[HookImpl]) -> str:
    return ", ".join(repr(impl.plugin_name) for impl in hook_impls)


def _trace_before(hook_name: str, hook_impls: Sequence[HookImpl], kwargs: Mapping[str, Any]) -> None:
    if hook_impls:  # a provider without this hook: nothing was called
        trace_log.info("%s(%s) -> %s", hook_name, _short(kwargs), _names(hook_impls))


def _trace_after(
    outcome: pluggy.Result[Any], hook_name: str, hook_impls: Sequence[HookImpl], kwargs: Mapping[str, Any]
) -> None:
    if not hook_impls:
        return
    if outcome.exception is not None:
        trace_log.info("%s <- %s raised %r", hook_name, _names(hook_impls), outcome.exception)
    else:
        trace_log.info("%s <- %s: %s", hook_name, _names(hook_impls), repr(outcome.get_result())[:200])


class ProviderFailure:
    """A provider that could not be loaded or attached, and why.

    :attr name: the provider's name. :attr stage: ``"load"``, ``"register"`` or
    ``"attach"``. :attr error: the exception.
    """

    __slots__ = ("error", "name", "stage")

    def __init__(self, name: str, stage: str, error: BaseException) -> None:
        self.name = name
        self.stage = stage
        self.error = error

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProviderFailure):
            return NotImplemented
        return (self.name, self.stage, self.error) == (other.name, other.stage, other.error)

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value (as the dataclass was)

    def __repr__(self) -> str:
        return f"ProviderFailure(name={self.name!r}, stage={self.stage!r}, error={self.error!r})"

    def __str__(self) -> str:
        return f"provider {self.name!r} failed to {self.stage}: {self.error!r}"


def get_plugin_manager() -> pluggy.PluginManager:
    """A fresh plugin manager with the kstatpy hookspecs, tracing and blocking set up.

    Nothing is loaded; see :func:`load_providers`.
    """
    import pluggy

    from kstatpy import hookspecs

    def unmarked() -> None: ...

    # The options a bare @hookimpl gives, as this pluggy version spells them (the
    # provider's own functions are never marked: PlainProviders must still see them plain).
    plain_opts = dict(getattr(hookspecs.hookimpl(unmarked), hookspecs.PROJECT + "_impl"))

    class PluginManager(pluggy.PluginManager):
        # Plain providers' functions named in KSTATPY_HOOKS are implementations, as if
        # marked @hookimpl (kstatpy.plain_providers); pluggy documents this override.
        def parse_hookimpl_opts(self, plugin: object, name: str) -> Any:
            opts = super().parse_hookimpl_opts(plugin, name)
            if opts is None:
                declared = getattr(plugin, "KSTATPY_HOOKS", None)
                if isinstance(declared, (tuple, list)) and name in declared:
                    if isinstance(getattr(plugin, name, None), FunctionType):
                        return dict(plain_opts)
            return opts

    pm = PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in os.environ.get("KSTATPY_DISABLED_PROVIDERS", "").split(","):
        if name.strip():
            pm.set_blocked(name.strip())
    if trace_enabled():
        pm.add_hookcall_monitoring(_trace_before, _trace_after)
    return pm


def _register(pm: pluggy.PluginManager, name: str, load: Any, failures: list[ProviderFailure]) -> None:
    if pm.is_blocked(name) or pm.has_plugin(name):
        return
    try:
        plugin = load()
    except Exception as exc:
        failures.append(ProviderFailure(name, "load", exc))
        log.error("provider %r failed to load: %r", name, exc)
        return
    if pm.is_registered(plugin):  # the same module under another name: once is enough
        log.debug("provider %r is %r, already registered", name, pm.get_name(plugin))
        return
    try:
        pm.register(plugin, name=name)
    except Exception as exc:
        failures.append(ProviderFailure(name, "register", exc))
        log.error("provider %r failed to register: %r", name, exc)


def _import(module: str) -> object:
    import importlib  # importlib/__init__ imports warnings: only for explicit modules

    return importlib.import_module(module)


def load_providers(
    *,
    autoload: bool | None = None,
    modules: Iterable[str] = (),
    plugins: Iterable[tuple[str, object]] = (),
    wants_module: Callable[[str], bool] | None = None,
    plain: bool = False,
) -> Providers:
    """Build a plugin manager and load providers into it.

    :param autoload: load the ``kstatpy.providers`` entry points (found through the
        cache of :mod:`kstatpy.epcache`); None means "unless
        ``KSTATPY_DISABLE_PLUGIN_AUTOLOAD`` is set".
    :param modules: import names of extra provider modules (``kstatd --plugin``).
    :param plugins: ``(name, object)`` pairs registered as they are (tests).
    :param wants_module: a test of kstat module names (the embedded ``kstat`` passes
        its selectors'); an entry-point provider that declared ``KSTATPY_MODULES`` on
        an earlier run and none of whose modules passes is not imported at all.
    :param plain: when every provider loaded is plain (:mod:`kstatpy.plain_providers`)
        and tracing is off, answer a :class:`~kstatpy.plain_providers.PlainProviders`
        and never import pluggy; otherwise (and by default) pluggy's façade. The
        providers loaded, their order, failures and log lines are the same either way.
    """
    failures: list[ProviderFailure] = []
    if autoload is None:
        autoload = not _env_true("KSTATPY_DISABLE_PLUGIN_AUTOLOAD")
    eps: list[tuple[str, str]] = []
    cache = None
    if autoload:
        from kstatpy.epcache import EntryPointCache
        from kstatpy.epcache import load_value

        cache = EntryPointCache(ENTRY_POINT_GROUP)
        eps = cache.entry_points
    if plain and not trace_enabled():
        from kstatpy.plain_providers import PlainProviders
        from kstatpy.plain_providers import is_plain
        from kstatpy.plain_providers import load_entry_points

        loaded = None if modules or plugins else load_entry_points(eps, cache, wants_module)
        if loaded is not None and all(not isinstance(got, BaseException) for _, got in loaded):
            if all(is_plain(got) for _, got in loaded):
                once: list[tuple[str, object]] = []
                for name, got in loaded:
                    if not any(got is p for _, p in once):  # as pluggy: the same module once
                        once.append((name, got))
                return PlainProviders(once, failures)
        if loaded is not None:  # not all plain: the same outcomes through pluggy, in order
            pm = get_plugin_manager()
            for name, got in loaded:
                _register(pm, name, lambda got=got: _replay(got), failures)
            return Providers(pm, failures)
    pm = get_plugin_manager()
    # A module named explicitly that an entry point also names takes the provider's name.
    ep_name = {value: name for name, value in eps}
    for name, obj in plugins:
        _register(pm, name, lambda obj=obj: obj, failures)
    for modname in modules:
        _register(pm, ep_name.get(modname, modname), lambda m=modname: _import(m), failures)
    if cache is not None:
        for name, value in eps:
            declared = cache.declared_modules(name) if wants_module is not None else None
            if declared is not None and wants_module is not None and not any(map(wants_module, declared)):
                continue

            def load(name: str = name, value: str = value) -> Any:
                plugin = load_value(value)
                cache.remember(name, plugin)
                return plugin

            _register(pm, name, load, failures)
        cache.save()
    return Providers(pm, failures)


def _replay(got: object) -> object:
    if isinstance(got, BaseException):
        raise got
    return got


class Providers:
    """The host's view of its providers: one method per hook.

    :attr failures: every provider that failed to load, register or attach.
    """

    def __init__(self, pm: pluggy.PluginManager | None, failures: list[ProviderFailure] | None = None) -> None:
        # None only in PlainProviders, which overrides every method that uses it.
        self.pm: pluggy.PluginManager = pm  # type: ignore[assignment]
        self.failures = failures if failures is not None else []
        self.attached: list[str] = []
        self.detaching: str | None = None  # the provider detach is running now (for reports)
        self._callers: dict[tuple[str, str], Any] = {}  # (hook, provider) -> caller; built once

    def names(self) -> list[str]:
        """Registered provider names, in registration order."""
        return [name for name, plugin in self.pm.list_name_plugin() if plugin is not None]

    def _one(self, hook: str, name: str) -> Any:
        # A caller of one provider's implementation; cached, since refresh runs on
        # every chain-id query. Providers are registered before any hook is called.
        caller = self._callers.get((hook, name))
        if caller is None:
            others = [p for n, p in self.pm.list_name_plugin() if n != name and p is not None]
            caller = self._callers[hook, name] = self.pm.subset_hook_caller(hook, remove_plugins=others)
        return caller

    def attach(self, chain: Chain) -> list[ProviderFailure]:
        """kstatpy_attach for each provider on its own, so one failure spares the rest."""
        new = []
        for name in self.names():
            try:
                self._one("kstatpy_attach", name)(chain=chain)
            except Exception as exc:
                failure = ProviderFailure(name, "attach", exc)
                new.append(failure)
                log.error("provider %r failed to attach: %r", name, exc)
            else:
                self.attached.append(name)
        self.failures += new
        return new

    def detach(self, chain: Chain) -> None:
        """kstatpy_detach for every attached provider, in reverse attach order."""
        for name in reversed(self.attached):
            self.detaching = name
            try:
                self._one("kstatpy_detach", name)(chain=chain)
            except Exception as exc:
                log.error("provider %r failed to detach: %r", name, exc)
        self.detaching = None
        self.attached.clear()

    def refresh(self, chain: Chain) -> None:
        """kstatpy_refresh for every attached provider; a failure is logged, not raised."""
        for name in self.attached:
            try:
                self._one("kstatpy_refresh", name)(chain=chain)
            except Exception as exc:
                log.error("provider %r failed to refresh: %r", name, exc)

    def ioctl(self, chain: Chain, conn: Any, cmd: int, arg: Any) -> Any:
        """kstatpy_ioctl (firstresult): ``(errno, result)`` or None when unclaimed."""
        return self.pm.hook.kstatpy_ioctl(chain=chain, conn=conn, cmd=cmd, arg=arg)

    def conn_close(self, chain: Chain, conn: Any) -> None:
        """kstatpy_conn_close to every provider; failures are logged.

        :raises BadTrap: a provider's close touched or freed memory it must not (a panic).
        """
        for name in self.names():
            try:
                self._one("kstatpy_conn_close", name)(chain=chain, conn=conn)
            except BadTrap:
                raise
            except Exception as exc:
                log.error("provider %r failed in conn_close: %r", name, exc)
