"""``kstat --describe``: the statistic metadata of the selected kstats (docs/PROTOCOL.md §9.3).

Selection is kstat(8)'s (the operands or -m -i -n -s, and -c): the same kstats
and statistics a value report would print, ``kstat_*`` and RAW kstats left out,
sorted the same way, the pseudo statistics ``crtime`` and ``snaptime`` included.
Metadata comes from ``KSTATPY_IOC_DESCRIBE``; a kstatd that lacks it is a fatal
error (exit 3).

Text: a kstat(8)-style header per kstat, then one line a statistic: name, kind,
data type, unit, description (``-`` for what nobody declared; host-sized units
show their size, ``[1 tick = 0.01 seconds]``; a statistic with no source on this
host reads "no source (always 0 on this host): ..."). ``-j``: a JSON array of
``{"module", "instance", "name", "class", "type", "stats": [STAT, ...]}``.
"""

from __future__ import annotations

import errno
import json
from collections.abc import Callable
from typing import Any

from kstatpy.cli.kstat_select import SelectorPatterns
from kstatpy.cli.kstat_select import ci_key
from kstatpy.constants import KstatDataType
from kstatpy.describe import kstat_describe
from kstatpy.errors import KstatError
from kstatpy.metadata import StatMeta
from kstatpy.metadata import base_unit

__all__ = ["DescribeUnsupported", "describe_report"]

_RAW = 0


class DescribeUnsupported(Exception):
    """The kstatd answering does not know KSTATPY_IOC_DESCRIBE."""


def _type_name(data_type: int | None) -> str:
    if data_type is None:
        return "-"
    try:
        return KstatDataType(data_type).name.lower()
    except ValueError:
        return str(data_type)


def _scale_note(stat: dict[str, Any]) -> str:
    if not stat.get("scale"):
        return ""
    unit, factor = base_unit(StatMeta(stat["kind"] or "gauge", stat["unit"] or "", "", stat["scale"]))
    one = {"ticks": "tick", "pages": "page"}.get(stat["unit"], stat["unit"])
    return f" [1 {one} = {factor:g} {unit}]"


def _select(kc: Any, selectors: list[SelectorPatterns], class_match: Callable[[str], bool] | None) -> list[Any]:
    keep = []
    for ksp in kc.kc_chain:
        if ksp.ks_name.startswith("kstat_") or ksp.ks_type == _RAW:
            continue
        if class_match is not None and not class_match(ksp.ks_class):
            continue
        for sel in selectors:
            if sel.module.match(ksp.ks_module) and sel.name.match(ksp.ks_name) and sel.instance.match(str(ksp.ks_instance)):
                keep.append(ksp)
                break
    return keep


def describe_report(
    kc: Any, selectors: list[SelectorPatterns], class_match: Callable[[str], bool] | None, as_json: bool, out: list[str]
) -> bool:
    """Append the description of the selected kstats to ``out``; True if any statistic matched.

    :raises DescribeUnsupported: kstatd answered the request with EINVAL.
    :raises RegexError: a pattern did not compile.
    """
    ksps = _select(kc, selectors, class_match)
    try:
        results = kstat_describe(kc, [k.ks_kid for k in ksps]) if ksps else []
    except KstatError as exc:
        if exc.errno == errno.EINVAL:
            raise DescribeUnsupported(str(exc)) from exc
        raise
    described = [d for code, d in results if code == 0 and d is not None]
    described.sort(key=lambda d: (ci_key(d["module"]), d["instance"], ci_key(d["name"])))
    blocks = []
    for desc in described:
        stats = [
            s for s in desc["stats"]
            if any(
                sel.module.match(desc["module"]) and sel.name.match(desc["name"])
                and sel.instance.match(str(desc["instance"])) and sel.statistic.match(s["name"])
                for sel in selectors
            )
        ]  # fmt: skip
        if stats:
            stats.sort(key=lambda s: ci_key(s["name"]))
            blocks.append((desc, stats))
    if as_json:
        doc = [{**{k: d[k] for k in ("module", "instance", "name", "class", "type")}, "stats": st} for d, st in blocks]
        out.append(json.dumps(doc, ensure_ascii=False, indent="\t") + "\n")
        return bool(blocks)
    for desc, stats in blocks:
        out.append(
            f"module: {desc['module']:<30}  instance: {desc['instance']:<6d}\n"
            f"name:   {desc['name']:<30}  class:    {desc['class']}\n"
        )
        for s in stats:
            kind = s["kind"] or "-"
            unit = s["unit"] if s["unit"] else "-"
            what = (s["description"] or "(no metadata declared)") + _scale_note(s)
            if s.get("no_source"):
                what = "no source (always 0 on this host): " + what
            out.append(f"\t{s['name']:<30}  {kind:<10}  {_type_name(s['data_type']):<6}  {unit:<7}  {what}\n")
        out.append("\n")
    return bool(blocks)
