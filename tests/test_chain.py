"""The chain's rules: illumos `kstat_fr.c` and `sys/kstat.h`."""

from __future__ import annotations

import errno
from functools import partial

import pytest

from kstatpy import constants as c
from kstatpy.chain import Chain
from kstatpy.errors import KstatCreateError
from kstatpy.errors import KstatError
from kstatpy.errors import KstatFatalError
from kstatpy.ioctl import Conn
from kstatpy.ioctl import Cred
from kstatpy.ioctl import IoctlHandler
from kstatpy.kstat import KMutex
from kstatpy.records import kstat_named_init
from kstatpy.records import kstat_named_setstr
from tests.chain_io import chain_read
from tests.chain_io import chain_write


def named(chain: Chain, module: str = "m", instance: int = 0, name: str = "n", fields=(("a", c.KSTAT_DATA_UINT64),), flags: int = 0, zone: int = c.ALL_ZONES, install: bool = True):
    ksp = chain.kstat_create_zone(module, instance, name, "misc", c.KSTAT_TYPE_NAMED, len(fields), flags, zone)
    for knp, (fname, ftype) in zip(ksp.ks_data, fields, strict=True):
        kstat_named_init(knp, fname, ftype)
    if install:
        chain.kstat_install(ksp)
    return ksp


def header_names(chain: Chain, zone: int = c.GLOBAL_ZONEID) -> list[str]:
    return [f"{h['module']}:{h['instance']}:{h['name']}" for h in chain_read(chain, 0, zone)["data"]]


def errno_of(fn, *args, **kwargs) -> int:
    with pytest.raises(KstatError) as info:
        fn(*args, **kwargs)
    return info.value.errno


# --- well-known kstats and kids ---------------------------------------------


def test_kid0_and_kid1_are_headers_and_types(chain: Chain) -> None:
    assert chain.chain_id == 2
    hdr = chain_read(chain, 0)
    assert (hdr["module"], hdr["name"], hdr["class"], hdr["type"]) == ("unix", "kstat_headers", "kstat", c.KSTAT_TYPE_RAW)
    assert hdr["flags"] & (c.KSTAT_FLAG_VIRTUAL | c.KSTAT_FLAG_VAR_SIZE) == 3
    assert [h["kid"] for h in hdr["data"]] == [0, 1]
    assert hdr["ndata"] == 2 and hdr["data_size"] == 2 * 184
    types = chain_read(chain, 1)
    assert types["name"] == "kstat_types"
    # ULONG records are shown to readers as UINT64.
    assert types["data"] == [["raw", 4, 0], ["name=value", 4, 1], ["interrupt", 4, 2], ["i/o", 4, 3], ["event_timer", 4, 4]]


def test_zero_size_read_of_kid0_gets_enomem_with_needed_size(chain: Chain) -> None:
    with pytest.raises(KstatError) as info:
        chain_read(chain, 0, data_size=0)
    assert info.value.errno == errno.ENOMEM
    assert info.value.extra["data_size"] == 2 * 184
    assert info.value.extra["flags"] & c.KSTAT_FLAG_VAR_SIZE


def test_kid_is_chain_id_then_bumped(chain: Chain) -> None:
    a = named(chain, name="a")
    assert a.ks_kid == 2 and chain.chain_id == 3
    chain.kstat_delete(a)
    assert chain.chain_id == 4
    b = named(chain, name="b")
    assert b.ks_kid == 4 and chain.chain_id == 5


def test_chain_id_create_bumps_install_does_not(chain: Chain) -> None:
    before = chain.chain_id
    ksp = named(chain, install=False)
    assert chain.chain_id == before + 1
    chain.kstat_install(ksp)
    assert chain.chain_id == before + 1
    chain.kstat_delete(ksp)
    assert chain.chain_id == before + 2


