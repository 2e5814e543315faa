"""kstatpy/select.py at its edges (mutation testing survivors, docs/TESTING.md): the
glob cache's bound (1,024, docs/KSTATD.md), the ERE repetition bound (RE_DUP_MAX 255),
regerror(3C)'s text for each malformed regex, bracket ranges and quoting in globs and
EREs, selector keys, and the order a Selection evaluates its patterns in.

All in-process: select.py imports nothing from kstatpy, and kstatd runs the same code."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from kstatpy import select
from kstatpy.select import Pattern
from kstatpy.select import RegexError
from kstatpy.select import Selection
from kstatpy.select import SelectorPatterns
from kstatpy.select import filter_named
from kstatpy.select import is_exact
from kstatpy.select import is_regex
from kstatpy.select import operand_fields

REPO = Path(__file__).resolve().parent.parent

# A mutant that loops for ever fails here in 30 s instead of at the run's 60 s bound.
pytestmark = pytest.mark.timeout(30)

# --- the glob cache: 1,024 compiled globs, the oldest dropped first (docs/KSTATD.md) ---


@pytest.fixture
def empty_cache():
    saved = dict(select._GLOB_CACHE)
    select._GLOB_CACHE.clear()
    yield select._GLOB_CACHE
    select._GLOB_CACHE.clear()
    select._GLOB_CACHE.update(saved)


def test_the_glob_cache_holds_exactly_1024_and_drops_the_oldest(empty_cache):
    globs = [f"g{i}?*" for i in range(1024)]
    for g in globs:
        assert Pattern(g).match(g[:-2] + "x")
    assert list(empty_cache) == globs  # all 1,024 kept, in insertion order
    assert Pattern("new?*").match("newxy")
    assert len(empty_cache) == 1024
    assert "g0?*" not in empty_cache and "g1?*" in empty_cache and "new?*" in empty_cache


def test_a_cache_a_race_left_over_its_bound_does_not_grow(empty_cache):
    # Two threads may both see room and both insert (plain dict operations, no lock):
    # the cache is then past its bound, and each new glob must still evict one.
    for i in range(select._GLOB_CACHE_MAX + 1):
        empty_cache[f"r{i}?"] = select._never
    for i in range(3):
        assert Pattern(f"n{i}?").match(f"n{i}x")
    assert len(empty_cache) == select._GLOB_CACHE_MAX + 1
    assert "r0?" not in empty_cache and "r3?" in empty_cache


def test_a_cached_glob_is_reused_not_compiled_again(empty_cache):
    first = Pattern("a?[bc]")._match
    assert Pattern("a?[bc]")._match is first and len(empty_cache) == 1
    never = Pattern("[ab")._match  # unterminated: the never-matcher, cached too
    assert never is select._never and empty_cache["[ab"] is select._never


def test_fast_paths_do_not_fill_the_cache(empty_cache):
    for text in ("*", "unix", "cpu_stat*", "a.b", "/x/"):
        Pattern(text)
    assert not empty_cache


# --- globs (gmatch(3GEN)) ---------------------------------------------------------

GLOBS = [
    # quoting: a backslash quotes the next character; an alphanumeric one stays itself
    ("\\a", "a", True),
    ("\\.", ".", True),
    ("\\.", "x", False),
    ("\\*a", "*a", True),  # the quoted character only: what follows is matched too
    ("\\*a", "*", False),
    ("\\*a", "*b", False),
    ("x\\", "x\\", True),  # a trailing backslash is itself
    ("x\\", "x", False),
    ("a?c", "a\nc", True),  # '?' is any one character, newline too
    ("a?c", "ac", False),
    ("a?c", "abbc", False),
    ("a_?", "a_b", True),
    ("a_?", "aXb", False),
    ("1?", "1x", True),  # a character that sorts before '?' is itself
    ("1?", "2x", False),
    ("x.?", "x.y", True),
    ("x.?", "xyz", False),
    ("a(?", "a(x", True),  # only '*' is a star: '(' and the others before it are themselves
    ("a(?", "abc", False),
    ("a|?", "a|x", True),  # the characters after '_' are quoted too: '|' and '{' are re's
    ("a|?", "x", False),
    ("x{2}?", "x{2}y", True),
    ("x{2}?", "xxy", False),
    # brackets
    ("[!]a]", "b", True),  # ']' first after '!' is literal too
    ("[!]a]", "]", False),
    ("[!]a]", "", False),
    ("[^a]", "^", True),  # gmatch negates with '!' only: '^' is a member
    ("[^a]", "a", True),
    ("[^a]", "b", False),
    ("[ a]", " ", True),  # only '!' negates: a space is a member
    ("[ a]", "b", False),
    ("[a\\]]", "]", True),  # a quoted ']' inside
    ("[a\\]]", "a", True),
    ("[a\\]]", "a]", False),
    ("[\\\\]", "\\", True),  # a quoted backslash inside
    ("[\\\\]", "x", False),
    ("[a-\\z]", "m", True),  # a quoted range end
    ("[a-\\z]", "\\", False),
    ("[#-\\]]", "A", True),  # a quoted ']' ends the range, not the bracket
    ("[#-\\]]", "]", True),
    ("[#-\\]]", "A]", False),
    ("[\\a-c]", "b", True),  # a quoted range start
    ("[c-a]", "b", False),  # a reversed range has no member
    ("[c-a]", "c", False),
    ("[c-ax]", "x", True),
    ("[c-ax]", "b", False),
    ("[!c-a]", "b", True),  # ... so its negation is any one character
    ("[!c-a]", "", False),
    ("[!c-a]", "bb", False),
    ("[a-a]", "a", True),  # a one-character range
    ("[a-a]", "b", False),
    ("[a-c]", "c", True),
    ("[a-c]", "-", False),
    ("[a,c]", ",", True),  # only '-' makes a range: ',' sorts before it
    ("[a,c]", "b", False),
    ("[ab-]", "-", True),  # '-' before ']' is literal
    ("[ab-]", "c", False),
    ("[-a]", "-", True),
    ("[[]", "[", True),
    ("[]", "]", False),  # ']' first is literal: unterminated, matches nothing
    ("[]", "[]", False),
    ("[!", "!", False),
    ("x[ab", "x[ab", False),
    # a bracket cut short at the end of the pattern: nothing matches, nothing is read past it
    ("[", "[", False),
    ("[a-", "a", False),
    ("[a-", "[a-", False),
    ("[a-\\", "a", False),
    ("[ab-", "a", False),  # a '-' last at an odd offset
    ("[\\", "\\", False),
    ("x[ab", "xa", False),
    ("[x]?*", "xy", True),
    # stars: any split, the leftmost match of each middle piece is enough
    ("a**b", "ab", True),
    ("a**b", "axxb", True),
    ("a**b", "axxbc", False),
    ("*a*b*c*", "xaybzc", True),
    ("*a*b*c*", "xcybza", False),
    ("a*b*c", "abbc", True),
    ("a*b*c", "abcbc", True),
    ("a*b*c", "abcb", False),
    ("?*x", "x", False),
    ("?*x", "ax", True),
    ("*?", "", False),
    ("*?", "a", True),
    ("x*?y*", "xzy", True),
    ("x*?y*", "xy", False),
    ("*[ab]*", "zzbzz", True),
    ("*[ab]*", "zzzz", False),
    ("[ab]*[cd]", "a\nd", True),
    ("[ab]*[cd]", "ad\n", False),
]


@pytest.mark.parametrize(("pattern", "text", "expected"), GLOBS)
def test_glob_edges(pattern, text, expected):
    assert Pattern(pattern).match(text) is expected


def test_a_long_unterminated_bracket_matches_nothing():
    # Past 256 characters indexes are no longer shared small ints: the end test is by value.
    for glob in (
        "[" + "a" * 300,
        "x" * 300 + "[ab",
        "[!" + "a-" * 200,
        "x" * 300 + "[",
        "[" + "a" * 300 + "\\",
        "[" + "b" * 300 + "a-\\",
    ):
        assert not Pattern(glob).match("a") and select.gmatch_to_python(glob) is None


def test_long_patterns_end_where_they_end():
    long = "a" * 300
    assert Pattern(f"/^{long}$/").match(long) and not Pattern(f"/^{long}$/").match(long[1:])
    assert Pattern(f"/^[{long}]+$/").match(long)
    assert Pattern(long + "?").match(long + "b") and not Pattern(long + "?").match(long)
    assert Pattern(f"[{long}]*").match("aa")
    assert Pattern(f"/{long}{{/").match(long + "{") and not Pattern(f"/{long}{{/").match(long)  # a '{' last
    assert Pattern(long + "\\").match(long + "\\") and not Pattern(long + "\\").match(long)  # a trailing backslash
    for unterminated in (f"/[{long}/", f"/[{long}[/", f"/{long}[/"):  # after 300 characters, a '[' last
        with pytest.raises(RegexError) as info:
            Pattern(unterminated).match("a")
        assert str(info.value) == select.REG_EBRACK
    with pytest.raises(RegexError) as info:  # a trailing backslash after 300 characters
        Pattern(f"/{long}\\/").match("a")
    assert str(info.value) == select.REG_EESCAPE


def test_the_translated_glob_is_a_fullmatch_regex():
    # The contract of gmatch_to_python: None for a glob that never matches, else a
    # regex for fullmatch; the atomic groups keep it linear in the number of stars.
    assert select.gmatch_to_python("[ab") is None
    assert select.gmatch_to_python("[c-a]") == "(?!)"
    assert select.gmatch_to_python("[!c-a]") == "."
    assert select.gmatch_to_python("a**b") == "a.*b"
    assert select.gmatch_to_python("a*b*c") == "a(?>.*?b).*c"
    assert select.gmatch_to_python("*") == ".*"


def test_fast_paths_agree_with_the_glob():
    assert Pattern("ab*").match("ab") and Pattern("ab*").match("abc\n")
    assert not Pattern("ab*").match("xab") and not Pattern("ab*").match("a")
    assert Pattern("a.b").match("a.b") and not Pattern("a.b").match("axb")
    assert Pattern("").match("") and not Pattern("").match("x")
    assert Pattern("/").match("/") and not Pattern("/").match("x")  # one '/' is no regex
    star = Pattern("*")
    assert star.matches_all and star.match("") and star.match("a\nb")
    assert not Pattern("**").matches_all and Pattern("**").match("x")
    assert not Pattern("a*").matches_all and not Pattern("/.*/").matches_all
    assert repr(Pattern("a*")) == "Pattern('a*')"


def test_is_regex_and_is_exact():
    assert is_regex("//") and is_regex("/a/") and not is_regex("/") and not is_regex("a/")
    assert not is_regex("/a") and not is_regex("")
    assert not is_regex(".a/") and not Pattern(".a/").match("xa") and Pattern(".a/").match(".a/")
    assert not is_regex("/a.") and not is_regex("/a-") and Pattern("/a.").match("/a.") and not Pattern("/a.").match("a")
    assert is_exact("/") and is_exact("a?[b]") and is_exact("")
    assert not is_exact("*") and not is_exact("//")


# --- extended regular expressions: translation and regerror(3C) texts ---------------

REGEX_ERRORS = [
    ("/a\\/", select.REG_EESCAPE),
    ("/[a/", select.REG_EBRACK),
    ("/[/", select.REG_EBRACK),  # cut short at the end: nothing is read past it
    ("/[[/", select.REG_EBRACK),
    ("/[a[/", select.REG_EBRACK),
    ("/[a-/", select.REG_EBRACK),
    ("/[a-b/", select.REG_EBRACK),
    ("/[ab-/", select.REG_EBRACK),  # a '-' last at an odd offset: nothing past it read either
    ("/[[:/", select.REG_EBRACK),
    ("/a(/", select.REG_EPAREN),
    ("/[^/", select.REG_EBRACK),
    ("/[]/", select.REG_EBRACK),
    ("/[[:alpha:]/", select.REG_EBRACK),
    ("/[[:alpha/", select.REG_EBRACK),
    ("/[[=a/", select.REG_EBRACK),
    ("/[[:nope:]]/", select.REG_ECTYPE),
    ("/[[::]]/", select.REG_ECTYPE),  # an empty class name is a name, not an unclosed '[:'
    ("/[[==]]/", "invalid collating element"),
    ("/[[.ab.]]/", "invalid collating element"),
    ("/[[=ab=]]/", "invalid collating element"),
    ("/[z-a]/", select.REG_ERANGE),
    ("/[c-a/", select.REG_ERANGE),  # a reversed range last: its error comes before the bracket's
    ("/(a/", select.REG_EPAREN),
    ("/a)/", select.REG_EPAREN),
    ("/((a)/", select.REG_EPAREN),
    ("/a)(b/", select.REG_EPAREN),  # an unmatched ')' is the error, whatever follows
    ("/a)[/", select.REG_EPAREN),
    ("/(a|)/", select.REG_EMPTY),
    ("/(|a)/", select.REG_EMPTY),
    ("/a(|)/", select.REG_EMPTY),
    ("/({/", select.REG_EPAREN),
    ("/a|/", select.REG_EMPTY),
    ("/|a/", select.REG_EMPTY),
    ("//", select.REG_EMPTY),
    ("/*a/", select.REG_BADRPT),
    ("/a**/", select.REG_BADRPT),
    ("/a+?/", select.REG_BADRPT),
    ("/(*a)/", select.REG_BADRPT),
    ("/(+a)/", select.REG_BADRPT),
    ("/(?a)/", select.REG_BADRPT),
    ("/({1}a)/", select.REG_BADRPT),
    ("/a|*b/", select.REG_BADRPT),
    ("/^*/", select.REG_BADRPT),
    ("/a$**/", select.REG_BADRPT),
    ("/{1}/", select.REG_BADRPT),
    ("/a{1}{2}/", select.REG_BADRPT),
    ("/a{1}*/", select.REG_BADRPT),
    ("/a{1/", select.REG_EBRACE),
    ("/a{1,2/", select.REG_EBRACE),
    ("/a{2,1}/", select.REG_BADBR),
    ("/a{1,x}/", select.REG_BADBR),
    ("/a{1x}/", select.REG_BADBR),
    ("/a{256}/", select.REG_BADBR),  # RE_DUP_MAX is 255
    ("/a{1,256}/", select.REG_BADBR),
    ("/a{256,}/", select.REG_BADBR),
]


@pytest.mark.parametrize(("pattern", "message"), REGEX_ERRORS)
def test_regex_errors_carry_regerrors_text(pattern, message):
    pat = Pattern(pattern)  # lazily: constructing never fails
    with pytest.raises(RegexError) as info:
        pat.match("x")
    assert str(info.value) == message
    with pytest.raises(RegexError):  # a failed compile is not cached as a matcher
        pat.match("x")


REGEXES = [
    ("/\\d/", "d", True),  # an escaped alphanumeric is itself (no Python classes)
    ("/\\d/", "1", False),
    ("/\\w/", "w", True),
    ("/\\w/", "_", False),
    ("/\\./", ".", True),
    ("/\\./", "x", False),
    ("/^\\.x$/", ".x", True),  # what follows the escaped character is read too
    ("/^\\.*$/", "..", True),  # an escaped character is an operand a repetition may follow
    ("/^a.*b$/", "axxb", True),  # '.' is an operand a repetition may follow
    ("/^.+$/", "", False),
    ("/a$/", "xa", True),
    ("/a$/", "a\n", False),  # '$' is the end of the string, not before a newline
    ("/^a/", "ba", False),
    ("/^a/", "ab", True),
    ("/a.c/", "a\nc", True),
    ("/ab./", "abc", True),  # '.' ends a branch that is not empty
    ("/(a.)/", "ab", True),
    ("/.|b/", "b", True),
    ("/[]a]/", "]", True),
    ("/[]a]/", "b", False),
    ("/[^]a]/", "]", False),
    ("/[^]a]/", "b", True),
    ("/[^a]/", "a", False),
    ("/[^a]/", "ab", True),
    ("/[a-c]/", "b", True),
    ("/[a-c]/", "-", False),
    ("/^[a,c]$/", ",", True),  # only '-' makes a range: ',' sorts before it
    ("/^[a,c]$/", "b", False),
    ("/^[x.]$/", ".", True),  # only after a '[' do ':', '=', '.' open a class or symbol
    ("/^[x:=]$/", "=", True),
    ("/^[A.]$/", ".", True),
    ("/^[1:]$/", ":", True),
    ("/[a-a]/", "a", True),
    ("/[ab-]/", "-", True),
    ("/[ab-]/", "c", False),
    ("/[\\]/", "\\", True),  # backslash is literal in a bracket
    ("/[[:digit:]]/", "7", True),
    ("/[[:digit:]]/", "x", False),
    ("/x[[:digit:]]/", "x7", True),  # a class at any offset (here 2)
    ("/xy[[:digit:]]/", "xy7", True),
    ("/x[[=a=]]/", "xa", True),
    ("/x[[.-.]]/", "x-", True),
    ("/[[:upper:]x]/", "x", True),
    ("/[[:upper:]x]/", "y", False),
    ("/[[=a=]]/", "a", True),
    ("/[[=a=]]/", "b", False),
    ("/[[.-.]]/", "-", True),
    ("/[[.-.]]/", "x", False),
    ("/[[.^.]]/", "^", True),
    ("/[[.^.]]/", "x", False),
    ("/x[[.].]]/", "x]", True),  # ']' as a collating symbol: its '.]' is the one after it
    ("/x[[.].]]/", "x.", False),
    ("/[[.]]/", "x", None),  # '[.' that closes nothing
    ("/^abcdefghij[[:digit:]]$/", "abcdefghij7", True),  # a class late in a long regex
    ("/^abcdefghij[[:digit:]]$/", "abcdefghij:", False),
    ("/^[!-[:alpha:]]$/", "a]", True),  # a range ends at '[': ":alpha:" are members, then a ']'
    ("/^[!-[:alpha:]]$/", "a", False),
    ("/^[!-[:alpha:]]$/", '"]', True),
    ("/a:]b[[:digit:]]/", "a:]b7", True),  # a ':]' before the class does not close it
    ("/a:]b[[:digit:]]/", "a:]bx", False),
    ("/abcdef:]g[[:digit:]]/", "abcdef:]g7", True),
    ("/a{2}/", "a", False),
    ("/a{2}/", "xaa", True),
    ("/^a{255}$/", "a" * 255, True),  # RE_DUP_MAX itself is allowed
    ("/^a{1,255}$/", "a" * 256, False),
    ("/^a{2,}$/", "aaaa", True),
    ("/^a{2,}$/", "a", False),
    ("/^a{1,2}$/", "aaa", False),
    ("/^a{2,2}$/", "aa", True),  # a bound of equal ends is allowed
    ("/^a{2,2}$/", "aaa", False),
    ("/a{/", "a{", True),  # '{' not followed by a digit is literal
    ("/a{,2}/", "a{,2}", True),
    ("/a{,2}/", "aa", False),
    ("/^{/", "{", True),
    ("/^x{*$/", "x{{", True),  # a literal '{' is an operand a repetition may follow
    # illumos regcomp: '{' right after '(' is a literal unless a digit follows, and "()"
    # is an empty group (REG_EMPTY is for an empty branch only)
    ("/({a)/", "x{a", True),
    ("/({a)/", "a", False),
    ("/x({)/", "x{", True),
    ("/^a()b$/", "ab", True),
    ("/^a()*b$/", "ab", True),
    ("/^(()|x)y$/", "y", True),
    ("/(a|b)c/", "bc", True),
    ("/(a|b)c/", "c", False),
    ("/^(ab)+$/", "abab", True),
    ("/^(ab)+$/", "aba", False),
    ("/^ab?c$/", "ac", True),
    ("/^ab*c$/", "abbc", True),
    ("/ab*/", "a", True),  # a repetition ends a branch that is not empty
    ("/(ab+)/", "abb", True),
    ("/a?|b/", "b", True),
    ("/^a|b$/", "xb", True),
    ("/(^a)/", "ba", False),
    ("/a^/", "a", False),
    # illumos regcomp repeats a '$' (only '^' is REG_BADRPT): "$*" matches anywhere, "$+"
    # at the end, and a second repetition is REG_BADRPT as after any operand
    ("/a$*/", "ab", True),
    ("/a$+/", "ab", False),
    ("/a$+/", "xa", True),
    ("/^a${2}$/", "a", True),
    ("/a$?b/", "ab", True),
    ("/a_b/", "a_b", True),
    ("/a-b/", "a-b", True),
    ("/a-b/", "axb", False),  # an ordinary character matches itself only
    ("/a,b/", "axb", False),
    ("/a b/", "a b", True),
]


@pytest.mark.parametrize(("pattern", "text", "expected"), REGEXES)
def test_regex_edges(pattern, text, expected):
    pat = Pattern(pattern)
    if expected is None:
        with pytest.raises(RegexError):
            pat.match(text)
    else:
        assert pat.match(text) is expected
        assert pat.match(text) is expected  # the compiled regex, cached in the pattern


def test_a_regex_compiles_once_on_first_use():
    pat = Pattern("/a/")
    assert not pat.match("b")
    compiled = pat._match
    assert compiled != pat._compile_and_match  # the compiled search replaced the first-use hook
    assert pat.match("a") is True and pat._match == compiled


# --- selectors ----------------------------------------------------------------


def test_operand_fields():
    assert operand_fields("") == ("*", "*", "*", "*")
    assert operand_fields("a::c") == ("a", "*", "c", "*")
    assert operand_fields("a:b:c:d") == ("a", "b", "c", "d")
    assert operand_fields(":::d") == ("*", "*", "*", "d")
    assert operand_fields("a:b:c:d:") is None
    assert operand_fields("a:b:c:d:e") is None


class _Selector:
    # A kstat_args.Selector's shape: fields() gives the four texts.
    def fields(self):
        return ("m", "1", "n", "s")


def test_selector_patterns_from_a_selector_object():
    sel = SelectorPatterns(_Selector())
    assert sel.fields() == ("m", "1", "n", "s")
    assert SelectorPatterns().fields() == ("*", "*", "*", "*")
    assert SelectorPatterns("a", "2").fields() == ("a", "2", "*", "*")


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        (("unix", "0", "system_misc"), ("unix", 0, "system_misc")),
        (("unix", "12", "x"), ("unix", 12, "x")),
        (("unix", "-1", "x"), ("unix", -1, "x")),
        (("unix", "01", "x"), None),  # matches the text "01", which no instance prints as
        (("unix", " 1", "x"), None),
        (("unix", "+1", "x"), None),
        (("unix", "1 ", "x"), None),  # int() takes these, but the instance prints as "1", "10", "3"
        (("unix", "1_0", "x"), None),
        (("unix", "\u0663", "x"), None),
        (("unix", "x", "x"), None),
        (("unix", "*", "x"), None),
        (("unix", "1?", "x"), None),
        (("unix", "[1]", "x"), None),
        (("unix", "\\1", "x"), None),
        (("unix", "/1/", "x"), None),
        (("u*", "0", "x"), None),
        (("u?", "0", "x"), None),
        (("/u/", "0", "x"), None),
        (("u", "0", "x*"), None),
        (("u", "0", "[x]"), None),
        (("u", "0", "/x/"), None),
        (("u", "0", "x\\y"), None),
    ],
)
def test_exact_key(fields, key):
    assert SelectorPatterns(*fields).exact_key() == key
    assert Selection([SelectorPatterns(*fields)]).exact_keys() == (None if key is None else [key])


def test_exact_keys_need_every_selector_exact():
    a, b = SelectorPatterns("a", "1", "x"), SelectorPatterns("b", "2", "y")
    assert Selection([a, b]).exact_keys() == [("a", 1, "x"), ("b", 2, "y")]
    assert Selection([a, SelectorPatterns("b", "*", "y")]).exact_keys() is None
    assert Selection([SelectorPatterns("b", "*", "y"), a]).exact_keys() is None
    assert Selection([]).exact_keys() == []


# --- Selection.match --------------------------------------------------------------


def _m(selection, module="unix", instance=5, name="system_misc", ks_class="misc", ks_type=1):
    return selection.match(module, instance, name, ks_class, ks_type)


def test_selection_types_skip_and_class():
    everything = [SelectorPatterns()]
    assert _m(Selection(everything)) is None
    assert _m(Selection(everything, types=frozenset({1, 3}))) is None
    assert _m(Selection(everything, types=frozenset({2})), ks_type=1) is False
    assert _m(Selection(everything, types=frozenset())) is False
    assert _m(Selection(everything, skip_name="kstat_*"), name="kstat_types") is False
    assert _m(Selection(everything, skip_name="kstat_*"), name="system_misc") is None
    assert _m(Selection(everything, skip_name=None), name="kstat_types") is None
    assert _m(Selection(everything, ks_class="disk")) is False
    assert _m(Selection(everything, ks_class="disk"), ks_class="disk") is None
    assert _m(Selection(everything, ks_class="m*")) is None
    assert _m(Selection(everything, ks_class="/^mi/")) is None
    assert _m(Selection(everything, ks_class="/^di/")) is False


def test_selection_matches_module_name_and_decimal_instance():
    assert _m(Selection([SelectorPatterns("unix", "5", "system_misc")])) is None
    assert _m(Selection([SelectorPatterns("unix", "6", "system_misc")])) is False
    assert _m(Selection([SelectorPatterns("unix", "[4-6]", "system_misc")])) is None
    assert _m(Selection([SelectorPatterns("unix", "/^5$/", "system_misc")])) is None
    assert _m(Selection([SelectorPatterns("unix", "5", "system_misc")]), instance=55) is False
    assert _m(Selection([SelectorPatterns("unix", "5*")]), instance=55) is None
    assert _m(Selection([SelectorPatterns("nix")])) is False
    assert _m(Selection([SelectorPatterns("unix", "*", "misc")])) is False
    assert _m(Selection([])) is False


def test_selection_statistic_filters_add_up_until_one_selector_takes_all():
    one = Selection([SelectorPatterns("unix", "*", "*", "ncpus")])
    stats = _m(one)
    assert [f("ncpus") for f in stats] == [True] and [f("x") for f in stats] == [False]
    two = Selection([SelectorPatterns("unix", "*", "*", "a*"), SelectorPatterns("*", "*", "*", "/b/")])
    stats = _m(two)
    assert len(stats) == 2 and stats[0]("ab") and not stats[0]("b") and stats[1]("xb")
    # one selector without a statistic pattern: every statistic, before or after the others
    for sels in (
        [SelectorPatterns("unix", "*", "*", "a*"), SelectorPatterns("unix")],
        [SelectorPatterns("unix"), SelectorPatterns("unix", "*", "*", "a*")],
    ):
        assert _m(Selection(sels)) is None
    # a selector that does not match adds no filter
    stats = _m(Selection([SelectorPatterns("unix", "*", "*", "a*"), SelectorPatterns("sd", "*", "*", "b*")]))
    assert len(stats) == 1 and stats[0]("a1")
    stats = _m(Selection([SelectorPatterns("sd", "*", "*", "b*"), SelectorPatterns("unix", "*", "*", "a*")]))
    assert len(stats) == 1 and stats[0]("a1")


def test_selection_tries_every_selector_in_order():
    # A selector that does not match does not stop the next one, on any field.
    for miss in (
        SelectorPatterns("sd"),
        SelectorPatterns("unix", "6"),
        SelectorPatterns("unix", "*", "intr"),
    ):
        assert _m(Selection([miss, SelectorPatterns("unix")])) is None
    missing_class = Selection([SelectorPatterns("unix"), SelectorPatterns("unix", "5")], ks_class="disk")
    assert _m(missing_class) is False


def test_selection_evaluates_regexes_in_kstat8s_order():
    bad = "/(/"
    # Not evaluated: an earlier field of the same selector failed.
    assert _m(Selection([SelectorPatterns("sd", bad, bad)])) is False
    assert _m(Selection([SelectorPatterns("unix", bad, "intr")])) is False
    # Evaluated: the fields before it matched (module, name, then instance, then class),
    # and every selector is evaluated, also after one matched.
    for sels, cls in (
        ([SelectorPatterns(bad)], "*"),
        ([SelectorPatterns("unix", "*", bad)], "*"),
        ([SelectorPatterns("unix", bad)], "*"),
        ([SelectorPatterns("unix")], bad),
        ([SelectorPatterns("unix"), SelectorPatterns("unix", bad)], "*"),
    ):
        with pytest.raises(RegexError):
            _m(Selection(sels, ks_class=cls))
    # The class is evaluated only for a selector whose other fields match; one it fails
    # does not stop the next selector's patterns from being evaluated.
    with pytest.raises(RegexError):
        _m(Selection([SelectorPatterns("unix"), SelectorPatterns(bad)], ks_class="disk"))
    assert _m(Selection([SelectorPatterns("sd")], ks_class=bad)) is False
    # Types and skip_name come first: a kstat they drop evaluates nothing.
    assert _m(Selection([SelectorPatterns(bad)], types=frozenset({2}))) is False
    assert _m(Selection([SelectorPatterns(bad)], skip_name="system_*")) is False


def test_the_instance_text_is_the_decimal_number():
    assert _m(Selection([SelectorPatterns("unix", "-1")]), instance=-1) is None
    assert _m(Selection([SelectorPatterns("unix", "0")]), instance=0) is None
    assert _m(Selection([SelectorPatterns("unix", "0")]), instance=10) is False
    two = Selection([SelectorPatterns("unix", "7"), SelectorPatterns("unix", "5")])
    assert _m(two) is None  # the text made for the first selector serves the second


def test_filter_named():
    data = [["a1", 1, 1], ["b2", 1, 2], ["c3", 1, 3]]
    assert filter_named(data, [Pattern("a*").match]) == [data[0]]
    assert filter_named(data, [Pattern("a*").match, Pattern("c?").match]) == [data[0], data[2]]
    assert filter_named(data, [Pattern("x").match, Pattern("y").match]) == []
    assert filter_named(data, [Pattern("*").match, Pattern("b2").match]) == data


# --- the glob cache when another thread changes it mid-eviction ------------------------


class _RacedCache(dict):
    """The glob cache as a thread that changes it between the bound check and the
    eviction leaves it: ``race`` runs when the evicting thread starts iterating
    (``next(iter(cache))``), as the other thread's change would land there."""

    def __init__(self, race):
        super().__init__((f"old{i}?", select._never) for i in range(select._GLOB_CACHE_MAX))
        self.race = race

    def __iter__(self):
        return self.race(self)


