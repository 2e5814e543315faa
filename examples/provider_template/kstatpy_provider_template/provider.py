"""The template provider's hooks: attach, detach, its ioctls, connection close.

Ioctls (docs/PROTOCOL.md §7; numbers outside 0x4B00-0x4BFF, ours start with 'W' 'D')
    ``WIDGET_CREATE``  0x574401 ``{"name": str}`` -> ``{"minor": int}`` (EEXIST, EINVAL)
    ``WIDGET_DESTROY`` 0x574402 ``{"name": str}`` -> ``{}`` (ENOENT); deferred while open
    ``WIDGET_OPEN``    0x574403 ``{"name": str}`` -> ``{"fd": int}`` (ENOENT)
    ``WIDGET_CLOSE``   0x574404 ``{"fd": int}`` -> ``{}`` (EBADF); the last close of a
                       destroyed widget tears it down
    ``WIDGET_POKE``    0x574405 ``{"fd": int}`` -> ``{"pokes": int}`` (EBADF, ENXIO)

Per-chain state lives in ``chain.provider_data["template"]`` (never a module global):
one process may host several chains.
"""

from __future__ import annotations

import errno
from typing import Any

from kstatpy import KSTAT_DATA_UINT64
from kstatpy import KSTAT_TYPE_NAMED
from kstatpy import hookimpl
from kstatpy import kstat_named_init
from kstatpy.errors import KstatError
from kstatpy.handles import DeviceHandles
from kstatpy.instance import LIVE
from kstatpy.instance import DeviceDriver
from kstatpy_provider_template.widget import MODULE
from kstatpy_provider_template.widget import TemplateState
from kstatpy_provider_template.widget import WidgetOps
from kstatpy_provider_template.widget import summary_kstat_update

WIDGET_CREATE = 0x574401
WIDGET_DESTROY = 0x574402
WIDGET_OPEN = 0x574403
WIDGET_CLOSE = 0x574404
WIDGET_POKE = 0x574405


@hookimpl
def kstatpy_attach(chain: Any) -> None:
    """Build the state and the widget driver, then publish ``template:0:widgets``."""
    state = chain.kmem.zalloc(TemplateState)
    state.driver = DeviceDriver(chain, MODULE, WidgetOps(state))
    ksp = chain.kstat_create(MODULE, 0, "widgets", "misc", KSTAT_TYPE_NAMED, 2)
    kstat_named_init(ksp.ks_data[0], "live", KSTAT_DATA_UINT64)
    kstat_named_init(ksp.ks_data[1], "created", KSTAT_DATA_UINT64)
    ksp.ks_private = state
    ksp.ks_update = summary_kstat_update
    state.summary = ksp
    chain.provider_data[MODULE] = state
    chain.kstat_install(ksp)


@hookimpl
def kstatpy_detach(chain: Any) -> None:
    """Tear every widget down (kstats first), delete the summary, then free the state."""
    state = chain.provider_data.pop(MODULE, None)
    if state is None:
        return
    state.driver.detach()
    chain.kstat_delete(state.summary)  # waits for its reader; only then free what it points at
    chain.kmem.free(state)


def _handles(conn: Any, state: TemplateState) -> DeviceHandles:
    mine = conn.state[MODULE]
    if "handles" not in mine:
        mine["handles"] = DeviceHandles(state.driver)
    return mine["handles"]


def _str_arg(arg: Any, key: str) -> str:
    value = arg.get(key) if isinstance(arg, dict) else None
    if not isinstance(value, str) or not value:
        raise KstatError(errno.EINVAL, f"argument {key!r} must be a non-empty string")
    return value


def _fd_arg(arg: Any) -> int:
    fd = arg.get("fd") if isinstance(arg, dict) else None
    if type(fd) is not int:
        raise KstatError(errno.EBADF, "argument 'fd' must be an open handle")
    return fd


def _poke(handles: DeviceHandles, arg: Any) -> dict[str, Any]:
    with handles.use(_fd_arg(arg)) as inst:
        if inst.destroying or inst.state != LIVE:
            raise KstatError(errno.ENXIO, f"widget {inst.name!r} is being destroyed")
        inst.private.pokes += 1
        return {"pokes": inst.private.pokes}


@hookimpl
def kstatpy_ioctl(chain: Any, conn: Any, cmd: int, arg: Any) -> tuple[int, dict[str, Any]] | None:
    """The WIDGET_* ioctls; None for any other command."""
    if cmd not in (WIDGET_CREATE, WIDGET_DESTROY, WIDGET_OPEN, WIDGET_CLOSE, WIDGET_POKE):
        return None
    state = chain.provider_data.get(MODULE)
    if state is None:
        return errno.ENXIO, {"error": "the template provider is not attached"}
    driver = state.driver
    try:
        if cmd == WIDGET_CREATE:
            return 0, {"minor": driver.create(_str_arg(arg, "name"), conn.cred.zoneid).minor}
        if cmd == WIDGET_DESTROY:
            driver.destroy(_str_arg(arg, "name"), conn.cred.zoneid)
            return 0, {}
        handles = _handles(conn, state)
        if cmd == WIDGET_OPEN:
            return 0, {"fd": handles.open(_str_arg(arg, "name"), conn.cred.zoneid)}
        if cmd == WIDGET_CLOSE:
            handles.close(_fd_arg(arg))
            return 0, {}
        return 0, _poke(handles, arg)
    except KstatError as exc:
        return exc.errno, {"error": exc.message}


@hookimpl
def kstatpy_conn_close(chain: Any, conn: Any) -> None:
    """Close the widgets this connection opened (a last close may tear one down)."""
    state = chain.provider_data.get(MODULE)
    handles = conn.state.get(MODULE, {}).get("handles") if state is not None else None
    if handles is not None:
        handles.close_all()
