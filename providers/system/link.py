"""``link:0:IFNAME`` (class net) for each network interface in ``sys/class/net``.

Records in illumos (dls) order; each read opens only files under
``sys/class/net/IFNAME/``, one file per Linux counter:

    ifspeed     ``speed`` (Mb/s) x 10**6, UINT64; 0 when the kernel reports none
    multircv    statistics/multicast              UINT32
    norcvbuf    statistics/rx_dropped             UINT32
    ierrors     statistics/rx_errors              UINT32
    unknowns    statistics/rx_nohandler           UINT32
    noxmtbuf    statistics/tx_dropped             UINT32
    oerrors     statistics/tx_errors              UINT32
    collisions  statistics/collisions             UINT32
    rbytes, ipackets, obytes, opackets            statistics/rx_bytes, rx_packets,
                tx_bytes, tx_packets, UINT32 (wrapping, as illumos' 32-bit counters)
    rbytes64, ipackets64, obytes64, opackets64    the same, UINT64
    link_state  ``operstate`` up 1 / down 0; for "unknown" and the like ``carrier``
                (1 or 0), else LINK_STATE_UNKNOWN (-1 as UINT32), UINT32
    link_duplex ``duplex``: full 2, half 1, else (or refused: virtual links) 0
                unknown, as illumos' link_duplex_t, UINT32 (nicstat reads it)

Ethernet statistics, where the interface's driver keeps them (UINT32):
    align_errors rx_frame_errors; fcs_errors rx_crc_errors; toolong_errors
    rx_length_errors; macrcv_errors rx_fifo_errors; carrier_errors tx_carrier_errors;
    ex_collisions tx_aborted_errors; macxmt_errors tx_fifo_errors; sqe_errors
    tx_heartbeat_errors; tx_late_collisions tx_window_errors

brdcstrcv, brdcstxmt and multixmt have no Linux counter and are left out, as are
the Ethernet first_collisions, multi_collisions, defer_xmts, runt_errors, jabber_errors
and the link's rx_missed_errors/rx_over_errors/*_compressed (no illumos name), and any
counter whose file this interface lacks (decided when the kstat is created).
"""

from __future__ import annotations

from kstatpy_providers.system.source import SysFile
from kstatpy_providers.system.source import SysRoot
from kstatpy_providers.system.source import create_named

from kstatpy.constants import KSTAT_DATA_UINT32
from kstatpy.constants import KSTAT_DATA_UINT64

TYPE_CHECKING = False  # not typing's: kept off the embedded kstat's start-up path
if TYPE_CHECKING:
    from typing import Any

    from kstatpy.chain import Chain
    from kstatpy.kstat import Kstat

__all__ = ["LINK_STATE_UNKNOWN", "LinkSource", "create_link", "link_names"]

LINK_STATE_DOWN = 0
LINK_STATE_UP = 1
LINK_STATE_UNKNOWN = -1

# illumos record, type, Linux statistics file (None: not a statistics counter)
LINK_FIELDS = (
    ("ifspeed", KSTAT_DATA_UINT64, None),
    ("multircv", KSTAT_DATA_UINT32, "multicast"),
    ("norcvbuf", KSTAT_DATA_UINT32, "rx_dropped"),
    ("ierrors", KSTAT_DATA_UINT32, "rx_errors"),
    ("unknowns", KSTAT_DATA_UINT32, "rx_nohandler"),
    ("noxmtbuf", KSTAT_DATA_UINT32, "tx_dropped"),
    ("oerrors", KSTAT_DATA_UINT32, "tx_errors"),
    ("collisions", KSTAT_DATA_UINT32, "collisions"),
    ("rbytes", KSTAT_DATA_UINT32, "rx_bytes"),
    ("ipackets", KSTAT_DATA_UINT32, "rx_packets"),
    ("obytes", KSTAT_DATA_UINT32, "tx_bytes"),
    ("opackets", KSTAT_DATA_UINT32, "tx_packets"),
    ("rbytes64", KSTAT_DATA_UINT64, "rx_bytes"),
    ("ipackets64", KSTAT_DATA_UINT64, "rx_packets"),
    ("obytes64", KSTAT_DATA_UINT64, "tx_bytes"),
    ("opackets64", KSTAT_DATA_UINT64, "tx_packets"),
    ("link_state", KSTAT_DATA_UINT32, None),
    ("link_duplex", KSTAT_DATA_UINT32, None),
    # Ethernet statistics (illumos: the link kstat of an Ethernet MAC carries them too)
    ("align_errors", KSTAT_DATA_UINT32, "rx_frame_errors"),
    ("fcs_errors", KSTAT_DATA_UINT32, "rx_crc_errors"),
    ("toolong_errors", KSTAT_DATA_UINT32, "rx_length_errors"),
    ("macrcv_errors", KSTAT_DATA_UINT32, "rx_fifo_errors"),
    ("carrier_errors", KSTAT_DATA_UINT32, "tx_carrier_errors"),
    ("ex_collisions", KSTAT_DATA_UINT32, "tx_aborted_errors"),
    ("macxmt_errors", KSTAT_DATA_UINT32, "tx_fifo_errors"),
    ("sqe_errors", KSTAT_DATA_UINT32, "tx_heartbeat_errors"),
    ("tx_late_collisions", KSTAT_DATA_UINT32, "tx_window_errors"),
)

