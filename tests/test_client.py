"""kstatpy.client: the libkstat contract (illumos `lib/libkstat`, kstat_read(3KSTAT)) over both transports."""

from __future__ import annotations

import errno
import subprocess
import sys
import threading

import pytest

from kstatpy.chain import Chain
from kstatpy.client import KstatNamedRecord
from kstatpy.client import KstatUser
from kstatpy.client import kstat_open
from kstatpy.client import kstat_open_chain
from kstatpy.client import named_triples
from kstatpy.constants import KSTAT_DATA_UINT64
from kstatpy.constants import KSTAT_TYPE_NAMED
from kstatpy.errors import KstatError
from kstatpy.errors import KstatNotFoundError
from kstatpy.errors import ServerUnavailableError
from kstatpy.plugins import load_providers
from kstatpy.records import kstat_named_init
from tests.kstatd_fixture import running_kstatd

BASIC = "tests.providers_fixture.basic"


@pytest.fixture(scope="module")
def kd(tmp_path_factory):
    with running_kstatd(tmp_path_factory.mktemp("kstatd"), plugins=[BASIC]) as kd:
        yield kd


@pytest.fixture
def kc(kd):
    with kstat_open(kd.socket) as kc:
        yield kc


def counter(chain, name, value=0):
    ksp = chain.kstat_create("cl", 0, name, "misc", KSTAT_TYPE_NAMED, 1, 0)
    kstat_named_init(ksp.ks_data[0], "v", KSTAT_DATA_UINT64)
    ksp.ks_data[0].value = value
    chain.kstat_install(ksp)
    return ksp


