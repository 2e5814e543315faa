"""The client side of KSTATPY_IOC_SELECT (docs/PROTOCOL.md §9.2): ``KstatCtl.select``.

Contract
    :func:`select` sends the selectors and returns ``(errno, ksp, prev_snaptime)``
    per kept kstat, in KID order: ``ksp`` is a new :class:`~kstatpy.client.KstatUser`
    (filled when errno is 0, else its header only), ``prev_snaptime`` the kstat's
    ``ks_snaptime`` as KID 0 would have listed it just before this read. NAMED data
    holds only the records some kept selector's statistic pattern matches. Entries
    kstatd left unread past its reply budget (E2BIG, docs/PROTOCOL.md §9.4) are read with
    ``kc.read_many`` (whole: their NAMED data is not filtered).

Old servers
    A server without SELECT answers EINVAL (an unknown kstat ioctl) without a
    ``regerror`` field; then the same selection runs here, over ``kc.kc_chain``
    (``chain_update``, :class:`kstatpy.select.Selection`, ``read_many``), with the
    same result shape. Entries are then the chain's own KstatUser objects. The same
    happens for patterns that cannot be encoded for the wire (lone surrogates, from
    arguments that are not UTF-8), for every selection with a ``/regex/`` (kstatd
    matches globs only, so a hostile regular expression costs its sender, not kstatd),
    and when kstatd answers the request as a whole E2BIG (more selectors or pattern
    bytes than it matches for one request).

Errors
    :raises RegexError: a pattern that had to be evaluated does not compile (from the
        server's ``regerror``, or raised here on the fallback path).
    :raises KstatError: the transport failed as a whole; EINVAL for a selector that is
        not 1 to 4 strings (checked before anything is sent).
"""

from __future__ import annotations

import errno

from kstatpy.client import KstatUser
from kstatpy.client_shapes import MalformedReply
from kstatpy.client_shapes import check_header
from kstatpy.client_shapes import check_kstat
from kstatpy.client_shapes import entries
from kstatpy.select import RegexError
from kstatpy.select import Selection
from kstatpy.select import SelectorPatterns
from kstatpy.select import is_regex

TYPE_CHECKING = False  # not typing's: kept off the kstat command's start-up path
if TYPE_CHECKING:
    from collections.abc import Iterable
    from collections.abc import Sequence
    from typing import Any

    from kstatpy.client import KstatCtl

__all__ = ["STUCK_RETRIES", "ioctl_past_stuck", "select"]

_SELECT = 0x4B12  # KstatIoctl.SELECT, without importing the enum
_NAMED = 1
#: Whole-request EAGAIN answers retried (each marks one more stuck kstat).
STUCK_RETRIES = 16


def select(
    kc: KstatCtl,
    selectors: Iterable[Sequence[str]],
    ks_class: str = "*",
    skip_name: str | None = None,
    types: Iterable[int] | None = None,
) -> list[tuple[int, KstatUser, int]]:
    """See the module docstring; ``selectors`` are 1 to 4 pattern strings each (missing: ``*``)."""
    from kstatpy.errors import KstatError

    sels = [list(s) for s in selectors]
    if any(not 0 < len(sel) <= 4 for sel in sels):
        raise KstatError(errno.EINVAL, "a selector is 1 to 4 pattern strings (module, instance, name, statistic)")
    if any(is_regex(t) for t in [*(t for sel in sels for t in sel), ks_class, skip_name or ""]):
        # kstatd matches globs only (a hostile regex would stall it): a /regex/ is ours.
        return _select_locally(kc, sels, ks_class, skip_name, None if types is None else sorted(types))
    arg: dict[str, Any] = {"selectors": sels}
    if ks_class != "*":
        arg["class"] = ks_class
    if skip_name is not None:
        arg["skip_name"] = skip_name
    if types is not None:
        types = sorted(types)
        arg["types"] = types
    try:
        result = ioctl_past_stuck(kc.kc_kd.ioctl, _SELECT, arg)
    except UnicodeEncodeError:
        # A pattern from a non-UTF-8 argument (surrogate escapes) cannot go on the wire;
        # it can only match names that cannot either: select here, as an old server.
        return _select_locally(kc, sels, ks_class, skip_name, types)
    except KstatError as exc:
        if exc.errno == errno.E2BIG:
            # More selectors or pattern bytes than kstatd matches for one request
            # (docs/PROTOCOL.md §9.2): the work is ours, as with an old server.
            return _select_locally(kc, sels, ks_class, skip_name, types)
        if exc.errno != errno.EINVAL:
            raise
        if "regerror" in exc.extra:
            raise RegexError(exc.extra["regerror"]) from None
        return _select_locally(kc, sels, ks_class, skip_name, types)
    if kc.wire:
        kc.kcid_of(_SELECT, result)
    try:
        out, unread = _decode(result, kc.wire)
    except MalformedReply as bad:
        raise kc.malformed(_SELECT, bad) from None
    if unread:
        again = kc.read_many([out[i][1] for i in unread])
        for i, (code, ksp) in zip(unread, again, strict=True):
            out[i] = (code, ksp, out[i][2])
    return out