_DOWN_STATES = ("down", "lowerlayerdown", "notpresent")
#: illumos link_duplex_t (sys/mac.h)
LINK_DUPLEX_UNKNOWN, LINK_DUPLEX_HALF, LINK_DUPLEX_FULL = 0, 1, 2
_DUPLEX = {"half": LINK_DUPLEX_HALF, "full": LINK_DUPLEX_FULL}


def link_names(root: SysRoot) -> list[str]:
    """Interfaces present: the entries of ``sys/class/net``."""
    return root.subdirs("sys/class/net")


class LinkSource:
    """One interface's counters; ``counters`` maps illumos record -> statistics file."""

    def __init__(self, root: SysRoot, ifname: str, counters: dict[str, str]) -> None:
        self.root = root
        self.dir = f"sys/class/net/{ifname}/"
        self.counters = counters
        self.files: list[tuple[str, SysFile]] | None = None

    def _link_state(self) -> int:
        oper = self.root.read(self.dir + "operstate").strip()
        if oper == "up":
            return LINK_STATE_UP
        if oper in _DOWN_STATES:
            return LINK_STATE_DOWN
        carrier = self.root.read_int_or(self.dir + "carrier", None)
        return LINK_STATE_UNKNOWN if carrier is None else (LINK_STATE_UP if carrier else LINK_STATE_DOWN)

    def values(self) -> dict[str, Any]:
        files = self.files
        if files is None:  # each counter's kept-open file, looked up once
            files = self.files = [(name, self.root.file(self.dir + "statistics/" + stat))
                                  for name, stat in self.counters.items()]  # fmt: skip
        out: dict[str, Any] = {name: int(f.read()) for name, f in files}
        speed = self.root.read_int_or(self.dir + "speed", None)
        out["ifspeed"] = speed * 1_000_000 if speed is not None and speed > 0 else 0
        out["link_state"] = self._link_state()
        try:  # the kernel refuses (EINVAL) where the driver has no idea: unknown
            duplex = self.root.read(self.dir + "duplex").strip()
        except OSError:
            duplex = ""
        out["link_duplex"] = _DUPLEX.get(duplex, LINK_DUPLEX_UNKNOWN)
        return out


def create_link(chain: Chain, root: SysRoot, ifname: str, origin: int | None = None) -> Kstat:
    """link:0:IFNAME with the counters this interface has.

    ``origin``: crtime for an interface present at attach (the boot; its counters
    count from the interface's creation, which for those is taken as the boot);
    None for one that appeared later (created about when the provider saw it).
    """
    have = set(root.listdir(f"sys/class/net/{ifname}/statistics"))
    fields = [(name, t) for name, t, stat in LINK_FIELDS if stat is None or stat in have]
    counters = {name: stat for name, _, stat in LINK_FIELDS if stat is not None and stat in have}
    return create_named(chain, "link", 0, ifname, "net", fields, LinkSource(root, ifname, counters), crtime=origin)
