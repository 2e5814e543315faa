"""kstatpy.safepath's checks one by one, in process (cosmic-ray survivors; issue 23).

tests/test_safe_paths.py tests the commands end to end, as a second user; these pin
each rule of check_socket_dir and of the path resolution, with the path each refusal
names. cosmic-ray found the sticky-directory rules (the socket itself: a link, another
owner, cannot be inspected) and the "named" flag untested.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from kstatpy.errors import KstatAccessError
from kstatpy.safepath import UnsafePathError
from kstatpy.safepath import check_socket_dir
from kstatpy.safepath import default_socket_path
from kstatpy.safepath import resolve_socket_path
from kstatpy.safepath import trusted_owners

OTHER = 65534  # nobody
ME = frozenset({0, os.geteuid()})
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file another owner")


def test_default_path_prefers_a_non_empty_xdg_runtime_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    # Any caller but root (euid 7 here, whoever runs the suite).
    assert default_socket_path({"XDG_RUNTIME_DIR": "/run/user/7"}, euid=7) == "/run/user/7/kstatpy/kstat.sock"
    assert default_socket_path({"XDG_RUNTIME_DIR": ""}, euid=7) == f"/tmp/kstatpy-{os.getuid()}/kstat.sock"
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/8")
    assert default_socket_path(euid=7) == "/run/user/8/kstatpy/kstat.sock"
    # Root: its privileged listener under the run directory, whatever XDG_RUNTIME_DIR says.
    assert default_socket_path({"XDG_RUNTIME_DIR": "/run/user/7"}, euid=0) == "/run/kstatpy/priv/kstat.sock"
    assert default_socket_path({"KSTATPY_RUNDIR": "/r"}, euid=0) == "/r/priv/kstat.sock"


def test_resolution_order_and_the_named_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"KSTAT_SOCKET": "/srv/k.sock", "XDG_RUNTIME_DIR": "/run/user/7"}
    assert resolve_socket_path("/x.sock", env) == ("/x.sock", True)
    assert resolve_socket_path(None, env) == ("/srv/k.sock", True)
    default = "/run/kstatpy/priv/kstat.sock" if os.geteuid() == 0 else "/run/user/7/kstatpy/kstat.sock"
    assert resolve_socket_path(None, dict(env, KSTAT_SOCKET="")) == (default, False)
    with pytest.raises(ValueError, match="empty socket path"):
        resolve_socket_path("", env)
    monkeypatch.setenv("KSTAT_SOCKET", "/env.sock")
    assert resolve_socket_path() == ("/env.sock", True)


def test_trusted_owners_are_root_and_me() -> None:
    assert trusted_owners() == frozenset({0, os.geteuid()})


def test_the_error_is_eacces_naming_path_and_reason() -> None:
    e = UnsafePathError("/d", "why")
    assert isinstance(e, KstatAccessError) and e.errno == errno.EACCES
    assert e.path == "/d" and "why" in e.reason and "/d: why; refusing to use it" in str(e)


def private_dir(tmp_path: Path, mode: int = 0o700) -> Path:
    d = tmp_path / "d"
    d.mkdir()
    os.chmod(d, mode)
    return d


def refused(path: Path, owners: frozenset[int] | None = ME) -> UnsafePathError:
    with pytest.raises(UnsafePathError) as info:
        check_socket_dir(str(path), owners)
    return info.value


def test_a_missing_directory_is_nothing_to_trust_yet(tmp_path: Path) -> None:
    assert check_socket_dir(str(tmp_path / "no" / "s.sock"), ME) is None


@pytest.mark.parametrize("mode", [0o700, 0o755, 0o1777, 0o1770])
def test_a_good_directory_returns_its_lstat(tmp_path: Path, mode: int) -> None:
    d = private_dir(tmp_path, mode)
    st = check_socket_dir(str(d / "s.sock"), ME)
    assert st is not None and (st.st_ino, st.st_dev) == (d.stat().st_ino, d.stat().st_dev)


def test_a_relative_path_is_checked_in_its_real_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = private_dir(tmp_path, 0o777)
    monkeypatch.chdir(d)
    assert "writable by others (mode 0777)" in refused(Path("s.sock")).reason


def test_a_symlinked_directory_is_refused(tmp_path: Path) -> None:
    d = private_dir(tmp_path)
    (tmp_path / "link").symlink_to(d)
    e = refused(tmp_path / "link" / "s.sock")
    assert e.path == str(tmp_path / "link") and "the socket's directory is a symbolic link" in e.reason


def test_a_file_where_the_directory_should_be_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    e = refused(tmp_path / "f" / "s.sock")
    assert e.path == str(tmp_path / "f") and "the socket's directory is not a directory" in e.reason


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702, 0o720])
def test_a_directory_others_may_write_without_sticky_bit_is_refused(tmp_path: Path, mode: int) -> None:
    d = private_dir(tmp_path, mode)
    e = refused(d / "s.sock")
    assert e.path == str(d) and f"the socket's directory is writable by others (mode {mode:04o})" in e.reason
    assert "writable by others" in refused(d / "s.sock", None).reason  # whoever owns it


@needs_root
def test_the_directory_owner_must_be_expected(tmp_path: Path) -> None:
    d = private_dir(tmp_path, 0o755)
    os.chown(d, OTHER, OTHER)
    e = refused(d / "s.sock", frozenset({0, 1000}))
    assert f"owned by uid {OTHER}, not uid 0 or uid 1000" in e.reason
    assert check_socket_dir(str(d / "s.sock"), None) is not None  # a named path: any owner
    assert check_socket_dir(str(d / "s.sock"), frozenset({OTHER})) is not None


def test_in_a_sticky_shared_directory_the_socket_is_checked(tmp_path: Path) -> None:
    d = private_dir(tmp_path, 0o1777)
    (d / "target").write_text("")
    (d / "s.sock").symlink_to(d / "target")
    e = refused(d / "s.sock")
    assert e.path == str(d / "s.sock") and "the socket is a symbolic link in a shared directory" in e.reason
    e = refused(d / "s.sock", None)  # even for a named path
    assert "symbolic link" in e.reason
    (d / "s.sock").unlink()
    (d / "s.sock").write_text("")
    assert check_socket_dir(str(d / "s.sock"), ME) is not None


@needs_root
def test_in_a_sticky_shared_directory_a_socket_of_another_user_is_refused(tmp_path: Path) -> None:
    d = private_dir(tmp_path, 0o1777)
    (d / "s.sock").write_text("")
    os.chown(d / "s.sock", OTHER, OTHER)
    e = refused(d / "s.sock")
    assert e.path == str(d / "s.sock") and f"the socket is owned by uid {OTHER}, not uid 0" in e.reason
    assert check_socket_dir(str(d / "s.sock"), None) is not None  # named: the user chose whose daemon


def test_a_socket_in_a_private_directory_is_not_looked_at(tmp_path: Path) -> None:
    d = private_dir(tmp_path, 0o755)
    (d / "target").write_text("")
    (d / "s.sock").symlink_to(d / "target")  # only a shared directory's entries are checked
    assert check_socket_dir(str(d / "s.sock"), ME) is not None
    assert stat.S_ISLNK(os.lstat(d / "s.sock").st_mode)


def test_a_directory_that_cannot_be_inspected_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    e = refused(tmp_path / "f" / "sub" / "s.sock")  # lstat("f/sub"): ENOTDIR, not ENOENT
    assert e.path == str(tmp_path / "f" / "sub") and "cannot inspect it (Not a directory)" in e.reason


def test_a_socket_that_cannot_be_inspected_in_a_shared_directory_is_refused(tmp_path: Path) -> None:
    d = private_dir(tmp_path, 0o1777)
    long = d / ("x" * 300)  # ENAMETOOLONG from lstat
    e = refused(long)
    assert e.path == str(long) and "cannot inspect it (File name too long)" in e.reason
