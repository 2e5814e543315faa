"""kstatpy/epcache.py at its edges, in this process (mutation testing survivors, docs/TESTING.md).

The cache names modules to import, so who owns its directory and file, and what a file
must look like to be believed, are security checks (issue 21). Files and directories
are real; another user's are made by chown to nobody (the suite runs as root in CI;
without root those cases fail with the reason, see tests/nobody.py).
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from kstatpy import epcache
from kstatpy.epcache import MAX_CACHE_BYTES
from kstatpy.epcache import EntryPointCache
from kstatpy.epcache import cache_path
from kstatpy.epcache import dumps
from kstatpy.epcache import fingerprint
from kstatpy.epcache import load_value
from kstatpy.epcache import loads
from tests.bounded import within

GROUP = "kstatpy.providers"
NOBODY = 65534


def need_root() -> None:
    assert os.geteuid() == 0, "these cases chown files to another user: run the suite as root (CI does)"


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("KSTATPY_CACHE_DIR", str(d))
    return d


def saved(cache_dir: Path) -> Path:
    cache = EntryPointCache(GROUP)
    assert not cache.hit and cache.dirty
    cache.save()
    assert not cache.dirty
    return cache_dir / "entry-points.cache"


# --- where the cache lives ----------------------------------------------------------------


def test_cache_path_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KSTATPY_CACHE_DIR", "/some/dir")
    assert cache_path() == "/some/dir/entry-points.cache"
    monkeypatch.setenv("KSTATPY_CACHE_DIR", "")  # empty: as unset
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
    assert cache_path() == "/xdg/kstatpy/entry-points.cache"
    monkeypatch.delenv("KSTATPY_CACHE_DIR")
    assert cache_path() == "/xdg/kstatpy/entry-points.cache"
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_path() == f"{tmp_path}/.cache/kstatpy/entry-points.cache"
    monkeypatch.setenv("KSTATPY_CACHE_DIR", "off")
    assert cache_path() is None
    monkeypatch.setenv("KSTATPY_CACHE_DIR", "OFF")  # only "off" turns it off
    assert cache_path() == "OFF/entry-points.cache"


def test_save_makes_a_private_directory_and_a_0644_file(cache_dir: Path) -> None:
    old = os.umask(0)
    try:
        path = saved(cache_dir / "deeper")
    finally:
        os.umask(old)
    assert not path.exists()  # KSTATPY_CACHE_DIR is cache_dir, not deeper
    path = cache_dir / "entry-points.cache"
    assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(cache_dir) == ["entry-points.cache"]
    assert EntryPointCache(GROUP).hit


def test_save_writes_only_what_changed(cache_dir: Path) -> None:
    path = saved(cache_dir)
    os.utime(path, ns=(1, 1))
    cache = EntryPointCache(GROUP)
    assert cache.hit and not cache.dirty
    cache.save()
    assert path.stat().st_mtime_ns == 1  # a hit with nothing new is not rewritten


def test_a_failed_rename_leaves_no_temporary_file(cache_dir: Path) -> None:
    path = cache_dir / "entry-points.cache"
    path.mkdir(parents=True)
    (path / "keep").write_text("")  # a non-empty directory: rename(2) over it fails
    cache = EntryPointCache(GROUP)
    cache.save()  # no error
    assert cache.dirty and os.listdir(cache_dir) == ["entry-points.cache"]


def test_the_temporary_name_is_never_written_through_a_link(cache_dir: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    saved(cache_dir)
    (cache_dir / "entry-points.cache").unlink()
    monkeypatch.setattr(os, "urandom", lambda n: b"\x01" * n)  # a name someone guessed
    tmp = cache_dir / f".entry-points.cache.{'01' * 8}.tmp"
    target = tmp_path / "victim"
    target.write_text("untouched")
    tmp.symlink_to(target)
    EntryPointCache(GROUP).save()  # no error
    assert target.read_text() == "untouched" and not (cache_dir / "entry-points.cache").exists()
    tmp.unlink(missing_ok=True)  # the failed save took the link away
    tmp.write_text("x" * 100_000)  # a file there (ours: the directory is): never written into
    EntryPointCache(GROUP).save()
    assert not (cache_dir / "entry-points.cache").exists()
    tmp.unlink(missing_ok=True)
    tmp.mkdir()  # a directory there: O_EXCL fails, and so does the unlink that cleans up
    EntryPointCache(GROUP).save()  # no error
    assert tmp.is_dir() and not (cache_dir / "entry-points.cache").exists()


def test_a_directory_that_cannot_be_made_is_no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("KSTATPY_CACHE_DIR", str(tmp_path / "file" / "sub"))
    cache = EntryPointCache(GROUP)
    std = [os.fstat(fd) for fd in (0, 1, 2)]
    cache.save()  # no error
    assert cache.dirty and not cache.hit
    assert [os.fstat(fd) for fd in (0, 1, 2)] == std  # no stray descriptor was used, nor closed


def test_reading_never_makes_the_directory(cache_dir: Path) -> None:
    cache = EntryPointCache(GROUP)
    assert not cache.hit and not cache_dir.exists()  # only save makes it
    cache.save()
    assert cache_dir.is_dir()


@pytest.mark.parametrize("mode", [0o775, 0o757, 0o777, 0o722])
def test_a_directory_others_may_write_is_neither_read_nor_written(cache_dir: Path, mode: int) -> None:
    path = saved(cache_dir)
    cache_dir.chmod(mode)
    assert not EntryPointCache(GROUP).hit
    path.unlink()
    EntryPointCache(GROUP).save()
    assert not path.exists()


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o705, 0o700, 0o711])
def test_a_directory_only_we_may_write_is_used(cache_dir: Path, mode: int) -> None:
    saved(cache_dir)
    cache_dir.chmod(mode)
    assert EntryPointCache(GROUP).hit


@pytest.mark.parametrize("uid", [1, NOBODY])
def test_another_users_directory_or_file_is_not_trusted(cache_dir: Path, uid: int) -> None:
    need_root()
    path = saved(cache_dir)
    os.chown(cache_dir, uid, -1)
    assert not EntryPointCache(GROUP).hit
    path.unlink()
    EntryPointCache(GROUP).save()
    assert not path.exists()  # nothing written into it either
    os.chown(cache_dir, 0, -1)
    saved(cache_dir)
    os.chown(path, uid, -1)
    assert not EntryPointCache(GROUP).hit
    os.chown(path, 0, uid)  # another group owns it but may not write: fine
    assert EntryPointCache(GROUP).hit


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666])
def test_a_file_others_may_write_is_not_read(cache_dir: Path, mode: int) -> None:
    path = saved(cache_dir)
    path.chmod(mode)
    assert not EntryPointCache(GROUP).hit
    path.chmod(0o600)
    assert EntryPointCache(GROUP).hit
    path.chmod(0o755)  # execute bits are no one's business
    assert EntryPointCache(GROUP).hit


def test_only_a_regular_file_is_read(cache_dir: Path) -> None:
    path = saved(cache_dir)
    real = cache_dir / "real"
    path.rename(real)
    path.symlink_to(real)
    assert not EntryPointCache(GROUP).hit  # never through a link
    path.unlink()
    os.mkfifo(path, 0o600)
    try:  # a FIFO: not read, and the open does not wait for a writer
        assert not within(30, "EntryPointCache returning with a FIFO as its file", EntryPointCache, GROUP).hit
    finally:
        try:  # a reader blocked in open(2) (the bug) is let go by a writer's open
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass  # ENXIO: no reader waits
    path.unlink()
    os.mkfifo(path, 0o600)
    fifo = os.open(path, os.O_RDWR | os.O_NONBLOCK)  # a FIFO that holds a good cache's text
    try:
        os.write(fifo, real.read_bytes())
        assert not EntryPointCache(GROUP).hit
    finally:
        os.close(fifo)
    path.unlink()
    path.mkdir(mode=0o700)
    assert not EntryPointCache(GROUP).hit


def test_a_linked_directory_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = tmp_path / "real"
    monkeypatch.setenv("KSTATPY_CACHE_DIR", str(real))
    saved(real)
    (tmp_path / "link").symlink_to(real)
    monkeypatch.setenv("KSTATPY_CACHE_DIR", str(tmp_path / "link"))
    assert not EntryPointCache(GROUP).hit


def test_the_size_cap(cache_dir: Path) -> None:
    path = saved(cache_dir)
    text = path.read_text()
    pad = MAX_CACHE_BYTES - len(text.encode())
    path.write_text(text + "ep\tpad\t" + "x" * (pad - len("ep\tpad\t") - 1) + "\n")
    assert path.stat().st_size == MAX_CACHE_BYTES
    assert EntryPointCache(GROUP).hit  # at the cap: read
    path.write_text(text + "ep\tpad\t" + "x" * (pad - len("ep\tpad\t")) + "\n")
    assert path.stat().st_size == MAX_CACHE_BYTES + 1
    assert not EntryPointCache(GROUP).hit  # one byte over: ignored
    assert MAX_CACHE_BYTES == 1 << 20


def test_a_hit_needs_the_same_key_and_group(cache_dir: Path) -> None:
    path = saved(cache_dir)
    data = loads(path.read_text())
    assert data is not None and data["key"] == repr(fingerprint()) and data["group"] == GROUP
    assert not EntryPointCache("another.group").hit
    text = path.read_text()
    for key, group in (("", GROUP), (data["key"], "a")):  # sorting before is not being equal
        path.write_text(dumps({**data, "key": key, "group": group}))
        assert not EntryPointCache(GROUP).hit, (key, group)
    path.write_text(text)
    data["key"] = repr(fingerprint()[:-1])
    path.write_text(dumps(data))
    cache = EntryPointCache(GROUP)
    assert not cache.hit and cache.dirty
    cache.save()
    assert EntryPointCache(GROUP).hit


def test_a_hit_gives_the_cached_entry_points_and_declarations(cache_dir: Path) -> None:
    path = saved(cache_dir)
    data = loads(path.read_text())
    assert data is not None
    data["entry_points"] = [("one", "mod.one:obj"), ("two", "mod.two")]
    data["declared"] = {"one": {"file": None, "mtime": None, "modules": ["m"]}}
    path.write_text(dumps(data))
    cache = EntryPointCache(GROUP)
    assert cache.hit and not cache.dirty
    assert cache.entry_points == [("one", "mod.one:obj"), ("two", "mod.two")]
    assert cache.declared_modules("one") is None  # no file, no mtime: unknown


def test_the_scan_keeps_the_first_of_a_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib import metadata

    class EP:
        def __init__(self, name: str, value: str) -> None:
            self.name, self.value = name, value

    eps = [EP("a", "first.a"), EP("b", "b"), EP("a", "second.a")]
    monkeypatch.setattr(metadata, "entry_points", lambda group: eps if group == "g" else [])
    monkeypatch.setenv("KSTATPY_CACHE_DIR", "off")
    assert EntryPointCache("g").entry_points == [("a", "first.a"), ("b", "b")]


# --- declared modules ---------------------------------------------------------------------


def plugin(file: str | None, modules: Any = "unset") -> Any:
    class Plugin:
        pass

    if file is not None:
        Plugin.__file__ = file  # type: ignore[attr-defined]
    if modules != "unset":
        Plugin.KSTATPY_MODULES = modules  # type: ignore[attr-defined]
    return Plugin


def test_remember_and_declared_modules(cache_dir: Path, tmp_path: Path) -> None:
    f = tmp_path / "p.py"
    f.write_text("")
    os.utime(f, ns=(5, 5))
    cache = EntryPointCache(GROUP)
    cache.save()
    assert not cache.dirty
    cache.remember("p", plugin(str(f), ("m1", 7, "m2")))
    assert cache.dirty and cache.declared_modules("p") == ["m1", "m2"]  # non-strings dropped
    cache.save()
    cache.remember("p", plugin(str(f), ["m1", "m2"]))
    assert not cache.dirty  # the same declaration: nothing to write
    got = cache.declared_modules("p")
    assert got == ["m1", "m2"]
    got.append("x")
    assert cache.declared_modules("p") == ["m1", "m2"]  # a copy
    cache.remember("q", plugin(str(f)))
    assert cache.dirty and cache.declared_modules("q") is None  # declares nothing: unknown
    cache.remember("r", plugin(str(f), "m1"))  # a string is not a list of modules
    assert cache.declared_modules("r") is None
    cache.remember("s", plugin(None, ["m"]))
    assert cache.declared_modules("s") is None  # no file: cannot tell when it changes
    cache.remember("t", plugin(str(tmp_path / "gone.py"), ["m"]))
    assert cache.declared_modules("t") is None
    cache.remember("e", plugin(str(f), []))
    assert cache.declared_modules("e") == []  # declares no module at all: known, empty
    assert cache.declared_modules("nosuch") is None
    cache.save()
    again = EntryPointCache(GROUP)
    assert again.declared_modules("p") == ["m1", "m2"] and again.declared_modules("e") == []
    assert again.declared_modules("q") is None
    os.utime(f, ns=(6, 6))
    assert again.declared_modules("p") is None  # stale


def test_a_file_mtime_of_zero_is_still_an_mtime(cache_dir: Path, tmp_path: Path) -> None:
    f = tmp_path / "p.py"
    f.write_text("")
    os.utime(f, ns=(0, 0))
    cache = EntryPointCache(GROUP)
    cache.remember("p", plugin(str(f), ["m"]))
    assert cache.declared_modules("p") == ["m"]
    cache.save()
    assert EntryPointCache(GROUP).declared_modules("p") == ["m"]


# --- the key ------------------------------------------------------------------------------


def test_fingerprint_shape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "site"
    d.mkdir()
    (d / "b-1.dist-info").mkdir()
    (d / "a-1.egg-info").mkdir()
    (d / "a-1.egg-info" / "entry_points.txt").write_text("")
    os.utime(d / "a-1.egg-info" / "entry_points.txt", ns=(7, 7))
    (d / "c-1.dist-infox").mkdir()
    (d / "plain.py").write_text("")
    missing = str(tmp_path / "missing")
    got = fingerprint([missing, str(d)])
    assert got == [sys.version, [missing, None], [str(d), [["a-1.egg-info", 7], ["b-1.dist-info", 0]]]]
    assert fingerprint([])[0] == sys.version and len(fingerprint([])) == 1
    monkeypatch.chdir(d)
    assert fingerprint([""]) == [sys.version, ["", [["a-1.egg-info", 7], ["b-1.dist-info", 0]]]]
    monkeypatch.setattr(sys, "path", [str(d)])
    assert fingerprint() == [got[0], got[2]]


# --- the file format ----------------------------------------------------------------------


def test_dumps_format_and_escapes() -> None:
    data = {"group": "g\\", "key": "k\tk", "entry_points": [("n\n", "v")],
            "declared": {"d": {"file": None, "mtime": 0, "modules": []}}}  # fmt: skip
    text = dumps(data)
    assert text == "kstatpy-epcache 2\ngroup\tg\\\\\nkey\tk\\tk\nep\tn\\n\tv\ndecl\td\t\t0\t1\n"
    assert loads(text) == {"group": "g\\", "key": "k\tk", "entry_points": [("n\n", "v")],
                           "declared": {"d": {"file": None, "mtime": 0, "modules": []}}}  # fmt: skip
    upper = {"group": "G\\1", "key": "Key\t1", "entry_points": [], "declared": {}}
    assert loads(dumps(upper)) == upper
    plain = {"group": "g", "key": "k", "entry_points": [], "declared": {}}
    assert dumps(plain) == "kstatpy-epcache 2\ngroup\tg\nkey\tk\n" and loads(dumps(plain)) == plain


@pytest.mark.parametrize(
    "text",
    [
        "kstatpy-epcache 2\ngroup\tg\n",  # no key
        "kstatpy-epcache 2\nkey\tk\n",  # no group
        "kstatpy-epcache 2\ngroup\tg\tx\nkey\tk\n",  # a field too many
        "kstatpy-epcache 2\ngroup\tg\nkey\tk\nep\tonly\n",
        "kstatpy-epcache 2\ngroup\tg\nkey\tk\nep\ta\tb\tc\n",
        "kstatpy-epcache 2\ngroup\tg\nkey\tk\ndecl\tn\tf\t1\n",  # three fields
        "kstatpy-epcache 2\ngroup\tg\nkey\tk\ndecl\tn\tf\t1\t2\n",  # HAS neither 0 nor 1
        "kstatpy-epcache 2\ngroup\tg\nkey\tk\ndecl\tn\tf\t1.5\t1\n",
        "kstatpy-epcache 2\ngroup\tg\nkey\tk\\\n",  # a backslash at the end
        "kstatpy-epcache 2\ngroup\tg\nkey\tk\\x\n",  # an unknown escape
        "kstatpy-epcache 2\ngroup\tg\nkey\tk\n\n",  # an empty line
        "kstatpy-epcache 2 \ngroup\tg\nkey\tk\n",
        "kstatpy-epcache 2\ngroup\tg\nkey\tk",  # no final newline
        "kstatpy-epcache 2\ngroup\nkey\tk\n",  # a field too few
        "kstatpy-epcache 2\ngroup\tg\nkey\tk\ndecl\ta\tb\n",  # kinds are exact names
        "kstatpy-epcache 2\ngroup\tg\nkey\tk\nabc\tn\t\t\t0\n",
        "kstatpy-epcache 2\ngroup\tg\nkey\tk\nzzz\tn\t\t\t0\n",
        "kstatpy-epcache 2\ngroup\tg\nkey\tk\nep\ta\tb\t1\t0\n",
    ],
)
def test_loads_refuses_malformed_text(text: str) -> None:
    assert loads(text) is None


def test_loads_decl_fields() -> None:
    head = "kstatpy-epcache 2\ngroup\tg\nkey\tk\n"
    got = loads(head + "decl\tn\t/f\t12\t0\n" + "decl\tm\t\t\t1\ta\tb\n")
    assert got is not None
    assert got["declared"] == {"n": {"file": "/f", "mtime": 12, "modules": None},
                               "m": {"file": None, "mtime": None, "modules": ["a", "b"]}}  # fmt: skip
    assert loads(head + "decl\tn\t/f\t12\t0\textra\n")["declared"]["n"]["modules"] is None  # type: ignore[index]


def test_load_value(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_value("kstatpy.epcache") is epcache
    assert load_value(" kstatpy.epcache : EntryPointCache.save ") is EntryPointCache.save
    assert load_value("kstatpy.epcache:") is epcache
    assert load_value("os.path:join") is os.path.join
    with pytest.raises(AttributeError):
        load_value("kstatpy.epcache:nosuch")


NOBODY_READS = """
import sys
from kstatpy.epcache import EntryPointCache, fingerprint
if sys.argv[1] == "key":
    print(repr(fingerprint()))
