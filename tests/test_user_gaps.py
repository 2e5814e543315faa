"""The user-facing gaps of issue 14, through the installed commands and real daemons.

``--version`` everywhere, ``python3 -m kstatpy``, ``vmmctl --socket P list`` and
Ctrl-C during ``vmmctl run``, plugin tracing, a module both autoloaded and named,
docs/KSTATD.md's ``kstatpy:0:requests`` sample, ``kstat`` errors naming the socket, and
kstat's exit 2 for usage errors (a documented difference from illumos).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

import kstatpy
from tests.bounded import reap
from tests.console_scripts import require_script
from tests.kstatd_fixture import REPO
from tests.kstatd_fixture import running_kstatd
from tests.test_provider_system import build_fake_tree
from tests.test_vmm_kstatd import VMM
from tests.test_vmm_kstatd import SocketConn
from tests.test_vmm_kstatd import wait_until

VMM_LIST = 0x564DF3
TIMES = re.compile(r"\t\d+\.\d{9}$", re.M)


def exe(name: str) -> str:
    return require_script(name)


def user_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A user's shell: no kstatd at the default socket, entry points loaded."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KSTAT_", "KSTATPY_"))}
    env["XDG_RUNTIME_DIR"] = str(tmp_path / "runtime")
    env.update(extra)
    return env


def run(argv: list[str], env: dict[str, str] | None = None, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, **kw)  # type: ignore[call-overload]


# --- --version -----------------------------------------------------------------


@pytest.mark.parametrize("command", ["kstat", "kstatd", "vmmctl"])
def test_every_command_has_version(command: str, tmp_path: Path) -> None:
    got = run([exe(command), "--version"], user_env(tmp_path))
    assert kstatpy.__version__ == version("kstatpy")
    assert (got.returncode, got.stdout, got.stderr) == (0, f"{command} (kstatpy {kstatpy.__version__})\n", "")


def test_kstat_version_is_an_option_only() -> None:
    # Like --help: recognised among the options, not as an operand.
    got = run([exe("kstat"), "--socket", "/nonexistent/kstat.sock", "-p", "--", "--version"])
    assert got.returncode == 3, got.stderr


# --- python3 -m kstatpy --------------------------------------------------------


def test_python_m_kstatpy_is_the_kstat_command(tmp_path: Path) -> None:
    env = user_env(tmp_path, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
    times = re.compile(rb"\d+\.\d{9}")
    with running_kstatd(tmp_path, plugins=("cli_provider",), env={"PYTHONPATH": env["PYTHONPATH"]}) as kd:
        for argv in (["-p", "strs"], ["-j", "strs:::question"], ["-q", "nosuchmodule"]):
            want = subprocess.run([exe("kstat"), "--socket", kd.socket, *argv], env=env, capture_output=True, timeout=60)
            got = subprocess.run(
                [sys.executable, "-m", "kstatpy", "--socket", kd.socket, *argv],
                env=env, cwd=str(tmp_path), capture_output=True, timeout=60,
            )  # fmt: skip
            assert (got.returncode, times.sub(b"T", got.stdout), got.stderr) == (
                want.returncode, times.sub(b"T", want.stdout), want.stderr,
            ), argv  # fmt: skip
            if argv[0] == "-p":
                assert b"strs:0:strings:question\twhat?\n" in got.stdout
    got = run([sys.executable, "-m", "kstatpy", "-Z"], env, cwd=str(tmp_path))
    assert (got.returncode, got.stderr.splitlines()[0]) == (2, "kstat: illegal option -- Z")
    got = run([sys.executable, "-m", "kstatpy", "--version"], env, cwd=str(tmp_path))
    assert got.stdout == f"kstat (kstatpy {kstatpy.__version__})\n"


# --- vmmctl ----------------------------------------------------------------------


def test_vmmctl_takes_socket_before_the_subcommand(tmp_path: Path) -> None:
    bogus = str(tmp_path / "bogus.sock")
    env = user_env(tmp_path, KSTAT_SOCKET=bogus)  # the option must outrank $KSTAT_SOCKET
    with running_kstatd(tmp_path, plugins=VMM) as kd:
        assert run([exe("vmmctl"), "--socket", kd.socket, "create", "web0"], env).returncode == 0
        listing = "MINOR  OPEN  STATE       NAME\n    1     0  active      web0\n"
        got = run([exe("vmmctl"), "--socket", kd.socket, "list"], env)
        assert (got.returncode, got.stdout, got.stderr) == (0, listing, "")
        got = run([exe("vmmctl"), "--socket", bogus, "list", "--socket", kd.socket], env)  # after wins
        assert (got.returncode, got.stdout) == (0, listing)
        got = run([exe("vmmctl"), "list"], env)  # no option: $KSTAT_SOCKET
        assert got.returncode == 3 and bogus in got.stderr, got.stderr
        got = run([exe("vmmctl"), "--socket", bogus, "list"], user_env(tmp_path, KSTAT_SOCKET=kd.socket))
        assert got.returncode == 3 and bogus in got.stderr, got.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupting_vmmctl_run_exits_quietly(tmp_path: Path, sig: int) -> None:
    with running_kstatd(tmp_path, plugins=VMM) as kd:
        conn = SocketConn(kd.socket)
        assert conn.ok(0x564D01, {"name": "web0"}) == {"minor": 1}
        proc = subprocess.Popen(
            [exe("vmmctl"), "--socket", kd.socket, "run", "web0", "--seconds", "600"],
            env=user_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            wait_until(lambda: conn.ok(VMM_LIST)["vms"][0]["open"] == 1, timeout=30)
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                reap(proc)
        assert (proc.returncode, out, err) == (128 + sig, b"", b"")
        # It closed the VM (or its connection did): nothing holds it open.
        wait_until(lambda: conn.ok(VMM_LIST)["vms"][0]["open"] == 0)
        conn.close()


def test_vmmctl_does_not_load_pluggy_or_the_chain() -> None:
    code = (
        "import sys, kstatpy_providers.vmm.vmmctl\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'pluggy'"
        " or m in ('kstatpy.chain', 'kstatpy.instance', 'kstatpy.hookspecs', 'kstatpy_providers.vmm.provider'))\n"
        "print(bad)\n"
    )
    got = run([sys.executable, "-c", code])
    assert (got.returncode, got.stdout) == (0, "[]\n"), got.stderr
    # The package itself imports nothing (the plugin is its .provider module).
    code = "import sys\nbefore = set(sys.modules)\nimport kstatpy_providers.vmm\nprint(sorted(set(sys.modules) - before))\n"
    got = run([sys.executable, "-c", code])
    assert (got.returncode, got.stdout) == (0, "['kstatpy_providers', 'kstatpy_providers.vmm']\n"), got.stderr


# --- KSTATPY_TRACE_PLUGINS -------------------------------------------------------


def trace_lines(stderr: str, prog: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith(f"{prog}: trace: ")]


def test_trace_plugins_in_kstatd_without_v(tmp_path: Path) -> None:
    plugin = "tests.providers_fixture.basic"
    with running_kstatd(tmp_path, plugins=(plugin,), env={"KSTATPY_TRACE_PLUGINS": "1"}) as kd:
        assert kd.stop() == 0
    lines = trace_lines(kd.stderr, "kstatd")
    assert f"kstatd: trace: kstatpy_attach() -> '{plugin}'" in lines
    assert f"kstatd: trace: kstatpy_detach() -> '{plugin}'" in lines
    assert all(f"'{plugin}'" in ln for ln in lines), lines


def test_trace_plugins_in_the_embedded_kstat(tmp_path: Path) -> None:
    env = user_env(tmp_path, KSTATPY_TRACE_PLUGINS="1")
    got = run([exe("kstat"), "-p", "unix:0:system_misc:ncpus"], env)
    assert got.returncode == 0, got.stderr
    lines = trace_lines(got.stderr, "kstat")
    assert "kstat: trace: kstatpy_attach() -> 'system'" in lines
    assert "kstat: trace: kstatpy_refresh() -> 'system'" in lines
    names = re.compile(r"'[\w.]+'")
    assert all(names.search(ln) for ln in lines), lines
    assert trace_lines(run([exe("kstat"), "-p", "unix:0:system_misc:ncpus"], user_env(tmp_path)).stderr, "kstat") == []


# --- a module both autoloaded and named ----------------------------------------------


def test_plugin_named_and_autoloaded_is_loaded_once(tmp_path: Path) -> None:
    fake = build_fake_tree(tmp_path / "root")
    env = {"KSTATPY_DISABLE_PLUGIN_AUTOLOAD": "0", "KSTATPY_SYSTEM_ROOT": str(fake)}
    with running_kstatd(tmp_path, plugins=("kstatpy_providers.system",), args=("-v",), env=env) as kd:
        got = run([exe("kstat"), "--socket", kd.socket, "-p", "unix:0:system_misc:ncpus"], user_env(tmp_path))
        assert (got.returncode, got.stdout) == (0, "unix:0:system_misc:ncpus\t2\n"), got.stderr
        assert kd.stop() == 0
    stderr = kd.stderr
    assert "failed" not in stderr and "already registered" not in stderr, stderr
    listening = re.search(r"listening on .* \(providers: (.*)\)", stderr)
    assert listening is not None, stderr
    names = listening.group(1).split(", ")
    assert names.count("system") == 1 and "kstatpy_providers.system" not in names, names


# --- docs/KSTATD.md's kstatpy:0:requests sample ---------------------------------------


def readme_sample(command: str) -> str:
    text = (REPO / "docs" / "KSTATD.md").read_text(encoding="utf-8")
    start = text.index(f"$ {command}\n") + len(command) + 3
    return text[start : text.index("```", start)]


def test_readme_requests_sample_is_a_fresh_daemons(tmp_path: Path) -> None:
    sample = readme_sample("KSTAT_SOCKET=/tmp/demo/kstat.sock kstat -p kstatpy:0:requests")
    with running_kstatd(tmp_path, wait_ready=False) as kd:
        # The socket file exists once kstatd has bound and listens: a connection made
        # then waits in the backlog. No HELLO first, so the counters are the first client's.
        wait_until(lambda: os.path.exists(kd.socket) or kd.proc.poll() is not None, timeout=30)
        got = run([exe("kstat"), "-p", "kstatpy:0:requests"], user_env(tmp_path, KSTAT_SOCKET=kd.socket))
    assert got.returncode == 0, got.stderr
    assert TIMES.sub("\tT", got.stdout) == TIMES.sub("\tT", sample)


# --- kstat names the socket that failed ---------------------------------------------


def test_kstat_busy_daemon_error_names_the_socket(tmp_path: Path) -> None:
    with running_kstatd(tmp_path, args=("--max-connections", "1")) as kd:
        holder: list[SocketConn] = []

        def hold_the_one_connection() -> bool:
            # The fixture's readiness probe may still count until kstatd sees it close.
            conn = SocketConn(kd.socket)
            try:
                conn.ok(0x4B10)
            except Exception:
                conn.close()
                return False
            holder.append(conn)
            return True

        wait_until(hold_the_one_connection, timeout=30)
        try:
            got = run([exe("kstat"), "--socket", kd.socket, "-p"], user_env(tmp_path))
        finally:
            holder[0].close()
    assert (got.returncode, got.stdout, got.stderr) == (3, "", f"kstat_open: {kd.socket}: Device or resource busy\n")


# --- exit 2 for usage errors (a difference from illumos) ------------------------------


def test_usage_errors_exit_2_and_the_readme_says_illumos_exits_0(tmp_path: Path) -> None:
    env = user_env(tmp_path)
    for argv, first in ((["-Z"], "kstat: illegal option -- Z"), (["-m"], "kstat: option requires an argument -- m")):
        got = run([exe("kstat"), *argv], env)
        assert (got.returncode, got.stderr.splitlines()[:2]) == (2, [first, "Usage:"])
    for argv in (["-h"], ["-?"]):
        assert run([exe("kstat"), *argv], env).returncode == 0
    text = (REPO / "docs" / "READING.md").read_text(encoding="utf-8")
    differences = text[text.index("### Differences from illumos kstat(8)") : text.index("## Statistic metadata")]
    assert "exits 2" in differences and "`usage(); exit(0)`" in differences
