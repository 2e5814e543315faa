"""OpenZFS's SPL kstats (proc/spl/kstat) on a fake tree, and an arcstat-style reader."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from kstatd_fixture import REPO
from kstatd_fixture import running_kstatd
from test_provider_system import attach
from test_provider_system import build_fake_tree
from test_provider_system import named
from test_provider_system import read
from test_provider_system import write

from kstatpy.constants import KstatDataType
from kstatpy.constants import KstatType

ARC_FIELDS = (
    "hits", "misses", "demand_data_hits", "demand_data_misses", "demand_metadata_hits",
    "demand_metadata_misses", "prefetch_data_hits", "prefetch_data_misses", "prefetch_metadata_hits",
    "prefetch_metadata_misses", "mru_hits", "mru_ghost_hits", "mfu_hits", "mfu_ghost_hits",
    "l2_hits", "l2_misses", "size", "c", "c_min", "c_max", "arc_meta_used", "l2_size",
)  # fmt: skip
CRTIME = 2340982347


def spl_named(kid: int, records: list[tuple[str, int, str]], snaptime: int = 95873495834759) -> str:
    """An SPL NAMED kstat file, in spl-kstat.c's layout."""
    lines = [f"{kid} 1 0x01 {len(records)} {len(records) * 48} {CRTIME} {snaptime}", "name                            type data"]
    lines += [f"{name:<32}{dtype:<5}{value}" for name, dtype, value in records]
    return "\n".join(lines) + "\n"


def arcstats(scale: int) -> str:
    values = {f: (i + 1) * 100 * scale for i, f in enumerate(ARC_FIELDS)}
    values["hits"] = 9000 * scale
    values["misses"] = 1000 * scale
    return spl_named(13, [(f, 4, str(v)) for f, v in values.items()] + [("arc_no_grow", 1, "-3")])


def build_spl(root: Path, scale: int = 1) -> None:
    write(root, "proc/spl/kstat/zfs/arcstats", arcstats(scale))
    write(root, "proc/spl/kstat/zfs/zfetchstats", spl_named(14, [("hits", 4, "55"), ("misses", 4, "45")]))
    write(root, "proc/spl/kstat/zfs/tank/io", (
        f"17 3 0x00 1 80 {CRTIME} 2389472938\n"
        "nread    nwritten reads    writes   wtime    wlentime wupdate  rtime    rlentime rupdate  wcnt     rcnt\n"
        "12345    67890    10       20       1        2        3        4        5        6        0        1\n"
    ))  # fmt: skip
    write(root, "proc/spl/kstat/zfs/tank/state", f"25 0 0x01 1 0 {CRTIME} 2389472938\nONLINE\n")
    write(root, "proc/spl/kstat/zfs/tank/objset-0x36", spl_named(30, [
        ("dataset_name", 9, "tank/home"), ("ratio", 7, "1.5"), ("writes", 4, "7"), ("nread", 4, "4096"),
    ]))  # fmt: skip


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    root = build_fake_tree(tmp_path / "root")
    build_spl(root)
    return root


def test_spl_kstats_keep_openzfs_module_name_type_and_data_types(fake: Path) -> None:
    chain, _ = attach(fake)
    arc = read(chain, "zfs", 0, "arcstats")
    values = named(arc)
    assert list(values)[: len(ARC_FIELDS)] == list(ARC_FIELDS)  # the file's order
    assert values["hits"] == 9000 and values["size"] == 1700 and values["arc_no_grow"] == -3
    types = {n: t for n, t, _ in arc["data"]}
    assert types["hits"] == KstatDataType.UINT64 and types["arc_no_grow"] == KstatDataType.INT32
    assert chain.kstat_lookup_name("zfs", 0, "arcstats").ks_crtime == CRTIME  # the header's crtime
    assert named(read(chain, "zfs", 0, "zfetchstats")) == {"hits": 55, "misses": 45}

    io = read(chain, "zfs/tank", 0, "io")
    assert io["type"] == KstatType.IO
    assert {k: io["data"][k] for k in ("nread", "nwritten", "reads", "writes", "wlastupdate", "rcnt")} == {
        "nread": 12345, "nwritten": 67890, "reads": 10, "writes": 20, "wlastupdate": 3, "rcnt": 1,
    }  # fmt: skip
    state = read(chain, "zfs/tank", 0, "state")
    assert state["type"] == KstatType.RAW and state["data"] == b"ONLINE\n"
    objset = read(chain, "zfs/tank", 0, "objset-0x36")
    assert named(objset)["dataset_name"] == "tank/home" and named(objset)["writes"] == 7
    assert "ratio" not in named(objset)  # a FLOAT record: left out


def test_every_spl_named_statistic_declares_metadata(fake: Path) -> None:
    # The SPL text gives a data type, never a kind or unit: text for CHAR/STRING,
    # a gauge otherwise (no rate from a field that may not be a counter).
    chain, _ = attach(fake)
    spl = [k for k in chain.kstats() if k.ks_module.startswith("zfs") and k.ks_type == KstatType.NAMED]
    assert {(k.ks_module, k.ks_name) for k in spl} >= {("zfs", "arcstats"), ("zfs/tank", "objset-0x36")}
    for ksp in spl:
        meta = ksp.ks_meta or {}
        for knp in ksp.ks_data:
            kind = "text" if knp.data_type in (KstatDataType.CHAR, KstatDataType.STRING) else "gauge"
            assert knp.name in meta and meta[knp.name].kind == kind, (ksp, knp.name)
            assert meta[knp.name].description


