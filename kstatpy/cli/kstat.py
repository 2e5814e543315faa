"""The ``kstat`` command: illumos kstat(8) over kstatd, or over providers loaded in-process.

Where it reads from
    ``--socket PATH``, else ``$KSTAT_SOCKET``, else the per-user default socket. When
    no socket was named (neither ``--socket`` nor ``$KSTAT_SOCKET``) and nothing
    answers at the default path, the providers are loaded in this process (the
    embedded default). A named socket that does not answer is fatal: exit 3 with
    ``kstat_open: PATH: <strerror>``. A default path whose directory another user
    controls (kstatpy.safepath) is never used: one line on stderr, then the embedded
    default; a named one is fatal. The daemon path imports no provider, no pluggy and
    no chain: those load lazily on the embedded path only.

Reports (illumos kstat(8): ``cmd/stat/kstat/kstat.c`` main loop, "interval [count]")
    Each report: optional timestamp, then the formatted instances, then a flush.
    Between reports (never after the last): sleep to the next cadence point,
    ``chain_update``, print one newline. Exit 0 when some statistic matched in any
    report, 1 when none did, 2 on usage errors, 3 on fatal errors.
"""

from __future__ import annotations

import errno
import gc
import os
import sys
import time

from kstatpy.cli.kstat_args import USAGE
from kstatpy.cli.kstat_args import Options
from kstatpy.cli.kstat_args import UsageError
from kstatpy.cli.kstat_args import parse_args
from kstatpy.cli.kstat_format import ReportStyle
from kstatpy.cli.kstat_format import format_report
from kstatpy.cli.kstat_help import HELP
from kstatpy.cli.kstat_select import read_instances
from kstatpy.cli.kstat_select import select_instances
from kstatpy.cli.kstat_select import unread_lines
from kstatpy.cli.output import complete_stdio
from kstatpy.cli.output import stdout_closed
from kstatpy.cli.output import write_fully
from kstatpy.select import Pattern
from kstatpy.select import RegexError
from kstatpy.select import SelectorPatterns
from kstatpy.select import is_regex

TYPE_CHECKING = False  # not typing's: the kstat command's kstatd path never imports typing
if TYPE_CHECKING:
    from typing import Any
    from typing import BinaryIO

__all__ = ["HELP", "main", "run"]


#: Where the current run reads from: "kstatd" or "in-process" (for main's messages).
SOURCE = ["kstatd"]


class FatalError(Exception):
    """Exit 3 with ``str()`` as the message line."""


def _strerror(code: int | None) -> str:
    return os.strerror(code) if code else "Unknown error"


def _wants_module(opts: Options) -> Any:
    # Which kstat modules the selectors can match (None: any), for skipping providers
    # that declare theirs and kstats a provider need not create; exact: a module is
    # passed when some selector's module pattern matches it, and a kstat is selected
    # only then. A /regex/ is never evaluated here (its error belongs to the report).
    pats = [Pattern(s.module) for s in opts.selectors]
    if any(is_regex(p.text) or p.matches_all for p in pats):
        return None
    return lambda module: any(p.match(module) for p in pats)


def open_source(opts: Options, environ: Any = None) -> tuple[Any, Any]:
    """``(kc, cleanup)``: a kstatd handle, or the embedded chain's (see the module docstring)."""
    from kstatpy.client import kstat_open
    from kstatpy.errors import KstatError
    from kstatpy.errors import RequestTimeoutError
    from kstatpy.errors import ServerUnavailableError
    from kstatpy.errors import UntrustedServerError
    from kstatpy.protocol import default_socket_path
    from kstatpy.safepath import UnsafePathError

    environ = os.environ if environ is None else environ
    named = opts.socket or environ.get("KSTAT_SOCKET") or None
    path = named or default_socket_path()
    try:
        return kstat_open(named, timeout=opts.timeout, read_chain=False, trust=opts.trust_uids), None
    except UnsafePathError as exc:  # a directory another user controls: never used
        if named is not None:
            raise FatalError(f"kstat_open: {exc.message}") from exc
        # The default path, squatted by another user: read the host in-process (nothing
        # of theirs is read) and say so, so a squatter can neither spoof nor silence kstat.
        sys.stderr.write(f"kstat: {exc.message}; reading in-process\n")
    except (UntrustedServerError, RequestTimeoutError) as exc:  # the message names the socket
        raise FatalError(f"kstat_open: {exc.message}") from exc
    except ServerUnavailableError as exc:
        # Only "nothing listens" at the default path means "read in-process" (§9.7 step 5).
        if named is not None or exc.errno not in (errno.ENOENT, errno.ECONNREFUSED):
            why = "not a socket" if exc.errno == errno.ENOTSOCK else _strerror(exc.errno)
            raise FatalError(f"kstat_open: {path}: {why}") from exc
    except KstatError as exc:
        why = exc.message if exc.errno == errno.EINVAL and exc.message else _strerror(exc.errno)
        raise FatalError(f"kstat_open: {path}: {why}") from exc
    return open_embedded(_wants_module(opts))


