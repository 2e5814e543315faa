"""The ``system`` provider: the host's statistics (Linux /proc and /sys) under illumos names.

``unix:0:system_misc``, ``unix:0:system_pages`` (``unix``), the RAW
``unix:0:sysinfo``, ``unix:0:vminfo``, ``unix:0:var`` (``unixraw``),
``unix:0:dnlcstats``, ``unix:0:file_cache`` and the slab caches, ``vmem:0:kmem_oversize``,
``zones:0:global`` (``hostwide``: what illumos' own tools look up), fsstat's
``unix:0:vopstats_*`` (``vopstats``), per CPU
``cpu_info:N:cpu_infoN`` (``cpu``), ``cpu:N:sys``, ``cpu:N:vm`` and the RAW
``cpu_stat:N:cpu_statN`` (``cpustat``), ``link:0:IFNAME`` (``link``), block devices
as IO kstats with an error kstat (``disk``; lofi's without), the MIB-II kstats (``mib2``) and
OpenZFS's SPL kstats (``spl``). Values are read in ``ks_update``, so a read costs
only its own kstat's files. The tree read is ``chain.config["system_root"]``, else
``$KSTATPY_SYSTEM_ROOT``, else ``/``. This module only re-exports the hooks (declared in ``KSTATPY_HOOKS``: plain
implementations, see kstatpy.plain_providers).
"""

from __future__ import annotations

from kstatpy_providers.system.provider import KSTATPY_HOOKS
from kstatpy_providers.system.provider import kstatpy_attach
from kstatpy_providers.system.provider import kstatpy_detach
from kstatpy_providers.system.provider import kstatpy_refresh

__all__ = ["KSTATPY_HOOKS", "kstatpy_attach", "kstatpy_detach", "kstatpy_refresh"]
