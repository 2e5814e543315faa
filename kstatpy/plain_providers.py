"""Providers that declare their hooks by name, called without importing pluggy.

A provider module may list its hook implementations in ``KSTATPY_HOOKS`` (names of
module-level functions, e.g. ``("kstatpy_attach", "kstatpy_detach")``) instead of
marking them ``@hookimpl``: plain implementations, without ``tryfirst``, ``trylast``
or wrappers. kstatd registers them with pluggy as if marked
(:meth:`kstatpy.plugins.Providers` through ``parse_hookimpl_opts``); the embedded
``kstat``, when every provider it loads is plain and hook tracing is off, calls them
through :class:`PlainProviders` and never imports pluggy (``inspect``, ``typing``:
a third of its start-up).

Same behaviour as pluggy's (the contract :class:`kstatpy.plugins.Providers` keeps):
each hook is called with the keyword arguments of its hookspec that the function
names as parameters without defaults; ``kstatpy_ioctl`` asks the providers newest
registration first and stops at the first non-None answer (pluggy's order for
unmarked-option implementations); the other hooks are called one provider at a time
by the façade. A provider whose declaration is not plain (an unknown hook name, a
parameter its hookspec lacks, a ``@hookimpl``-marked attribute) makes the loader use
pluggy for every provider: :func:`is_plain` decides.
"""

from __future__ import annotations

from kstatpy.plugins import Providers

TYPE_CHECKING = False  # not typing's: kept off the embedded kstat's start-up path
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from kstatpy.chain import Chain
    from kstatpy.plugins import ProviderFailure

__all__ = ["HOOK_ARGS", "PlainProviders", "is_plain", "load_entry_points", "plain_hooks"]

#: The provider hooks of kstatpy.hookspecs and their arguments, in hookspec order
#: (tests/test_plain_providers.py checks them against the hookspecs pluggy parses).
HOOK_ARGS: dict[str, tuple[str, ...]] = {
    "kstatpy_attach": ("chain",),
    "kstatpy_detach": ("chain",),
    "kstatpy_refresh": ("chain",),
    "kstatpy_ioctl": ("chain", "conn", "cmd", "arg"),
    "kstatpy_conn_close": ("chain", "conn"),
    "kstatpy_instance_create": ("chain", "inst", "arg"),
    "kstatpy_instance_kstat_fini": ("chain", "inst"),
    "kstatpy_instance_destroy": ("chain", "inst"),
}
#: pluggy's marker attribute (``HookimplMarker("kstatpy")`` sets it on what it marks).
MARKER = "kstatpy_impl"


def _required_args(fn: Any) -> tuple[str, ...] | None:
    # Positional parameters without defaults (what pluggy passes), None: not a plain function.
    code = getattr(fn, "__code__", None)
    if code is None or not callable(fn) or code.co_kwonlyargcount:
        return None
    names = code.co_varnames[: code.co_argcount]
    return names[: len(names) - len(fn.__defaults__ or ())]


def plain_hooks(plugin: object) -> dict[str, tuple[Any, tuple[str, ...]]] | None:
    """``{hook: (function, argument names)}`` of a plain provider; None when it is not plain."""
    declared = getattr(plugin, "KSTATPY_HOOKS", None)
    if not isinstance(declared, (tuple, list)):
        return None
    hooks: dict[str, tuple[Any, tuple[str, ...]]] = {}
    for hook in declared:
        spec = HOOK_ARGS.get(hook) if isinstance(hook, str) else None
        fn = getattr(plugin, hook, None) if spec is not None else None
        args = _required_args(fn)
        if spec is None or args is None or not set(args) <= set(spec) or hasattr(fn, MARKER):
            return None
        hooks[hook] = (fn, args)
    for attr in dir(plugin):
        if attr not in hooks and hasattr(getattr(plugin, attr, None), MARKER):
            return None  # marked implementations: pluggy's to call
    return hooks


def is_plain(plugin: object) -> bool:
    """Whether :class:`PlainProviders` can call ``plugin`` exactly as pluggy would."""
    return plain_hooks(plugin) is not None


class _NoImpl:
    __slots__ = ()

    def __call__(self, **kwargs: Any) -> list[Any]:
        return []


class _Call:
    # One provider's implementation of one hook, called as pluggy's subset caller is.
    __slots__ = ("args", "fn")

    def __init__(self, fn: Any, args: tuple[str, ...]) -> None:
        self.fn = fn
        self.args = args

    def __call__(self, **kwargs: Any) -> list[Any]:
        result = self.fn(*[kwargs[a] for a in self.args])
        return [] if result is None else [result]


class PlainProviders(Providers):
    """:class:`kstatpy.plugins.Providers` over plain providers (no plugin manager).

    :param plugins: ``(name, plugin)`` in registration order, each :func:`is_plain`.
    """

    def __init__(self, plugins: list[tuple[str, object]], failures: list[ProviderFailure] | None = None) -> None:
        super().__init__(None, failures)
        self._plugins = plugins
        self._hooks = {name: plain_hooks(plugin) or {} for name, plugin in plugins}

    def names(self) -> list[str]:
        return [name for name, _ in self._plugins]

    def _one(self, hook: str, name: str) -> Any:
        impl = self._hooks[name].get(hook)
        return _NoImpl() if impl is None else _Call(*impl)

    def ioctl(self, chain: Chain, conn: Any, cmd: int, arg: Any) -> Any:
        """kstatpy_ioctl (firstresult), newest provider first: ``(errno, result)`` or None."""
        kwargs = {"chain": chain, "conn": conn, "cmd": cmd, "arg": arg}
        for name, _ in reversed(self._plugins):
            impl = self._hooks[name].get("kstatpy_ioctl")
            if impl is not None:
                result = impl[0](*[kwargs[a] for a in impl[1]])
                if result is not None:
                    return result
        return None


def load_entry_points(
    eps: list[tuple[str, str]], cache: Any, wants_module: Callable[[str], bool] | None
) -> list[tuple[str, object]]:
    """The entry points ``load_providers`` would load, loaded in its order without pluggy.

    :returns: ``[(name, plugin or the exception its import raised)]``; blocked names
        and providers whose declared modules ``wants_module`` fails are left out.
    """
    import os

    blocked = {n.strip() for n in os.environ.get("KSTATPY_DISABLED_PROVIDERS", "").split(",") if n.strip()}
    out: list[tuple[str, object]] = []
    seen: set[str] = set()
    if cache is None:
        return out
    from kstatpy.epcache import load_value

    for name, value in eps:
        declared = cache.declared_modules(name) if wants_module is not None else None
        if declared is not None and wants_module is not None and not any(map(wants_module, declared)):
            continue
        if name in blocked or name in seen:
            continue
        try:
            plugin = load_value(value)
        except Exception as exc:
            out.append((name, exc))  # a name that failed to load may load again later
            continue
        cache.remember(name, plugin)
        seen.add(name)
        out.append((name, plugin))  # the same module twice: pluggy's replay keeps the first
    cache.save()
    return out