def _decode(result: dict[str, Any], wire: bool) -> tuple[list[tuple[int, KstatUser, int]], list[int]]:
    # The reply's entries, and the indexes of those past kstatd's reply budget (E2BIG):
    # to be read with READ_MANY. ``wire``: checked as they are taken (KstatCtl.wire).
    out: list[tuple[int, KstatUser, int]] = []
    append = out.append
    unread: list[int] = []
    for code, kstat in entries(result, None, wire):
        if wire:
            if code:
                check_header(kstat)
            else:
                check_kstat(kstat)
                if type(kstat.get("prev_snaptime")) is not int:
                    raise MalformedReply("a read entry has no int prev_snaptime")
        ksp = KstatUser(kstat)
        if code:
            if code == errno.E2BIG and out:
                unread.append(len(out))
            append((code, ksp, kstat["snaptime"]))
        else:
            ksp._fill(kstat, False)  # checked above
            append((0, ksp, kstat["prev_snaptime"]))
    return out, unread


def ioctl_past_stuck(ioctl: Any, cmd: int, arg: Any) -> dict[str, Any]:
    """``ioctl(cmd, arg)`` of a SELECT or READ_MANY, asked again (at most
    :data:`STUCK_RETRIES` times) while kstatd answers the whole request EAGAIN.

    kstatd does that when a provider's ``ks_update`` passed ``--read-timeout``
    (docs/PROTOCOL.md §9.1); that kid then answers EAGAIN at once in its own entry, so
    each retry gets past one more stuck kstat and the others are read.
    """
    from kstatpy.errors import KstatError

    tries = 0
    while True:
        try:
            return ioctl(cmd, arg)
        except KstatError as exc:
            if exc.errno != errno.EAGAIN or tries >= STUCK_RETRIES:
                raise
            tries += 1


def _select_locally(
    kc: KstatCtl, sels: list[list[str]], ks_class: str, skip_name: str | None, types: Any
) -> list[tuple[int, KstatUser, int]]:
    # An old server: the same Selection over the whole chain, then READ_MANY.
    selection = Selection(
        [SelectorPatterns(*s) for s in sels], ks_class, skip_name, None if types is None else frozenset(types)
    )
    kc.chain_update()
    picked = []
    for ksp in kc.kc_chain:
        stats = selection.match(ksp.ks_module, ksp.ks_instance, ksp.ks_name, ksp.ks_class, ksp.ks_type)
        if stats is not False:
            picked.append((ksp, stats, ksp.ks_snaptime))
    out: list[tuple[int, KstatUser, int]] = []
    if not picked:
        return out
    results = kc.read_many([p[0] for p in picked])
    for (ksp, stats, prev_snaptime), (code, _) in zip(picked, results, strict=True):
        if not code and stats and ksp.ks_type == _NAMED:
            ksp.ks_data = [rec for rec in ksp.ks_data if any(m(rec.name) for m in stats)]
        out.append((code, ksp, prev_snaptime))
    return out
