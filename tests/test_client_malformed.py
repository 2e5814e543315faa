"""KstatCtl against a server whose result maps have the wrong shape: ProtocolError, never raw.

docs/CLIENTS.md promises KstatError subclasses; a reply of the right frame but the
wrong result shape (docs/PROTOCOL.md §4, §5, §9.2) is EPROTO (kstatpy.reply_shape),
one line naming the socket. A fake kstatd (tests/test_hostile_server.py's) answers
request number ``seq`` of a connection with ``script[seq - 1]``.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_hostile_server import fake_kstatd

from kstatpy.client import KstatCtl
from kstatpy.client import KstatUser
from kstatpy.client import kstat_open
from kstatpy.errors import ProtocolError
from kstatpy.protocol import pack_frame

HEADER = {
    "kid": 5,
    "module": "test",
    "instance": 0,
    "name": "n",
    "class": "misc",
    "type": 1,
    "flags": 0,
    "ndata": 1,
    "data_size": 48,
    "crtime": 1,
    "snaptime": 2,
}
KSTAT = {**HEADER, "data": [["x", 4, 7]]}
GOOD_ID = (0, {"kcid": 1})


def scripted(script: list[tuple[int, Any]]) -> Callable[[int], bytes]:
    return lambda seq: pack_frame([seq, *script[min(seq, len(script)) - 1]])


def bad_kstats() -> list[Any]:
    return [
        {},
        5,
        {**KSTAT, "kid": "5"},
        {**KSTAT, "module": None},
        {**KSTAT, "data": [[1, 4, 7]]},  # NAMED record name not a str
        {**KSTAT, "data": [["x", 4]]},  # not a triple
        {**KSTAT, "data": 7},
        {k: v for k, v in KSTAT.items() if k != "snaptime"},
    ]


def kid0(data: Any) -> dict[str, Any]:
    return {**HEADER, "kid": 0, "type": 0, "module": "unix", "name": "kstat_headers", "data": data}


# (name, method(kc), replies after the open's CHAIN_ID)
CASES: list[tuple[str, Callable[[KstatCtl], Any], list[tuple[int, Any]]]] = []
for i, bad in enumerate(bad_kstats()):
    CASES.append((f"read-kstat{i}", lambda kc: kc.read(KstatUser(HEADER)), [(0, {"kcid": 1, "kstat": bad})]))
    CASES.append(
        (f"read_many-kstat{i}", lambda kc: kc.read_many([KstatUser(HEADER)]), [(0, {"kcid": 1, "results": [[0, bad]]})])
    )
    CASES.append(
        (
            f"select-kstat{i}",
            lambda kc: kc.select([["test"]]),
            [(0, {"kcid": 1, "results": [[0, {**bad, "prev_snaptime": 1} if isinstance(bad, dict) else bad]]})],
        )
    )
CASES += [
    ("chain_id-none", lambda kc: kc.chain_id(), [(0, {"kcid": None})]),
    ("chain_id-missing", lambda kc: kc.chain_id(), [(0, {})]),
    ("read-kcid-str", lambda kc: kc.read(KstatUser(HEADER)), [(0, {"kcid": "1", "kstat": KSTAT})]),
    ("read-enomem-size-str", lambda kc: kc.read(KstatUser(HEADER), data_size=8), [(12, {"data_size": "64"})]),
    (
        "read-enomem-flags-str",
        lambda kc: kc.read(KstatUser(HEADER), data_size=8),
        [(12, {"data_size": 64, "flags": "2"})],
    ),
    ("chain_update-data-int", lambda kc: kc.chain_update(), [GOOD_ID, (0, {"kcid": 1, "kstat": kid0(5)})]),
    ("chain_update-header-bad", lambda kc: kc.chain_update(), [GOOD_ID, (0, {"kcid": 1, "kstat": kid0([{"kid": 1}])})]),
    ("chain_update-header-int", lambda kc: kc.chain_update(), [GOOD_ID, (0, {"kcid": 1, "kstat": kid0([3])})]),
    ("read_many-short", lambda kc: kc.read_many([KstatUser(HEADER)]), [(0, {"kcid": 1, "results": []})]),
    (
        "read_many-long",
        lambda kc: kc.read_many([KstatUser(HEADER)]),
        [(0, {"kcid": 1, "results": [[0, KSTAT], [0, KSTAT]]})],
    ),
    ("read_many-entry-int", lambda kc: kc.read_many([KstatUser(HEADER)]), [(0, {"kcid": 1, "results": [5]})]),
    (
        "read_many-errno-str",
        lambda kc: kc.read_many([KstatUser(HEADER)]),
        [(0, {"kcid": 1, "results": [["E2BIG", None]]})],
    ),
    ("read_many-results-map", lambda kc: kc.read_many([KstatUser(HEADER)]), [(0, {"kcid": 1, "results": {}})]),
    ("select-results-none", lambda kc: kc.select([["test"]]), [(0, {"kcid": 1, "results": None})]),
    ("select-no-prev", lambda kc: kc.select([["test"]]), [(0, {"kcid": 1, "results": [[0, KSTAT]]})]),
    ("select-error-header-bad", lambda kc: kc.select([["test"]]), [(0, {"kcid": 1, "results": [[6, {"kid": 5}]]})]),
    ("select-entry-short", lambda kc: kc.select([["test"]]), [(0, {"kcid": 1, "results": [[0]]})]),
    ("write-no-kcid", lambda kc: kc.write(KstatUser(HEADER)), [(0, {})]),
    ("write-kcid-list", lambda kc: kc.write(KstatUser(HEADER)), [(0, {"kcid": [1]})]),
]


@pytest.mark.parametrize(("method", "replies"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_result_of_the_wrong_shape_is_a_protocol_error(
    tmp_path: Path, method: Callable[[KstatCtl], Any], replies: list[tuple[int, Any]]
) -> None:
    with fake_kstatd(tmp_path, scripted([GOOD_ID, *replies])) as path:
        kc = kstat_open(path, read_chain=False)
        try:
            with pytest.raises(ProtocolError) as ei:
                method(kc)
        finally:
            kc.close()
    assert ei.value.errno == errno.EPROTO
    assert path in ei.value.message and "\n" not in ei.value.message, ei.value.message


@pytest.mark.parametrize(
    "first",
    [(0, {"kcid": "1"}), (0, {}), (0, {"kcid": 1, "kstat": kid0(None)}), (0, {"kcid": 1, "kstat": kid0([{}])})],
    ids=["kcid-str", "empty", "headers-nil", "header-empty"],
)
def test_kstat_open_reports_a_malformed_chain_as_a_protocol_error(tmp_path: Path, first: tuple[int, Any]) -> None:
    script = [first] if "kstat" not in first[1] else [GOOD_ID, first]
    with fake_kstatd(tmp_path, scripted(script)) as path, pytest.raises(ProtocolError) as ei:
        kstat_open(path)
    assert ei.value.errno == errno.EPROTO and path in ei.value.message


def test_well_formed_replies_still_decode(tmp_path: Path) -> None:
    # The checks' other side: the same fake server with right shapes reads as before.
    replies = [
        GOOD_ID,
        (0, {"kcid": 1, "kstat": kid0([HEADER])}),
        (0, {"kcid": 1, "kstat": KSTAT}),
        (0, {"kcid": 1, "results": [[0, KSTAT]]}),
        (0, {"kcid": 1, "results": [[0, {**KSTAT, "prev_snaptime": 1}]]}),
        (0, {"kcid": 1}),
    ]
    with fake_kstatd(tmp_path, scripted(replies)) as path, kstat_open(path) as kc:
        (ksp,) = kc.kc_chain
        assert kc.read(ksp) == 1 and ksp.ks_data[0].value == 7
        assert kc.read_many([ksp])[0][0] == 0
        ((code, sel, prev),) = kc.select([["test"]])
        assert (code, sel.ks_data[0].name, prev) == (0, "x", 1)
        assert kc.write(ksp) == 1
