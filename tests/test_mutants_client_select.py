"""kstatpy.client_select: what goes on the wire, when the client selects by itself, and retries.

cosmic-ray (python tests/mutate.py client_select, docs/TESTING.md) left mutants alive with
test_select's in-process tests, test_client_malformed and test_client_reply_fuzz: the
class and skip-name patterns sent or matched here, the types, a pattern that cannot be
encoded, the retries of a request kstatd answers EAGAIN as a whole, and the old server's
selection done here (its filter of NAMED records, its prev_snaptime).

The chain is tests/cli_chain.py's, read in-process (kstatd's own dispatch code) or
through a kstatd in this process on a real socket (``KstatCtl.wire``: what the client
sends is packed, what it gets is checked).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from cli_chain import build_chain
from test_client_malformed import GOOD_ID
from test_client_malformed import KSTAT
from test_client_malformed import scripted
from test_hostile_server import fake_kstatd

from kstatpy.chain import Chain
from kstatpy.client import KstatCtl
from kstatpy.client import kstat_open
from kstatpy.client import kstat_open_chain
from kstatpy.client_select import STUCK_RETRIES
from kstatpy.client_select import ioctl_past_stuck
from kstatpy.constants import KstatDataType as D
from kstatpy.constants import KstatType as T
from kstatpy.errors import KstatError
from kstatpy.errors import ProtocolError
from kstatpy.ioctl import IoctlHandler
from kstatpy.kstat import kstat_named_init
from kstatpy.server import Kstatd
from kstatpy.server import ServerConfig

SELECT = 0x4B12
REPO = Path(__file__).resolve().parent.parent


def seen(out: list[tuple[int, Any, int]]) -> list[tuple[int, str, int, str, str, list[str] | None]]:
    return [(c, k.ks_module, k.ks_instance, k.ks_name, k.ks_class,
             None if k.ks_data is None else [getattr(r, "name", "") for r in k.ks_data]) for c, k, _ in out]  # fmt: skip


@pytest.fixture
def chain() -> Chain:
    return build_chain(Chain())


@pytest.fixture
def kc(chain: Chain) -> KstatCtl:
    return kstat_open_chain(chain, read_chain=False)


@pytest.fixture
def wire(tmp_path: Path, chain: Chain) -> Iterator[KstatCtl]:
    # A kstatd in this process on a real socket, over the same chain.
    kd = Kstatd(chain, None, ServerConfig(socket=str(tmp_path / "k.sock"), priv_sockets=False, deadman_seconds=0))
    kd.start()
    try:
        kc = kstat_open(kd.config.socket, timeout=30, read_chain=False)
        try:
            assert kc.wire
            yield kc
        finally:
            kc.close()
    finally:
        kd.stop()
        kd.shutdown(grace=1.0)


class Counting:
    """A KstatCtl's own ioctl, counted by command (what the client sent)."""

    def __init__(self, kc: KstatCtl) -> None:
        self.ioctl = kc.kc_kd.ioctl
        self.sent: list[tuple[int, Any]] = []
        kc.kc_kd.ioctl = self  # type: ignore[method-assign]

    def __call__(self, cmd: int, arg: Any = None) -> Any:
        self.sent.append((cmd, arg))
        return self.ioctl(cmd, arg)

    def cmds(self) -> list[int]:
        return [c for c, _ in self.sent]


# --- what is sent, and when the client selects by itself ------------------------------------


