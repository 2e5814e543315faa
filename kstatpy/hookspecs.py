"""The provider hooks: markers and every hookspec, nothing else.

A provider is a module or object with ``@hookimpl`` functions, found through the
entry-point group ``kstatpy.providers``. Every hook is called with keyword
arguments; an implementation may take a subset of them. The README's "Provider
hooks" section documents each one (``tests/test_docs.py`` keeps the two in step).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any

import pluggy

if TYPE_CHECKING:
    from kstatpy.chain import Chain

__all__ = ["PROJECT", "hookimpl", "hookspec"]

PROJECT = "kstatpy"
#: Marks a provider's hook implementation.
hookimpl = pluggy.HookimplMarker(PROJECT)
#: Marks a hook specification (kstatpy itself only).
hookspec = pluggy.HookspecMarker(PROJECT)


# --- provider life cycle ----------------------------------------------------


@hookspec
def kstatpy_attach(chain: Chain) -> None:
    """Provider start: create and install the provider's kstats.

    Called once per chain, when the host (kstatd or the embedded ``kstat``) loads
    the providers, in registration order. All results collected (none expected).
    A provider that raises is reported by name and skipped; the others attach.

    :param chain: the chain to ``kstat_create`` / ``kstat_install`` into.
    illumos analogue: attach(9E) calling kstat_create(9F) and kstat_install(9F).
    """


@hookspec
def kstatpy_detach(chain: Chain) -> None:
    """Provider stop: delete every kstat the provider created.

    Called once when the host shuts down, before the chain goes. Each
    ``kstat_delete`` waits for the reader that holds its kstat, so after this hook
    returns no reader can reach the provider's state and it may be freed.

    :param chain: the chain the provider attached to.
    illumos analogue: detach(9E) calling kstat_delete(9F).
    """


@hookspec
def kstatpy_refresh(chain: Chain) -> None:
    """Reconcile kstats with the world before a reader looks at the chain.

    Called when a reader asks for the chain id (``kstat_chain_update``), never by a
    poller, so kstats of CPUs, links or devices that came or went appear and
    disappear when someone looks. Must be cheap when nothing changed.

    :param chain: the chain the provider attached to.
    illumos analogue: a driver's hotplug/DR callbacks creating and deleting kstats.
    """


# --- provider ioctls and connections (kstatd) --------------------------------


@hookspec(firstresult=True)
def kstatpy_ioctl(chain: Chain, conn: Any, cmd: int, arg: Any) -> Any:
    """Answer an ioctl outside the kstat range 0x4B00-0x4BFF (PROTOCOL.md §7).

    Stops at first non-None result. Return ``(errno, result_map)`` to claim the
    command; return None to pass. An exception becomes EIO for that request.

    :param chain: the daemon's chain.
    :param conn: the caller's connection: ``conn.cred`` (uid, gid, pid, zone,
        privileged) and ``conn.state``, a dict private to each provider name.
    :param cmd: the ioctl number.
    :param arg: the request's argument (a map or None), unchecked.
    illumos analogue: a driver's ioctl(9E) entry point.
    """


@hookspec
def kstatpy_conn_close(chain: Chain, conn: Any) -> None:
    """A connection closed, for whatever reason: close what the provider opened on it.

    Called once per connection, after its last request was answered. All results
    collected.

    :param chain: the daemon's chain.
    :param conn: the connection that went (as in :func:`kstatpy_ioctl`).
    illumos analogue: close(9E), the last-close path of a driver.
    """
