"""``python3 -m kstatpy`` run by root in a directory others can write imports nothing from it.

``-m`` puts the current directory first on sys.path; kstatpy/__main__.py drops that
entry before importing anything (docs/READING.md). nobody plants ``msgpack.py``,
``click.py`` and ``pluggy.py`` in a sticky world-writable directory (as /tmp); root
runs ``python3 -m kstatpy`` there. Before the fix the planted msgpack ran as root.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from kstatd_fixture import kstatd_env
from nobody import run_as_nobody
from nobody import shared_dir

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the attack is on root; nobody plants the files")

PLANT = "import sys\nopen(sys.argv[1] + '/{name}.ran', 'w').close()\nraise SystemExit(99)\n"


def test_python_m_kstatpy_does_not_import_from_a_world_writable_cwd(tmp_path) -> None:
    with shared_dir(0o1777) as d:
        for name in ("msgpack", "click", "pluggy"):
            code = f"open({d!r} + '/{name}.py', 'w').write({PLANT.format(name=name).replace('sys.argv[1]', repr(d))!r})"
            assert run_as_nobody(["-c", code], timeout=60).returncode == 0
        env = kstatd_env()
        for var in ("KSTATPY_DISABLE_PLUGIN_AUTOLOAD", "KSTAT_SOCKET", "PYTHONSAFEPATH"):
            env.pop(var, None)
        env["KSTATPY_DISABLED_PROVIDERS"] = "vmm"
        env["XDG_RUNTIME_DIR"] = str(tmp_path / "none")
        r = subprocess.run([sys.executable, "-m", "kstatpy", "-p", "unix:0:system_misc:ncpus"], cwd=d, env=env,
                           capture_output=True, timeout=120)  # fmt: skip
        ran = sorted(f for f in os.listdir(d) if f.endswith(".ran"))
    assert ran == [], f"root imported nobody's {ran} from its current directory: {r.stderr!r}"
    assert r.returncode == 0 and r.stdout.startswith(b"unix:0:system_misc:ncpus\t"), r.stderr


def test_the_planted_module_would_run_from_there(tmp_path) -> None:
    # The other side: the same directory on sys.path (python3 -c puts it there too) runs it.
    with shared_dir(0o1777) as d:
        code = (
            f"open({d!r} + '/msgpack.py', 'w').write({PLANT.format(name='msgpack').replace('sys.argv[1]', repr(d))!r})"
        )
        assert run_as_nobody(["-c", code], timeout=60).returncode == 0
        r = subprocess.run([sys.executable, "-c", "import msgpack"], cwd=d, env=kstatd_env(), capture_output=True,
                           timeout=60)  # fmt: skip
        assert r.returncode == 99 and os.path.exists(os.path.join(d, "msgpack.ran")), r.stderr
