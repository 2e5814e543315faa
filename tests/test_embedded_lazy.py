"""The embedded kstat creates only the kstats its selectors can match, and prints the same.

Three ways of running the real ``kstat`` command on one fake host tree, side by side:
  lazy      the embedded default (no kstatd): the system provider creates only the
            modules the selectors' module patterns can match (``chain.config
            ["wants_module"]``);
  full      the same command with the module test turned off (``_wants_module``
            answering None, as for a ``/regex/`` module), so every kstat is created:
            the behaviour before lazy creation;
  kstatd    through a real kstatd serving the system provider (which attaches
            everything; its own ``kstatpy:0:*`` kstats are left out of the comparison).
Standard output (times masked), standard error and the exit status must agree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from kstatd_fixture import REPO
from kstatd_fixture import running_kstatd
from test_provider_system import add_disk
from test_provider_system import build_fake_tree
from test_provider_system import write
from test_provider_system_net import NETSTAT
from test_provider_system_net import SNMP
from test_provider_system_net import SNMP6
from test_provider_system_spl import build_spl

from kstatpy.chain import Chain
from kstatpy.plugins import WANTS_MODULE

#: Statistics whose value depends on when the kstat is read (masked in the comparison;
#: a disk with requests in flight closes its open interval at the read).
TIMES = ("crtime", "snaptime", "rlastupdate", "wlastupdate", "rtime", "rlentime", "wtime", "wlentime")

#: Operands covering exact modules, globs on the module, classes, instances, names,
#: no selector, regexes (matching everything, and a bad one), nothing matched, -l, -j.
CASES = [
    ["-p", "unix:0:system_misc:ncpus"],
    ["-p", "unix"],
    ["-p", "cpu_info"],
    ["-p", "cpu:0:sys"],
    ["-p", "cpu_stat:1"],
    ["-p", "cpu*"],
    ["-p", "sd*"],
    ["-p", "*err"],
    ["-p", "blkdev:::"],
    ["-p", "lofi*"],
    ["-p", "zfs"],
    ["-p", "zfs/tank"],
    ["-p", "zfs*:::hits"],
    ["-p", "ip", "tcp:0:tcp:rtoMin"],
    ["-p", "-m", "udp"],
    ["-p", "?nix:::ncpus", "[lt]*:::ipackets64"],
    ["-p", "link:0:lo", "unix:0:system_pages"],
    ["-p", ":::ncpus"],
    ["-p", "-i", "1"],
    ["-p", "-n", "sys"],
    ["-p", "-c", "disk"],
    ["-c", "net"],
    ["-p"],
    [],
    ["-l", "c*"],
    ["-l"],
    ["-j", "link"],
    ["-j", "-c", "misc", "cpu_info"],
    ["-p", "/^cp/"],
    ["-p", "/[/"],
    ["-p", "unix", "/[/"],
    ["-p", "no_such_module"],
    ["-q", "sd"],
    ["-p", "-T", "u", "unix:0:system_misc:ncpus", "1", "2"],
    ["--describe", "cpu:0:sys"],
]


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake host of test_provider_system plus MIB-II files, SPL kstats and more disks."""
    root = build_fake_tree(tmp_path_factory.mktemp("lazy") / "root")
    write(root, "proc/net/snmp", SNMP)
    write(root, "proc/net/netstat", NETSTAT)
    write(root, "proc/net/snmp6", SNMP6)
    build_spl(root)
    for name in ("loop3", "vda", "sdb", "xvda", "hda"):
        add_disk(root, name)
    return root


