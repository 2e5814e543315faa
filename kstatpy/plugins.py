"""Provider discovery and calling: the plugin manager factory and a typed façade.

Providers are pluggy plugins found through the entry-point group
``kstatpy.providers`` (the entry-point name is the provider's name), plus modules
named explicitly (``kstatd --plugin MODULE``). Environment:

``KSTATPY_DISABLE_PLUGIN_AUTOLOAD``
    any non-empty value but ``0``: load no entry points (explicit modules still load).
``KSTATPY_DISABLED_PROVIDERS``
    comma-separated provider names never to load (``pm.set_blocked``).
``KSTATPY_TRACE_PLUGINS``
    any non-empty value but ``0``: log every hook call and result (logger ``kstatpy.plugins``).

A provider that fails to import, to register or in ``kstatpy_attach`` is reported
by name in :attr:`Providers.failures` and logged; the others still load.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Any

import pluggy

from kstatpy import hookspecs
from kstatpy.kmem import BadTrap

if TYPE_CHECKING:
    from collections.abc import Iterable

    from kstatpy.chain import Chain

__all__ = ["ENTRY_POINT_GROUP", "ProviderFailure", "Providers", "get_plugin_manager", "load_providers"]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "kstatpy.providers"


def _env_true(name: str) -> bool:
    value = os.environ.get(name, "")
    return value not in ("", "0")


@dataclass
class ProviderFailure:
    """A provider that could not be loaded or attached, and why."""

    name: str
    stage: str  # "load", "register" or "attach"
    error: BaseException

    def __str__(self) -> str:
        return f"provider {self.name!r} failed to {self.stage}: {self.error!r}"


def get_plugin_manager() -> pluggy.PluginManager:
    """A fresh plugin manager with the kstatpy hookspecs, tracing and blocking set up.

    Nothing is loaded; see :func:`load_providers`.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in os.environ.get("KSTATPY_DISABLED_PROVIDERS", "").split(","):
        if name.strip():
            pm.set_blocked(name.strip())
    if _env_true("KSTATPY_TRACE_PLUGINS"):
        pm.trace.root.setwriter(lambda msg: log.info("%s", msg.rstrip()))
        pm.enable_tracing()
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
    try:
        pm.register(plugin, name=name)
    except Exception as exc:
        failures.append(ProviderFailure(name, "register", exc))
        log.error("provider %r failed to register: %r", name, exc)


def load_providers(
    *,
    autoload: bool | None = None,
    modules: Iterable[str] = (),
    plugins: Iterable[tuple[str, object]] = (),
) -> Providers:
    """Build a plugin manager and load providers into it.

    :param autoload: load the ``kstatpy.providers`` entry points; None means "unless
        ``KSTATPY_DISABLE_PLUGIN_AUTOLOAD`` is set".
    :param modules: import names of extra provider modules (``kstatd --plugin``).
    :param plugins: ``(name, object)`` pairs registered as they are (tests).
    """
    pm = get_plugin_manager()
    failures: list[ProviderFailure] = []
    for name, obj in plugins:
        _register(pm, name, lambda obj=obj: obj, failures)
    for modname in modules:
        _register(pm, modname, lambda m=modname: importlib.import_module(m), failures)
    if autoload is None:
        autoload = not _env_true("KSTATPY_DISABLE_PLUGIN_AUTOLOAD")
    if autoload:
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            _register(pm, ep.name, ep.load, failures)
    return Providers(pm, failures)


class Providers:
    """The host's view of its providers: one method per hook.

    :attr failures: every provider that failed to load, register or attach.
    """

    def __init__(self, pm: pluggy.PluginManager, failures: list[ProviderFailure] | None = None) -> None:
        self.pm = pm
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