def test_invalid_until_install(chain: Chain) -> None:
    ksp = named(chain, install=False)
    assert ksp.ks_flags & c.KSTAT_FLAG_INVALID
    assert errno_of(partial(chain_read, chain), ksp.ks_kid) == errno.EAGAIN
    assert "m:0:n" not in header_names(chain)
    chain.kstat_install(ksp)
    assert not ksp.ks_flags & c.KSTAT_FLAG_INVALID
    assert "m:0:n" in header_names(chain)


def test_read_of_missing_kid_is_enxio(chain: Chain) -> None:
    assert errno_of(partial(chain_read, chain), 999) == errno.ENXIO


# --- create validation ------------------------------------------------------


@pytest.mark.parametrize(
    ("ks_type", "ndata", "flags", "message", "code"),
    [
        (5, 1, 0, "kstat_create('mod', 3, 'nm'): invalid kstat type 5", errno.EINVAL),
        (c.KSTAT_TYPE_NAMED, 1, c.KSTAT_FLAG_PERSISTENT | c.KSTAT_FLAG_VIRTUAL, "kstat_create('mod', 3, 'nm'): cannot create persistent virtual kstat", errno.EINVAL),
        (c.KSTAT_TYPE_NAMED, 1, c.KSTAT_FLAG_VAR_SIZE, "kstat_create('mod', 3, 'nm'): cannot create variable-size physical kstat", errno.EINVAL),
        (c.KSTAT_TYPE_INTR, 2, 0, "kstat_create('mod', 3, 'nm'): ks_ndata=2 out of range [1, 1]", errno.EINVAL),
        (c.KSTAT_TYPE_IO, 0, 0, "kstat_create('mod', 3, 'nm'): ks_ndata=0 out of range [1, 1]", errno.EINVAL),
        (c.KSTAT_TYPE_NAMED, -1, 0, "kstat_create('mod', 3, 'nm'): ks_ndata=-1 out of range [0, 2147483647]", errno.EINVAL),
    ],
)
def test_create_validation_messages(chain: Chain, ks_type: int, ndata: int, flags: int, message: str, code: int) -> None:
    before = chain.chain_id
    with pytest.raises(KstatCreateError) as info:
        chain.kstat_create("mod", 3, "nm", "misc", ks_type, ndata, flags)
    assert str(info.value) == message
    assert info.value.errno == code
    assert chain.chain_id == before


def test_null_name_is_module_and_instance(chain: Chain) -> None:
    ksp = chain.kstat_create("sd", 3, None, "disk", c.KSTAT_TYPE_IO, 1)
    assert ksp.ks_name == "sd3"


def test_names_truncated_to_30_and_collide_on_truncation(chain: Chain) -> None:
    long = "x" * 29 + "AB"
    ksp = named(chain, module="m" * 40, name=long)
    assert ksp.ks_module == "m" * 30 and ksp.ks_name == "x" * 29 + "A"
    with pytest.raises(KstatCreateError) as info:
        named(chain, module="m" * 35, name="x" * 29 + "AZ")
    assert str(info.value).endswith(": namespace collision")
    assert info.value.errno == errno.EEXIST


def test_collision_depends_on_zone_overlap(chain: Chain) -> None:
    named(chain, zone=5)
    named(chain, zone=6)  # same triplet, another zone: allowed
    with pytest.raises(KstatCreateError):
        named(chain, zone=5)
    with pytest.raises(KstatCreateError):
        named(chain, zone=c.ALL_ZONES)  # ALL_ZONES overlaps everything
    named(chain, name="other", zone=c.ALL_ZONES)
    with pytest.raises(KstatCreateError):
        named(chain, name="other", zone=7)


def test_failed_create_leaves_chain_unchanged(chain: Chain) -> None:
    named(chain)
    before = (chain.chain_id, header_names(chain), len(chain))
    with pytest.raises(KstatCreateError):
        named(chain)
    assert (chain.chain_id, header_names(chain), len(chain)) == before


# --- data sizes, strings, types ---------------------------------------------


