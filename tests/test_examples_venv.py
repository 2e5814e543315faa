"""The examples as a user installs them: a fresh virtual environment, ``pip install`` of local paths.

kstatpy, ``examples/http_service`` and ``examples/provider_template`` go into a new
venv (no system site-packages; dependencies from the pip cache or the configured
local indexes, nothing else). Then, with the venv's own commands: the example
service serves its kstats embedded and ``kstat --socket`` reads them; the template
provider is read embedded (``kstatpy.serve(providers=["template"])``) and through a
``kstatd`` that found it by its entry point.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.kstatd_fixture import REPO

EXAMPLES = REPO / "examples"
CREATE_WIDGET = 0x574401


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=300)
    pip = [str(root / "bin" / "python"), "-m", "pip", "install", "-q"]
    res = subprocess.run(
        [*pip, str(REPO), str(EXAMPLES / "http_service"), str(EXAMPLES / "provider_template")],
        capture_output=True, text=True, timeout=900, env=clean_env(), cwd=str(root.parent),
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    return root


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KSTATPY_", "KSTAT_", "PYTHON", "VIRTUAL_ENV"))}
    env["KSTATPY_DISABLED_PROVIDERS"] = "system"  # the host's statistics are not what is tested here
    env.update(extra)
    return env


def run(venv: Path, *cmd: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = str(venv / "bin" / cmd[0])
    return subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, timeout=120, env=clean_env(), cwd=str(cwd))


def _readline(proc: subprocess.Popen[str], timeout: float = 30.0) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "the process printed nothing"
    return proc.stdout.readline()  # bounded: select above


def _wait_socket(path: Path, proc: subprocess.Popen[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate(timeout=30)
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)  # polling for readiness against a deadline


def test_the_venv_is_fresh(venv: Path) -> None:
    res = run(venv, "python", "-c", "import kstatpy, sys; print(kstatpy.__file__); print(sys.flags.no_site)", cwd=venv)
    assert res.returncode == 0 and str(venv) in res.stdout and str(REPO) not in res.stdout, res
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()


def test_the_example_service_embedded(venv: Path, tmp_path: Path) -> None:
    sock = tmp_path / "http" / "kstat.sock"
    exe = str(venv / "bin" / "kstatpy-example-http")
    proc = subprocess.Popen(
        [exe, "--port", "0", "--socket", str(sock)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=clean_env(), cwd=str(tmp_path),
    )  # fmt: skip
    try:
        line = _readline(proc)
        assert line.startswith("listening on http://127.0.0.1:"), line
        url = line.split()[2].rstrip(",")
        for path in ("", "", "nope"):
            try:
                urllib.request.urlopen(url + path, timeout=10).close()
            except urllib.error.HTTPError as exc:
                assert exc.code == 404
        res = run(venv, "kstat", "--socket", str(sock), "-p", "http:0:requests", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        values = dict(line.split("\t") for line in res.stdout.splitlines())
        assert (values["http:0:requests:requests"], values["http:0:requests:status_4xx"]) == ("3", "1")
        res = run(venv, "kstat", "--socket", str(sock), "-p", "http:0:latency:num_events", cwd=tmp_path)
        assert res.stdout == "http:0:latency:num_events\t3\n"
    finally:
        proc.send_signal(2)
        assert proc.wait(timeout=30) == 0, proc.communicate(timeout=30)
    assert not sock.exists()


EMBED_TEMPLATE = """
import sys
import kstatpy
with kstatpy.serve(sys.argv[1], providers=["template"]) as served:
    print("serving", flush=True)
    sys.stdin.read()
"""

CREATE = """
import sys
from kstatpy.transport import SocketTransport
t = SocketTransport(sys.argv[1])
print(t.round_trip(int(sys.argv[2]), {"name": sys.argv[3]}))
"""


def test_the_template_provider_embedded(venv: Path, tmp_path: Path) -> None:
    sock = tmp_path / "embedded.sock"
    proc = subprocess.Popen(
        [str(venv / "bin" / "python"), "-c", EMBED_TEMPLATE, str(sock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=clean_env(), cwd=str(tmp_path),
    )  # fmt: skip
    try:
        assert _readline(proc) == "serving\n"
        made = run(venv, "python", "-c", CREATE, str(sock), str(CREATE_WIDGET), "w0", cwd=tmp_path)
        assert made.stdout.strip() == "(0, {'minor': 1})", made
        res = run(venv, "kstat", "--socket", str(sock), "-p", "template", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert "template:1:widget:name\tw0\n" in res.stdout and "template:0:widgets:live\t1\n" in res.stdout
    finally:
        _, err = proc.communicate(input="", timeout=30)
    assert proc.returncode == 0, err


def test_the_template_provider_through_kstatd(venv: Path, tmp_path: Path) -> None:
    sock = tmp_path / "kstatd" / "kstat.sock"
    proc = subprocess.Popen(
        [str(venv / "bin" / "kstatd"), "--socket", str(sock)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=clean_env(), cwd=str(tmp_path),
    )  # fmt: skip
    try:
        _wait_socket(sock, proc)
        made = run(venv, "python", "-c", CREATE, str(sock), str(CREATE_WIDGET), "gadget", cwd=tmp_path)
        assert made.stdout.strip() == "(0, {'minor': 1})", made
        res = run(venv, "kstat", "--socket", str(sock), "-p", "template:1:widget:name", cwd=tmp_path)
        assert (res.returncode, res.stdout) == (0, "template:1:widget:name\tgadget\n"), res.stderr
        res = run(venv, "kstat", "--socket", str(sock), "-p", "-m", "vmm", cwd=tmp_path)
        assert res.returncode == 1  # vmm is loaded too, but has no VM: no kstats
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    ready = [ln for ln in err.splitlines() if ln.startswith("kstatd: ready: ")]
    assert len(ready) == 1 and ready[0].endswith("(providers: template, vmm)"), err
    assert "template" not in err.replace(ready[0], "")  # attached without complaint


def test_man_pages_install_with_the_package(venv: Path, tmp_path: Path) -> None:
    # man-db derives its search path from PATH (DIR/bin -> DIR/share/man): with the venv's
    # bin first and no MANPATH, `man kstat` finds the page pip installed (issue 22).
    env = {k: v for k, v in clean_env().items() if not k.startswith(("MAN", "LC_", "LANG"))}
    env.update(PATH=f"{venv / 'bin'}:/usr/bin:/bin", LANG="C", MANWIDTH="80", MANPAGER="cat", PAGER="cat")
    pages = sorted((venv / "share" / "man").glob("man[18]/*"))
    names = {p.name for p in pages}
    assert {"kstat.1", "kstatd.8", "vmmctl.8", "kstatpy-mdb.1"} <= names, names
    for path in pages:
        name, section = path.stem, path.suffix[1:]
        found = subprocess.run(["man", "-w", name], capture_output=True, text=True, env=env, timeout=60)
        assert found.stdout == f"{path}\n", found.stderr
        shown = subprocess.run(["man", section, name], capture_output=True, text=True, env=env, timeout=60)
        assert shown.returncode == 0 and f"{name} - " in shown.stdout, shown.stderr
        rendered = subprocess.run(["man", "--warnings", "-l", str(path)], capture_output=True, text=True, env=env,
                                  timeout=60)  # fmt: skip
        assert (rendered.returncode, rendered.stderr) == (0, ""), path
    licenses = list(venv.glob("lib/python*/site-packages/kstatpy-*.dist-info/licenses/LICENSE"))
    assert len(licenses) == 1 and "MIT License" in licenses[0].read_text(), licenses
