"""libkstat under AddressSanitizer and LeakSanitizer: open, update, read, write and close
in a loop, with VMs created and destroyed between chain updates (so that dropped kstats
and their data are freed), leaves no error and no leak.

Both the library (``CFLAGS=-fsanitize=address`` through ``kstatpy-libkstat install``)
and the test driver are instrumented. A first test shows that LeakSanitizer does report
a leak on this machine, so the clean run means something.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from click.testing import CliRunner
from kstatpy_providers.vmm.vmmctl import main as vmmctl_main

from tests.kstatd_fixture import running_kstatd
from tests.libkstat_helpers import Driver
from tests.libkstat_helpers import run_env

PLUGINS = (
    "tests.providers_fixture.basic",
    "tests.providers_fixture.varsize",
    "kstatpy_providers.system",
    "kstatpy_providers.vmm.provider",
)
ASAN = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=23", "LSAN_OPTIONS": "exitcode=23"}


def test_leak_sanitizer_reports_a_leak_here(tmp_path: Path) -> None:
    src = tmp_path / "leak.c"
    src.write_text("#include <stdlib.h>\nvoid *keep;\nint main(void) { keep = malloc(99); keep = 0; return 0; }\n")
    exe = tmp_path / "leak"
    subprocess.run(["cc", "-fsanitize=address", "-g", str(src), "-o", str(exe)], check=True, timeout=120)
    done = subprocess.run([str(exe)], env=run_env(None, **ASAN), capture_output=True, text=True, timeout=120)
    assert done.returncode == 23 and "LeakSanitizer" in done.stderr, done.stderr


def test_open_update_read_close_loop_is_clean(tmp_path: Path) -> None:
    with running_kstatd(tmp_path, plugins=PLUGINS) as kd:
        env = run_env(kd.socket, **ASAN)
        from tests.libkstat_helpers import installed

        env["LD_LIBRARY_PATH"] = str(installed(asan=True) / "lib")
        with Driver(env, asan=True) as d:
            assert d.one("loop 0 10") == "ok 10"
            assert d.one("open 0").startswith("ok kcid ")
            assert d.one("open 1").startswith("ok kcid ")
            for i in range(3):
                result = CliRunner().invoke(vmmctl_main, ["create", f"asan{i}", "--socket", kd.socket])
                assert result.exit_code == 0, result.output
                assert d.one("update 0").startswith("kcid ")
                assert d.one("lookup 0 vmm -1 vm").startswith("found ")
                assert d.one("read 0").startswith("kcid ")
                assert len(d.cmd("dump 0")) > 100
                result = CliRunner().invoke(vmmctl_main, ["destroy", f"asan{i}", "--socket", kd.socket])
                assert result.exit_code == 0, result.output
                assert d.one("read 0") == "err ENXIO"
                assert d.one("update 0").startswith("kcid ")  # frees the VM's kstats and data
            for name in ("grow", "text"):  # ks_data grown, shrunk and grown again
                assert d.one(f"lookup 1 test 0 {name}").startswith("found ")
                assert d.one("readloop 1 40") == "ok 40"
            assert d.one("copy 1") == "strings 1 inside 1"
            assert d.one("lookup 1 test 0 strings").startswith("found ")
            assert d.one("copy 1") == "strings 1 inside 1"
            assert d.one("lookup 1 test 0 named").startswith("found ")
            assert d.one("read 1").startswith("kcid ")
            assert d.one("write 1").startswith("kcid ")
            assert d.one("lookup 1 nosuch -1 -") == "err ENOENT"
            assert d.one("close 0") == "ok 0"
            assert d.one("close 1") == "ok 0"
            code, err = d.close()
        assert (code, err) == (0, ""), err


def test_separate_handles_in_threads_share_nothing(tmp_path: Path) -> None:
    # Not thread-safe per handle, as illumos; but a kstat_ctl_t per thread must work,
    # with no race ThreadSanitizer can see (library and program both instrumented).
    from tests.libkstat_helpers import SRC
    from tests.libkstat_helpers import compile_c
    from tests.libkstat_helpers import installed

    prefix = installed(sanitize="thread")
    exe = compile_c([SRC / "lkthreads.c"], tmp_path / "lkthreads", prefix, ("-fsanitize=thread", "-g", "-pthread"))
    with running_kstatd(tmp_path, plugins=PLUGINS) as kd:
        env = run_env(kd.socket, prefix, TSAN_OPTIONS="exitcode=23 halt_on_error=1")
        done = subprocess.run([str(exe), "4", "5"], env=env, capture_output=True, text=True, timeout=600)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr[-3000:]
    assert done.stdout.startswith("ok ") and int(done.stdout.split()[1]) > 4 * 5 * 40