def test_a_class_glob_goes_to_kstatd_and_a_class_regex_is_matched_here(chain: Chain) -> None:
    classes = {k.ks_class for k in chain.kstats() if k.ks_kid}
    assert "misc" in classes and len(classes) > 1  # something for the class to leave out
    by_glob = kstat_open_chain(chain, read_chain=False)
    sent = Counting(by_glob)
    got = seen(by_glob.select([["*"]], ks_class="misc"))
    assert sent.sent[0] == (SELECT, {"selectors": [["*"]], "class": "misc"})
    assert not by_glob.kc_chain and got and {g[4] for g in got} == {"misc"}
    every = kstat_open_chain(chain, read_chain=False)
    sent = Counting(every)
    assert len(every.select([["*"]])) > len(got)
    assert sent.sent == [(SELECT, {"selectors": [["*"]]})]  # "*" is not sent: it is the default
    by_regex = kstat_open_chain(chain, read_chain=False)
    sent = Counting(by_regex)
    assert seen(by_regex.select([["*"]], ks_class="/^misc$/")) == got
    assert SELECT not in sent.cmds() and by_regex.kc_chain  # selected here, from the chain
    # A class that sorts before "*" goes too; only "*" itself is left out.
    odd = chain.kstat_create("odd", 0, "one", "!odd", T.NAMED, 1)
    kstat_named_init(odd.ks_data[0], "v", D.UINT32)
    chain.kstat_install(odd)
    kc = kstat_open_chain(chain, read_chain=False)
    sent = Counting(kc)
    assert [k.ks_module for _, k, _ in kc.select([["*"]], ks_class="!odd")] == ["odd"]
    assert sent.sent == [(SELECT, {"selectors": [["*"]], "class": "!odd"})]


def test_a_skip_name_glob_goes_to_kstatd_and_a_skip_name_regex_is_matched_here(chain: Chain) -> None:
    by_glob = kstat_open_chain(chain, read_chain=False)
    sent = Counting(by_glob)
    want = seen(by_glob.select([["unix"]], skip_name="kstat_*"))
    assert [w[3] for w in want] == ["system_misc"]
    assert sent.sent == [(SELECT, {"selectors": [["unix"]], "skip_name": "kstat_*"})]
    by_regex = kstat_open_chain(chain, read_chain=False)
    sent = Counting(by_regex)
    assert seen(by_regex.select([["unix"]], skip_name="/^kstat_/")) == want
    assert SELECT not in sent.cmds() and by_regex.kc_chain


def test_types_go_sorted_and_the_client_applies_them_when_it_selects(chain: Chain) -> None:
    # Plain ints, as they come off the wire (kstatd refuses a type that is not an int).
    NAMED, RAW, INTR, IO, TIMER = (int(t) for t in (T.NAMED, T.RAW, T.INTR, T.IO, T.TIMER))
    kc = kstat_open_chain(chain, read_chain=False)
    sent = Counting(kc)
    named = seen(kc.select([["*"]], types={NAMED}))
    assert named and all(chain.kstat_lookup_name(m, i, n).ks_type == NAMED for _, m, i, n, _, _ in named)
    assert sent.sent == [(SELECT, {"selectors": [["*"]], "types": [NAMED]})]
    others = seen(kc.select([["*"]], types=(t for t in (TIMER, IO, RAW, INTR))))
    assert others and not {o[1:4] for o in others} & {n[1:4] for n in named}
    assert sent.sent[1] == (SELECT, {"selectors": [["*"]], "types": [RAW, INTR, IO, TIMER]})
    # A regex makes the client select: the same types, from a set or a generator.
    local = kstat_open_chain(chain, read_chain=False)
    assert seen(local.select([["/./"]], types={NAMED})) == named
    assert seen(local.select([["/./"]], types=(t for t in (TIMER, IO, RAW, INTR)))) == others
    assert len(local.select([["/./"]])) == len(named) + len(others)  # no types: every type


def test_the_old_servers_path_filters_named_records_and_keeps_prev_snaptime(kc: KstatCtl) -> None:
    chain: Chain = kc.kc_kd.handler.chain
    handler: IoctlHandler = kc.kc_kd.handler
    del handler._table[SELECT]  # a version-1 server from before SELECT: EINVAL, no regerror
    sm = chain.kstat_lookup_name("unix", 0, "system_misc")
    sm.ks_snaptime = 42
    out = kc.select([["unix", "0", "system_misc", "avenrun*"], ["strs"]])
    assert [(c, k.ks_name, p) for c, k, p in out] == [(0, "system_misc", 42), (0, "strings", out[1][2])]
    assert [r.name for r in out[0][1].ks_data] == ["avenrun_1min", "avenrun_5min", "avenrun_15min"]
    assert len(out[1][1].ks_data) == out[1][1].ks_ndata  # no statistic pattern: every record
    assert out[0][1].ks_snaptime > 42  # read now; prev is the chain's before the read
    # A selection that keeps nothing reads nothing.
    assert kc.select([["nosuch"]]) == []


