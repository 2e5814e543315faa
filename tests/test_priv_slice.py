"""kstatd asks the kernel for a short time slice for the threads serving its privileged
sockets (kstatpy.sched_slice, ``kstatd --priv-slice``; issue 21, RELIABILITY.md).

The slice a thread runs with is read from the kernel (``se.slice`` in
``/proc/PID/task/TID/sched``), so these tests see what the scheduler sees. They need a
kernel that keeps custom slices (Linux 6.12 and later); on an older one, the tests check
instead that kstatd says so in one log line and serves as before.
"""

from __future__ import annotations

import os
import socket
import threading

import msgpack
import pytest
from bounded import poll

from kstatpy.sched_slice import MIN_SLICE_NS
from kstatpy.sched_slice import request_slice
from tests.bounded import within
from tests.kstatd_fixture import HELLO
from tests.kstatd_fixture import read_reply
from tests.kstatd_fixture import running_kstatd

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="kstatd serves privileged sockets only as root")


def _own_slice() -> int:
    with open("/proc/thread-self/sched") as f:
        return next(int(line.split(":")[1]) for line in f if line.startswith("se.slice"))


def _kernel_keeps_slices() -> bool:
    box: list[bool] = []
    t = threading.Thread(target=lambda: box.append(request_slice(MIN_SLICE_NS)[0]))  # a thread of its own
    t.start()
    t.join(10)
    return bool(box and box[0])


KEEPS = _kernel_keeps_slices()


def slices(pid: int) -> dict[int, int]:
    """tid -> the kernel's slice of that thread of ``pid`` (ns)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/sched") as f:
                text = f.read()
        except (FileNotFoundError, ProcessLookupError):  # the thread ended meanwhile
            continue
        for line in text.splitlines():
            if line.startswith("se.slice"):
                out[int(tid)] = int(line.split(":")[1])
    return out


def connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(path)
    body = msgpack.packb([HELLO, 1, {"protocol": 1}], use_bin_type=True)
    s.sendall(len(body).to_bytes(4, "big") + body)
    assert read_reply(s)[1] == 0  # answered: its session thread is running
    return s


def test_request_slice_sets_the_calling_threads_slice_within_the_kernels_bounds():
    def ask(ns: int) -> tuple[tuple[bool, str], int]:
        return request_slice(ns), _own_slice()

    def in_thread(ns: int):
        box: list = []
        t = threading.Thread(target=lambda: box.append(ask(ns)))
        t.start()
        within(10, "a thread asking for a slice", t.join)
        return box[0]

    before = _own_slice()
    if not KEEPS:
        (ok, why), now = in_thread(250_000)
        assert not ok and "6.12" in why and now == before
        return
    assert in_thread(250_000) == ((True, ""), 250_000)
    assert in_thread(50) == ((True, ""), MIN_SLICE_NS)  # raised to the kernel's least
    assert _own_slice() == before  # only the asking thread's changed


def _short(pid: int, ns: int = 100_000) -> list[int]:
    return sorted(t for t, v in slices(pid).items() if v == ns)


def test_kstatd_gives_its_privileged_threads_the_short_slice_and_no_other(tmp_path):
    with running_kstatd(tmp_path, args=["-v"]) as kd:
        pid = kd.proc.pid
        before = slices(pid)
        default = max(set(before.values()), key=list(before.values()).count)
        with connect(str(tmp_path / "priv" / "kstat.sock")) as root_conn:
            if not KEEPS:  # an old kernel: nothing changes, and kstatd says why once
                assert set(slices(pid).values()) == {default}
                for _ in range(3):
                    connect(str(tmp_path / "priv" / "kstat.sock")).close()
                kd.stop()
                assert kd.stderr.count("--priv-slice:") == 1, kd.stderr
                return
            assert default != 100_000
            # The privileged acceptor and this connection's session: 0.1 ms (the default --priv-slice).
            poll("two threads at 0.1 ms", lambda: len(_short(pid)) == 2)
            short = _short(pid)
            mid = slices(pid)
            with connect(kd.socket):  # a public session: a new thread at the default slice
                # Its thread starts after connect() returns (and a start-up thread may have
                # ended meanwhile): wait for a thread that was not there before.
                def with_public() -> dict[int, int]:
                    now = slices(pid)
                    return now if set(now) - set(mid) else {}

                now = poll("the public session's thread", with_public)
                assert sorted(t for t, v in now.items() if v == 100_000) == short
                assert {now[t] for t in set(now) - set(mid)} == {default} and set(now.values()) == {default, 100_000}
            root_conn.close()
            # The session's thread ends with its connection; the acceptor keeps its slice.
            poll("the privileged session's thread to end", lambda: len(_short(pid)) == 1)
        assert "--priv-slice" not in kd.stderr


@pytest.mark.parametrize(("value", "ns"), [("0", None), ("0.002", 2_000_000)])
def test_priv_slice_option(tmp_path, value, ns):
    with running_kstatd(tmp_path, args=["--priv-slice", value]) as kd:
        before = slices(kd.proc.pid)
        default = max(set(before.values()), key=list(before.values()).count)
        with connect(str(tmp_path / "priv" / "kstat.sock")):
            now = slices(kd.proc.pid)
            if ns is None or not KEEPS:  # 0: every thread keeps the kernel's default
                assert set(now.values()) == {default}
            else:
                assert sorted(now.values()).count(ns) == 2 and set(now.values()) == {default, ns}
