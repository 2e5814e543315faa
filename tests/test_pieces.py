"""Issue 21: replies produced and sent in pieces (docs/PROTOCOL.md §9.8, kstatpy/pieces.py).

A real kstatd with the system provider. A reader that reads nothing costs kstatd one
piece (kstatpy:0:replies:parked_bytes), a reader that dies mid-reply frees it, pieces
reassemble into exactly the whole frame's reply (hypothesis), a client that does not
ask keeps whole frames, a watchdog take-over mid-reply keeps the entries already read,
and the Python client refuses malformed piece sequences with EPROTO.
"""

from __future__ import annotations

import errno
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from bounded import poll
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from kstatd_fixture import REPO
from kstatd_fixture import recv_exact
from kstatd_fixture import rpc
from kstatd_fixture import running_kstatd
from nobody import nobody_skip
from test_hostile_server import fake_kstatd
from test_hostile_server import one_request_server

from kstatpy import transport
from kstatpy.errors import KstatError
from kstatpy.errors import RequestTimeoutError
from kstatpy.errors import ServerUnavailableError
from kstatpy.pieces import MORE
from kstatpy.pieces import PIECE_SIZE
from kstatpy.pieces import piece_frames
from kstatpy.protocol import LENGTH
from kstatpy.protocol import pack_frame
from kstatpy.transport import SocketTransport

sys.path.insert(0, str(REPO / "bench"))
import attacks

READ, READ_MANY, SELECT, DESCRIBE = 0x4B02, 0x4B11, 0x4B12, 0x4B13
SYSTEM = ["kstatpy_providers.system"]


def headers(path: str) -> list[dict[str, Any]]:
    return rpc(path, READ, {"kid": 0})[2]["kstat"]["data"]


def replies_stats(path: str) -> dict[str, int]:
    (kid,) = [h["kid"] for h in headers(path) if (h["module"], h["name"]) == ("kstatpy", "replies")]
    return {name: value for name, _type, value in rpc(path, READ, {"kid": kid})[2]["kstat"]["data"]}


def send(path: str, cmd: int, arg: Any, seq: int = 1) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(path)
    body = msgpack.packb([cmd, seq, arg], use_bin_type=True)
    s.sendall(LENGTH.pack(len(body)) + body)
    return s


def read_frames(s: socket.socket) -> tuple[list[int], Any]:
    """The length words of one reply's frames and the reply their bodies make."""
    words = []
    body = bytearray()
    while True:
        (word,) = LENGTH.unpack(recv_exact(s, 4))
        words.append(word)
        body += recv_exact(s, word & ~MORE)
        if not word & MORE:
            return words, msgpack.unpackb(body, raw=False)


@pytest.fixture(scope="module")
def kd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with running_kstatd(tmp_path_factory.mktemp("pieces"), plugins=SYSTEM) as kd:
        yield kd


@pytest.fixture(scope="module")
def all_kids(kd: Any) -> list[int]:
    return [h["kid"] for h in headers(kd.socket)]


# --- memory: what a reader that does not read costs ------------------------------------------------


def test_a_reader_that_reads_nothing_costs_kstatd_one_piece_and_frees_it_when_it_dies(kd, all_kids):
    kids = (all_kids * 64)[:65536]  # a DESCRIBE reply of megabytes
    base = replies_stats(kd.socket)["parked_bytes"]
    # The same request without pieces parks a whole reply: the statistic sees it.
    s = send(kd.socket, DESCRIBE, {"kids": kids})
    try:
        whole = poll("a whole unread reply parked", lambda: replies_stats(kd.socket)["parked_bytes"] - base)
        assert whole > 2 * PIECE_SIZE, whole
    finally:
        s.close()
    poll("the whole reply freed", lambda: replies_stats(kd.socket)["parked_bytes"] == base)
    s = send(kd.socket, DESCRIBE, {"kids": kids, "pieces": True})
    try:
        held = poll("an unread piece parked", lambda: replies_stats(kd.socket)["parked_bytes"] - base)
        time.sleep(1.0)  # kstatd would make more pieces now if it did not wait for this reader
        held = replies_stats(kd.socket)["parked_bytes"] - base
        assert 0 < held <= PIECE_SIZE + 4, held
    finally:
        s.close()  # dies mid-reply
    poll("the piece freed", lambda: replies_stats(kd.socket)["parked_bytes"] == base)
    assert rpc(kd.socket, READ, {"kid": all_kids[1]})[1] == 0  # kstatd serves on