def test_a_failed_read_after_a_read_one_is_not_asked_again(chain: Chain) -> None:
    # Only E2BIG past the reply budget means "not read yet" (docs/PROTOCOL.md §9.4); every
    # other errno of an entry is its answer: no READ_MANY for it, its snaptime as prev.
    codes = [errno.EIO, errno.E2BIG + 1, errno.EAGAIN, errno.ENOMEM, errno.EACCES]
    for code in codes:
        ksp = chain.kstat_create("zfail", 0, f"e{code}", "misc", T.NAMED, 1)
        kstat_named_init(ksp.ks_data[0], "v", D.UINT32)
        ksp.ks_update = lambda k, rw, code=code: code
        chain.kstat_install(ksp)
        ksp.ks_snaptime = 1000 + code
    kc = kstat_open_chain(chain, read_chain=False)
    sent = Counting(kc)
    out = kc.select([["unix", "0", "system_misc", "ncpus"], ["zfail"]])
    assert [(c, k.ks_name, p) for c, k, p in out[1:]] == [(c, f"e{c}", 1000 + c) for c in codes]
    assert out[0][0] == 0 and sent.cmds() == [SELECT]


def test_entries_past_the_reply_budget_keep_their_prev_snaptime(kc: KstatCtl) -> None:
    # Entries kstatd left unread (E2BIG past --max-reply) are read with READ_MANY; their
    # prev_snaptime is still the one SELECT listed (the snaptime before this read).
    chain: Chain = kc.kc_kd.handler.chain
    handler: IoctlHandler = kc.kc_kd.handler
    handler.max_reply = 1  # every entry after the first is over budget
    cases = [k for k in chain.kstats() if k.ks_module == "case"]
    for i, k in enumerate(cases):
        k.ks_snaptime = 500 + i
    sent = Counting(kc)
    out = kc.select([["case"]])
    assert [(c, k.ks_instance, p) for c, k, p in out] == [(0, k.ks_instance, 500 + i) for i, k in enumerate(cases)]
    assert all(k.ks_snaptime > 1000 for _, k, _ in out)  # each read now
    assert sent.cmds()[0] == SELECT and set(sent.cmds()[1:]) == {0x4B11}  # the rest: READ_MANY (one a batch here)