def open_embedded(wants_module: Any = None) -> tuple[Any, Any]:
    """The embedded default: load the providers, attach them to a new chain, open it.

    ``wants_module``: a predicate over kstat module names that passes every module the
    selectors can match (None: all). Providers that declared their modules and match
    none are not loaded (:func:`kstatpy.plugins.load_providers`), and the chain's
    ``config["wants_module"]`` (:data:`kstatpy.plugins.WANTS_MODULE`) lets a provider
    create only those modules' kstats (the system provider does).
    """
    from kstatpy.chain import Chain
    from kstatpy.client import kstat_open_chain
    from kstatpy.plugins import WANTS_MODULE
    from kstatpy.plugins import load_providers
    from kstatpy.plugins import trace_to_stderr

    trace_to_stderr("kstat")
    providers = load_providers(wants_module=wants_module, plain=True)
    chain = Chain(config=None if wants_module is None else {WANTS_MODULE: wants_module})
    providers.attach(chain)
    kc = kstat_open_chain(chain, refresh=lambda: providers.refresh(chain), providers=providers, read_chain=False)
    SOURCE[0] = "in-process"

    def cleanup() -> None:
        kc.close()
        providers.detach(chain)

    return kc, cleanup


def _timestamp(fmt: str) -> str:
    if fmt == "u":
        return f"{int(time.time())}\n"
    # The C locale's _DATE_FMT (date(1)'s format).
    return time.strftime("%a %b %e %H:%M:%S %Z %Y") + "\n"


class _Cadence:
    """statcommon's sleep_until: fixed cadence from program start, SIGCONT resets it."""

    def __init__(self, interval_s: int, start_ns: int) -> None:
        self.interval = interval_s * 1_000_000_000
        self.wakeup = start_ns
        self.caught_cont = False

    def sleep(self) -> None:
        interval = self.interval
        now = time.monotonic_ns()
        pause = self.wakeup + interval - now
        if pause <= 0 or pause < interval // 4:
            if self.caught_cont:
                self.caught_cont = False
                self.wakeup = now + interval
                pause = interval
            else:
                pause = interval // 2
                self.wakeup += interval
        else:
            self.wakeup += interval
        if pause >= 1000:
            time.sleep(pause / 1e9)  # resumed after EINTR by Python (PEP 475)


def _write(stream: BinaryIO, chunks: list[str]) -> None:
    text = "".join(chunks)
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate a provider put in a string
        data = text.encode("utf-8", "backslashreplace")
    write_fully(stream, data)  # a raw (unbuffered) stream may take fewer bytes: loop
    stream.flush()


def _usage_error(err: BinaryIO, exc: UsageError) -> int:
    err.write((exc.message + (USAGE if exc.usage else "")).encode())
    err.flush()
    return exc.code


