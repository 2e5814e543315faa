"""Compile and install libkstat: ``DIR/lib/libkstat.so.1``, ``libkstat.so``, headers, pkg-config.

:func:`install` runs the system's C compiler (``$CC``, else ``cc``) on the sources
shipped in this package, against msgpack-c (pkg-config ``msgpack``, Debian's
``libmsgpack-dev``). Flags: C11, ``-Wall -Wextra -Werror``, ``-fPIC``, soname
``libkstat.so.1``, only the seven API symbols exported (``libkstat.map``, version node
``SUNW_1.1`` as illumos names it). ``$CFLAGS`` and ``$LDFLAGS`` are appended (the tests
build a copy with ``-fsanitize=address``). The build happens in a temporary directory;
files are then moved into place, so a failed build leaves DIR as it was.

Errors are :class:`BuildError` with one line saying what is missing and what to
``apt-get install``, or the compiler's own output.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from kstatpy import __version__
from kstatpy.libkstat.gen import generated_headers

__all__ = ["HEADERS", "SOURCES", "BuildError", "install"]

HERE = Path(__file__).resolve().parent
SOURCES = ("kstat.c", "conn.c", "data.c")
#: hand-written headers (include/...), installed as they are
HEADERS = ("kstat.h", "sys/kstat.h", "sys/kstatpy_types.h")
SONAME = "libkstat.so.1"
CFLAGS = ["-std=c11", "-O2", "-g", "-Wall", "-Wextra", "-Werror", "-fPIC", "-fvisibility=hidden"]


class BuildError(Exception):
    """The library cannot be built; ``str()`` is one line for the user."""


def _tool(env_name: str, default: str, package: str) -> list[str]:
    cmd = shlex.split(os.environ.get(env_name) or default)
    if not cmd or shutil.which(cmd[0]) is None:
        raise BuildError(f"no C compiler ({cmd[0] if cmd else default}) found: apt-get install {package}")
    return cmd


def _msgpack_flags() -> tuple[list[str], list[str]]:
    if shutil.which("pkg-config") is None:
        raise BuildError("pkg-config not found: apt-get install pkg-config")
    out = subprocess.run(["pkg-config", "--cflags", "--libs", "msgpack"], capture_output=True, text=True)
    if out.returncode:
        raise BuildError("the msgpack C library is missing (pkg-config msgpack): apt-get install libmsgpack-dev")
    cflags = subprocess.run(["pkg-config", "--cflags", "msgpack"], capture_output=True, text=True).stdout.split()
    libs = subprocess.run(["pkg-config", "--libs", "msgpack"], capture_output=True, text=True).stdout.split()
    return cflags, libs


def _pc(prefix: Path) -> str:
    return (
        f"prefix={prefix}\n"
        "libdir=${prefix}/lib\n"
        "includedir=${prefix}/include\n\n"
        "Name: libkstat\n"
        "Description: illumos libkstat (kstat_open(3KSTAT)) over kstatd's socket, from kstatpy\n"
        f"Version: {__version__}\n"
        "Requires.private: msgpack\n"
        "Libs: -L${libdir} -lkstat\n"
        "Cflags: -I${includedir}\n"
    )


def install(prefix: str | os.PathLike[str]) -> list[Path]:
    """Build libkstat and install it under ``prefix``; the files installed.

    :raises BuildError: no compiler, no pkg-config, no msgpack-c, or a failed compile.
    """
    cc = _tool("CC", "cc", "gcc")
    mp_cflags, mp_libs = _msgpack_flags()
    dest = Path(prefix).resolve()
    with tempfile.TemporaryDirectory(prefix="libkstat-build-") as tmp:
        stage = Path(tmp)
        inc = stage / "include"
        for rel in HEADERS:
            (inc / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(HERE / "c-headers" / rel, inc / rel)
        for rel, text in generated_headers().items():
            (inc / rel).write_text(text)
        lib = stage / "lib"
        (lib / "pkgconfig").mkdir(parents=True)
        cmd = [
            *cc,
            *CFLAGS,
            f"-I{inc}",
            f"-I{HERE}",
            *mp_cflags,
            *shlex.split(os.environ.get("CFLAGS", "")),
            "-shared",
            f"-Wl,-soname,{SONAME}",
            f"-Wl,--version-script={HERE / 'libkstat.map'}",
            "-Wl,-z,defs",
            "-o",
            str(lib / SONAME),
            *(str(HERE / s) for s in SOURCES),
            *mp_libs,
            *shlex.split(os.environ.get("LDFLAGS", "")),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            first = (done.stderr.strip().splitlines() or ["(no output)"])[0]
            raise BuildError(f"{cc[0]} failed (exit {done.returncode}): {first}")
        (lib / "pkgconfig" / "libkstat.pc").write_text(_pc(dest))
        installed = []
        for src in sorted(p for p in stage.rglob("*") if p.is_file()):
            target = dest / src.relative_to(stage)
            target.parent.mkdir(parents=True, exist_ok=True)
            # A random name made with O_EXCL (mkstemp), never a fixed "NAME.part" that
            # another user could plant as a symbolic link for root to write through.
            fd, staged = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
            try:
                with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
                    shutil.copyfileobj(inp, out)
                    os.fchmod(out.fileno(), src.stat().st_mode & 0o777)  # on the descriptor
                os.replace(staged, target)
            except BaseException:
                Path(staged).unlink(missing_ok=True)
                raise
            installed.append(target)
        link = dest / "lib" / "libkstat.so"
        part = link.with_name("libkstat.so.part")
        part.unlink(missing_ok=True)
        part.symlink_to(SONAME)
        os.replace(part, link)
        installed.append(link)
    return installed