def _other_thread_evicted_the_oldest(cache):
    # The evicting thread has read the oldest key; the other one deletes it first.
    oldest = next(dict.__iter__(cache))
    del cache[oldest]
    return iter([oldest])


def _other_thread_emptied_it(cache):
    cache.clear()
    return dict.__iter__(cache)


def _other_thread_inserted_one(cache):
    it = dict.__iter__(cache)
    cache["raced?"] = select._never  # the dict changes size under the iterator
    return it


@pytest.mark.parametrize(
    "race", [_other_thread_evicted_the_oldest, _other_thread_emptied_it, _other_thread_inserted_one]
)
def test_a_glob_compiled_while_another_thread_changes_the_cache_still_matches(monkeypatch, race):
    # KeyError, StopIteration, RuntimeError: each is what that race raises in the eviction;
    # the glob is compiled and cached all the same, never an error to the selector.
    cache = _RacedCache(race)
    monkeypatch.setattr(select, "_GLOB_CACHE", cache)
    assert Pattern("new?").match("newx") and not Pattern("new?").match("new")
    assert "new?" in cache


def test_importing_select_does_not_import_typing():
    # kstat's start-up path (select.py's TYPE_CHECKING flag: its annotations' names only).
    code = "import sys, kstatpy.select; print('typing' in sys.modules)"
    got = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=str(REPO), env={"PYTHONPATH": str(REPO)})  # fmt: skip
    assert (got.returncode, got.stdout) == (0, "False\n"), got.stderr


@pytest.mark.parametrize(
    ("pattern", "member"),
    [("u[n||x]ix", "|"), ("u[n&&x]ix", "&"), ("u[n~~x]ix", "~"), ("/^u[n||x]ix$/", "|"), ("/^u[n&&x]ix$/", "&")],
)
def test_doubled_set_operators_in_a_bracket_are_members_without_a_warning(empty_cache, pattern, member):
    # Python's re reads "||", "&&", "~~" in a set as operators to come and warns
    # (FutureWarning), which kstat and kstatd would print on stderr: they are quoted.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pat = Pattern(pattern)
        assert pat.match("unix") and pat.match(f"u{member}ix") and not pat.match("ubix")
