"""libkstat for the tests: installed once per test process, C programs compiled against it.

``installed()`` runs the real console script, ``kstatpy-libkstat install --prefix P``
(P a temporary directory removed at exit), once per process; ``installed(asan=True)``
installs a second copy built with ``CFLAGS=-fsanitize=address``. ``compile_c`` builds a
program with ``cc ... $(pkg-config --cflags --libs libkstat)`` as a user would, and
``run_env`` gives ``LD_LIBRARY_PATH`` and ``KSTAT_SOCKET``. :class:`Driver` runs
tests/libkstat/lkt.c (one command per line, answers end with ".").
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from kstatpy.raw import CPU_STAT
from kstatpy.raw import LAYOUTS
from kstatpy.raw import SYSINFO
from kstatpy.raw import VAR
from kstatpy.raw import VMINFO
from tests.bounded import join
from tests.bounded import within

HERE = Path(__file__).resolve().parent
SRC = HERE / "libkstat"
SCRIPT = Path(sys.executable).parent / "kstatpy-libkstat"
_FMT = {"uint_t": ('"%u"', "(unsigned)"), "int": ('"%d"', "(int)"), "uint64_t": ('"%llu"', "(unsigned long long)")}
_CTYPE = {CPU_STAT: "cpu_stat_t", SYSINFO: "sysinfo_t", VMINFO: "vminfo_t", VAR: "struct var"}


def _scratch(prefix: str) -> Path:
    d = Path(tempfile.mkdtemp(prefix=prefix))
    d.chmod(0o755)  # nobody runs programs from here
    atexit.register(shutil.rmtree, d, True)
    return d


@functools.cache
def installed(asan: bool = False, sanitize: str | None = None) -> Path:
    """The prefix libkstat was installed into by ``kstatpy-libkstat install``; with
    ``asan`` (or ``sanitize="thread"``) a copy built with that sanitizer."""
    sanitize = "address" if asan else sanitize
    prefix = _scratch(f"libkstat-{sanitize or 'plain'}-")
    env = dict(os.environ)
    if sanitize:
        env["CFLAGS"] = f"-fsanitize={sanitize} -fno-omit-frame-pointer"
        env["LDFLAGS"] = f"-fsanitize={sanitize}"
    done = subprocess.run(
        [str(SCRIPT), "install", "--prefix", str(prefix)], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    return prefix


def pkg_env(prefix: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PKG_CONFIG_PATH"] = str(prefix / "lib" / "pkgconfig")
    return env


def compile_c(sources: list[Path], out: Path, prefix: Path | None = None, extra: tuple[str, ...] = ()) -> Path:
    """``cc SOURCES -o OUT $(pkg-config --cflags --libs libkstat)``; asserts it compiles."""
    prefix = prefix or installed()
    env = pkg_env(prefix)
    flags = subprocess.run(
        ["pkg-config", "--cflags", "--libs", "libkstat"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    cmd = ["cc", "-std=gnu11", "-Wall", "-Wextra", "-Werror", *extra, *map(str, sources), "-o", str(out), *flags]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stderr}"
    return out


def run_env(socket: str | None, prefix: Path | None = None, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = str((prefix or installed()) / "lib")
    env.pop("KSTAT_TIMEOUT", None)
    env.pop("KSTAT_TRUST_UID", None)
    if socket is not None:
        env["KSTAT_SOCKET"] = socket
    env.update(extra)
    return env


def rawprint_h() -> str:
    """C that prints a decodable RAW kstat member by member, as kstat(8) names them."""
    out = ["static int print_raw(kstat_t *ksp) {", "\tchar key[64]; size_t k = 0; const char *s;"]
    out.append("\tfor (s = ksp->ks_module; *s && k < 60; s++) if (*s < '0' || *s > '9') key[k++] = *s;")
    out.append("\tkey[k++] = ':';")
    out.append("\tfor (s = ksp->ks_name; *s && k < 62; s++) if (*s < '0' || *s > '9') key[k++] = *s;")
    out.append("\tkey[k] = 0;")
    for entry, layout in LAYOUTS:
        ctype = _CTYPE[layout]
        out.append(f'\tif (strncmp("{entry}", key, strlen(key)) == 0 && ksp->ks_data_size >= sizeof({ctype})) {{')
        out.append(f"\t\t{ctype} *r = ksp->ks_data;")
        for f in layout.fields:
            if f.name is None:
                continue
            fmt, cast = _FMT[f.ctype]
            out.append(f'\t\tP({fmt}, "{f.name}", {cast}r->{f.member});')
        out.append("\t\treturn 1;\n\t}")
    out.append("\treturn 0;\n}")
    return "\n".join(out) + "\n"


@functools.cache
def driver_binary(asan: bool = False) -> Path:
    """tests/libkstat/lkt.c compiled against the installed library."""
    prefix = installed(asan)
    build = _scratch("lkt-")
    (build / "rawprint.h").write_text(rawprint_h())
    extra: tuple[str, ...] = (f"-I{build}",)
    if asan:
        extra += ("-fsanitize=address", "-fno-omit-frame-pointer", "-g")
    return compile_c([SRC / "lkt.c"], build / "lkt", prefix, extra)


class Driver:
    """A running lkt: ``cmd("open 0")`` -> its answer's lines.

    Its stderr is read all along by a thread (``close()`` returns it): libkstat says one
    line per refusal, and a command of a thousand refused opens would otherwise fill the
    pipe and block lkt in the middle of its answer.
    """

    def __init__(self, env: dict[str, str], argv_prefix: tuple[str, ...] = (), asan: bool = False) -> None:
        self.proc = subprocess.Popen(
            [*argv_prefix, str(driver_binary(asan))],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._err: list[str] = []
        self._err_reader = threading.Thread(target=self._read_err, name="lkt stderr", daemon=True)
        self._err_reader.start()

    def _read_err(self) -> None:
        assert self.proc.stderr
        for line in self.proc.stderr:  # bounded: ends at lkt's exit (or kill)
            self._err.append(line)

    def _collected_err(self) -> str:
        join(self._err_reader, 60, "the end of lkt's stderr")
        return "".join(self._err)

    def cmd(self, line: str, timeout: float = 120) -> list[str]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        out = []
        while True:
            got = within(timeout, f"lkt's answer to {line!r}", self.proc.stdout.readline)
            if not got:
                self.proc.wait(60)
                raise EOFError(f"lkt exited ({self.proc.returncode}) during {line!r}: {self._collected_err()}")
            got = got.rstrip("\n")
            if got == ".":
                return out
            out.append(got)

    def one(self, line: str) -> str:
        out = self.cmd(line)
        assert len(out) == 1, out
        return out[0]

    def close(self) -> tuple[int, str]:
        """Quit; (exit status, stderr)."""
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write("quit\n")
        self.proc.stdin.close()
        within(120, "lkt's exit after quit", self.proc.stdout.read)
        self.proc.wait(60)
        return self.proc.returncode, self._collected_err()

    def __enter__(self) -> Driver:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(60)
        self._err_reader.join(60)  # bounded: the pipe's writer is gone
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None and not f.closed:
                with contextlib.suppress(OSError):
                    f.close()
