"""kstatd's configuration file: TOML, one key per command-line option (kstatd(8)).

Contract
    The file is one TOML table. Its keys are kstatd's long option names without the
    dashes (``max-connections = 512``, ``kmem-audit = true``, ``verbose = 1``); a
    repeatable option takes an array (``zone = ["web=/zones/web/kstat.sock"]``).
    Every option of the command has a key, by construction: the keys are read off the
    click command (:func:`option_keys`), so a new option is configurable the day it
    is added. :func:`load` returns click's ``default_map`` (parameter name -> value):
    an option given on the command line, or through its environment variable,
    overrides the file; the file overrides the built-in default.

Checks (all before kstatd touches anything)
    Each value is checked as its option checks it: the TOML type first (an integer
    option takes an integer, not a string), then the option's own conversion and
    callback (ranges, choices, existing directories, NAME=PATH, HOST:PORT, ...).
    A failure is :class:`ConfigError`, whose message is one line naming the file and
    the line: ``FILE:LINE: KEY: why``. tomllib reports the line of a syntax error;
    for a key's error the line is found by scanning the text for the key.

Trust
    The file is opened as given (a symbolic link is followed, as /etc's alternatives
    need), then checked on the open descriptor (fstat): a regular file, owned by root
    or kstatd's own user, writable by nobody else (no group or world write bit). A
    file others could write would let them choose kstatd's plugins.

Source: click's ``Context.default_map``; TOML 1.0 through :mod:`tomllib`.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
import tomllib
from typing import Any

import click

__all__ = ["DEFAULT_CONFIG", "ConfigError", "config_option", "load", "option_keys"]

#: Read when present and no ``--config`` is given.
DEFAULT_CONFIG = "/etc/kstatpy/kstatd.toml"

# Options that are actions, not settings: no key.
_NOT_KEYS = frozenset({"help", "version", "config"})
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


class ConfigError(Exception):
    """A config file kstatd cannot use; ``str()`` is one line naming the file (and line)."""


def option_keys(command: click.Command) -> dict[str, click.Parameter]:
    """Config key -> the command's option: every option with a long name but the actions."""
    keys: dict[str, click.Parameter] = {}
    for param in command.params:
        longs = [o[2:] for o in param.opts if o.startswith("--")]
        if isinstance(param, click.Option) and longs and param.expose_value and longs[0] not in _NOT_KEYS:
            keys[longs[0]] = param
    return keys


def _line_of(text: str, key: str) -> int | None:
    # The first line that defines KEY: "key =", "key.sub =", "[key]", "[[key]]", quoted or not.
    quoted = f"(?:{re.escape(key)}|\"{re.escape(key)}\"|'{re.escape(key)}')"
    pattern = re.compile(rf"^\s*\[{{0,2}}\s*{quoted}\s*[=.\]]")
    for number, line in enumerate(text.splitlines(), start=1):
        if pattern.match(line):
            return number
    return None


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date or time"


def _expected(param: click.Parameter) -> tuple[str, tuple[type, ...]]:
    # What one value of the option must be in TOML: (its noun, its Python types).
    t = param.type
    if isinstance(t, click.types.BoolParamType):
        return "boolean", (bool,)
    if isinstance(t, click.types.IntParamType):
        return "integer", (int,)
    if isinstance(t, click.types.FloatParamType):
        return "number", (int, float)
    return "string", (str,)


def _check(ctx: click.Context, key: str, param: click.Parameter, value: Any) -> None:
    # Raises ValueError (the reason) when the option would refuse the value.
    want, types = _expected(param)
    many = param.multiple
    items = value if many and isinstance(value, list) else [value]
    if many and not isinstance(value, list):
        raise ValueError(f"expected an array of {want}s, not {_toml_type(value)}")
    for item in items:
        if (isinstance(item, bool) and bool not in types) or not isinstance(item, types):
            article = "an" if want[0] in "aeiou" else "a"
            raise ValueError(f"expected {article} {want}, not {_toml_type(item)}")
    try:
        converted: Any = [param.type.convert(v, param, ctx) for v in items]
        converted = tuple(converted) if many else converted[0]
        if param.callback is not None:
            param.callback(ctx, param, converted)
    except click.BadParameter as exc:
        raise ValueError(exc.message) from None


def _read(path: str) -> str:
    # Open, then check what was opened (see "Trust").
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path}: not a regular file")
        if st.st_uid not in (0, os.geteuid()):
            raise ConfigError(f"{path}: owned by uid {st.st_uid}, neither root nor kstatd's user; not reading it")
        if st.st_mode & 0o022:
            raise ConfigError(
                f"{path}: writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); not reading it"
            )
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text") from None


def load(path: str, command: click.Command, ctx: click.Context) -> dict[str, Any]:
    """Read and check ``path``; the ``default_map`` for ``command`` (parameter name -> value).

    :raises ConfigError: one line, ``PATH: why`` or ``PATH:LINE: why``.
    """
    text = _read(path)
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        if message.endswith(" (at end of document)"):
            last = max(1, len(text.splitlines()))
            reason = message.removesuffix(" (at end of document)")
            raise ConfigError(f"{path}:{last}: invalid TOML: {reason} (at end of file)") from None
        m = _TOML_POSITION.search(message)
        if m is None:
            raise ConfigError(f"{path}: invalid TOML: {message}") from None
        reason = message[: m.start()]
        raise ConfigError(f"{path}:{m.group(1)}: invalid TOML: {reason} (column {m.group(2)})") from None
    keys = option_keys(command)
    default_map: dict[str, Any] = {}
    for key, value in table.items():
        line = _line_of(text, key)
        where = f"{path}:{line}" if line is not None else path
        param = keys.get(key)
        if param is None:
            close = difflib.get_close_matches(key, keys, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{where}: unknown key '{key}'{hint}")
        try:
            _check(ctx, key, param, value)
        except ValueError as exc:
            raise ConfigError(f"{where}: {key}: {exc}") from None
        assert param.name is not None
        default_map[param.name] = value
    return default_map


def _apply(ctx: click.Context, param: click.Parameter, path: str | None) -> str | None:
    # --config's callback (eager: before every other option reads ctx.default_map).
    if path is None:
        if not os.path.exists(DEFAULT_CONFIG):
            return None
        path = DEFAULT_CONFIG
    try:
        ctx.default_map = {**(ctx.default_map or {}), **load(path, ctx.command, ctx)}
    except ConfigError as exc:
        click.echo(f"{ctx.command.name}: {exc}", err=True)
        ctx.exit(2)
    return path


def config_option() -> Any:
    """The ``--config FILE`` option (also ``$KSTATPY_CONFIG``; default DEFAULT_CONFIG when present)."""
    return click.option(
        "--config", metavar="FILE", envvar="KSTATPY_CONFIG", show_envvar=True, is_eager=True,
        expose_value=False, callback=_apply,
        help=f"Read options from this TOML file; command-line options override it [default: {DEFAULT_CONFIG} when present].",
    )  # fmt: skip
