"""kstatd's READ_MANY and SELECT replies packed entry by entry (``PackedResults``)
decode to exactly the reply of the plain path (the in-process result packed whole).

Issue 10 (memory): kstatd packs each entry as it reads it, so a full dump does not
leave the reply's arenas resident; the wire bytes must not change meaning.
"""

from __future__ import annotations

import errno

import msgpack
from cli_chain import build_chain

from kstatpy.chain import Chain
from kstatpy.ioctl import Conn
from kstatpy.ioctl import Cred
from kstatpy.ioctl import IoctlHandler
from kstatpy.packed import PackedResults
from kstatpy.protocol import pack_frame
from kstatpy.session import pack_packed_reply as _pack_packed

READ_MANY, SELECT = 0x4B11, 0x4B12


def _frame(handler: IoctlHandler, cmd: int, arg: dict, packed: bool) -> list:
    code, result = handler.dispatch(Conn(Cred(), packed=packed), cmd, arg)
    assert code == 0, result
    packer = msgpack.Packer(use_bin_type=True)
    if packed:
        assert isinstance(result["results"], PackedResults)
        frame = _pack_packed(7, result, packer)
    else:
        assert isinstance(result["results"], list)
        frame = pack_frame([7, 0, result], packer)
    return msgpack.unpackb(frame[4:], raw=False)


def _stamp_free(obj):
    # Each chain has its own creation times and every read stamps a new ks_snaptime.
    if isinstance(obj, dict):
        return {k: _stamp_free(v) for k, v in obj.items() if k not in ("crtime", "snaptime", "prev_snaptime")}
    if isinstance(obj, list):
        return [_stamp_free(v) for v in obj]
    return obj


def _both(cmd: int, arg: dict, max_reply: int | None = None) -> tuple[list, list]:
    # Two identical chains: a read can change a kstat (a VAR_SIZE kstat's data_size).
    plain, packed = IoctlHandler(build_chain(Chain())), IoctlHandler(build_chain(Chain()))
    plain.max_reply = packed.max_reply = max_reply
    return _stamp_free(_frame(plain, cmd, arg, False)), _stamp_free(_frame(packed, cmd, arg, True))


def test_read_many_packed_equals_plain_with_errors_and_kid0_twice():
    kids = [0, 1, 2, 999_999, "x", 3, 0]
    plain, packed = _both(READ_MANY, {"kids": kids})
    assert packed == plain
    codes = [code for code, _ in packed[2]["results"]]
    assert codes[3] == errno.ENXIO and codes[4] == errno.EINVAL and codes.count(0) == 5
    assert packed[2]["results"][0] == packed[2]["results"][-1]  # KID 0 packed once, sent twice


def test_read_many_packed_equals_plain_past_the_reply_budget():
    plain, packed = _both(READ_MANY, {"kids": [1, 2, 3, 4, 5]}, max_reply=1)
    assert packed == plain
    assert [code for code, _ in packed[2]["results"]][1:] == [errno.E2BIG] * 4


def test_select_packed_equals_plain():
    for arg in ({"selectors": [["*"]]}, {"selectors": [["unix", "0", "system_misc", "n*"]]}, {"selectors": [["nope"]]}):
        plain, packed = _both(SELECT, arg)
        assert packed == plain, arg
        assert packed[2]["kcid"] == plain[2]["kcid"]
