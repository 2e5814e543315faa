"""A caller of the ioctl layer: its credentials (:class:`Cred`) and its open "file" (:class:`Conn`).

``kstatpy.ioctl`` re-exports both (``from kstatpy.ioctl import Cred, Conn`` keeps
working). Written out rather than dataclasses: ``dataclasses`` imports ``inspect``, a
tenth of the embedded ``kstat``'s start-up.
"""

from __future__ import annotations

import os
from collections import defaultdict

from kstatpy.constants import GLOBAL_ZONEID

TYPE_CHECKING = False  # not typing's: kept off the embedded kstat's start-up path
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Conn", "Cred"]


class Cred:
    """The caller's credentials (illumos ``cred_t`` plus its zone), fixed at connect.

    Immutable, compared and hashed by value. (Written out rather than a frozen
    dataclass: ``dataclasses`` imports ``inspect``, a tenth of the embedded kstat's
    start-up.)
    """

    __slots__ = ("gid", "pid", "privileged", "uid", "zone", "zoneid")
    _FIELDS = ("uid", "gid", "pid", "zone", "zoneid", "privileged")
    uid: int
    gid: int
    pid: int
    zone: str
    zoneid: int
    privileged: bool

    def __init__(self, uid: int = 0, gid: int = 0, pid: int = 0, zone: str = "global",
                 zoneid: int = GLOBAL_ZONEID, privileged: bool = True) -> None:  # fmt: skip
        for name, value in zip(self._FIELDS, (uid, gid, pid, zone, zoneid, privileged), strict=True):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: Cred is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}: Cred is immutable")

    def _key(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._FIELDS)

    def __eq__(self, other: object) -> bool:
        return self._key() == other._key() if type(other) is Cred else NotImplemented

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return "Cred(" + ", ".join(f"{name}={getattr(self, name)!r}" for name in self._FIELDS) + ")"

    @classmethod
    def of_this_process(cls, zone: str = "global", zoneid: int = GLOBAL_ZONEID) -> Cred:
        """The in-process caller: this process's ids; privileged only in the global zone."""
        return cls(os.getuid(), os.getgid(), os.getpid(), zone, zoneid, zoneid == GLOBAL_ZONEID)


class Conn:
    """An open "file" on the kstat device: what providers see as ``conn``.

    ``state`` maps a provider name to that provider's per-connection dict
    (``conn.state["vmm"]`` exists on first use). Compared by identity.
    ``packed``: kstatd's socket sessions: READ_MANY and SELECT answer
    :class:`kstatpy.packed.PackedResults` (the server splices them into the frame);
    in-process callers get plain lists.
    """

    def __init__(
        self, cred: Cred, state: defaultdict[str, dict[str, Any]] | None = None, id: int = 0, packed: bool = False
    ) -> None:
        self.cred = cred
        self.state: defaultdict[str, dict[str, Any]] = defaultdict(dict) if state is None else state
        self.id = id
        self.packed = packed

    def __repr__(self) -> str:
        return f"Conn(cred={self.cred!r}, state={self.state!r}, id={self.id!r}, packed={self.packed!r})"
