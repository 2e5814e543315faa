"""kstat(8) command line: getopt(3C) options, operands, and every usage error.

Contract (illumos kstat(8): ``cmd/stat/kstat/kstat.c`` ``main`` and ``usage``)
    :func:`parse_args` returns :class:`Options` or raises :class:`UsageError`, whose
    ``message`` is written to stderr verbatim (some illumos messages have no trailing
    newline), followed by the usage text when ``usage`` is set; the exit status is
    ``code`` (2, or 0 for ``-h``/``-?``/``--help``; ``--version`` is an option, not an
error). Options are processed in order,
    the first error wins, as in the C command. Parsing stops at the first operand or
    ``--`` (POSIX getopt, no permutation).

Our additions never change an illumos option: ``--socket PATH`` (also
``--socket=PATH``), ``--help``, ``--version``, ``--rate``, ``--ndjson`` and ``--describe``,
recognised only among the options. ``--ndjson`` excludes -j -l -p -C -V -q -T;
``--describe`` excludes those but -j, and ``--rate``, ``--ndjson`` and an interval.
An empty PATH, and ``--socket`` among the operands (after the first one, where
getopt has stopped), are usage errors rather than a silent fall back to another socket.
"""

from __future__ import annotations

from kstatpy.select import is_exact
from kstatpy.select import operand_fields

__all__ = ["USAGE", "Options", "Selector", "UsageError", "parse_args", "strtoul"]

PROG = "kstat"

USAGE = (
    "Usage:\n"
    "kstat [ -Cjlq ] [ -p [ -V ]] [ -T d|u ] [ -c class ]\n"
    "      [ -m module ] [ -i instance ] [ -n name ] [ -s statistic ]\n"
    "      [ interval [ count ] ]\n"
    "kstat [ -Cjlq ] [ -p [ -V ]] [ -T d|u ] [ -c class ]\n"
    "      [ module[:instance[:name[:statistic]]] ... ]\n"
    "      [ interval [ count ] ]\n"
)

_FLAGS = "h?CqjlpV"
_LONG_FLAGS = {"--rate": "rate", "--ndjson": "ndjson", "--describe": "describe"}
_WITH_ARG = "Tminsc"
_ULONG_MAX = 2**64 - 1
_C_SPACE = " \t\n\v\f\r"