def test_import_is_light():
    code = (
        "import sys, kstatpy.client; print(sorted(m for m in sys.modules if m.split('.')[0] in ('pluggy', 'kstatpy')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout
    assert "pluggy" not in out and "kstatpy.chain" not in out and "kstatpy.kmem" not in out, out


def test_open_errors(tmp_path, monkeypatch):
    with pytest.raises(ServerUnavailableError) as ei:
        kstat_open(str(tmp_path / "nothing.sock"))
    assert ei.value.errno == errno.ENOENT and "nothing.sock" in ei.value.message
    monkeypatch.setenv("KSTAT_SOCKET", str(tmp_path / "env.sock"))
    with pytest.raises(ServerUnavailableError) as ei:
        kstat_open()
    assert "env.sock" in ei.value.message


def test_env_socket_is_used(kd, monkeypatch):
    monkeypatch.setenv("KSTAT_SOCKET", kd.socket)
    with kstat_open() as kc:
        assert kc.hello()["protocol"] == 1


def test_chain_update_semantics():
    chain = Chain()
    a, b = counter(chain, "a"), counter(chain, "b")
    kc = kstat_open_chain(chain)
    assert kc.kc_chain_id == chain.chain_id
    assert kc.chain_update() == 0  # unchanged
    old = {k.ks_name: k for k in kc.kc_chain}
    kc.read(old["a"])
    chain.kstat_delete(b)
    counter(chain, "c")
    kcid = kc.chain_update()
    assert kcid == chain.chain_id == kc.kc_chain_id
    names = [k.ks_name for k in kc.kc_chain]
    assert "b" not in names and "c" in names
    assert [k.ks_kid for k in kc.kc_chain] == sorted(k.ks_kid for k in kc.kc_chain)
    assert kc.lookup("cl", 0, "a") is old["a"]  # a survivor is the same object, data kept
    assert old["a"].ks_data is not None
    assert kc.lookup("cl", 0, "c").ks_data is None
    assert kc.chain_update() == 0
    del a


def test_refresh_is_called_before_chain_id_queries():
    chain = Chain()
    calls = []
    kc = kstat_open_chain(chain, refresh=lambda: calls.append(1))
    n = len(calls)
    assert n >= 1
    kc.chain_update()
    assert len(calls) == n + 1


def test_lookup_wildcards(kc):
    first_test = next(k for k in kc.kc_chain if k.ks_module == "test")
    assert kc.lookup("test") is first_test
    assert kc.lookup("test", 0) is first_test
    assert kc.lookup(None, -1, "raw").ks_module == "test"
    assert kc.lookup(None, 0, "kstat_headers").ks_kid == 0
    assert kc.lookup().ks_kid == 0
    with pytest.raises(KstatNotFoundError) as ei:
        kc.lookup("test", 1)
    assert ei.value.errno == errno.ENOENT
    with pytest.raises(KstatNotFoundError):
        kc.lookup("nope", -1, None)


def test_read_fills_data_and_header(kc):
    ksp = kc.lookup("test", 0, "named")
    assert ksp.ks_data is None
    kcid = kc.read(ksp)
    assert kcid == kc.kc_chain_id
    assert ksp.data_lookup("u64").value == 2**64 - 1 or ksp.data_lookup("u64").data_type == 4
    assert ksp.ks_ndata == 3 and ksp.ks_data_size == 144 and ksp.ks_snaptime >= ksp.ks_crtime
    strings = kc.lookup("test", 0, "strings")
    kc.read(strings)
    assert strings.data_lookup("s").value == "h\u00e9llo \u2603"
    timer = kc.lookup("test", 0, "timer")
    kc.read(timer)
    assert timer.data_lookup("t1")["name"] == "t1"


def test_data_lookup_errors(kc):
    named = kc.lookup("test", 0, "strings")
    with pytest.raises(KstatNotFoundError) as ei:
        named.data_lookup("s")  # not read yet
    assert ei.value.errno == errno.ENOENT
    kc.read(named)
    with pytest.raises(KstatNotFoundError):
        named.data_lookup("absent")
    raw = kc.lookup("test", 0, "raw")
    kc.read(raw)
    for ksp in (raw, kc.lookup("test", 0, "intr")):
        with pytest.raises(KstatError) as ei:
            ksp.data_lookup("hard")
        assert ei.value.errno == errno.EINVAL


def test_read_errors(kc):
    with pytest.raises(KstatError) as ei:
        kc.read(kc.lookup("test", 0, "upderr"))
    assert ei.value.errno == errno.ENOTTY
    ghost = KstatUser({**_hdr(kc.lookup("test", 0, "raw")), "kid": 999999})
    with pytest.raises(KstatNotFoundError) as ei:
        kc.read(ghost)
    assert ei.value.errno == errno.ENXIO
    invalid = KstatUser({**_hdr(kc.lookup("test", 0, "timer")), "kid": kc.lookup("test", 0, "timer").ks_kid + 1})
    with pytest.raises(KstatError) as ei:
        kc.read(invalid, timeout=0.25)  # EAGAIN is retried, but not forever
    assert ei.value.errno == errno.EAGAIN


def _hdr(ksp):
    return {
        "kid": ksp.ks_kid, "module": ksp.ks_module, "instance": ksp.ks_instance, "name": ksp.ks_name,
        "class": ksp.ks_class, "type": ksp.ks_type, "flags": ksp.ks_flags, "ndata": ksp.ks_ndata,
        "data_size": ksp.ks_data_size, "crtime": ksp.ks_crtime, "snaptime": ksp.ks_snaptime,
    }  # fmt: skip


def test_read_data_size_and_the_enomem_dance(kc):
    headers = KstatUser(_hdr(kc.lookup(None, -1, "kstat_headers")))
    kc.read(headers, data_size=0)  # VAR_SIZE: ENOMEM, then the size the driver reported
    assert len(headers.ks_data) == headers.ks_ndata == len(kc.kc_chain)
    named = kc.lookup("test", 0, "named")
    with pytest.raises(KstatError) as ei:
        kc.read(named, data_size=10)  # not VAR_SIZE: ENOMEM is the answer
    assert ei.value.errno == errno.ENOMEM and ei.value.extra["data_size"] == 144
    assert named.ks_data_size == 144


def test_named_records_are_built_on_access_and_kept(kc):
    # KstatNamedData: the record objects a caller touches are built once and kept,
    # so an edit through ks_data[i], an iteration or data_lookup is what write sends.
    ksp = kc.lookup("test", 0, "named")
    kc.read(ksp)
    data = ksp.ks_data
    wire = [[r.name, r.data_type, r.value] for r in data]
    assert len(data) == ksp.ks_ndata == len(wire) and data == [KstatNamedRecord(*w) for w in wire]
    assert [tuple(w) for w in wire] == data.triples() == named_triples(data)
    i = [w[0] for w in wire].index("u64")
    assert data[i] is ksp.data_lookup("u64") is data[i - len(data)] is list(data)[i] is data[:][i]
    with pytest.raises(IndexError):
        data[len(data)]
    data[i].value = 11
    assert data.triples()[i] == ("u64", wire[i][1], 11) and ksp.wire_data()[i] == ["u64", wire[i][1], 11]
    assert kc.write(ksp) == kc.kc_chain_id
    kc.read(ksp)
    assert ksp.data_lookup("u64").value == 11 and ksp.ks_data is not data
    ksp.data_lookup("u64").value = wire[i][2]  # leave the module's kstatd as found
    kc.write(ksp)


def test_write(kc):
    ksp = kc.lookup("test", 0, "named")
    kc.read(ksp)
    ksp.data_lookup("u64").value = 7
    ksp.data_lookup("ch").value = b"q"
    assert kc.write(ksp) == kc.kc_chain_id
    ksp.ks_data = None
    kc.read(ksp)
    assert (ksp.data_lookup("u64").value, ksp.data_lookup("ch").value) == (7, b"q")
    ksp.data_lookup("u64").value = -1
    with pytest.raises(KstatError) as ei:
        kc.write(ksp)
    assert ei.value.errno == errno.EINVAL
    strings = kc.lookup("test", 0, "strings")
    kc.read(strings)
    with pytest.raises(KstatError) as ei:
        kc.write(strings)
    assert ei.value.errno == errno.EACCES


def test_read_many_batches(kc):
    ksps = [kc.lookup("test", 0, n) for n in ("raw", "intr", "upderr")]
    out = kc.read_many(ksps)
    assert [(c, k) for c, k in out] == [(0, ksps[0]), (0, ksps[1]), (errno.ENOTTY, ksps[2])]
    assert ksps[0].ks_data == bytes(range(16)) and ksps[1].ks_data["hard"] == 1
    req = kc.lookup("kstatpy", 0, "requests")
    kc.read(req)
    before = req.data_lookup("read_many").value
    ghost = KstatUser({**_hdr(ksps[0]), "kid": 999999})
    out = kc.read_many([ghost] * 70000)  # more than one request's worth
    assert len(out) == 70000 and {c for c, _ in out} == {errno.ENXIO}
    kc.read(req)
    assert req.data_lookup("read_many").value == before + 2


def test_threads_share_one_handle(kc):
    names = ("named", "strings", "raw", "intr", "io", "timer")
    ksps = {n: kc.lookup("test", 0, n) for n in names}
    expected = {}
    for n, ksp in ksps.items():
        kc.read(ksp)
        expected[n] = _plain(ksp.ks_data)
    barrier = threading.Barrier(16, timeout=60)
    errors = []

    def worker(i):
        try:
            barrier.wait()  # bounded: Barrier(timeout=60)
            for j in range(60):
                n = names[(i + j) % len(names)]
                mine = KstatUser(_hdr(ksps[n]))
                kc.read(mine)
                if n not in ("io", "named"):
                    assert _plain(mine.ks_data) == expected[n], n
                if j % 20 == 0:
                    kc.chain_update()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]