def test_a_slow_reader_gets_every_piece_and_kstatd_holds_one_at_a_time(kd, all_kids):
    kids = (all_kids * 64)[:65536]
    s = send(kd.socket, DESCRIBE, {"kids": kids, "pieces": True})
    peaks = []
    try:
        words = []
        body = bytearray()
        while True:
            (word,) = LENGTH.unpack(recv_exact(s, 4))
            words.append(word)
            body += recv_exact(s, word & ~MORE)
            peaks.append(replies_stats(kd.socket)["parked_bytes"])
            if not word & MORE:
                break
    finally:
        s.close()
    assert len(words) > 4 and all(1 <= w & ~MORE <= PIECE_SIZE for w in words)
    assert all(w & MORE for w in words[:-1]) and not words[-1] & MORE
    assert max(peaks) <= PIECE_SIZE + 4, max(peaks)
    seq, code, result = msgpack.unpackb(body, raw=False)
    assert (seq, code, len(result["results"])) == (1, 0, len(kids))


def test_an_unread_flood_in_pieces_costs_kstatd_one_piece_a_connection():
    # bench/attacks.py's flood (RELIABILITY.md): nobody keeps 64 connections, each with a
    # DESCRIBE of 65,536 kids that asked for pieces and is never read. Whole frames park
    # up to the per-uid budget (32 MiB) and get connections closed; pieces park one each.
    nobody_skip()
    report = attacks.describe_flood(str(REPO), conns=64, seconds=6.0, pieces=True)
    assert report["ok"], report
    replies = report["replies"]
    assert replies["refused"] == 0 and replies["in_pieces"] >= 64, report
    assert replies["parked_peak_bytes"] <= 64 * (PIECE_SIZE + 4) + (1 << 20), report  # + root's own reads


# --- the same reply, whole or in pieces ---------------------------------------------------------------