def test_named_data_size_counts_strings(chain: Chain) -> None:
    ksp = named(
        chain,
        fields=(("s", c.KSTAT_DATA_STRING), ("n", c.KSTAT_DATA_UINT32), ("t", c.KSTAT_DATA_STRING)),
        install=False,
    )
    assert ksp.ks_data_size == 3 * 48
    kstat_named_setstr(ksp.ks_data[0], "héllo")  # 6 bytes of UTF-8 + NUL
    chain.kstat_install(ksp)
    assert ksp.ks_flags & c.KSTAT_FLAG_LONGSTRINGS
    out = chain_read(chain, ksp.ks_kid)
    assert out["data_size"] == 3 * 48 + 7  # the NULL string adds nothing
    assert out["data"][0] == ["s", c.KSTAT_DATA_STRING, "héllo"]
    assert out["data"][2] == ["t", c.KSTAT_DATA_STRING, None]
    with pytest.raises(KstatError) as info:
        chain_read(chain, ksp.ks_kid, data_size=3 * 48)
    assert info.value.errno == errno.ENOMEM and info.value.extra["data_size"] == 3 * 48 + 7


def test_setstr_on_non_string_is_fatal(chain: Chain) -> None:
    ksp = named(chain, install=False)
    with pytest.raises(KstatFatalError):
        kstat_named_setstr(ksp.ks_data[0], "x")


def test_long_and_ulong_are_shown_as_64_bit(chain: Chain) -> None:
    ksp = named(chain, fields=(("l", c.KSTAT_DATA_LONG), ("u", c.KSTAT_DATA_ULONG), ("c", c.KSTAT_DATA_CHAR)), install=False)
    ksp.ks_data[0].value = -5
    ksp.ks_data[1].value = 2**64 - 1
    ksp.ks_data[2].value = b"abc"
    chain.kstat_install(ksp)
    assert chain_read(chain, ksp.ks_kid)["data"] == [["l", 3, -5], ["u", 4, 2**64 - 1], ["c", 0, b"abc"]]


def test_snaptime_is_crtime_until_first_snapshot(chain: Chain) -> None:
    ksp = named(chain)
    assert ksp.ks_snaptime == ksp.ks_crtime
    first = chain_read(chain, ksp.ks_kid)["snaptime"]
    assert first > ksp.ks_crtime
    assert chain_read(chain, ksp.ks_kid)["snaptime"] > first


def test_default_update_recomputes_size_for_var_size(chain: Chain) -> None:
    ksp = chain.kstat_create("m", 0, "v", "misc", c.KSTAT_TYPE_NAMED, 0, c.KSTAT_FLAG_VIRTUAL | c.KSTAT_FLAG_VAR_SIZE)
    ksp.ks_lock = KMutex()
    records = []
    ksp.ks_data = records
    chain.kstat_install(ksp)
    assert chain_read(chain, ksp.ks_kid)["data"] == []
    from kstatpy.records import KstatNamed

    with ksp.ks_lock:
        records.append(KstatNamed("s", c.KSTAT_DATA_STRING, "abc"))
        ksp.ks_ndata = 1
    out = chain_read(chain, ksp.ks_kid)
    assert out["ndata"] == 1 and out["data_size"] == 48 + 4


def test_var_size_without_lock_is_fatal_at_install(chain: Chain) -> None:
    ksp = chain.kstat_create("m", 0, "v", "misc", c.KSTAT_TYPE_NAMED, 0, c.KSTAT_FLAG_VIRTUAL | c.KSTAT_FLAG_VAR_SIZE)
    with pytest.raises(KstatFatalError, match="cannot create variable-size kstat without data lock"):
        chain.kstat_install(ksp)


def test_writable_long_strings_with_default_snapshot_is_fatal(chain: Chain) -> None:
    ksp = named(chain, fields=(("s", c.KSTAT_DATA_STRING),), flags=c.KSTAT_FLAG_WRITABLE, install=False)
    with pytest.raises(KstatFatalError, match="long string"):
        chain.kstat_install(ksp)


