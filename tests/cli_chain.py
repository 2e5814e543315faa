"""The known chain the kstat CLI tests read: every kstat type, awkward strings, case ties.

``build_chain(chain)`` fills a real :class:`kstatpy.chain.Chain`. Times are whatever
``time.monotonic_ns`` returns; the golden tests patch that clock to a counter.
"""

from __future__ import annotations

from kstatpy.chain import Chain
from kstatpy.constants import KstatDataType as D
from kstatpy.constants import KstatType as T
from kstatpy.records import kstat_named_init
from kstatpy.records import kstat_named_setstr
from kstatpy.records import kstat_timer_init

LONG_NAME = "a_statistic_name_of_thirty_ch"  # 29 characters; names cap at 30


def _named(chain: Chain, module: str, inst: int, name: str, cls: str, recs: list[tuple[str, int, object]]):
    ksp = chain.kstat_create(module, inst, name, cls, T.NAMED, len(recs))
    for knp, (n, t, v) in zip(ksp.ks_data, recs, strict=True):
        kstat_named_init(knp, n, t)
        if t == D.STRING:
            kstat_named_setstr(knp, v)  # type: ignore[arg-type]
        else:
            knp.value = v
    chain.kstat_install(ksp)
    return ksp


def build_chain(chain: Chain) -> Chain:
    """Install the test kstats into ``chain`` (discovery order matters: see the ties)."""
    _named(chain, "unix", 0, "system_misc", "misc", [
        ("ncpus", D.UINT32, 4),
        ("avenrun_1min", D.UINT32, 10),
        ("avenrun_5min", D.UINT32, 3),
        ("avenrun_15min", D.UINT32, 4),
        ("boot_time", D.UINT32, 1700000000),
        ("nproc", D.UINT32, 97),
        ("deficit", D.INT32, -5),
        ("lbolt", D.INT64, -(2**63)),
        ("big", D.UINT64, 2**64 - 1),
        ("Zeta", D.UINT64, 1),
        ("alpha", D.UINT64, 2),
    ])  # fmt: skip
    _named(chain, "strs", 0, "strings", "misc", [
        ("question", D.STRING, "what?"),
        ("quotes", D.STRING, 'say "hi"'),
        ("backslash", D.STRING, "a\\b"),
        ("utf8", D.STRING, "h\u00e9llo \u2603"),
        ("tab", D.STRING, "a\tb\nc"),
        ("ctrl", D.STRING, "bell\x07"),
        ("null", D.STRING, None),
        ("chars", D.CHAR, b"abc\0def"),
        ("charbin", D.CHAR, b"\xff\xfeok"),
        ("", D.UINT32, 7),  # an uninitialised record: never shown
    ])  # fmt: skip
    _named(chain, "Case", 1, "Tie", "misc", [("a", D.UINT32, 1)])
    _named(chain, "case", 1, "tie", "misc", [("b", D.UINT32, 2)])
    _named(chain, "case", 0, "tie", "misc", [("c", D.UINT32, 3)])
    _named(chain, "case", 10, "tie", "misc", [("d", D.UINT32, 4)])
    _named(chain, "case", 2, "tie", "misc", [("Stat", D.UINT32, 1), ("stat", D.UINT32, 2), ("STAT", D.UINT32, 3)])
    _named(chain, "longnames", 123456, LONG_NAME + "x", "a_class_name_that_is_thirty_ch", [
        (LONG_NAME + "xy", D.UINT64, 5),  # truncated to 30 by kstat_named_init
        ("short", D.UINT64, 6),
    ])  # fmt: skip
    _named(chain, "unix", 0, "kstat_secret", "misc", [("hidden", D.UINT32, 1)])
    _named(chain, "neg", -1, "negative", "misc", [("v", D.INT32, 1)])
    # Non-ASCII names: C's widths count bytes, so the padding is 2 bytes short of 30 chars.
    _named(chain, "m\u00f6d", 0, "n\u00e4me", "cl\u00e4ss", [("\u00fcber", D.UINT32, 1)])

    ksp = chain.kstat_create("intr", 0, "intr0", "controller", T.INTR, 1)
    ksp.ks_data[0].intrs[:] = [1, 2, 3, 4, 5]
    chain.kstat_install(ksp)

    ksp = chain.kstat_create("sd", 0, "sd0", "disk", T.IO, 1)
    io = ksp.ks_data[0]
    io.nread, io.nwritten, io.reads, io.writes = 4096, 8192, 3, 4
    io.wtime, io.wlentime, io.rtime, io.rlentime = 100, 200, 300, 400
    chain.kstat_install(ksp)

    ksp = chain.kstat_create("timers", 0, "t", "misc", T.TIMER, 2)
    kstat_timer_init(ksp.ks_data[0], "first")
    ksp.ks_data[0].num_events = 3
    ksp.ks_data[0].elapsed_time = 300
    kstat_timer_init(ksp.ks_data[1], "second")
    chain.kstat_install(ksp)

    ksp = chain.kstat_create("rawmod", 0, "rawdata", "misc", T.RAW, 8)
    chain.kstat_install(ksp)
    return chain


#: The fixed clock of the golden tests: every crtime and snaptime reads 1234.567890123 s.
FIXED_NS = 1_234_567_890_123


def zero_crtime(chain: Chain, module: str, name: str) -> None:
    """Give one kstat ``ks_crtime`` 0 (kstat(8) prints a zero hrtime as ``0``)."""
    for ksp in chain.kstats():
        if ksp.ks_module == module and ksp.ks_name == name:
            ksp.ks_crtime = 0


def run_kstat(kc, *argv: str) -> tuple[int, bytes, bytes]:
    """Run the kstat command in this process on ``kc``: ``(status, stdout, stderr)``."""
    import io

    from kstatpy.cli.kstat import run

    out, err = io.BytesIO(), io.BytesIO()
    code = run(list(argv), out, err, kc=kc)
    return code, out.getvalue(), err.getvalue()
