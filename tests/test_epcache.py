"""The embedded kstat's entry-point cache (kstatpy.epcache): invalidated by real installs.

A tiny provider distribution (a wheel) is installed with pip into a ``--target``
directory on PYTHONPATH; the embedded ``kstat`` (a subprocess) must see it appear,
disappear on an upgrade that drops its entry point, and disappear when removed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kstatpy.epcache import EntryPointCache
from kstatpy.epcache import dumps
from kstatpy.epcache import fingerprint
from kstatpy.epcache import loads
from tests.console_scripts import console_script
from tests.console_scripts import missing_script

KSTAT = console_script("kstat")
PROVIDER = '''
from kstatpy.constants import KSTAT_DATA_UINT64, KSTAT_TYPE_NAMED
from kstatpy.hookspecs import hookimpl
from kstatpy.records import kstat_named_init

KSTATPY_MODULES = ("cachetest",)


@hookimpl
def kstatpy_attach(chain):
    ksp = chain.kstat_create("cachetest", 0, "probe", "misc", KSTAT_TYPE_NAMED, 1)
    kstat_named_init(ksp.ks_data[0], "version", KSTAT_DATA_UINT64)
    ksp.ks_data[0].value = VERSION
    chain.kstat_install(ksp)
'''


def make_wheel(root: Path, version: int, entry_point: bool) -> Path:
    """A wheel of the tiny provider, written directly (no build backend needed offline)."""
    import base64
    import hashlib
    import zipfile

    info = f"kstatpy_cachetest_provider-{version}.0.dist-info"
    files = {
        "cachetest_provider/__init__.py": f"VERSION = {version}\n" + PROVIDER,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: kstatpy-cachetest-provider\nVersion: {version}.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: kstatpy-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    if entry_point:
        files[f"{info}/entry_points.txt"] = "[kstatpy.providers]\ncachetest = cachetest_provider\n"
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    path = root / f"v{version}" / f"kstatpy_cachetest_provider-{version}.0-py3-none-any.whl"
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


def pip_install(target: Path, src: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--upgrade",
         "--target", str(target), str(src)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in ("KSTAT_SOCKET", "KSTATPY_DISABLE_PLUGIN_AUTOLOAD")}
    e["XDG_RUNTIME_DIR"] = str(tmp_path / "runtime")  # no daemon: the embedded default
    e["KSTATPY_CACHE_DIR"] = str(tmp_path / "cache")
    e["PYTHONPATH"] = str(tmp_path / "target")
    e["KSTATPY_DISABLED_PROVIDERS"] = "system"  # faster; the cache still lists it
    (tmp_path / "target").mkdir()
    return e


def probe(env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    assert KSTAT, missing_script("kstat")
    return subprocess.run([KSTAT, "-p", "cachetest:0:probe:version"], env=env, capture_output=True, timeout=120)


def cached_names(env: dict[str, str]) -> list[str]:
    data = loads((Path(env["KSTATPY_CACHE_DIR"]) / "entry-points.cache").read_text())
    assert data is not None
    return [name for name, _ in data["entry_points"]]


def test_cache_follows_install_upgrade_and_removal(tmp_path: Path, env: dict[str, str]) -> None:
    target = tmp_path / "target"
    v1, v2, v3 = make_wheel(tmp_path, 1, True), make_wheel(tmp_path, 2, False), make_wheel(tmp_path, 3, True)

    got = probe(env)  # fills the cache without the provider
    assert (got.returncode, got.stdout, got.stderr) == (1, b"", b"")
    assert "cachetest" not in cached_names(env) and "vmm" in cached_names(env)
    assert probe(env).returncode == 1  # a cache hit

    pip_install(target, v1)
    got = probe(env)
    assert (got.returncode, got.stdout, got.stderr) == (0, b"cachetest:0:probe:version\t1\n", b"")
    assert "cachetest" in cached_names(env)

    pip_install(target, v2)  # an upgrade whose distribution has no entry point
    got = probe(env)
    assert (got.returncode, got.stdout) == (1, b""), got.stderr
    assert "cachetest" not in cached_names(env)

    pip_install(target, v3)
    assert probe(env).stdout == b"cachetest:0:probe:version\t3\n"
    # Removed as pip's uninstall removes a distribution: its files, then its dist-info.
    shutil.rmtree(target / "cachetest_provider")
    for info in target.glob("kstatpy_cachetest_provider-*.dist-info"):
        shutil.rmtree(info)
    got = probe(env)
    assert (got.returncode, got.stdout) == (1, b""), got.stderr
    assert "cachetest" not in cached_names(env)


def test_declared_modules_skip_the_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KSTATPY_CACHE_DIR", str(tmp_path / "cache"))
    cache = EntryPointCache("kstatpy.providers")
    assert not cache.hit and cache.declared_modules("vmm") is None

    class Plugin:
        __file__ = str(tmp_path / "plugin.py")
        KSTATPY_MODULES = ("vmm",)

    Path(Plugin.__file__).write_text("")
    cache.remember("vmm", Plugin)
    cache.save()
    again = EntryPointCache("kstatpy.providers")
    assert again.hit and again.declared_modules("vmm") == ["vmm"]
    os.utime(Plugin.__file__, ns=(1, 1))  # the provider's file changed: the declaration is stale
    assert EntryPointCache("kstatpy.providers").declared_modules("vmm") is None


def test_fingerprint_sees_a_new_dist_info(tmp_path: Path) -> None:
    before = fingerprint([str(tmp_path)])
    (tmp_path / "x-1.0.dist-info").mkdir()
    after = fingerprint([str(tmp_path)])
    assert before != after
    (tmp_path / "x-1.0.dist-info" / "entry_points.txt").write_text("")
    assert fingerprint([str(tmp_path)]) != after


def test_cache_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KSTATPY_CACHE_DIR", "off")
    cache = EntryPointCache("kstatpy.providers")
    assert cache.path is None and not cache.hit
    assert any(name == "vmm" for name, _ in cache.entry_points)
    cache.save()  # nothing to write to; no error


def test_cache_file_round_trip_and_malformed_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = {
        "group": "kstatpy.providers",
        "key": repr(fingerprint()),
        "entry_points": [("system", "kstatpy_providers.system"), ("odd\tname\\", "pkg.mod:obj.attr")],
        "declared": {
            "vmm": {"file": "/p/vmm.py", "mtime": 17, "modules": ["vmm", "with\nnewline"]},
            "system": {"file": None, "mtime": None, "modules": None},
        },
    }
    text = dumps(data)
    assert loads(text) == data
    for bad in ("", text[:-1], text.replace("kstatpy-epcache 2", "kstatpy-epcache 1"), text + "what\tis\tthis\n",
                text.replace("decl\tvmm\t", "decl\tvmm\\\t"), text.replace("\t17\t", "\tx\t")):  # fmt: skip
        assert loads(bad) is None, bad
    # A malformed file on disk is a miss (the scan is made), then rewritten whole.
    monkeypatch.setenv("KSTATPY_CACHE_DIR", str(tmp_path))
    (tmp_path / "entry-points.cache").write_text("kstatpy-epcache 2\ngarbage\n")
    cache = EntryPointCache("kstatpy.providers")
    assert not cache.hit and any(name == "vmm" for name, _ in cache.entry_points)
    cache.save()
    assert EntryPointCache("kstatpy.providers").hit