# --- the read path: error precedence ----------------------------------------


def test_update_errno_is_returned_as_is(chain: Chain) -> None:
    ksp = named(chain)
    ksp.ks_update = lambda k, rw: errno.EIO if rw == c.KSTAT_READ else 0
    assert errno_of(partial(chain_read, chain), ksp.ks_kid) == errno.EIO
    ksp.ks_update = lambda k, rw: errno.EBUSY
    assert errno_of(partial(chain_read, chain), ksp.ks_kid) == errno.EBUSY


def test_update_exception_is_eio_and_kstat_stays_readable(chain: Chain) -> None:
    ksp = named(chain)

    def broken(k, rw):
        raise RuntimeError("provider bug")

    ksp.ks_update = broken
    assert errno_of(partial(chain_read, chain), ksp.ks_kid) == errno.EIO
    ksp.ks_update = lambda k, rw: 0
    assert chain_read(chain, ksp.ks_kid)["data"] == [["a", 4, 0]]


def test_update_error_wins_over_enomem(chain: Chain) -> None:
    ksp = named(chain)
    ksp.ks_update = lambda k, rw: errno.EIO
    assert errno_of(partial(chain_read, chain), ksp.ks_kid, data_size=0) == errno.EIO


@pytest.mark.parametrize("callback", ["ks_update", "ks_snapshot"])
@pytest.mark.parametrize("rc", [0.5, -0.5])
def test_callback_return_that_is_zero_as_an_int_is_success(chain: Chain, callback: str, rc: float) -> None:
    # A callback's return is taken as int(rc or 0): a truthy value that is 0 as an int is
    # success, never an "error" with errno 0 (a reply with errno 0 and no KSTAT).
    ksp = named(chain)
    inner = getattr(ksp, callback)
    setattr(ksp, callback, lambda *args: inner(*args) or rc)
    assert chain_read(chain, ksp.ks_kid)["data"] == [["a", 4, 0]]


@pytest.mark.parametrize("callback", ["ks_update", "ks_snapshot"])
@pytest.mark.parametrize("rc", ["x", [1], object()])
def test_callback_return_that_is_no_number_is_eio_for_that_read_only(chain: Chain, callback: str, rc: object) -> None:
    # A provider's bug in one kstat costs its own reader EIO, like an exception would;
    # the other kstats of a READ_MANY batch are read as usual.
    bad, good = named(chain), named(chain, name="good")
    inner = getattr(bad, callback)
    setattr(bad, callback, lambda *args: inner(*args) or rc)
    assert errno_of(partial(chain_read, chain), bad.ks_kid) == errno.EIO
    handler = IoctlHandler(chain)
    code, result = handler.dispatch(Conn(Cred(0, 0, 1, "global", 0, True)), c.KSTATPY_IOC_READ_MANY,
                                    {"kids": [bad.ks_kid, good.ks_kid]})  # fmt: skip
    assert code == 0
    (bad_code, bad_data), (good_code, good_data) = result["results"]
    assert (bad_code, bad_data) == (errno.EIO, None)
    assert good_code == 0 and good_data["name"] == "good"


def test_enomem_reports_previous_snaptime_and_takes_no_snapshot(chain: Chain) -> None:
    ksp = named(chain)
    with pytest.raises(KstatError) as info:
        chain_read(chain, ksp.ks_kid, data_size=10)
    assert info.value.extra == {"data_size": 48, "flags": 0, "ndata": 1, "snaptime": ksp.ks_crtime}
    assert ksp.ks_snaptime == ksp.ks_crtime


# --- the write path ---------------------------------------------------------


def writable(chain: Chain):
    ksp = named(chain, fields=(("a", c.KSTAT_DATA_UINT64), ("b", c.KSTAT_DATA_INT32), ("c", c.KSTAT_DATA_CHAR)), flags=c.KSTAT_FLAG_WRITABLE)
    return ksp