def test_importing_client_select_imports_no_typing() -> None:
    # It is on the kstat command's start-up path (tests/test_startup.py): its imports for
    # annotations only stay behind TYPE_CHECKING, which is False at run time.
    env = {"PYTHONPATH": os.pathsep.join([str(REPO), os.path.dirname(os.path.dirname(msgpack.__file__))])}
    probe = "import sys, kstatpy.client_select; print(sorted(m for m in ('typing', 're', 'enum') if m in sys.modules))"
    got = subprocess.run([sys.executable, "-S", "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert (got.returncode, got.stdout, got.stderr) == (0, "[]\n", "")


# --- on the wire --------------------------------------------------------------------------


def test_a_pattern_that_cannot_be_encoded_is_selected_here(wire: KstatCtl) -> None:
    # "\udcff": a byte of a non-UTF-8 argument (surrogateescape); it matches no name kstatd
    # has, and it cannot be packed: the client selects by itself, over the chain it reads.
    assert wire.select([["unix", "0", "\udcff"]]) == []
    assert wire.kc_chain  # read the chain to select
    got = wire.select([["unix", "0", "system_misc", "ncpus"], ["\udcff"]])
    assert [(c, k.ks_name, [r.name for r in k.ks_data]) for c, k, _ in got] == [(0, "system_misc", ["ncpus"])]


def test_a_select_on_the_wire_is_checked_and_filled(wire: KstatCtl) -> None:
    out = wire.select([["unix", "0", "system_misc", "n*"], ["case"]])
    assert [(c, k.ks_module, k.ks_instance, [r.name for r in k.ks_data]) for c, k, _ in out] == [
        (0, "unix", 0, ["ncpus", "nproc"]), (0, "case", 1, ["b"]), (0, "case", 0, ["c"]),
        (0, "case", 10, ["d"]), (0, "case", 2, ["Stat", "stat", "STAT"]),
    ]  # fmt: skip
    assert all(type(p) is int for _, _, p in out) and not wire.kc_chain


def test_a_select_reply_without_an_int_kcid_is_a_protocol_error(tmp_path: Path) -> None:
    # As every other reply off a socket (test_client_malformed): the kcid is checked too.
    for i, kcid in enumerate(("1", None, [1])):
        replies = [GOOD_ID, (0, {"kcid": kcid, "results": [[0, {**KSTAT, "prev_snaptime": 1}]]})]
        (tmp_path / str(i)).mkdir()
        with fake_kstatd(tmp_path / str(i), scripted(replies)) as path:
            kc = kstat_open(path, read_chain=False)
            try:
                with pytest.raises(ProtocolError) as info:
                    kc.select([["test"]])
            finally:
                kc.close()
        assert info.value.errno == errno.EPROTO and "SELECT" in info.value.message and "kcid" in info.value.message
    with fake_kstatd(
        tmp_path, scripted([GOOD_ID, (0, {"kcid": 1, "results": [[0, {**KSTAT, "prev_snaptime": 1}]]})])
    ) as path:
        kc = kstat_open(path, read_chain=False)
        try:
            assert [(c, k.ks_name, p) for c, k, p in kc.select([["test"]])] == [(0, "n", 1)]
        finally:
            kc.close()


# --- retries past a stuck kstat -----------------------------------------------------------


def _stuck(kc: KstatCtl, times: int, code: int = errno.EAGAIN) -> list[int]:
    # The first `times` requests are answered `code` as a whole, as kstatd answers EAGAIN
    # when a ks_update passed --read-timeout; then kstatd's own answer.
    calls: list[int] = []
    real = kc.kc_kd.ioctl

    def ioctl(cmd: int, arg: Any = None) -> Any:
        calls.append(cmd)
        if len(calls) <= times:
            raise KstatError(code, "kid 9: ks_update has not returned after 1.0 s (kstatd --read-timeout)")
        return real(cmd, arg)

    kc.kc_kd.ioctl = ioctl  # type: ignore[method-assign]
    return calls


def test_a_whole_request_eagain_is_asked_again_at_most_stuck_retries_times(chain: Chain) -> None:
    assert STUCK_RETRIES == 16
    kc = kstat_open_chain(chain, read_chain=False)
    calls = _stuck(kc, STUCK_RETRIES)
    assert [k.ks_name for _, k, _ in kc.select([["unix", "0", "system_misc"]])] == ["system_misc"]
    assert calls == [SELECT] * (STUCK_RETRIES + 1)
    kc = kstat_open_chain(chain, read_chain=False)
    calls = _stuck(kc, STUCK_RETRIES + 1)
    with pytest.raises(KstatError) as info:
        kc.select([["unix", "0", "system_misc"]])
    assert info.value.errno == errno.EAGAIN and calls == [SELECT] * (STUCK_RETRIES + 1)
    # Another errno is not asked again.
    for code in (errno.EIO, errno.ENXIO, errno.EBUSY, errno.EPROTO, errno.ETIMEDOUT):
        kc = kstat_open_chain(chain, read_chain=False)
        calls = _stuck(kc, 1, code)
        with pytest.raises(KstatError) as info:
            kc.select([["unix"]])
        assert info.value.errno == code and calls == [SELECT]
    # The function itself: the result of the call that got through.
    tries: list[int] = []

    def ioctl(cmd: int, arg: Any) -> dict[str, Any]:
        tries.append(cmd)
        if len(tries) < 3:
            raise KstatError(errno.EAGAIN)
        return {"cmd": cmd, "arg": arg}

    assert ioctl_past_stuck(ioctl, 0x4B11, {"kids": [1]}) == {"cmd": 0x4B11, "arg": {"kids": [1]}} and len(tries) == 3
