"""In-process KSTAT_IOC_READ / KSTAT_IOC_WRITE with test-friendly defaults (global zone, privileged)."""

from __future__ import annotations

from typing import Any

from kstatpy.chain import Chain
from kstatpy.constants import GLOBAL_ZONEID
from kstatpy.driver import read_kstat_data
from kstatpy.driver import write_kstat_data


def chain_read(chain: Chain, kid: int, zoneid: int = GLOBAL_ZONEID, data_size: int | None = None) -> dict[str, Any]:
    """read_kstat_data(chain, kid, zoneid, data_size): the reply's KSTAT map."""
    return read_kstat_data(chain, kid, zoneid, data_size)


def chain_write(
    chain: Chain, kid: int, ndata: int, data: Any, zoneid: int = GLOBAL_ZONEID, privileged: bool = True
) -> int:
    """write_kstat_data(...): the chain id after the write."""
    return write_kstat_data(chain, kid, ndata, data, zoneid, privileged)
