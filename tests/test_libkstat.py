"""libkstat against a real kstatd: the chain, every kstat type, lookups, writes, two handles.

The C side is tests/libkstat/lkt.c compiled with the system compiler against the library
installed by ``kstatpy-libkstat install`` (tests/libkstat_helpers.py); the reference is
``kstat -p`` and the Python client reading the same kstatd.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kstatpy.client import kstat_open
from kstatpy.errors import KstatError
from tests.kstatd_fixture import rpc
from tests.kstatd_fixture import running_kstatd
from tests.libkstat_helpers import Driver
from tests.libkstat_helpers import run_env
from tests.nobody import AS_NOBODY
from tests.nobody import nobody_skip
from tests.nobody import shared_dir

PLUGINS = ("tests.providers_fixture.basic", "kstatpy_providers.system")
KSTAT = [sys.executable, "-m", "kstatpy.cli.kstat"]
READ = 0x4B02


def kstat_p(socket: str, *selectors: str) -> dict[str, str]:
    """``kstat -p SELECTORS`` as {module:instance:name:statistic: value}."""
    out = subprocess.run([*KSTAT, "-p", "--socket", socket, *selectors], capture_output=True, text=True, timeout=120)
    assert out.returncode in (0, 1), out.stderr
    return dict(line.split("\t", 1) for line in out.stdout.splitlines())


def lines_to_dict(lines: list[str]) -> dict[str, str]:
    return dict(line.split("\t", 1) for line in lines)


@pytest.fixture(scope="module")
def kd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    with running_kstatd(tmp_path_factory.mktemp("lk"), plugins=PLUGINS) as kd:
        yield kd


@pytest.fixture
def lkt(kd) -> Iterator[Driver]:
    with Driver(run_env(kd.socket)) as d:
        assert d.one("open 0").startswith("ok kcid "), d.close()
        yield d


def test_chain_walk_equals_kid0_headers(kd, lkt: Driver) -> None:
    # kc_chain, walked through ks_next, is KID 0's headers in kid order: every field.
    for _ in range(5):  # the system provider may add a kstat between the two reads
        lkt.one("update 0")
        chain = [line.split("\t") for line in lkt.cmd("chain 0")]
        _, code, res = rpc(kd.socket, READ, {"kid": 0})
        assert code == 0
        want = [
            [str(h["kid"]), h["module"], str(h["instance"]), h["name"], h["class"], str(h["type"]), str(h["crtime"])]
            for h in res["kstat"]["data"]
        ]
        if chain == want:
            break
    assert chain == want
    assert [int(c[0]) for c in chain] == sorted(int(c[0]) for c in chain)
    assert {"cpu_stat", "test", "unix"} <= {c[1] for c in chain}  # the system provider's kstats too


def test_every_type_equals_kstat_p(kd, lkt: Driver) -> None:
    got = lkt.cmd("dump 0 test")
    c = {k: v for k, v in lines_to_dict(got).items() if not k.startswith("test:0:timer:")}
    want = kstat_p(kd.socket, "test:::")
    for name in ("named", "strings", "intr", "io"):
        mine = {k: v for k, v in c.items() if k.startswith(f"test:0:{name}:")}
        theirs = {k: v for k, v in want.items() if k.startswith(f"test:0:{name}:") and not k.endswith(":snaptime")}
        assert mine == theirs, name
    # a STRING value that is not ASCII, the extremes of UINT64 and INT64, a CHAR
    assert c["test:0:strings:s"] == "h\u00e9llo \u2603"
    assert c["test:0:named:u64"] == str(2**64 - 1) and c["test:0:strings:n"] == str(-(2**63))
    assert c["test:0:named:ch"] == "abc"
    # TIMER (every record) and RAW bytes against the Python client
    with kstat_open(kd.socket) as kc:
        timer = kc.lookup("test", 0, "timer")
        kc.read(timer)
        raw = kc.lookup("test", 0, "raw")
        kc.read(raw)
    timer_lines = [line for line in got if line.startswith("test:0:timer:") and ":c" not in line.split("\t")[0][13:]]
    want_timer = []
    for rec in timer.ks_data:
        for key in ("name", "num_events", "elapsed_time", "min_time", "max_time", "start_time", "stop_time"):
            want_timer.append(f"test:0:timer:{key}\t{rec[key]}")
    assert [line for line in timer_lines if not line.startswith(("test:0:timer:class", "test:0:timer:crtime"))] == (
        want_timer
    )
    assert c["test:0:raw:raw"] == bytes(raw.ks_data).hex()
    # a provider's errors come back as illumos errnos
    assert c["test:0:upderr:errno"] == "ENOTTY" and c["test:0:raises:errno"] == "EIO"


def test_raw_cpu_stat_through_sys_sysinfo_h_equals_kstat_p(kd, lkt: Driver) -> None:
    before = kstat_p(kd.socket, "cpu_stat:::")
    got = lines_to_dict(lkt.cmd("dump 0 cpu_stat"))
    after = kstat_p(kd.socket, "cpu_stat:::")
    stats = {k for k in before if not k.endswith((":snaptime", ":class", ":crtime"))}
    assert stats and {k for k in got if not k.endswith((":class", ":crtime"))} == stats
    for key in stats:
        low, high = sorted((int(before[key]), int(after[key])))
        if key.rsplit(":", 1)[1] in ("iowait", "swap", "physio"):
            continue  # cpu_syswait_t: gauges, not counters
        assert low <= int(got[key]) <= high, (key, before[key], got[key], after[key])
    busy = [k for k in stats if k.endswith((":user", ":kernel", ":idle"))]
    assert any(int(got[k]) > 0 for k in busy)  # not a page of zeros


def test_lookups_and_strings(lkt: Driver) -> None:
    assert lkt.one("lookup 0 test 0 strings").startswith("found ")
    assert lkt.one("find 0 s") == "err ENOENT"  # never read: no data yet
    assert lkt.one("read 0").startswith("kcid ")
    assert lkt.one("find 0 s") == "found at 0"
    assert lkt.one("find 0 n") == "found at 48"
    assert lkt.one("find 0 nope") == "err ENOENT"
    # kstat_read into the caller's buffer: the STRING points into that buffer
    assert lkt.one("copy 0") == "strings 1 inside 1"
    # the size is illumos': 48 per record plus the string and its NUL
    assert lkt.one("read 0").split()[5] == str(2 * 48 + len("h\u00e9llo \u2603".encode()) + 1)
    assert lkt.one("lookup 0 test 0 io").startswith("found ")
    assert lkt.one("read 0").startswith("kcid ")
    assert lkt.one("find 0 nread") == "err EINVAL"  # neither NAMED nor TIMER
    assert lkt.one("lookup 0 test 0 timer").startswith("found ")
    assert lkt.one("read 0").startswith("kcid ")
    assert lkt.one("find 0 t1") == "found at 80"
    assert lkt.one("lookup 0 test 0 nosuch") == "err ENOENT"
    assert lkt.one("lookup 0 nosuch -1 -") == "err ENOENT"
    assert lkt.one("lookup 0 - -1 kstat_types").startswith("found 1")  # NULL module, any instance
    assert lkt.one("lookup 0 test 0 invalid") == "err ENOENT"  # INVALID kstats are not in the chain


def test_write_as_root_then_not_writable(kd, lkt: Driver) -> None:
    assert lkt.one("lookup 0 test 0 named").startswith("found ")
    assert lkt.one("read 0").startswith("kcid ")
    assert lkt.one("setu64 0 u64 12345") == "ok"
    assert lkt.one("write 0").startswith("kcid ")
    assert kstat_p(kd.socket, "test:0:named:u64") == {"test:0:named:u64": "12345"}
    assert lkt.one("lookup 0 test 0 strings").startswith("found ")
    assert lkt.one("read 0").startswith("kcid ")
    assert lkt.one("write 0") == "err EACCES"  # not KSTAT_FLAG_WRITABLE


def test_two_handles_in_one_process(lkt: Driver) -> None:
    assert lkt.one("open 1").startswith("ok kcid ")
    for h in (0, 1):
        assert lkt.one(f"lookup {h} test 0 named").startswith("found ")
        assert lkt.one(f"read {h}").startswith("kcid ")
    assert lkt.one("close 0") == "ok 0"
    assert lkt.one("read 1").startswith("kcid ")
    assert lkt.one("close 1") == "ok 0"
    assert lkt.close() == (0, "")


def test_write_as_nobody_is_refused(tmp_path: Path) -> None:
    # illumos' write_kstat_data answers EPERM to a caller without PRIV_SYS_CONFIG
    # (before looking at the kstat), as kstatd does (docs/PROTOCOL.md §4).
    nobody_skip()
    with shared_dir() as d, running_kstatd(tmp_path, plugins=PLUGINS, socket=f"{d}/kstat.sock") as kd:
        with Driver(run_env(kd.socket), argv_prefix=tuple(AS_NOBODY)) as d2:
            assert d2.one("open 0").startswith("ok kcid ")
            assert d2.one("lookup 0 test 0 named").startswith("found ")
            assert d2.one("read 0").startswith("kcid ")
            assert d2.one("setu64 0 u64 1") == "ok"
            assert d2.one("write 0") == "err EPERM"
            assert d2.close() == (0, "")
        with kstat_open(kd.socket) as kc:
            ksp = kc.lookup("test", 0, "named")
            kc.read(ksp)
            assert ksp.data_lookup("u64").value == 2**64 - 1  # unchanged


def test_deleted_kstat_python_agrees(kd) -> None:
    # The reference errno for a kid that is gone, as the Python client reports it.
    with kstat_open(kd.socket) as kc:
        ksp = kc.lookup("test", 0, "named")
        ksp.ks_kid = 999_999
        with pytest.raises(KstatError) as exc:
            kc.read(ksp)
    assert exc.value.errno == 6  # ENXIO


def test_data_that_changes_size_between_reads(tmp_path: Path) -> None:
    # kstat_read allocates and resizes ks_data itself: a VAR_SIZE RAW kstat growing,
    # shrinking and growing again, and a NAMED kstat whose STRING does the same.
    from tests.providers_fixture.varsize import grow_bytes
    from tests.providers_fixture.varsize import text_of

    with running_kstatd(tmp_path, plugins=("tests.providers_fixture.varsize",)) as kd, Driver(run_env(kd.socket)) as d:
        assert d.one("open 0").startswith("ok kcid ")
        assert d.one("lookup 0 test 0 grow").startswith("found ")
        sizes = set()
        for _ in range(12):
            size = int(d.one("read 0").split()[5])
            data = bytes.fromhex(d.one("raw 0"))
            k = int.from_bytes(data[:8], "little")
            assert data == grow_bytes(k) and size == len(data)
            sizes.add(size)
        assert len(sizes) >= 6
        assert d.one("lookup 0 test 0 text").startswith("found ")
        for _ in range(10):
            size = int(d.one("read 0").split()[5])
            got = lines_to_dict(d.cmd("p 0"))
            k = int(got["test:0:text:k"])
            assert got["test:0:text:s"] == text_of(k)
            assert size == 2 * 48 + len(text_of(k)) + 1  # illumos' data size: records + string + NUL
            assert d.one("copy 0") == "strings 1 inside 1"
        assert d.close() == (0, "")
