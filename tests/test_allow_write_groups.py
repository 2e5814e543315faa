"""``--allow-write @GROUP``: the peer's own groups at connect time, not the group database.

kstatd resolves GROUP to a gid once, at start-up, and admits a peer whose SO_PEERCRED
gid or one of whose SO_PEERGROUPS gids is it (kstatpy.listener.is_privileged). Before,
it asked NSS on every accept (``getpwuid`` then ``getgrgid(...).gr_mem``): /etc/group
read per connection, and a user listed there was privileged even in a process that had
dropped the group, while a process given the group (``newgrp``, ``setpriv --groups``,
``sg``) was not.

kstatd runs in a private mount namespace (``unshare -m``) whose /etc/group is a file
of the test's, bind-mounted: ``kstatpyw`` (gid 4243) lists nobody as a member,
``kstatpyv`` (gid 4244) lists no one. Clients run as nobody with ``setpriv``; an
inotify watch on that file sees every open of it by kstatd (only kstatd's namespace
has it as /etc/group).
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from kstatd_fixture import REPO
from kstatd_fixture import KstatdProcess
from kstatd_fixture import hello
from kstatd_fixture import kstatd_env
from nobody import run_as_nobody
from nobody import shared_dir

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: a mount namespace and a second user")

LISTED, GIVEN, OTHER = 4243, 4244, 4245
IN_OPEN = 0x20
HELLO_PRIVILEGED = "import sys\nfrom kstatd_fixture import hello\nprint(hello(sys.argv[1], 10.0)['privileged'])\n"


@contextmanager
def kstatd_with_group_file(d: str, allow: str) -> Iterator[tuple[KstatdProcess, str]]:
    """kstatd (``--allow-write @ALLOW``) whose /etc/group is ``d/group``."""
    group = os.path.join(d, "group")
    with open("/etc/group") as real, open(group, "w") as fake:
        fake.write(real.read() + f"kstatpyw:x:{LISTED}:nobody\nkstatpyv:x:{GIVEN}:\n")
    sock = os.path.join(d, "kstat.sock")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=60)
    if probe.returncode:
        pytest.fail(f"no mount namespace here: {probe.stderr.decode().strip()}", pytrace=False)
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", 'mount --bind "$0" /etc/group && exec "$@"',
            group, sys.executable, "-m", "kstatpy.cli.kstatd", "--socket", sock, "--allow-write", f"@{allow}"]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=str(REPO), env=kstatd_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    kd = KstatdProcess(proc, sock)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                kd.stop()
                pytest.fail(f"kstatd exited with {proc.returncode}: {kd.stderr}", pytrace=False)
            try:
                hello(sock)
                break
            except (OSError, EOFError):
                if time.monotonic() > deadline:
                    pytest.fail("kstatd did not answer within 60 s", pytrace=False)
                time.sleep(0.05)
        yield kd, group
    finally:
        kd.stop()


def privileged_as_nobody(sock: str, groups: list[int] | None) -> bool:
    r = run_as_nobody(["-c", HELLO_PRIVILEGED, sock], groups=groups, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return {b"True\n": True, b"False\n": False}[r.stdout]


class Opens:
    """An inotify watch counting opens of one file (by any process that sees it)."""

    def __init__(self, path: str) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0, os.strerror(ctypes.get_errno())
        assert self.libc.inotify_add_watch(self.fd, path.encode(), IN_OPEN) >= 0, os.strerror(ctypes.get_errno())

    def count(self) -> int:
        """Opens since the last call (the events queued so far)."""
        n = 0
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                return n
            pos = 0
            while pos < len(buf):  # struct inotify_event: wd, mask, cookie, len, name[len]
                mask = int.from_bytes(buf[pos + 4 : pos + 8], sys.byteorder)
                n += bool(mask & IN_OPEN)
                pos += 16 + int.from_bytes(buf[pos + 12 : pos + 16], sys.byteorder)

    def close(self) -> None:
        os.close(self.fd)


@contextmanager
def no_opens_of(group: str) -> Iterator[None]:
    """Fail if ``group`` is opened inside the block."""
    opens = Opens(group)
    try:
        opens.count()
        yield
        assert opens.count() == 0, "kstatd opened /etc/group while admitting connections"
    finally:
        opens.close()


def test_a_process_given_the_group_is_a_member() -> None:
    # setpriv --groups, as newgrp or sg would: the group is in the peer's credentials
    # (no /etc/group entry lists nobody; the old code said no).
    with shared_dir() as d, kstatd_with_group_file(d, "kstatpyv") as (kd, group), no_opens_of(group):
        assert privileged_as_nobody(kd.socket, [GIVEN]) is True
        assert privileged_as_nobody(kd.socket, [OTHER, GIVEN]) is True
        assert privileged_as_nobody(kd.socket, [OTHER]) is False
        assert privileged_as_nobody(kd.socket, None) is False
    assert kd.returncode == 0, kd.stderr


def test_a_user_listed_in_etc_group_without_holding_the_group_is_not() -> None:
    # /etc/group lists nobody in kstatpyw, but the process dropped its groups (the old
    # code said yes, from getgrgid(...).gr_mem, opening /etc/group on each accept).
    with shared_dir() as d, kstatd_with_group_file(d, "kstatpyw") as (kd, group), no_opens_of(group):
        assert privileged_as_nobody(kd.socket, None) is False
        assert privileged_as_nobody(kd.socket, [OTHER]) is False
        assert privileged_as_nobody(kd.socket, [LISTED]) is True
    assert kd.returncode == 0, kd.stderr


def test_the_watch_sees_an_open_of_the_group_file(tmp_path) -> None:
    # The other side of the count above: an open through the namespace's /etc/group is seen.
    group = tmp_path / "group"
    group.write_text("kstatpyw:x:4243:\n")
    opens = Opens(str(group))
    try:
        r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                            'mount --bind "$0" /etc/group && getent group kstatpyw', str(group)],
                           capture_output=True, timeout=60)  # fmt: skip
        assert r.returncode == 0 and r.stdout == b"kstatpyw:x:4243:\n", r.stderr
        assert opens.count() >= 1
    finally:
        opens.close()
