"""The ``system`` provider: the host's statistics (Linux /proc and /sys) under illumos names.

``unix:0:system_misc``, ``unix:0:system_pages``, ``cpu_info:N:cpu_infoN``,
``cpu:N:sys``, ``link:0:IFNAME`` (class net) and block devices as IO kstats
(class disk). Values are read in ``ks_update``, so a read costs only its own
kstat's files. The tree read is ``chain.config["system_root"]``, else
``$KSTATPY_SYSTEM_ROOT``, else ``/``. This module only re-exports the hooks.
"""

from __future__ import annotations

from kstatpy_providers.system.provider import kstatpy_attach
from kstatpy_providers.system.provider import kstatpy_detach
from kstatpy_providers.system.provider import kstatpy_refresh

__all__ = ["kstatpy_attach", "kstatpy_detach", "kstatpy_refresh"]