def test_a_client_that_does_not_ask_gets_whole_frames(kd, all_kids):
    kids = (all_kids * 64)[:65536]
    with send(kd.socket, DESCRIBE, {"kids": kids}) as s:
        words, whole = read_frames(s)
    with send(kd.socket, DESCRIBE, {"kids": kids, "pieces": True}) as s:
        pieces_words, pieced = read_frames(s)
    assert len(words) == 1 and not words[0] & MORE and words[0] > 2 * PIECE_SIZE
    assert len(pieces_words) > 2
    assert pieced == whole


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    picks=st.lists(
        st.one_of(st.integers(-3, 10**6), st.just("x"), st.just(2**64 - 1), st.none(), st.booleans()), max_size=40
    ),
    repeat=st.integers(1, 400),
    cmd=st.sampled_from([READ_MANY, DESCRIBE]),
)
def test_pieces_reassemble_into_the_whole_frame_reply(kd, all_kids, picks, repeat, cmd):
    # Kids: real ones (by index into the chain), missing ones, non-integers; repeated
    # so that some replies span many pieces.
    kids = [all_kids[p % len(all_kids)] if type(p) is int and 0 <= p < 10**6 // 2 else p for p in picks] * repeat
    with send(kd.socket, cmd, {"kids": kids}) as s:
        _, whole = read_frames(s)
    before = replies_stats(kd.socket)["in_pieces"]
    t = SocketTransport(kd.socket)
    try:
        code, pieced = t.round_trip(cmd, {"kids": kids})
    finally:
        t.close()
    assert code == whole[1] == 0
    assert replies_stats(kd.socket)["in_pieces"] == before + 1  # the client asked, kstatd answered in pieces
    if cmd == DESCRIBE:
        assert pieced == whole[2]
    else:  # values move between two reads; what was read, and how, may not
        assert [e[0] for e in pieced["results"]] == [e[0] for e in whole[2]["results"]]
        assert [e[1] and e[1]["kid"] for e in pieced["results"]] == [e[1] and e[1]["kid"] for e in whole[2]["results"]]


def test_select_in_pieces_matches_select_whole(kd):
    with send(kd.socket, SELECT, {"selectors": [["*"]]}) as s:
        _, whole = read_frames(s)
    with send(kd.socket, SELECT, {"selectors": [["*"]], "pieces": True}) as s:
        _, pieced = read_frames(s)
    ident = lambda r: [(e[0], e[1]["kid"], e[1]["module"], e[1]["name"]) for e in r[2]["results"]]  # noqa: E731
    assert ident(pieced) == ident(whole) and len(ident(whole)) > 10


def test_piece_frames_cut_anywhere_and_join_back():
    data = bytes(range(256)) * (3 * PIECE_SIZE // 256 + 7)
    for last in (True, False):
        frames = bytes(piece_frames(data, last))
        joined, off, words = bytearray(), 0, []
        while off < len(frames):
            (word,) = struct.unpack_from(">I", frames, off)
            words.append(word)
            joined += frames[off + 4 : off + 4 + (word & ~MORE)]
            off += 4 + (word & ~MORE)
        assert joined == data and len(words) == 4
        assert bool(words[-1] & MORE) is not last and all(w & MORE for w in words[:-1])


# --- the watchdog takes over a reply in pieces ----------------------------------------------------------


def test_a_hung_read_mid_reply_keeps_the_entries_already_sent(tmp_path: Path):
    with running_kstatd(
        tmp_path, plugins=[*SYSTEM, "tests.providers_fixture.hang"], args=["--read-timeout", "0.5"]
    ) as kd:
        hdrs = headers(kd.socket)
        (hang,) = [h["kid"] for h in hdrs if h["name"] == "hang"]
        others = [h["kid"] for h in hdrs if h["module"] != "test" and h["kid"] != 0]
        kids = others * 8 + [hang] + others[:5]
        assert len(kids) > 1000
        with send(kd.socket, READ_MANY, {"kids": kids, "pieces": True}) as s:
            words, (seq, code, result) = read_frames(s)
        assert (seq, code) == (1, 0), result
        codes = [e[0] for e in result["results"]]
        n = len(others) * 8
        assert len(codes) == len(kids) and len(words) > 1
        assert codes[:n] == [0] * n  # read before the hung provider: they stand
        assert codes[n:] == [errno.EAGAIN] * 6
        assert rpc(kd.socket, READ, {"kid": others[0]})[1] == 0  # the connection's kstatd serves on
        rpc(kd.socket, 0x7E5710)  # release the hung update
        assert kd.stop() == 0


# --- the client refuses malformed piece sequences ------------------------------------------------------


def pieces_of(result: dict[str, Any], cut: int = 3) -> Any:
    def answer(seq: int) -> bytes:
        body = msgpack.packb([seq, 0, result], use_bin_type=True)
        out = b""
        for off in range(0, len(body), cut):
            part = body[off : off + cut]
            out += LENGTH.pack(len(part) | (MORE if off + cut < len(body) else 0)) + part
        return out

    return answer


GOOD = {"kcid": 1, "results": [[6, None]] * 50}


def test_the_client_reassembles_pieces_from_any_server(tmp_path: Path):
    with fake_kstatd(tmp_path, pieces_of(GOOD)) as path:
        t = SocketTransport(path)
        assert t.ioctl(READ_MANY, {"kids": [1] * 50}) == GOOD
        t.close()


@pytest.mark.parametrize(
    "answer",
    [
        lambda seq: LENGTH.pack(MORE) + LENGTH.pack(1) + b"\xc0",  # an empty piece
        lambda seq: (
            LENGTH.pack(MORE | 3) + b"\x93\x01\x00" + LENGTH.pack(MORE | 2) + b"\x80\xc0" + LENGTH.pack(1) + b"\xc0"
        ),
        lambda seq: LENGTH.pack(MORE | 2000) + b"\x00" * 2000,  # over the client's limit (patched to 1000)
    ],
    ids=["empty-piece", "extra-data-after-the-reply", "pieces-over-max-reply"],
)
def test_malformed_piece_sequences_are_eproto(tmp_path: Path, monkeypatch, answer):
    monkeypatch.setattr(transport, "MAX_REPLY", 1000)
    with fake_kstatd(tmp_path, answer) as path:
        t = SocketTransport(path)
        with pytest.raises(KstatError) as ei:
            t.ioctl(READ_MANY, {"kids": [1]})
        assert ei.value.errno == errno.EPROTO and not isinstance(ei.value, ServerUnavailableError)
        assert "Traceback" not in ei.value.message


def test_pieces_to_a_request_that_did_not_ask_are_eproto(tmp_path: Path):
    with fake_kstatd(tmp_path, pieces_of({"kcid": 1})) as path:
        t = SocketTransport(path)
        with pytest.raises(KstatError) as ei:
            t.ioctl(0x4B01)  # CHAIN_ID: never asks for pieces
        assert ei.value.errno == errno.EPROTO


def test_a_server_that_closes_mid_pieces_is_unavailable(tmp_path: Path):
    with fake_kstatd(tmp_path, lambda seq: LENGTH.pack(MORE | 3) + b"\x93\x01\x00") as path:
        t = SocketTransport(path)
        with pytest.raises(ServerUnavailableError):
            # The fake server waits for a next request: the client's deadline ends it.
            t._timeout = 1.0
            t.ioctl(READ_MANY, {"kids": [1]})


def test_the_client_asks_for_pieces_only_where_kstatd_makes_them(tmp_path: Path):
    seen: list[Any] = []
    lsock = socket.socket(socket.AF_UNIX)
    path = str(tmp_path / "cap.sock")
    lsock.bind(path)
    lsock.listen(1)

    def serve() -> None:  # keeps each request's arg
        conn, _ = lsock.accept()
        conn.settimeout(10)
        with conn:
            for _ in range(2):
                (n,) = LENGTH.unpack(recv_exact(conn, 4))
                req = msgpack.unpackb(recv_exact(conn, n), raw=False)
                seen.append(req[2])
                conn.sendall(pack_frame([req[1], 0, {"kcid": 1, "results": []}]))

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        t = SocketTransport(path)
        t.round_trip(READ_MANY, {"kids": [1]})
        t.round_trip(READ, {"kid": 1})
        t.close()
        th.join(10)
    finally:
        lsock.close()
    assert seen == [{"kids": [1], "pieces": True}, {"kid": 1}]


# --- stress: take-overs at random points of replies in pieces -----------------------------------------


def test_stress_takeovers_mid_reply_leave_every_reply_whole(tmp_path: Path):
    # Session.lock orders the serving thread's appends (after it checks gen) against the
    # watchdog's take-over (which finishes the reply with [EAGAIN, nil]): each test:0:slow
    # read (0.12 s) outlives --read-timeout 0.1 and is taken over at a random point of a
    # reply in pieces, while 6 clients read at once. An append without the check, or a
    # take-over while a piece is being sent, shows as a reply that is not one msgpack
    # object of the right length, or an entry that holds another kid's kstat.
    import random

    with running_kstatd(
        tmp_path, plugins=[*SYSTEM, "tests.providers_fixture.slow"], args=["--read-timeout", "0.1"]
    ) as kd:
        hdrs = headers(kd.socket)
        slow = [h["kid"] for h in hdrs if h["name"] == "slow"]
        others = [h["kid"] for h in hdrs if h["module"] != "test" and h["kid"] != 0]
        failures: list[str] = []
        tails = [0]

        def client(seed: int) -> None:
            rng = random.Random(seed)
            for _ in range(6):
                kids = others * 6
                for _ in range(2):
                    kids.insert(rng.randrange(len(kids)), rng.choice(slow))
                try:
                    with send(kd.socket, READ_MANY, {"kids": kids, "pieces": True}) as s:
                        _words, (_seq, code, result) = read_frames(s)
                except Exception as exc:  # a broken frame sequence or msgpack
                    failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                codes = [e[0] for e in result["results"]]
                if code or len(codes) != len(kids) or not set(codes) <= {0, errno.EAGAIN}:
                    failures.append(f"code {code}, {len(codes)} of {len(kids)} entries, {set(codes)}")
                    continue
                # A take-over's tail: EAGAIN from an entry to the end, beyond the slow kids
                # (a system kstat may also be stuck for a moment under load: EAGAIN alone).
                tail = len(codes)
                while tail and codes[tail - 1] == errno.EAGAIN:
                    tail -= 1
                if any(k not in slow for k in kids[tail:]):
                    tails[0] += 1
                for (c, kstat), kid in zip(result["results"], kids, strict=True):
                    if c == 0 and kstat["kid"] != kid:
                        failures.append(f"entry for kid {kid} holds kid {kstat['kid']}")
                        break

        threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(240)
        assert not any(t.is_alive() for t in threads), "clients did not finish within 240 s"
        assert failures == [], failures[:5]
        assert tails[0] > 0  # take-overs did happen mid-reply
        poll(
            "the stuck readers to return",
            lambda: (
                dict((n, v) for n, _t, v in rpc(kd.socket, READ, {"kid": daemon_kid(hdrs)})[2]["kstat"]["data"])[
                    "stuck_readers"
                ]
                == 0
            ),
        )
        assert kd.stop() == 0


def daemon_kid(hdrs: list[dict[str, Any]]) -> int:
    (kid,) = [h["kid"] for h in hdrs if (h["module"], h["name"]) == ("kstatpy", "daemon")]
    return kid


def test_one_deadline_covers_every_piece(tmp_path: Path):
    # Pieces of 3 bytes, one every 0.2 s: no recv waits long, the whole reply does.
    def send(conn: socket.socket, seq: int, done: threading.Event) -> None:
        frames = pieces_of(GOOD)(seq)
        for off in range(0, len(frames), 7):  # one 3-byte piece at a time
            if done.wait(0.2):
                return
            conn.sendall(frames[off : off + 7])  # OSError (the client gone) ends the server

    with one_request_server(tmp_path, send) as path:
        t = SocketTransport(path, timeout=1)
        t0 = time.monotonic()
        try:
            with pytest.raises(RequestTimeoutError):
                t.ioctl(READ_MANY, {"kids": [1] * 50})
            assert time.monotonic() - t0 < 5
        finally:
            t.close()
