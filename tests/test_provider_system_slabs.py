"""Slab caches come and go (issue 19): ``unix:0:CACHE`` kstats follow ``/proc/slabinfo`` at each
refresh, and a refresh reads slabinfo only when SLUB's ``/sys/kernel/slab`` says a cache changed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_provider_system import OpenLog
from test_provider_system import attach
from test_provider_system import named
from test_provider_system import open_log  # noqa: F401  (the fixture)
from test_provider_system import read
from test_provider_system import write
from test_provider_system_tools import SLABINFO
from test_provider_system_tools import _full_fake

_LINE = "{name:<18} {active:6} {total:6}    128   32    1 : tunables    0    0    0 : slabdata {slabs:6} {slabs:6}      0\n"


def _caches(chain) -> set[str]:  # type: ignore[no-untyped-def]
    return {k.ks_name for k in chain.kstats() if k.ks_class == "kmem_cache"} - {"file_cache"}


def _slab_dirs(root: Path, names: set[str]) -> None:
    base = root / "sys/kernel/slab"
    base.mkdir(parents=True, exist_ok=True)
    for old in set(os.listdir(base)) - names:
        os.rmdir(base / old)
    for name in names:
        (base / name).mkdir(exist_ok=True)


def test_a_cache_created_after_attach_gets_its_kstat_and_one_destroyed_loses_it(tmp_path: Path) -> None:
    """Without sys/kernel/slab (SLAB, or this fake host) each refresh reads slabinfo."""
    root = _full_fake(tmp_path / "root")
    chain, providers = attach(root)
    assert _caches(chain) == {"kmalloc-64", "dentry"}
    kcid = chain.chain_id
    providers.refresh(chain)
    assert chain.chain_id == kcid  # no change: nothing made or deleted
    write(root, "proc/slabinfo", SLABINFO + _LINE.format(name="ext4_inode_cache", active=30, total=64, slabs=2))
    providers.refresh(chain)  # modprobe ext4: a cache more
    assert _caches(chain) == {"kmalloc-64", "dentry", "ext4_inode_cache"} and chain.chain_id > kcid
    new = read(chain, "unix", 0, "ext4_inode_cache")
    assert (named(new)["buf_inuse"], named(new)["buf_total"], named(new)["slab_create"]) == (30, 64, 2)
    assert new["class"] == "kmem_cache" and new["crtime"] > 0  # counts from its creation, not the boot
    write(root, "proc/slabinfo", SLABINFO.replace(SLABINFO.splitlines()[3] + "\n", ""))  # rmmod: dentry gone
    providers.refresh(chain)
    assert _caches(chain) == {"kmalloc-64"}
    assert read(chain, "unix", 0, "sysinfo")["class"] == "misc"  # a cache named like a unix kstat: never made


def test_with_sys_kernel_slab_a_refresh_reads_slabinfo_only_after_a_change(
    tmp_path: Path,
    open_log: OpenLog,  # noqa: F811
) -> None:
    root = _full_fake(tmp_path / "root")
    _slab_dirs(root, {"kmalloc-64", "dentry", "sysinfo"})
    chain, providers = attach(root)
    slabinfo = str(root / "proc/slabinfo")
    open_log.record(lambda: providers.refresh(chain))
    assert slabinfo not in open_log.reads
    write(root, "proc/slabinfo", SLABINFO + _LINE.format(name="xfs_inode", active=1, total=32, slabs=1))
    open_log.record(lambda: providers.refresh(chain))  # the line alone: SLUB would have made its directory
    assert slabinfo not in open_log.reads and "xfs_inode" not in _caches(chain)
    _slab_dirs(root, {"kmalloc-64", "dentry", "sysinfo", "xfs_inode"})
    open_log.record(lambda: providers.refresh(chain))
    assert slabinfo in open_log.reads and "xfs_inode" in _caches(chain)
    write(root, "proc/slabinfo", SLABINFO)
    _slab_dirs(root, {"kmalloc-64", "dentry", "sysinfo"})
    providers.refresh(chain)
    assert _caches(chain) == {"kmalloc-64", "dentry"}


@pytest.mark.skipif(not os.access("/proc/slabinfo", os.R_OK), reason="needs a readable /proc/slabinfo (root)")
@pytest.mark.skipif(not os.path.isdir("/sys/kernel/slab"), reason="needs SLUB's /sys/kernel/slab")
def test_this_hosts_slab_directories_are_its_slabinfo_caches(open_log: OpenLog) -> None:  # noqa: F811
    """The premise of the cheap refresh: one directory of /sys/kernel/slab per cache of slabinfo
    (named by the cache, or by a unique id for a mergeable one, whose names are symbolic links:
    a cache merged into it at creation makes a link, and no line of slabinfo)."""
    lines = Path("/proc/slabinfo").read_text().splitlines()[2:]
    dirs = {e.name for e in os.scandir("/sys/kernel/slab") if e.is_dir(follow_symlinks=False)}
    assert len(lines) == len(dirs)
    assert os.stat("/sys/kernel/slab").st_nlink == len(dirs) + 2
    chain, providers = attach()
    open_log.record(lambda: providers.refresh(chain))
    assert "/proc/slabinfo" not in open_log.reads