else:
    print(EntryPointCache("kstatpy.providers", path=sys.argv[2]).hit)
"""


def test_a_cache_root_owns_is_trusted_by_another_user() -> None:
    need_root()
    from tests.nobody import run_as_nobody
    from tests.nobody import shared_dir

    with shared_dir(0o755) as d:  # root's, 0755: a cache root wrote for everyone (a system image)
        path = os.path.join(d, "entry-points.cache")
        key = run_as_nobody(["-c", NOBODY_READS, "key"], capture_output=True)
        assert key.returncode == 0, key.stderr
        Path(path).write_text(dumps({"group": GROUP, "key": key.stdout.decode().strip(),
                                     "entry_points": [], "declared": {}}))  # fmt: skip
        os.chmod(path, 0o644)
        got = run_as_nobody(["-c", NOBODY_READS, "hit", path], capture_output=True)
        assert (got.returncode, got.stdout) == (0, b"True\n"), got.stderr


CLOSED_STDIN = """
import os, sys
from kstatpy.epcache import EntryPointCache
assert sys.stdin is None  # descriptor 0 is free: the cache's directory gets it
EntryPointCache("kstatpy.providers").save()
print(EntryPointCache("kstatpy.providers").hit)
"""


def test_descriptor_0_is_a_descriptor(cache_dir: Path) -> None:
    # A daemon may run with stdin closed: then the cache's directory opens as descriptor 0.
    import subprocess

    r = subprocess.run(["sh", "-c", 'exec "$0" -c "$1" 0<&-', sys.executable, CLOSED_STDIN],
                       capture_output=True, timeout=60)  # fmt: skip
    assert (r.returncode, r.stdout) == (0, b"True\n"), r.stderr