def run(
    argv: list[str], out: BinaryIO, err: BinaryIO, kc: Any = None, install_signals: bool = False, select: bool = True
) -> int:
    """Run kstat with ``argv`` (no program name) on binary streams; returns the exit status.

    ``kc`` is an open handle to read from instead of opening one (it is not closed).
    ``select=False`` reads the whole chain and selects here, as before KSTATPY_IOC_SELECT
    (the reference the tests compare the selection with).
    """
    start_ns = time.monotonic_ns()
    try:
        opts = parse_args(argv)
    except UsageError as exc:
        return _usage_error(err, exc)
    if opts.help:
        out.write(HELP.encode())
        out.flush()
        return 0
    if opts.version:
        from kstatpy import __version__

        out.write(f"kstat (kstatpy {__version__})\n".encode())
        out.flush()
        return 0

    selectors = [SelectorPatterns(*s.fields()) for s in opts.selectors]
    class_pat = Pattern(opts.ks_class)
    class_match = None if class_pat.matches_all else class_pat.match
    style = ReportStyle(opts)
    cadence = _Cadence(opts.interval, start_ns)
    if install_signals and opts.count > 1:
        import _signal as signal

        def on_cont(_sig: int, _frame: Any) -> None:
            cadence.caught_cont = True

        signal.signal(signal.SIGCONT, on_cont)

    cleanup = None
    matched = False
    unread = False  # some selected kstat could not be read: exit 3 (docs/READING.md)
    rates = None
    if opts.rate:
        from kstatpy.cli.kstat_rate import RateState

        rates = RateState()
    try:
        if kc is None:
            kc, cleanup = open_source(opts)
        if opts.describe:
            kc.chain_update()  # --describe selects over the chain's headers
            return _describe(kc, selectors, class_match, opts.j, out, err)
        remaining = opts.count
        while True:
            chunks: list[str] = []
            if opts.timestamp:
                chunks.append(_timestamp(opts.timestamp))
            style.stamp = time.time()
            # A report allocates ~3 objects per statistic and frees them all; none is
            # part of a cycle, so the cyclic collector only costs time (3x on 10^5).
            gc_was_enabled = gc.isenabled()
            gc.disable()
            head = len(chunks)
            try:
                selected = select and rates is None  # --rate maps instances through kc_chain
                if selected:
                    try:
                        instances = select_instances(kc, selectors, opts.ks_class, opts.p)
                        matched |= format_report(instances, selectors, class_match, style, chunks)
                    except RegexError:
                        # kstat(8) prints what came before the bad pattern: redo the report
                        # the old way (the whole chain), which stops at the same place.
                        del chunks[head:]
                        selected = False
                if not selected:
                    kc.chain_update()
                    instances = read_instances(kc, selectors, opts.p)
                    if rates is not None:
                        notes = rates.apply(kc, instances)
                        if notes and not (opts.j or opts.ndjson):
                            _write(err, [f"kstat: reset: {n}\n" for n in notes])
                    matched |= format_report(instances, selectors, class_match, style, chunks)
            except RegexError as exc:
                _write(out, chunks)
                return _usage_error(err, UsageError(f"kstat: {exc}\n"))
            finally:
                if gc_was_enabled:
                    gc.enable()
            _write(out, chunks)
            missing = unread_lines(instances, selectors, class_match)
            if missing:
                unread = True
                _write(err, missing)
            if remaining > 0:
                remaining -= 1
                if remaining == 0:
                    break
            cadence.sleep()
            if not opts.ndjson:  # every NDJSON line is an object
                _write(out, ["\n"])
    except FatalError as exc:
        err.write(f"{exc}\n".encode("utf-8", "surrogateescape"))  # a path's bytes as given
        err.flush()
        return 3
    except OSError as exc:
        if exc.errno == 32:  # EPIPE: the reader went away
            return 1 if not matched else 0
        raise  # main() reports it: "kstat: write error: ...", exit 3
    finally:
        if cleanup is not None:
            cleanup()
    if unread:
        return 3
    return 0 if matched else 1


def _describe(kc: Any, selectors: list[SelectorPatterns], class_match: Any, as_json: bool, out: BinaryIO,
              err: BinaryIO) -> int:  # fmt: skip
    from kstatpy.cli.kstat_describe import DescribeUnsupported
    from kstatpy.cli.kstat_describe import describe_report

    chunks: list[str] = []
    try:
        matched = describe_report(kc, selectors, class_match, as_json, chunks)
    except RegexError as exc:
        return _usage_error(err, UsageError(f"kstat: {exc}\n"))
    except DescribeUnsupported as exc:
        raise FatalError(f"kstat: this kstatd cannot describe statistics (KSTATPY_IOC_DESCRIBE): {exc}") from exc
    _write(out, chunks)
    return 0 if matched else 1


def _fatal_message(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return f"kstat: {message}\n"


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: ``kstat [options] [operands]``."""
    import _signal as signal  # signal.py's C core: signal.py would import enum

    # As the C command: killed by SIGINT/SIGPIPE rather than a traceback.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    from kstatpy.errors import KstatError

    complete_stdio()
    if sys.stdout is None:  # started with fd 1 closed (">&-")
        stdout_closed("kstat")
    if sys.stderr is None:  # "2>&-": errors go nowhere, the exit status still tells
        sys.stderr = open(os.devnull, "w")
    try:
        code = run(sys.argv[1:] if argv is None else argv, sys.stdout.buffer, sys.stderr.buffer, install_signals=True)
        sys.stdout.flush()
    except KstatError as exc:  # includes a kstatd lost after connecting (ServerUnavailableError)
        try:
            sys.stderr.write(_fatal_message(exc))
        except OSError:
            pass
        code = 3
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        # A reply framed right but not of docs/PROTOCOL.md's shapes (a broken or hostile
        # server); read in-process, the same is a bug of kstat or a provider: say which.
        where = "malformed reply from kstatd" if SOURCE[0] == "kstatd" else "internal error reading in-process"
        try:
            sys.stderr.write(f"kstat: {where}: {type(exc).__name__}: {exc}\n")
        except OSError:
            pass
        code = 3
    except OSError as exc:  # our own output cannot be written (ENOSPC, EIO): fatal
        from kstatpy.cli.guard import write_failed  # imports click: only on this path

        write_failed("kstat", exc, 3)
    sys.exit(code)


if __name__ == "__main__":
    main()
