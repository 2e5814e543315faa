"""The pytest plugin as a provider author gets it: a pytest run in a fresh directory, no conftest.

The plugin is found through its ``pytest11`` entry point (installing kstatpy is
enough); the fixtures start real kstatd processes and the real ``kstat`` command.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.examples_path import EXAMPLE_PATHS
from tests.kstatd_fixture import REPO

AUTHOR_TESTS = '''
import subprocess
import sys

import pytest

from kstatpy.kmem import FreeWhileReferenced
from kstatpy.kmem import KmemObject


class State(KmemObject):
    __slots__ = ("n",)

    def __init__(self):
        self.n = 0


def vmmctl(socket, *args):
    cmd = [sys.executable, "-m", "kstatpy_providers.vmm.vmmctl", *args, "--socket", socket]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_kstat_chain_audits_every_free(kstat_chain):
    ksp = kstat_chain.kstat_create("m", 0, "k", "misc", 1, 0)
    ksp.ks_private = kstat_chain.kmem.zalloc(State)
    kstat_chain.kstat_install(ksp)
    with pytest.raises(FreeWhileReferenced):
        kstat_chain.kmem.free(ksp.ks_private)


def test_kstatd_with_chosen_providers_and_the_cli(kstatd, kstat_cli):
    kd = kstatd("vmm")
    assert vmmctl(kd.socket, "create", "web").returncode == 0
    res = kstat_cli("-p", "vmm:1:vm:vm_name")
    assert (res.returncode, res.stdout) == (0, "vmm:1:vm:vm_name\\tweb\\n"), res.stderr
    assert kstat_cli("-p", "kstatpy:0:daemon:panics").stdout == "kstatpy:0:daemon:panics\\t0\\n"
    assert kstat_cli("-p", "-m", "cpu_info").returncode == 1  # only vmm was loaded, not system


def test_kstatd_audits_by_default(kstatd):
    kd = kstatd("vmm", args=["--vmm-teardown=pre-14281"])
    assert vmmctl(kd.socket, "create", "web").returncode == 0
    res = vmmctl(kd.socket, "destroy", "web")
    assert res.returncode == 1 and "kmem_free while 33 kstat(s) point into it" in res.stderr
    assert kd.crash_files()
    assert kd.stop() == 0


def test_lifetime_race_fixture_is_seeded(lifetime_race, request):
    assert request.config.getoption("--kstatpy-seed") == 99
'''


def test_the_plugin_in_a_provider_authors_pytest_run(tmp_path: Path) -> None:
    (tmp_path / "test_author.py").write_text(textwrap.dedent(AUTHOR_TESTS))
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--kstatpy-seed", "99", str(tmp_path)],
        cwd=str(tmp_path), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert "4 passed" in res.stdout


def test_the_plugin_is_registered_through_pytest11() -> None:
    from importlib.metadata import entry_points

    (ep,) = [ep for ep in entry_points(group="pytest11") if ep.name == "kstatpy"]
    assert ep.value == "kstatpy.testing.plugin"
    res = subprocess.run([sys.executable, "-m", "pytest", "--help"], capture_output=True, text=True, timeout=120, cwd=str(REPO))
    assert "--kstatpy-seed" in res.stdout


def test_the_guides_harness_example_runs(tmp_path: Path) -> None:
    # docs/PROVIDERS.md §6's example, as written, against the template provider.
    guide = (REPO / "docs/PROVIDERS.md").read_text()
    (block,) = re.findall(r"```python\n(.*?)```", guide, re.S)
    (tmp_path / "test_guide.py").write_text(block)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(EXAMPLE_PATHS))
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=str(tmp_path), capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert res.returncode == 0 and "1 passed" in res.stdout, res.stdout + res.stderr
