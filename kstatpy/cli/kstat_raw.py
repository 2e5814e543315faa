"""kstat(8)'s RAW decoders: the statistics of a RAW kstat whose struct kstat knows.

illumos kstat(8) decodes a fixed table of RAW kstats (cmd/stat/kstat/kstat.c, its
table of decoders; docs/PROTOCOL.md §9.5) and skips every other RAW kstat. The layouts are
``kstatpy.raw``'s (shared with the provider that packs them and the client);
this module only turns one into kstat(8)'s statistics, in struct order, with the
printed names (``cpu[CPU_IDLE]`` as ``idle``, ...). Values print as %u/%d/%llu:
the struct's own widths, so they are in range as unpacked.
"""

from __future__ import annotations

from kstatpy.raw import layout_for

__all__ = ["decodable", "raw_stats"]


def decodable(module: str, name: str) -> bool:
    """Whether kstat(8) has a decoder for the RAW kstat ``module:name``."""
    return layout_for(module, name) is not None


def raw_stats(module: str, name: str, data: bytes | None) -> list[tuple[str, str, bool]]:
    """``(statistic, text, is_string)`` for each printed member; empty when the data is
    missing or shorter than the struct (nothing to decode)."""
    layout = layout_for(module, name)
    if layout is None or data is None or len(data) < layout.size:
        return []
    return [(k, str(v), False) for k, v in layout.decode(bytes(data)).items()]