def test_write_updates_data_and_calls_update_write(chain: Chain) -> None:
    ksp = writable(chain)
    seen = []
    ksp.ks_update = lambda k, rw: seen.append(rw) or 0
    kcid = chain_write(chain, ksp.ks_kid, 3, [["a", 4, 7], ["b", 1, -2], ["c", 0, b"xy"]])
    assert kcid == chain.chain_id
    assert seen == [c.KSTAT_READ, c.KSTAT_WRITE]
    assert [k.value for k in ksp.ks_data] == [7, -2, b"xy"]


def test_write_precedence(chain: Chain) -> None:
    ksp = writable(chain)
    good = [["a", 4, 1], ["b", 1, 1], ["c", 0, b""]]
    assert errno_of(partial(chain_write, chain), 999, 3, good, privileged=False) == errno.EPERM  # before ENXIO
    assert errno_of(partial(chain_write, chain), 999, 3, good) == errno.ENXIO
    inv = named(chain, name="inv", flags=c.KSTAT_FLAG_WRITABLE, install=False)
    assert errno_of(partial(chain_write, chain), inv.ks_kid, 1, [["a", 4, 1]]) == errno.EAGAIN
    ro = named(chain, name="ro")
    assert errno_of(partial(chain_write, chain), ro.ks_kid, 1, [["a", 4, 1]]) == errno.EACCES
    ksp.ks_update = lambda k, rw: errno.EIO
    assert errno_of(partial(chain_write, chain), ksp.ks_kid, 2, good) == errno.EIO  # update before the ndata check
    ksp.ks_update = lambda k, rw: 0
    assert errno_of(partial(chain_write, chain), ksp.ks_kid, 2, good) == errno.EINVAL


@pytest.mark.parametrize(
    "data",
    [
        [["a", 4, 1], ["b", 1, 1]],  # too few records
        [["x", 4, 1], ["b", 1, 1], ["c", 0, b""]],  # name differs
        [["a", 3, 1], ["b", 1, 1], ["c", 0, b""]],  # type differs
        [["a", 4, -1], ["b", 1, 1], ["c", 0, b""]],  # out of range for UINT64
        [["a", 4, 1], ["b", 1, 2**31], ["c", 0, b""]],  # out of range for INT32
        [["a", 4, "1"], ["b", 1, 1], ["c", 0, b""]],  # wrong value type
        [["a", 4, 1], ["b", 1, 1], ["c", 0, b"x" * 17]],  # CHAR over 16 bytes
        [["a", 4, 1], ["b", 1, 1], "c"],  # record shape
        {"a": 1},  # not a list
    ],
)
def test_write_rejects_mismatched_data(chain: Chain, data) -> None:
    ksp = writable(chain)
    assert errno_of(partial(chain_write, chain), ksp.ks_kid, 3, data) == errno.EINVAL
    assert [k.value for k in ksp.ks_data] == [0, 0, b""]


# --- persistent kstats ------------------------------------------------------


def test_persistent_goes_dormant_and_reactivates(chain: Chain) -> None:
    ksp = named(chain, flags=c.KSTAT_FLAG_PERSISTENT)
    ksp.ks_private = object()
    ksp.ks_data[0].value = 42
    kid, crtime = ksp.ks_kid, ksp.ks_crtime
    before = chain.chain_id
    chain.kstat_delete(ksp)
    assert chain.chain_id == before  # no bump
    assert ksp.ks_flags & c.KSTAT_FLAG_DORMANT and ksp.ks_private is None
    assert chain_read(chain, kid)["data"] == [["a", 4, 42]]  # still readable
    with pytest.raises(KstatCreateError, match="invalid reactivation of dormant kstat"):
        chain.kstat_create("m", 0, "n", "other", c.KSTAT_TYPE_NAMED, 1, c.KSTAT_FLAG_PERSISTENT)
    again = chain.kstat_create("m", 0, "n", "misc", c.KSTAT_TYPE_NAMED, 1, c.KSTAT_FLAG_PERSISTENT)
    assert again is ksp and again.ks_kid == kid and again.ks_crtime == crtime
    assert chain.chain_id == before
    assert errno_of(partial(chain_read, chain), kid) == errno.EAGAIN
    pushed = []
    again.ks_update = lambda k, rw: pushed.append((rw, k.ks_data[0].value)) or 0
    chain.kstat_install(again)
    assert pushed == [(c.KSTAT_WRITE, 42)]  # the provider inherits the kept values
    assert not again.ks_flags & (c.KSTAT_FLAG_DORMANT | c.KSTAT_FLAG_INVALID)


