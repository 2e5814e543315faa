"""Issue 13, fault 10: tests for the bugs a mutation audit planted and the suite missed,
and a bound on every client retry loop (a hostile or broken server cannot spin a client).
"""

from __future__ import annotations

import errno
import socket
import struct
import threading

import msgpack
import pytest
from chain_io import chain_write

from kstatpy import constants as c
from kstatpy.chain import Chain
from kstatpy.client import RESIZE_RETRIES
from kstatpy.client import KstatUser
from kstatpy.errors import KstatError
from kstatpy.kmem import Kmem
from kstatpy.kmem import KmemObject
from kstatpy.kstat import kstat_named_init


def test_driver_refuses_writes_to_a_non_writable_kstat_with_its_own_snapshot(chain: Chain) -> None:
    # Mutation 1: dropping the WRITABLE check. A kstat with its own ks_snapshot would
    # then accept the write (the default snapshot refuses on its own).
    ksp = chain.kstat_create("test", 0, "own_snapshot", "misc", c.KSTAT_TYPE_NAMED, 1, 0)
    kstat_named_init(ksp.ks_data[0], "value", c.KSTAT_DATA_UINT64)
    writes = []

    def snapshot(k, buf, rw):
        if rw == c.KSTAT_WRITE:
            writes.append(buf.data)
            return 0
        buf.data = [["value", c.KSTAT_DATA_UINT64, 7]]
        return 0

    ksp.ks_snapshot = snapshot
    chain.kstat_install(ksp)
    with pytest.raises(KstatError) as info:
        chain_write(chain, ksp.ks_kid, 1, [["value", c.KSTAT_DATA_UINT64, 8]])
    assert info.value.errno == errno.EACCES
    assert writes == []


class Buf(KmemObject):
    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n


def allocating_function(kmem: Kmem) -> Buf:
    return kmem.zalloc(Buf, 1)


def freeing_function(kmem: Kmem, buf: Buf) -> None:
    kmem.free(buf)


def test_whatis_of_a_freed_buffer_prints_the_freeing_stack() -> None:
    # Mutation 2: ::whatis printing the allocating stack for a freed buffer.
    kmem = Kmem()
    buf = allocating_function(kmem)
    addr = buf.kmem_addr
    assert "allocating_function+0x" in kmem.whatis(addr)
    freeing_function(kmem, buf)
    text = kmem.whatis(addr)
    assert "freed from" in text and " FREE " in text
    assert "freeing_function+0x" in text
    assert "allocating_function" not in text


# --- client retry loops against a server that never gives up ----------------------------


class StubbornServer:
    """A socket server answering every request with the same (errno, result)."""

    def __init__(self, path: str, code: int, result) -> None:
        self.count = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(4)
        self.code, self.result = code, result
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            while True:
                hdr = conn.recv(4, socket.MSG_WAITALL)
                if len(hdr) < 4:
                    return
                _cmd, seq, arg = msgpack.unpackb(conn.recv(struct.unpack(">I", hdr)[0], socket.MSG_WAITALL))
                self.count += 1
                result = self.result(arg) if callable(self.result) else self.result
                body = msgpack.packb([seq, self.code, result], use_bin_type=True)
                conn.sendall(struct.pack(">I", len(body)) + body)

    def close(self) -> None:
        self.sock.close()


def test_enomem_resize_loop_is_bounded(tmp_path) -> None:
    extra = {"error": "too small", "data_size": 4096, "flags": c.KSTAT_FLAG_VAR_SIZE, "ndata": 1, "snaptime": 1}
    srv = StubbornServer(str(tmp_path / "s.sock"), errno.ENOMEM, extra)
    from kstatpy.client import KstatCtl
    from kstatpy.transport import SocketTransport

    kc = KstatCtl(SocketTransport(str(tmp_path / "s.sock"), timeout=10))
    ksp = KstatUser({"kid": 5, "module": "m", "instance": 0, "name": "n", "class": "c", "type": 0,
                     "flags": c.KSTAT_FLAG_VAR_SIZE, "ndata": 1, "data_size": 16, "crtime": 0, "snaptime": 0})  # fmt: skip
    with pytest.raises(KstatError) as info:
        kc.read(ksp, data_size=16)
    assert info.value.errno == errno.ENOMEM
    assert srv.count == RESIZE_RETRIES + 1
    kc.close()
    srv.close()


def test_eagain_retry_is_bounded_by_the_timeout(tmp_path) -> None:
    srv = StubbornServer(str(tmp_path / "s.sock"), errno.EAGAIN, {"error": "busy"})
    from kstatpy.client import KstatCtl
    from kstatpy.transport import SocketTransport

    kc = KstatCtl(SocketTransport(str(tmp_path / "s.sock"), timeout=10))
    ksp = KstatUser({"kid": 5, "module": "m", "instance": 0, "name": "n", "class": "c", "type": 1,
                     "flags": 0, "ndata": 1, "data_size": 16, "crtime": 0, "snaptime": 0})  # fmt: skip
    with pytest.raises(KstatError) as info:
        kc.read(ksp, timeout=0.3)
    assert info.value.errno == errno.EAGAIN and 2 <= srv.count <= 5
    with pytest.raises(KstatError):
        kc.write(ksp, timeout=0.3)
    kc.close()
    srv.close()


def test_read_many_without_progress_ends(tmp_path) -> None:
    # A server answering E2BIG for every entry (no progress) must not loop the client:
    # each round settles at least its first entry.
    def all_e2big(arg):
        return {"kcid": 1, "results": [[errno.E2BIG, None]] * len(arg["kids"])}

    srv = StubbornServer(str(tmp_path / "s.sock"), 0, all_e2big)
    from kstatpy.client import KstatCtl
    from kstatpy.transport import SocketTransport

    kc = KstatCtl(SocketTransport(str(tmp_path / "s.sock"), timeout=10))
    ksps = [KstatUser({"kid": k, "module": "m", "instance": 0, "name": "n", "class": "c", "type": 1,
                       "flags": 0, "ndata": 1, "data_size": 16, "crtime": 0, "snaptime": 0}) for k in (5, 6, 7)]  # fmt: skip
    got = kc.read_many(ksps)
    assert [code for code, _ in got] == [errno.E2BIG] * 3 and srv.count == 3
    kc.close()
    srv.close()


def test_the_suite_has_a_per_test_timeout(pytestconfig: pytest.Config) -> None:
    # pytest-timeout from the test extra, with pyproject's ini `timeout`: a hang fails.
    assert pytestconfig.pluginmanager.hasplugin("timeout")
    assert 0 < float(pytestconfig.getini("timeout")) <= 600