def _plain(data):
    if isinstance(data, list):
        return [_plain(x) for x in data]
    if hasattr(data, "name") and hasattr(data, "value"):
        return [data.name, data.data_type, data.value]
    return data


def test_in_process_transport_matches_the_socket(kd):
    chain = Chain()
    providers = load_providers(autoload=False, modules=[BASIC])
    assert not providers.attach(chain)
    local = kstat_open_chain(chain, providers=providers)
    remote = kstat_open(kd.socket)
    try:

        def view(kc):
            out = []
            for ksp in kc.kc_chain:
                if ksp.ks_module == "kstatpy" or ksp.ks_name in ("conns",):
                    continue
                try:
                    kc.read(ksp)
                    data = _plain(ksp.ks_data)
                    code = 0
                except KstatError as exc:
                    data, code = None, exc.errno
                size = (ksp.ks_ndata, ksp.ks_data_size)
                if ksp.ks_kid == 0:  # kstatd also lists its own kstatpy:0:* kstats
                    data = [
                        {k: v for k, v in h.items() if k not in ("crtime", "snaptime")}
                        for h in data[1:]
                        if h["module"] != "kstatpy"
                    ]
                    size = None
                if ksp.ks_name == "io":
                    data = {k: v for k, v in data.items() if "time" not in k and "update" not in k}
                if ksp.ks_name == "named":
                    data = None  # other tests write it
                out.append((ksp.ks_kid, ksp.ks_module, ksp.ks_instance, ksp.ks_name, ksp.ks_class, ksp.ks_type,
                            size, code, data))  # fmt: skip
            return out

        view(local)  # a first read sets ks_data_size of kstats with strings; then both agree
        view(remote)
        mine, theirs = view(local), view(remote)
        assert [a for a, b in zip(mine, theirs, strict=True) if a != b] == []
        assert local.hello()["protocol"] == remote.hello()["protocol"] == 1
        assert local.ioctl(0x7E5701, {"x": [1]})["arg"] == remote.ioctl(0x7E5701, {"x": [1]})["arg"]
    finally:
        local.close()
        remote.close()
        providers.detach(chain)


def test_closed_handle_is_ebadf(kd):
    kc = kstat_open(kd.socket)
    ksp = kc.lookup("test", 0, "raw")
    kc.close()
    with pytest.raises(KstatError) as ei:
        kc.read(ksp)
    assert ei.value.errno == errno.EBADF