def test_spl_reads_follow_the_file_and_pools_come_and_go(fake: Path) -> None:
    chain, providers = attach(fake)
    build_spl(fake, scale=2)
    write(fake, "proc/spl/kstat/zfs/tank/state", f"25 0 0x01 1 0 {CRTIME} 2389472938\nDEGRADED\n")
    assert named(read(chain, "zfs", 0, "arcstats"))["hits"] == 18000
    assert read(chain, "zfs/tank", 0, "state")["data"] == b"DEGRADED\n"  # the text may grow
    write(fake, "proc/spl/kstat/zfs/pool2/state", f"40 0 0x01 1 0 {CRTIME} 1\nONLINE\n")
    kcid = chain.chain_id
    providers.refresh(chain)
    assert chain.kstat_lookup_name("zfs/pool2", 0, "state") is not None and chain.chain_id > kcid
    for f in (fake / "proc/spl/kstat/zfs/tank").iterdir():
        f.unlink()
    (fake / "proc/spl/kstat/zfs/tank").rmdir()
    providers.refresh(chain)
    assert chain.kstat_lookup_name("zfs/tank", 0, "io") is None


def test_no_spl_tree_no_zfs_kstats(tmp_path: Path) -> None:
    chain, _ = attach(build_fake_tree(tmp_path / "root"))
    assert not [k for k in chain.kstats() if k.ks_module.startswith("zfs")]


def test_openzfs_loaded_after_attach_appears_and_goes_at_a_refresh(tmp_path: Path) -> None:
    """No zfs:0:arcstats without OpenZFS (docs/SYSTEM-PROVIDER.md says why); once the module is
    loaded (modprobe zfs makes proc/spl/kstat) the next refresh publishes its kstats, and
    unloading it deletes them."""
    root = build_fake_tree(tmp_path / "root")
    chain, providers = attach(root)
    assert chain.kstat_lookup_name("zfs", 0, "arcstats") is None
    build_spl(root)
    providers.refresh(chain)
    arc = named(read(chain, "zfs", 0, "arcstats"))
    assert list(arc)[: len(ARC_FIELDS)] == list(ARC_FIELDS) and arc["size"] == 1700  # every record, in order
    assert chain.kstat_lookup_name("zfs/tank", 0, "io") is not None
    shutil.rmtree(root / "proc/spl")  # rmmod zfs spl
    providers.refresh(chain)
    assert not [k for k in chain.kstats() if k.ks_module.startswith("zfs")]


# --- an arcstat-style reader ------------------------------------------------------------


def kstat_p(socket: str, operand: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-m", "kstatpy.cli.kstat", "--socket", socket, "-p", operand],
        cwd=str(REPO), env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return dict(ln.split(":", 3)[3].split("\t", 1) for ln in result.stdout.splitlines())


def arcstat_row(prev: dict[str, str], cur: dict[str, str]) -> dict[str, int]:
    """What arcstat prints for one interval: rates from deltas, sizes as they are."""
    d = {f: int(cur[f]) - int(prev[f]) for f in ARC_FIELDS if f not in ("size", "c", "c_min", "c_max", "l2_size")}
    reads = d["hits"] + d["misses"]
    dread = d["demand_data_hits"] + d["demand_metadata_hits"] + d["demand_data_misses"] + d["demand_metadata_misses"]
    pread = (d["prefetch_data_hits"] + d["prefetch_metadata_hits"] + d["prefetch_data_misses"]
             + d["prefetch_metadata_misses"])  # fmt: skip
    return {
        "read": reads,
        "hit%": 100 * d["hits"] // reads,
        "miss%": 100 * d["misses"] // reads,
        "dm%": 100 * (d["demand_data_misses"] + d["demand_metadata_misses"]) // dread,
        "pm%": 100 * (d["prefetch_data_misses"] + d["prefetch_metadata_misses"]) // pread,
        "mfu": d["mfu_hits"], "mru": d["mru_hits"], "l2hit%": 100 * d["l2_hits"] // (d["l2_hits"] + d["l2_misses"]),
        "arcsz": int(cur["size"]), "c": int(cur["c"]), "c_max": int(cur["c_max"]),
    }  # fmt: skip


def test_arcstat_style_reader_gets_every_field(tmp_path: Path, fake: Path) -> None:
    with running_kstatd(tmp_path, plugins=("kstatpy_providers.system",), env={"KSTATPY_SYSTEM_ROOT": str(fake)}) as kd:
        prev = kstat_p(kd.socket, "zfs:0:arcstats")
        assert set(ARC_FIELDS) <= set(prev) and prev["class"] == "misc"
        build_spl(fake, scale=3)
        cur = kstat_p(kd.socket, "zfs:0:arcstats")
        assert kstat_p(kd.socket, "zfs:0:arcstats:size") == {"size": str(1700 * 3)}
        assert kd.stop() == 0, kd.stderr
    row = arcstat_row(prev, cur)
    assert row["read"] == 20000 and row["hit%"] == 90 and row["miss%"] == 10
    assert row["arcsz"] == 5100 and row["c"] == 5400 and row["c_max"] == 6000
    assert row["mfu"] == 2 * 1300 and row["l2hit%"] == 100 * 1500 // (1500 + 1600)
