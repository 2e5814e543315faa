"""kstatd's option values: their types and checks (split out of :mod:`kstatpy.cli.kstatd`).

Each check raises :class:`click.BadParameter` with a one-line reason, so that a bad
value is a usage error (exit 2) on the command line and, through
:mod:`kstatpy.config`, a ``FILE:LINE`` error in the configuration file. The names
keep their leading underscore: they are kstatd's command line, not an API.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Callable
from typing import Any

import click

from kstatpy.safepath import trusted_owners

__all__ = ["MAX_BYTES", "MAX_CONNECTIONS", "MAX_TIMEOUT", "Seconds"]

#: The longest timeout option accepted (seconds): a year, within threading.TIMEOUT_MAX.
MAX_TIMEOUT = 365 * 86400.0
#: The largest --max-request/--max-reply (bytes): 1 GiB, what a client accepts (transport.MAX_REPLY).
MAX_BYTES = 1 << 30
#: The most connections any connection option may allow (each costs a thread and a descriptor).
MAX_CONNECTIONS = 65536


class Seconds(click.FloatRange):
    """A finite number of seconds in ``[min, MAX_TIMEOUT]``: nan and inf are usage errors (exit 2)."""

    name = "seconds"

    def __init__(self, min: float, max: float = MAX_TIMEOUT) -> None:
        super().__init__(min, max)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        rv = super().convert(value, param, ctx)
        if rv != rv or rv in (float("inf"), float("-inf")):  # nan compares unequal to itself
            self.fail(f"{value!r} is not a finite number of seconds.", param, ctx)
        return rv


def _id_of(spec: str, lookup: Callable[[str], int], what: str) -> int:
    # --allow-write takes a number or a name (pwd/grp database).
    if spec.isdigit():
        return int(spec)
    try:
        return lookup(spec)
    except KeyError:
        raise click.BadParameter(f"no such {what} {spec!r}", param_hint="--allow-write") from None


def _uid(spec: str) -> int:
    return _id_of(spec, lambda name: pwd.getpwnam(name).pw_uid, "user")


def _gid(spec: str) -> int:
    return _id_of(spec, lambda name: grp.getgrnam(name).gr_gid, "group")


def _zone(spec: str) -> tuple[str, str]:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path or name == "global":
        raise click.BadParameter(f"{spec!r}: expected NAME=PATH (NAME not 'global')", param_hint="--zone")
    try:
        name.encode("utf-8")  # the zone name goes on the wire (HELLO)
    except UnicodeEncodeError:
        raise click.BadParameter(f"{spec!r}: the zone NAME is not valid UTF-8", param_hint="--zone") from None
    return name, path


def _each(check: Callable[[str], object]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    # A callback checking every value at parse time, so that a bad value from the
    # config file is reported with its line (kstatpy.config); main() converts again.
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        for v in value if isinstance(value, tuple) else () if value is None else (value,):
            check(v)
        return value

    return callback


def _check_allow(spec: str) -> None:
    if spec.startswith("@"):
        _gid(spec[1:])
    else:
        _uid(spec)


def _check_socket(path: str) -> None:
    if path == "":
        raise click.BadParameter("the socket path must not be empty", param_hint="--socket")


def _check_metrics(text: str) -> None:
    _metrics_options(text, ())


def _check_select(text: str) -> None:
    from kstatpy.exporter import parse_select

    try:
        parse_select(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--metrics-select") from None


def _crash_dir(ctx: click.Context, param: click.Parameter, path: str | None) -> str | None:
    # Checked at start: a crash report must not create a directory tree nobody asked for.
    if path is not None and not os.path.isdir(path):
        why = "does not exist" if not os.path.lexists(path) else "is not a directory"
        raise click.BadParameter(f"{path}: {why}")
    if path is not None and not os.access(path, os.W_OK | os.X_OK):
        raise click.BadParameter(f"{path}: not writable")
    if path is not None:
        # The socket directory's rule (kstatpy.safepath): another user must not be able to
        # plant or swap the files a panic writes here.
        st = os.stat(path)
        if st.st_uid not in trusted_owners():
            raise click.BadParameter(f"{path}: owned by uid {st.st_uid}, not root or kstatd's uid {os.geteuid()}")
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            raise click.BadParameter(
                f"{path}: writable by others without the sticky bit (mode {st.st_mode & 0o7777:04o})"
            )
    return path


def _metrics_options(metrics: str | None, select: tuple[str, ...]) -> tuple[tuple[str, int] | None, list[Any]]:
    # --metrics HOST:PORT and --metrics-select, checked before anything starts.
    if metrics is None:
        if select:
            raise click.UsageError("--metrics-select needs --metrics")
        return None, []
    from kstatpy.exporter import parse_listen
    from kstatpy.exporter import parse_select

    try:
        listen = parse_listen(metrics)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--metrics") from None
    try:
        return listen, [parse_select(s) for s in select]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--metrics-select") from None


def _bytes(ctx: click.Context, param: click.Parameter, spec: str | None) -> int | None:
    # --kmem-history: a byte count with an optional K, M or G suffix (powers of 1024).
    if spec is None:
        return None
    text = spec.strip().upper().removesuffix("B")
    scale = 1
    if text[-1:] in ("K", "M", "G"):
        scale = 1024 ** ("KMG".index(text[-1]) + 1)
        text = text[:-1]
    if not text.isdigit():
        raise click.BadParameter(f"{spec!r}: expected a byte count such as 4194304, 512K or 16M")
    return int(text) * scale
