"""``kstatpy-libkstat``: build and install libkstat, the illumos kstat C library over kstatd.

``kstatpy-libkstat install --prefix DIR`` compiles the C sources shipped in the package
(:mod:`kstatpy.libkstat`) with the system's C compiler and installs
``DIR/lib/libkstat.so.1``, ``DIR/lib/libkstat.so``, ``DIR/include/{kstat.h,sys/...}`` and
``DIR/lib/pkgconfig/libkstat.pc``. Exit status: 0 installed, 2 usage, 3 fatal (no
compiler, no msgpack-c, a failed compile or copy), with one line on stderr.
"""

from __future__ import annotations

import click

from kstatpy import __version__
from kstatpy.cli.guard import GuardedCommand
from kstatpy.cli.guard import GuardedGroup

__all__ = ["main"]

FATAL = 3


@click.group(cls=GuardedGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    __version__, "-V", "--version", prog_name="kstatpy-libkstat", message="%(prog)s (kstatpy %(version)s)"
)
def main() -> None:
    """Build and install libkstat, illumos' kstat_open(3KSTAT) C library over kstatd."""


@main.command(cls=GuardedCommand)
@click.option(
    "--prefix",
    required=True,
    metavar="DIR",
    type=click.Path(file_okay=False),
    help="Install into DIR/lib, DIR/include and DIR/lib/pkgconfig.",
)
def install(prefix: str) -> None:
    """Compile libkstat with the system's C compiler and install it under DIR.

    Then: PKG_CONFIG_PATH=DIR/lib/pkgconfig cc prog.c $(pkg-config --cflags --libs
    libkstat), and run with LD_LIBRARY_PATH=DIR/lib. $CC, $CFLAGS and $LDFLAGS apply.
    """
    from kstatpy.libkstat import BuildError
    from kstatpy.libkstat import install as do_install

    try:
        files = do_install(prefix)
    except BuildError as exc:
        click.echo(f"kstatpy-libkstat: {exc}", err=True)
        raise SystemExit(FATAL) from None
    except OSError as exc:
        click.echo(f"kstatpy-libkstat: {exc.filename or prefix}: {exc.strerror or exc}", err=True)
        raise SystemExit(FATAL) from None
    lib = next(f for f in files if f.name == "libkstat.so.1")
    click.echo(f"installed {lib} and {len(files) - 1} more files under {lib.parent.parent}")


if __name__ == "__main__":  # pragma: no cover
    main()