def test_live_kstat_collides_even_if_persistent(chain: Chain) -> None:
    named(chain, flags=c.KSTAT_FLAG_PERSISTENT)
    with pytest.raises(KstatCreateError, match="namespace collision"):
        named(chain, flags=c.KSTAT_FLAG_PERSISTENT)


# --- delete -----------------------------------------------------------------


def test_delete_frees_and_bumps(chain: Chain) -> None:
    ksp = named(chain)
    kid = ksp.ks_kid
    chain.kstat_delete(ksp)
    assert chain.kstat_lookup_kid(kid) is None
    assert chain.kstat_lookup_name("m", 0, "n") is None
    assert chain.kmem.is_freed(ksp)
    assert errno_of(partial(chain_read, chain), kid) == errno.ENXIO


def test_delete_byname_and_missing_is_noop(chain: Chain) -> None:
    named(chain)
    chain.kstat_delete_byname("m", 0, "n")
    assert chain.kstat_lookup_name("m", 0, "n") is None
    before = chain.chain_id
    chain.kstat_delete_byname("m", 0, "n")
    chain.kstat_delete(None)
    assert chain.chain_id == before


def test_delete_while_holding_ks_lock_is_fatal(chain: Chain) -> None:
    ksp = named(chain)
    ksp.ks_lock = KMutex()
    with ksp.ks_lock, pytest.raises(KstatFatalError, match="caller holds data lock"):
        chain.kstat_delete(ksp)
    chain.kstat_delete(ksp)  # fine once released


# --- zones ------------------------------------------------------------------


def test_zone_visibility(chain: Chain) -> None:
    z = named(chain, name="z5", zone=5)
    every = named(chain, name="all")
    assert "m:0:z5" not in header_names(chain, c.GLOBAL_ZONEID)
    assert "m:0:z5" in header_names(chain, 5)
    assert "m:0:all" in header_names(chain, 5) and "m:0:all" in header_names(chain, 6)
    assert "m:0:z5" not in header_names(chain, 6)
    assert errno_of(partial(chain_read, chain), z.ks_kid, c.GLOBAL_ZONEID) == errno.ENXIO
    before = chain.chain_id
    chain.kstat_zone_add(z, c.GLOBAL_ZONEID)
    assert chain.chain_id == before + 1
    assert chain_read(chain, z.ks_kid, c.GLOBAL_ZONEID)["name"] == "z5"
    chain.kstat_zone_remove(z, c.GLOBAL_ZONEID)
    assert chain.chain_id == before + 2
    assert errno_of(partial(chain_read, chain), z.ks_kid, c.GLOBAL_ZONEID) == errno.ENXIO
    with pytest.raises(KstatFatalError):
        chain.kstat_zone_remove(z, 5)
    assert every.ks_kid in [h["kid"] for h in chain_read(chain, 0, 5)["data"]]


def test_names_are_cut_at_30_bytes_not_characters(chain: Chain) -> None:
    ksp = named(chain, name="é" * 20)  # 40 bytes of UTF-8
    assert ksp.ks_name == "é" * 15
    odd = named(chain, name="a" + "é" * 20)  # byte 30 falls inside a character
    assert odd.ks_name == "a" + "é" * 14 and len(odd.ks_name.encode()) == 29
