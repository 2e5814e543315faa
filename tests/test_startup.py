"""The kstat command's start-up: what it imports on the kstatd path (issue 10).

The real console script runs under ``python -S`` with only the repository and
msgpack's directory on PYTHONPATH, so nothing the site machinery loads (an editable
install's finder imports ``re``, ``enum`` and ``pathlib``) hides what kstat imports.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import msgpack
import pytest
from console_scripts import console_script
from console_scripts import missing_script
from kstatd_fixture import REPO
from kstatd_fixture import running_kstatd

KSTAT = console_script("kstat")
#: What a request through kstatd must not import (the first three: issue 10's list).
NEVER = ("re", "typing", "enum", "kstatpy.constants", "importlib.metadata", "pluggy", "kstatpy.chain",
         "kstatpy.plugins", "socket", "signal", "selectors", "click", "kstatpy.raw", "threading")  # fmt: skip

_PROBE = """
import atexit, sys
before = set(sys.modules)
atexit.register(lambda: print(repr(sorted(set(sys.modules) - before)), file=sys.stderr))
script = sys.argv[1]
sys.argv = sys.argv[1:]
exec(compile(open(script).read(), script, "exec"), {"__name__": "__main__"})
"""


@pytest.fixture(scope="module")
def kd(tmp_path_factory):
    with running_kstatd(tmp_path_factory.mktemp("kstatd"), plugins=["tests.providers_fixture.basic"]) as kd:
        yield kd


def imported(kd, *argv: str) -> tuple[bytes, list[str]]:
    """Run the console script with ``argv`` against ``kd``: (stdout, modules it imported)."""
    assert KSTAT, missing_script("kstat")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), os.path.dirname(os.path.dirname(msgpack.__file__))])
    env["KSTAT_SOCKET"] = kd.socket
    got = subprocess.run([sys.executable, "-S", "-c", _PROBE, KSTAT, *argv], env=env, capture_output=True, timeout=60)
    assert got.returncode == 0, got.stderr
    modules = ast.literal_eval(got.stderr.decode().strip())
    return got.stdout, modules


def test_kstatd_path_imports_no_re_typing_or_enum(kd):
    out, modules = imported(kd, "-p", "test:0:named:u64")
    assert out.startswith(b"test:0:named:u64\t")
    assert "kstatpy.cli.kstat" in modules and "msgpack" in modules  # the probe sees the imports
    assert sorted(set(NEVER) & set(modules)) == []


def test_a_regex_selector_imports_re_and_only_then(kd):
    out, modules = imported(kd, "-p", "test:0:/^nam/:u64")
    assert out.startswith(b"test:0:named:u64\t")
    assert "re" in modules
    assert sorted((set(NEVER) - {"re", "enum"}) & set(modules)) == []  # re itself imports enum


def test_the_console_script_does_not_import_re():
    # pip's generated wrapper: older pips wrote "import re" into it; ours must not.
    assert KSTAT
    text = open(KSTAT).read()
    assert "import re\n" not in text and "from kstatpy.cli.kstat import main" in text


# --- the embedded default (no kstatd): the system provider without pluggy -------------

#: What the embedded kstat must not import for a selection only the system provider's
#: unix module can match (its cache warm): pluggy (the provider's hooks are plain,
#: kstatpy.plain_providers), the entry-point scan, and the system provider's other sources.
EMBEDDED_NEVER = ("pluggy", "kstatpy.hookspecs", "importlib.metadata", "fnmatch", "json", "re", "typing",
                  "logging", "inspect", "dataclasses", "warnings", "kstatpy_providers.system.cpu",
                  "kstatpy_providers.system.cpustat", "kstatpy_providers.system.disk",
                  "kstatpy_providers.system.link", "kstatpy_providers.system.mib2")  # fmt: skip


def embedded(tmp_path, disabled: str, *argv: str) -> tuple[bytes, list[str]]:
    """The console script with no kstatd, under ``python -S`` as :func:`imported` runs it.

    PYTHONPATH: the repository, ``kstatpy_providers`` (a link to ``providers/``: the
    editable install's finder is not loaded under -S), a dist-info naming the
    built-in providers' entry points, and the directory of msgpack and pluggy. Run
    twice: the second run hits the entry-point cache.
    """
    import pluggy

    assert KSTAT, missing_script("kstat")
    links = tmp_path / "links"
    (links / "kstatpy_builtin-0.dist-info").mkdir(parents=True)
    (links / "kstatpy_providers").symlink_to(REPO / "providers")
    (links / "kstatpy_builtin-0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: kstatpy-builtin\n")
    (links / "kstatpy_builtin-0.dist-info" / "entry_points.txt").write_text(
        "[kstatpy.providers]\nsystem = kstatpy_providers.system\nvmm = kstatpy_providers.vmm.provider\n"
    )
    site = {os.path.dirname(os.path.dirname(m.__file__)) for m in (msgpack, pluggy)}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "KSTAT"))}
    env.update(PYTHONPATH=os.pathsep.join([str(REPO), str(links), *sorted(site)]), XDG_RUNTIME_DIR=str(tmp_path),
               KSTATPY_CACHE_DIR=str(tmp_path / "cache"), KSTATPY_DISABLED_PROVIDERS=disabled)  # fmt: skip
    for _ in range(2):
        got = subprocess.run([sys.executable, "-S", "-c", _PROBE, KSTAT, *argv], env=env, capture_output=True,
                             timeout=120)  # fmt: skip
    assert got.returncode in (0, 1), got.stderr
    return got.stdout, ast.literal_eval(got.stderr.decode().strip().splitlines()[-1])


def _others() -> str:
    from importlib.metadata import entry_points

    return ",".join(sorted({ep.name for ep in entry_points(group="kstatpy.providers")} - {"system", "vmm"}))


def test_embedded_unix_selection_imports_no_pluggy_and_no_other_source(tmp_path):
    out, modules = embedded(tmp_path, _others(), "-p", "unix:0:system_misc:ncpus")
    assert out == f"unix:0:system_misc:ncpus\t{_present()}\n".encode()
    assert "kstatpy.chain" in modules and "kstatpy_providers.system.unix" in modules
    assert sorted(set(EMBEDDED_NEVER) & set(modules)) == []


def test_embedded_selection_a_marked_provider_can_match_uses_pluggy(tmp_path):
    # vmm marks its hooks @hookimpl: when a selector can match its module, pluggy calls.
    _, modules = embedded(tmp_path, _others(), "-p", "vmm:::")
    assert "pluggy" in modules and "kstatpy_providers.vmm.provider" in modules


def _present() -> int:
    text = open("/sys/devices/system/cpu/present").read().strip()
    return sum(int(b) - int(a) + 1 if "-" in p else 1 for p in text.split(",") for a, _, b in [p.partition("-")])