def _env(host: Path, tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("KSTAT_SOCKET", None)
    env.pop("KSTATPY_DISABLE_PLUGIN_AUTOLOAD", None)
    others = {ep.name for ep in entry_points(group="kstatpy.providers")} - {"system"}
    env["KSTATPY_DISABLED_PROVIDERS"] = ",".join(sorted(others))
    env["XDG_RUNTIME_DIR"] = str(tmp)  # the default socket: nothing listens there
    env["KSTATPY_CACHE_DIR"] = str(tmp / "cache")
    env["KSTATPY_SYSTEM_ROOT"] = str(host)
    env["PYTHONPATH"] = str(REPO)
    return env


FULL = "import kstatpy.cli.kstat as k; k._wants_module = lambda opts: None; k.main()"


def run(mode: str, args: list[str], env: dict[str, str], socket: str | None = None) -> tuple[int, str, str]:
    if mode == "full":
        cmd = [sys.executable, "-c", FULL, *args]
    elif mode == "kstatd":
        assert socket is not None
        cmd = [sys.executable, "-m", "kstatpy.cli.kstat", "--socket", socket, *args]
    else:
        cmd = [sys.executable, "-m", "kstatpy.cli.kstat", *args]
    r = subprocess.run(cmd, cwd=str(REPO), env=env, capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout, r.stderr


def masked(stdout: str, args: list[str], drop_daemon: bool = False) -> list[str]:
    """The output with times masked; kstatd's own ``kstatpy`` kstats dropped when asked."""
    if "-j" in args:
        out = []
        for report in stdout.split("\n\n") if stdout.strip() else []:
            items = json.loads(report)
            for item in items:
                if drop_daemon and item["module"] == "kstatpy":
                    continue
                for key in TIMES:
                    item.get("data", {}).pop(key, None)
                    item.pop(key, None)
                out.append(json.dumps(item, sort_keys=True))
        return out
    lines = []
    skipping = False
    for line in stdout.splitlines():
        head = line.split("\t")[0]
        if drop_daemon and (head.startswith("kstatpy:") or line.startswith("module: kstatpy ")):
            skipping = not head.startswith("kstatpy:")  # a default-format block runs to the next module
            continue
        if skipping:
            if line.startswith("module: "):
                skipping = False
            else:
                continue
        if head.endswith(tuple(":" + t for t in TIMES)) or line.split()[:1] in ([t] for t in TIMES):
            line = head + "\t<time>"
        elif line.isdigit():  # -T u
            line = "<timestamp>"
        lines.append(line)
    return lines


def test_lazy_equals_full_equals_kstatd(host: Path, tmp_path: Path) -> None:
    env = _env(host, tmp_path)
    with running_kstatd(tmp_path, plugins=("kstatpy_providers.system",),
                        env={"KSTATPY_SYSTEM_ROOT": str(host)}) as kd:  # fmt: skip
        for args in CASES:
            lazy = run("lazy", args, env)
            full = run("full", args, env)
            daemon = run("kstatd", args, env, kd.socket)
            assert lazy[0] == full[0] == daemon[0], (args, lazy, full, daemon)
            assert lazy[2] == full[2] == daemon[2], (args, lazy[2], full[2], daemon[2])
            assert masked(lazy[1], args) == masked(full[1], args), args
            assert masked(lazy[1], args) == masked(daemon[1], args, drop_daemon=True), args
            if args[:2] == ["-p", "unix:0:system_misc:ncpus"]:
                assert lazy[1] == "unix:0:system_misc:ncpus\t2\n", lazy
        assert kd.stop() == 0, kd.stderr


def _modules(chain: Chain) -> set[str]:
    return {k.ks_module for k in chain.kstats()} - {"unix"} | {
        k.ks_module + ":" + k.ks_name for k in chain.kstats() if k.ks_module == "unix"
    }


def _attach(host: Path, wants: object) -> tuple[Chain, object]:
    from kstatpy.plugins import load_providers

    providers = load_providers(autoload=False, modules=["kstatpy_providers.system"])
    config: dict[str, object] = {"system_root": str(host)}
    if wants is not None:
        config[WANTS_MODULE] = wants
    chain = Chain(config=config)
    assert providers.attach(chain) == []
    return chain, providers


@pytest.mark.parametrize(
    ("wants", "expected"),
    [
        ({"unix"}, {"unix:kstat_headers", "unix:kstat_types", "unix:system_misc", "unix:system_pages",
                    "unix:sysinfo", "unix:vminfo", "unix:var", "unix:dnlcstats"}),
        ({"zones", "vmem"}, {"zones", "vmem"}),
        ({"cpu_stat"}, {"cpu_stat"}),
        ({"sd"}, {"sd"}),
        ({"blkdeverr"}, {"blkdeverr"}),
        ({"zfs/tank", "tcp"}, {"zfs/tank", "tcp"}),
        (set(), set()),
    ],
)  # fmt: skip
def test_system_provider_creates_only_wanted_modules(host: Path, wants: set[str], expected: set[str]) -> None:
    chain, providers = _attach(host, wants.__contains__)
    try:
        base = {"unix:kstat_headers", "unix:kstat_types"}
        assert _modules(chain) - base == expected - base
    finally:
        providers.detach(chain)  # type: ignore[attr-defined]


def test_without_a_predicate_every_kstat_is_created(host: Path) -> None:
    chain, providers = _attach(host, None)
    try:
        modules = _modules(chain)
        for m in ("cpu_info", "cpu", "cpu_stat", "link", "sd", "sderr", "blkdev", "blkdeverr", "lofi", "cmdk",
                  "xdf", "ip", "tcp", "udp", "zfs", "zfs/tank", "unix:system_misc", "unix:var"):  # fmt: skip
            assert m in modules, m
        # A predicate passing everything creates exactly the same kstats.
        every, everyp = _attach(host, lambda m: True)
        try:
            names = sorted((k.ks_module, k.ks_instance, k.ks_name) for k in chain.kstats())
            assert sorted((k.ks_module, k.ks_instance, k.ks_name) for k in every.kstats()) == names
        finally:
            everyp.detach(every)  # type: ignore[attr-defined]
    finally:
        providers.detach(chain)  # type: ignore[attr-defined]


def test_lazy_refresh_creates_only_wanted_hotplugged_devices(host: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "root"
    shutil.copytree(host, root)
    chain, providers = _attach(root, {"sd"}.__contains__)
    try:
        add_disk(root, "sdc")
        add_disk(root, "nvme1n1")
        providers.refresh(chain)  # type: ignore[attr-defined]
        disks = sorted(k.ks_name for k in chain.kstats() if k.ks_module not in ("unix",))
        assert disks == ["sd0", "sd1", "sd2"]
    finally:
        providers.detach(chain)  # type: ignore[attr-defined]


def test_disk_module_list_covers_every_disk_module() -> None:
    # The provider decides from DISK_MODULES, without importing disk.py, whether to scan disks.
    from kstatpy_providers.system.disk import disk_module_instance
    from kstatpy_providers.system.provider import DISK_MODULES
    from kstatpy_providers.system.provider import DISK_MODULES_ALL

    seen = {disk_module_instance(n)[0] for n in ("sda", "hdb", "xvdc", "loop0", "nvme0n1", "vda", "dm-0", "md1")}
    assert seen == set(DISK_MODULES)
    assert set(DISK_MODULES_ALL) == seen | {m + "err" for m in seen} - {"lofierr"}  # lofi.c makes no error kstat


def test_meta_name_patterns_match_as_fnmatch() -> None:
    # meta.py matches its table's name patterns without importing fnmatch (and re).
    import itertools
    from fnmatch import fnmatchcase

    from kstatpy_providers.system.meta import META
    from kstatpy_providers.system.meta import _name_matches

    patterns = {p for _, p, _, _ in META} | {"*,err", "a*c", "?b", "[ab]*", "", "x*y*z"}
    names = ["cpu_info0", "cpu_info", "cpu_inf", "sd0,err", ",err", "vm", "vmx", "", "x*y", "abc", "sd0,er", "eth0"]
    for name, pattern in itertools.product(names, sorted(patterns)):
        assert _name_matches(name, pattern) == fnmatchcase(name, pattern), (name, pattern)