class UsageError(Exception):
    """A usage error: ``message`` verbatim, then the usage text if ``usage``; exit ``code``."""

    def __init__(self, message: str = "", usage: bool = True, code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.usage = usage
        self.code = code


class Selector:
    """One ``module:instance:name:statistic`` selector; unspecified fields are ``*``."""

    __slots__ = ("instance", "module", "name", "statistic")

    def __init__(self, module: str = "*", instance: str = "*", name: str = "*", statistic: str = "*") -> None:
        self.module = module
        self.instance = instance
        self.name = name
        self.statistic = statistic

    def fields(self) -> tuple[str, str, str, str]:
        """The four pattern texts."""
        return (self.module, self.instance, self.name, self.statistic)

    def exact_for_v(self) -> bool:
        """``-V``'s rule: (module exact or name exact) and statistic exact."""
        return (is_exact(self.module) or is_exact(self.name)) and is_exact(self.statistic)

    def __repr__(self) -> str:
        return "Selector({!r})".format(":".join(self.fields()))


class Options:
    """What the command line asked for."""

    def __init__(self) -> None:
        self.C = False
        self.j = False
        self.l = False
        self.p = False  # also set by -C and -l (illumos g_pflg)
        self.q = False
        self.V = False
        self.timestamp: str | None = None  # "u", "d" or None
        self.ks_class = "*"
        self.selectors: list[Selector] = []
        self.interval = 0
        self.count = 1  # -1: forever
        self.socket: str | None = None
        self.timeout: float | None = None  # --timeout SECONDS (None: $KSTAT_TIMEOUT, else 10)
        self.trust_uids: list[int] = []  # --trust-uid N (a named socket only)
        self.help = False
        self.rate = False  # --rate: counters as per-second rates
        self.ndjson = False  # --ndjson: one JSON object per kstat per report
        self.describe = False  # --describe: statistic metadata instead of values
        self.version = False


def strtoul(text: str) -> tuple[int | None, bool]:
    """strtoul(text, &end, 10) as kstat uses it: ``(value, erange)``.

    ``value`` is None when the text is not entirely a number (no digits, or trailing
    characters); ``erange`` is True on overflow (reported even with trailing junk).
    A leading ``-`` negates modulo 2**64, as C does.
    """
    i, n = 0, len(text)
    while i < n and text[i] in _C_SPACE:
        i += 1
    negative = False
    if i < n and text[i] in "+-":
        negative = text[i] == "-"
        i += 1
    start = i
    while i < n and "0" <= text[i] <= "9":
        i += 1
    if i == start:
        return None, False
    value = int(text[start:i])
    if value > _ULONG_MAX:
        return None, True
    if i != n:
        return None, False
    if negative:
        value = (-value) & _ULONG_MAX
    return value, False


def _c_int(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - 2**32 if value >= 2**31 else value


def _getopt(argv: list[str], opts: Options, named: dict[str, str]) -> int:
    # POSIX getopt over argv[0:] (argv excludes the program name); returns optind.
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return i + 1
        if len(arg) < 2 or arg[0] != "-":
            return i
        if arg.startswith("--"):
            i = _long_option(argv, i, opts)
            continue
        j = 1
        while j < len(arg):
            c = arg[j]
            j += 1
            if c in _WITH_ARG:
                if j < len(arg):
                    optarg = arg[j:]
                elif i + 1 < len(argv):
                    i += 1
                    optarg = argv[i]
                else:
                    raise UsageError(f"{PROG}: option requires an argument -- {c}\n")
                _option_with_arg(c, optarg, opts, named)
                break
            if c not in _FLAGS:
                raise UsageError(f"{PROG}: illegal option -- {c}\n")
            _flag(c, opts)
        i += 1
    return i


def _long_option(argv: list[str], i: int, opts: Options) -> int:
    arg = argv[i]
    if arg == "--help":
        opts.help = True
        return i + 1
    if arg == "--version":
        opts.version = True
        return i + 1
    if arg in _LONG_FLAGS:
        setattr(opts, _LONG_FLAGS[arg], True)
        return i + 1
    for name, parse in (("socket", _socket_arg), ("timeout", _timeout_arg), ("trust-uid", _uid_arg)):
        if arg.startswith(f"--{name}="):
            parse(arg[len(name) + 3 :], opts)
            return i + 1
        if arg == f"--{name}":
            if i + 1 >= len(argv):
                raise UsageError(f"{PROG}: option requires an argument -- {name}\n")
            parse(argv[i + 1], opts)
            return i + 2
    raise UsageError(f"{PROG}: illegal option -- {arg[2:]}\n")


def _socket_arg(path: str, opts: Options) -> None:
    # An empty path would mean "the default": never a silent fall back (issue 13).
    if not path:
        raise UsageError(f"{PROG}: --socket needs a non-empty PATH\n")
    opts.socket = path


def _timeout_arg(text: str, opts: Options) -> None:
    # docs/PROTOCOL.md §9.7 step 4: a finite number of seconds > 0 and <= 86400, parsed
    # as $KSTAT_TIMEOUT is (transport.request_timeout: no "1_0", no non-ASCII digits).
    from kstatpy.errors import KstatError
    from kstatpy.transport import request_timeout

    try:
        opts.timeout = request_timeout(text)
    except KstatError:
        raise UsageError(f"{PROG}: --timeout needs a number of seconds > 0 and <= 86400, not {text!r}\n") from None


def _uid_arg(text: str, opts: Options) -> None:
    if not (text.isascii() and text.isdigit() and int(text) < 0xFFFFFFFF):
        raise UsageError(f"{PROG}: --trust-uid needs a numeric uid, not {text!r}\n")
    opts.trust_uids.append(int(text))


def _flag(c: str, opts: Options) -> None:
    if c in "h?":
        raise UsageError("", code=0)
    if c == "C":
        opts.C = opts.p = True
    elif c == "l":
        opts.l = opts.p = True
    elif c == "p":
        opts.p = True
    elif c == "j":
        opts.j = True
    elif c == "q":
        opts.q = True
    elif c == "V":
        opts.V = True


def _option_with_arg(c: str, optarg: str, opts: Options, named: dict[str, str]) -> None:
    if c == "T":
        first = optarg[:1]
        if first not in ("d", "u"):
            # illumos' kstat.c prints only the usage; its kstat.pl said why, in these words.
            raise UsageError(f"{PROG}: Invalid timestamp specifier {optarg}\n")
        opts.timestamp = first
    elif c == "c":
        opts.ks_class = optarg
    else:
        named[c] = optarg  # -m -i -n -s: the last one wins


def _selector_operand(text: str) -> Selector:
    fields = operand_fields(text)
    if fields is None:  # kstat.c prints only the usage: say why first
        raise UsageError(f"{PROG}: {text}: more than 4 fields (module:instance:name:statistic)\n")
    return Selector(*fields)


def parse_args(argv: list[str]) -> Options:
    """Parse kstat's arguments (without the program name) the way kstat(8) does."""
    opts = Options()
    named: dict[str, str] = {}
    optind = _getopt(argv, opts, named)
    if opts.help or opts.version:
        return opts
    if opts.q and (opts.j or opts.p):
        raise UsageError("-q and -lpj are mutually exclusive\n")
    if opts.V and not opts.p:
        raise UsageError("-V can only be used with -p\n")
    if opts.V and (opts.j or opts.l or opts.C or opts.timestamp):
        raise UsageError("-jlCT and -V are mutually exclusive\n")
    if opts.ndjson and (opts.j or opts.p or opts.q or opts.V or opts.timestamp):
        raise UsageError(f"{PROG}: --ndjson and -jlpCVqT are mutually exclusive\n", usage=False)
    if opts.describe and (opts.p or opts.q or opts.V or opts.timestamp or opts.rate or opts.ndjson):
        raise UsageError(f"{PROG}: --describe and -lpCVqT, --rate, --ndjson are mutually exclusive\n", usage=False)

    numbers = 0
    for text in argv[optind:]:
        if text.startswith(("--socket", "--timeout", "--trust-uid")):
            # getopt stopped at the first operand; taking this as a pattern would
            # silently read another socket (or the embedded chain) than the one named.
            raise UsageError(f"{PROG}: {text.split('=')[0]} must come before the operands\n")
        value, erange = strtoul(text)
        if erange:
            raise UsageError("Interval is too large\n" if numbers == 0 else "Count is too large\n")
        if value is None:
            sel = _selector_operand(text)
            if opts.V and not sel.exact_for_v():
                raise UsageError("-V needs exact module or name, and statistics\n", usage=False)
            opts.selectors.append(sel)
            continue
        value = _c_int(value)
        if numbers == 0:
            if value < 1:
                raise UsageError("Interval must be an integer >= 1")
            opts.interval = value
            opts.count = -1
        elif numbers == 1:
            if value < 1:
                raise UsageError("Count must be an integer >= 1")
            opts.count = value
        else:  # kstat.c prints only the usage: say why first
            raise UsageError(f"{PROG}: {text}: a third number (only interval and count)\n")
        numbers += 1

    if opts.describe and numbers:
        raise UsageError(f"{PROG}: --describe takes no interval or count\n", usage=False)
    if opts.selectors:
        if named:
            raise UsageError("[module[:instance[:name[:statistic]]]] and -m -i -n -s are mutually exclusive")
    else:
        sel = Selector(named.get("m", "*"), named.get("i", "*"), named.get("n", "*"), named.get("s", "*"))
        if opts.V and not sel.exact_for_v():
            raise UsageError("-V needs exact module or name, and statistics\n", usage=False)
        opts.selectors.append(sel)
    return opts
