"""kstatd's TOML config file (kstatpy.config, issue 22): a real kstatd started from a
full file, a command-line override, and every kind of bad file refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kstatd_fixture import REPO
from kstatd_fixture import hello
from kstatd_fixture import kstatd_env
from kstatd_fixture import running_kstatd

from kstatpy.cli.kstatd import main as kstatd_main
from kstatpy.config import option_keys

KSTATD = [sys.executable, "-m", "kstatpy.cli.kstatd"]
KSTAT = str(Path(sys.executable).parent / "kstat")
TESTS = Path(__file__).resolve().parent


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    assert isinstance(value, (list, tuple)), value
    return "[" + ", ".join(toml_value(v) for v in value) + "]"


def full_file(tmp: Path) -> dict[str, str]:
    """A value for every key: TOML text by key. Options without a value here (added since)
    get their default, so the file still holds every key; one without a default fails."""
    (tmp / "crash").mkdir()
    chosen = {
        "socket": f'"{tmp}/kstat.sock"',
        "zone": f'["web={tmp}/web.sock", "db={tmp}/db.sock"]',
        "plugin": '["tests.providers_fixture.basic"]',
        "allow-write": '["nobody", "@nogroup"]',
        "max-request": "200000",
        "max-reply": "3000000",
        "max-connections": "40",
        "read-timeout": "2.5",
        "on-panic": '"continue"',
        "crash-dir": f'"{tmp}/crash"',
        "vmm-teardown": '"fixed"',
        "kmem-audit": "true",
        "detach-timeout": "7",
        "metrics": '"127.0.0.1:0"',
        "metrics-select": '["test:::"]',
        "idle-timeout": "120.5",
        "frame-timeout": "8",
        "max-per-uid": "9",
        "max-per-zone": "11",
        "reserved-connections": "3",
        "kmem-history": '"2M"',
        "verbose": "0",
    }
    for key, param in option_keys(kstatd_main).items():
        if key not in chosen:
            assert param.default is not None, f"give full_file() a value for the new option {key!r}"
            chosen[key] = toml_value(param.default)
    return chosen


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.write_text(text, encoding="utf-8")
    os.chmod(path, mode)
    return path


def start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*KSTATD, *args], cwd=str(REPO), env=kstatd_env(env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip


def wait_ready(proc: subprocess.Popen[bytes], path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.communicate(timeout=30)[1].decode()
        try:
            hello(path)
            return
        except (OSError, EOFError):
            assert time.monotonic() < deadline, f"kstatd did not answer on {path}"
            time.sleep(0.02)  # polling for readiness with a deadline


def stop(proc: subprocess.Popen[bytes]) -> str:
    proc.terminate()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    return err.decode()


def kstat_p(sock: str, *operands: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "KSTAT_SOCKET"}
    r = subprocess.run([KSTAT, "--socket", sock, "-p", *operands], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_every_option_has_a_key_and_the_full_file_has_them_all(tmp_path: Path) -> None:
    keys = set(option_keys(kstatd_main))
    longs = {o[2:] for p in kstatd_main.params for o in p.opts if o.startswith("--")}
    assert keys == longs - {"help", "version", "config"}
    assert set(full_file(tmp_path)) == keys
    assert "config" not in keys and "max-connections" in keys and "verbose" in keys


def test_a_full_file_configures_kstatd(tmp_path: Path) -> None:
    values = full_file(tmp_path)
    conf = write(tmp_path / "kstatd.toml", "# every option\n" + "".join(f"{k} = {v}\n" for k, v in values.items()))
    proc = start(["--config", str(conf)])
    sock = str(tmp_path / "kstat.sock")
    try:
        wait_ready(proc, sock)
        limits = hello(sock)["limits"]
        assert (limits["max_request"], limits["max_reply"]) == (200000, 3000000), limits
        assert (limits["idle_timeout_ms"], limits["frame_timeout_ms"]) == (120500, 8000), limits
        assert kstat_p(sock, "kstatpy:0:daemon:read_timeout_ms") == "kstatpy:0:daemon:read_timeout_ms\t2500\n"
        assert kstat_p(sock, "test:0:named:i32") == "test:0:named:i32\t-5\n"  # --plugin
        for zone in ("web", "db"):
            assert hello(str(tmp_path / f"{zone}.sock"))["zone"] == zone
    finally:
        err = stop(proc)
    lines = err.splitlines()
    assert len(lines) == 1, err  # the ready line, and nothing else at verbosity 0
    priv = f"{tmp_path}/priv/kstat.sock" if os.geteuid() == 0 else "none"  # root's own socket (§9.7)
    assert lines[0].startswith(f"kstatd: ready: listening on {sock}, zones web={tmp_path}/web.sock, "
                               f"db={tmp_path}/db.sock, privileged {priv}, metrics http://127.0.0.1:"), err  # fmt: skip
    assert lines[0].endswith("/metrics (providers: tests.providers_fixture.basic)"), err


def test_the_command_line_overrides_the_file(tmp_path: Path) -> None:
    conf = write(tmp_path / "k.toml", "max-request = 1000\nidle-timeout = 60\nsocket = '/nonexistent/k.sock'\n")
    with running_kstatd(tmp_path, args=("--config", str(conf), "--max-request", "2000")) as kd:
        limits = hello(kd.socket)["limits"]  # the fixture's --socket beat the file's too
    assert (limits["max_request"], limits["idle_timeout_ms"]) == (2000, 60000), limits


def test_kstatpy_config_names_the_file(tmp_path: Path) -> None:
    conf = write(tmp_path / "k.toml", "frame-timeout = 4\n")
    with running_kstatd(tmp_path, env={"KSTATPY_CONFIG": str(conf)}) as kd:
        assert hello(kd.socket)["limits"]["frame_timeout_ms"] == 4000


BAD = [
    # (file text, line, the message's text after "FILE:LINE: "; tomllib's column varies by version)
    ("max-request = 1000\nmax-requst = 5\n", 2, "unknown key 'max-requst' (did you mean 'max-request'?)"),
    ("# c\n\n[zones]\nweb = '/x'\n", 3, "unknown key 'zones' (did you mean 'zone'?)"),
    ("verbose = 1\nmax-connections = '64'\n", 2, "max-connections: expected an integer, not a string"),
    ("kmem-audit = 1\n", 1, "kmem-audit: expected a boolean, not an integer"),
    ("read-timeout = true\n", 1, "read-timeout: expected a number, not a boolean"),
    ("zone = 'web=/x'\n", 1, "zone: expected an array of strings, not a string"),
    ("plugin = [1]\n", 1, "plugin: expected a string, not an integer"),
    ("\nmax-connections = 0\n", 2, "max-connections: 0 is not in the range 1<=x<=65536."),
    ("read-timeout = nan\n", 1, "read-timeout: nan is not a finite number of seconds."),
    ("on-panic = 'reboot'\n", 1, "on-panic: 'reboot' is not one of 'halt', 'continue'."),
    ("zone = ['global=/x']\n", 1, "zone: 'global=/x': expected NAME=PATH (NAME not 'global')"),
    ("allow-write = ['no-such-user-kstatpy']\n", 1, "allow-write: no such user 'no-such-user-kstatpy'"),
    ("metrics = 'localhost'\n", 1, "metrics: 'localhost': expected HOST:PORT"),
    ("metrics-select = ['a:b:c:d:e']\n", 1, "metrics-select: 'a:b:c:d:e': at most module:instance:name:statistic"),
    ("socket = ''\n", 1, "socket: the socket path must not be empty"),
    ("crash-dir = '/nonexistent-kstatpy'\n", 1, "crash-dir: /nonexistent-kstatpy: does not exist"),
    ("kmem-history = '12Q'\n", 1, "kmem-history: '12Q': expected a byte count such as 4194304, 512K or 16M"),
    ("max-request = 1\nmax-request = 2\n", 2, "invalid TOML: Cannot overwrite a value (column "),
    ("zone = [\n  'a=/x',\n  'b=/y'\n", 3, "invalid TOML: Unclosed array (at end of file)"),
]


@pytest.mark.parametrize(("text", "line", "why"), BAD, ids=[b[2].split(":")[0] for b in BAD])
def test_a_bad_file_is_one_line_naming_file_and_line(tmp_path: Path, text: str, line: int, why: str) -> None:
    conf = write(tmp_path / "bad.toml", text)
    sock = tmp_path / "kstat.sock"
    r = subprocess.run([*KSTATD, "--config", str(conf), "--socket", str(sock)], cwd=str(REPO), env=kstatd_env(),
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    expect = f"kstatd: {conf}:{line}: {why}"
    if why.endswith("(column "):
        assert r.stderr.startswith(expect) and r.stderr.endswith(")\n") and r.stderr.count("\n") == 1, r.stderr
        expect = r.stderr.rstrip("\n")
    assert (r.returncode, r.stderr) == (2, expect + "\n"), r.stderr
    assert not sock.exists() and r.stdout == ""


@pytest.mark.parametrize(
    ("setup", "why"),
    [
        (lambda p: write(p, "verbose = 1\n", 0o666), "writable by group or others (mode 0666); not reading it"),
        (lambda p: write(p, "verbose = 1\n", 0o620), "writable by group or others (mode 0620); not reading it"),
        (lambda p: p.mkdir(), "not a regular file"),
        (
            lambda p: os.chown(write(p, "verbose = 1\n"), 65534, -1),
            "owned by uid 65534, neither root nor kstatd's user; not reading it",
        ),
        (lambda p: None, "No such file or directory"),
        (lambda p: p.write_bytes(b"# \xff\nverbose = 1\n"), "1: not UTF-8 text"),
    ],
    ids=["world-writable", "group-writable", "directory", "other-owner", "missing", "not-utf8"],
)
def test_a_file_kstatd_cannot_trust_or_read(tmp_path: Path, setup, why: str) -> None:
    if "65534" in why and os.geteuid() != 0:
        pytest.skip("chown to another user needs root (CI runs as root)")
    conf = tmp_path / "k.toml"
    setup(conf)
    r = subprocess.run([*KSTATD, "--config", str(conf), "--socket", str(tmp_path / "k.sock")], cwd=str(REPO),
                       env=kstatd_env(), capture_output=True, text=True, timeout=60)  # fmt: skip
    sep = ":" if why[0].isdigit() else ": "
    assert (r.returncode, r.stderr) == (2, f"kstatd: {conf}{sep}{why}\n"), r.stderr
