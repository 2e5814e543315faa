"""kstat(8) selection: patterns, selectors, and which kstats a selection keeps.

Shared by the ``kstat`` command and the ioctl layer (KSTATPY_IOC_SELECT,
docs/PROTOCOL.md §9.2), so both evaluate a selector the same way; this module imports
nothing from kstatpy. It is over 400 lines because the glob and ERE translators
belong with the matching that uses them.

Patterns (illumos kstat(8): ``cmd/stat/kstat/kstat.c``, patterns)
    A pattern is a regex when it starts and ends with ``/`` and is at least two
    characters long; the text between the first and the last ``/`` is a POSIX
    extended regular expression searched **unanchored**. Anything else is a glob
    matched **anchored** against the whole string: ``*``, ``?``, ``[...]``,
    ``[!...]``, a backslash quotes the next character, and an unterminated bracket
    matches nothing (gmatch returns 0).

    Regexes compile lazily, on the first evaluation, and are cached in the pattern:
    a bad regex is an error (:class:`RegexError`, carrying regerror(3C)'s text) only
    if the pattern is ever evaluated. Globs compile eagerly; they cannot fail.
    ``re`` is imported only when a pattern needs it (not for exact names or a
    trailing ``*``), so plain selectors keep the command's start-up lean.

Selectors (illumos kstat(8): ``cmd/stat/kstat/kstat.c``, selection)
    ``module:instance:name:statistic``; an empty or missing field is ``*``
    (:func:`operand_fields`). A kstat is *selected* by a :class:`Selection` when
    some selector's module, name, decimal instance and the class pattern all match,
    evaluated in that order for every selector (no short cut across selectors), so
    that a lazily compiled regex is evaluated exactly when kstat(8)'s own passes
    would evaluate it.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: the kstatd path of kstat never imports typing
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = [
    "Pattern",
    "RegexError",
    "Selection",
    "SelectorPatterns",
    "ere_to_python",
    "gmatch_to_python",
    "is_exact",
    "is_regex",
    "filter_named",
    "operand_fields",
]

#: regerror(3C) texts of illumos libc (from FreeBSD's regex), by condition.
REG_EBRACK = "brackets ([ ]) not balanced"
REG_EPAREN = "parentheses not balanced"
REG_BADRPT = "repetition-operator operand invalid"
REG_EESCAPE = "trailing backslash (\\)"
REG_EMPTY = "empty (sub)expression"
REG_ECTYPE = "invalid character class"
REG_ERANGE = "invalid character range"
REG_EBRACE = "braces not balanced"
REG_BADBR = "invalid repetition count(s)"
REG_BADPAT = "invalid regular expression"

_CLASSES = {
    "alnum": "a-zA-Z0-9",
    "alpha": "a-zA-Z",
    "blank": " \\t",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "\\x21-\\x7e",
    "lower": "a-z",
    "print": "\\x20-\\x7e",
    "punct": "!-/:-@\\[-`{-~",
    "space": " \\t\\n\\r\\f\\v",
    "upper": "A-Z",
    "xdigit": "0-9A-Fa-f",
}


class RegexError(Exception):
    """A ``/regex/`` that does not compile; ``str()`` is regerror(3C)'s message."""


def is_regex(text: str) -> bool:
    """True when ``text`` matches the glob ``/*/``: a ``/regex/`` pattern."""
    return len(text) >= 2 and text[0] == "/" and text[-1] == "/"


def is_exact(text: str) -> bool:
    """``-V``'s test: neither a ``*`` glob nor a regex (``?`` and ``[]`` pass)."""
    return "*" not in text and not is_regex(text)


def _esc(c: str) -> str:
    return "\\" + c if c in "\\]^-[&~|" else c  # re reads "&&", "~~", "||" as set operators to come


def gmatch_to_python(pattern: str) -> str | None:
    """The Python regex (for ``fullmatch`` with DOTALL) of a gmatch glob; None: never matches."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            if not out or out[-1] != ".*":
                out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "\\":
            if i < n:
                c = pattern[i]
                i += 1
            out.append("\\" + c if not c.isalnum() else c)
        elif c == "[":
            j = i
            negate = j < n and pattern[j] == "!"
            if negate:
                j += 1
            items: list[str] = []
            first = True
            while True:
                if j >= n:
                    return None  # unterminated bracket: gmatch fails
                c = pattern[j]
                j += 1
                if c == "]" and not first:
                    break
                first = False
                if c == "\\" and j < n:
                    c = pattern[j]
                    j += 1
                if j + 1 < n and pattern[j] == "-" and pattern[j + 1] != "]":
                    hi = pattern[j + 1]
                    j += 2
                    if hi == "\\" and j < n:
                        hi = pattern[j]
                        j += 1
                    if c <= hi:
                        items.append(_esc(c) + "-" + _esc(hi))
                else:
                    items.append(_esc(c))
            i = j
            if not items:
                out.append("." if negate else "(?!)")
            else:
                out.append("[" + ("^" if negate else "") + "".join(items) + "]")
        else:
            out.append("\\" + c if not c.isalnum() and c != "_" else c)
    # Every token but ".*" matches exactly one character, so the segments between
    # stars have fixed lengths and the leftmost match of each middle segment is as
    # good as any: commit to it (an atomic group). Matching is then O(len(s) x
    # len(pattern)), not exponential in the number of stars (kstatd matches globs a
    # client sends; see test_select_globs).
    segments: list[str] = []
    current: list[str] = []
    for token in out:
        if token == ".*":
            segments.append("".join(current))
            current = []
        else:
            current.append(token)
    segments.append("".join(current))
    if len(segments) == 1:
        return segments[0]
    middle = "".join(f"(?>.*?{seg})" for seg in segments[1:-1] if seg)
    return f"{segments[0]}{middle}.*{segments[-1]}"


def _bracket(regex: str, i: int) -> tuple[str, int]:
    # A POSIX bracket expression starting after '['; backslash is literal inside.
    n = len(regex)
    negate = i < n and regex[i] == "^"
    if negate:
        i += 1
    items: list[str] = []
    first = True
    while True:
        if i >= n:
            raise RegexError(REG_EBRACK)
        c = regex[i]
        if c == "]" and not first:
            i += 1
            break
        first = False
        if c == "[" and i + 1 < n and regex[i + 1] in ":=.":
            kind = regex[i + 1]
            end = regex.find(kind + "]", i + 2)
            if end < 0:
                raise RegexError(REG_EBRACK)
            word = regex[i + 2 : end]
            i = end + 2
            if kind == ":":
                if word not in _CLASSES:
                    raise RegexError(REG_ECTYPE)
                items.append(_CLASSES[word])
            elif len(word) == 1:
                items.append(_esc(word))
            else:
                raise RegexError("invalid collating element")
            continue
        i += 1
        if i + 1 < n and regex[i] == "-" and regex[i + 1] != "]":
            hi = regex[i + 1]
            i += 2
            if hi < c:
                raise RegexError(REG_ERANGE)
            items.append(_esc(c) + "-" + _esc(hi))
        else:
            items.append(_esc(c))
    return "[" + ("^" if negate else "") + "".join(items) + "]", i


def ere_to_python(regex: str) -> str:
    """Translate a POSIX ERE into an equivalent Python regex (DOTALL), or raise RegexError."""
    out: list[str] = []
    depth = 0
    # can_repeat: an operand precedes; branch_empty: nothing since the last '(' or '|'.
    can_repeat = False
    branch_empty = True
    i, n = 0, len(regex)
    while i < n:
        c = regex[i]
        i += 1
        if c == "\\":
            if i >= n:
                raise RegexError(REG_EESCAPE)
            c = regex[i]
            i += 1
            out.append("\\" + c if not c.isalnum() else c)
            can_repeat, branch_empty = True, False
        elif c == "[":
            text, i = _bracket(regex, i)
            out.append(text)
            can_repeat, branch_empty = True, False
        elif c == "(":
            # What follows is an operand as at the start: "(*" is REG_BADRPT below, "({1"
            # too, but "({a" is a literal '{' (regcomp's p_ere_exp).
            depth += 1
            out.append("(?:")
            can_repeat, branch_empty = False, True
        elif c == ")":
            if depth == 0:
                raise RegexError(REG_EPAREN)
            if branch_empty and out[-1] != "(?:":  # "()" is an empty group; "(a|)" is REG_EMPTY
                raise RegexError(REG_EMPTY)
            depth -= 1
            out.append(")")
            can_repeat, branch_empty = True, False
        elif c == "|":
            if branch_empty:
                raise RegexError(REG_EMPTY)
            out.append("|")
            can_repeat, branch_empty = False, True
        elif c in "*+?":
            if not can_repeat:
                raise RegexError(REG_BADRPT)
            out.append(c)
            branch_empty, can_repeat = False, False  # "a**" is REG_BADRPT too
        elif c == "{":
            if i < n and regex[i].isdigit():
                if not can_repeat:
                    raise RegexError(REG_BADRPT)
                end = regex.find("}", i)
                if end < 0:
                    raise RegexError(REG_EBRACE)
                bound = regex[i:end]
                lo, _, hi = bound.partition(",")
                if not lo.isdigit() or (hi and not hi.isdigit()) or (hi and int(hi) < int(lo)):
                    raise RegexError(REG_BADBR)
                if int(lo) > 255 or (hi and int(hi) > 255):
                    raise RegexError(REG_BADBR)
                out.append("{" + bound + "}")
                i = end + 1
                can_repeat = False
            else:
                out.append("\\{")
                can_repeat, branch_empty = True, False
        elif c == "^":
            out.append("^")
            can_repeat, branch_empty = False, False
        elif c == "$":
            out.append("(?:\\Z)")  # an operand: regcomp repeats a '$' ("$*", "a$+"), re no bare \Z
            can_repeat, branch_empty = True, False
        elif c == ".":
            out.append(".")
            can_repeat, branch_empty = True, False
        else:
            out.append("\\" + c if not c.isalnum() and c != "_" else c)
            can_repeat, branch_empty = True, False
    if depth:
        raise RegexError(REG_EPAREN)
    if branch_empty:
        raise RegexError(REG_EMPTY)
    return "".join(out)


def _always(_s: str) -> bool:
    return True


def _never(_s: str) -> bool:
    return False


#: Compiled globs by text, at most _GLOB_CACHE_MAX (oldest dropped first): many distinct
#: globs (a SELECT flood) cost their compile once each and memory stays bounded; re's own
#: cache (512) would be flushed by them. Plain dict operations: safe under the GIL.
_GLOB_CACHE: dict[str, Callable[[str], Any]] = {}
_GLOB_CACHE_MAX = 1024


def _glob_matcher(text: str) -> Callable[[str], Any]:
    match = _GLOB_CACHE.get(text)
    if match is None:
        import re

        py = gmatch_to_python(text)
        match = _never if py is None else re.compile(py, re.DOTALL).fullmatch
        if len(_GLOB_CACHE) >= _GLOB_CACHE_MAX:
            try:
                del _GLOB_CACHE[next(iter(_GLOB_CACHE))]
            except (KeyError, StopIteration, RuntimeError):  # another thread changed it: fine
                pass
        _GLOB_CACHE[text] = match
    return match


class Pattern:
    """One kstat(8) pattern; ``match(s) -> bool``. Regexes compile on first use."""

    __slots__ = ("_match", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._match: Callable[[str], Any]
        if is_regex(text):
            self._match = self._compile_and_match
        elif text == "*":
            self._match = _always
        elif not any(ch in text for ch in "*?[\\"):
            self._match = text.__eq__
        elif text.endswith("*") and not any(ch in text[:-1] for ch in "*?[\\"):
            prefix = text[:-1]
            self._match = lambda s: s.startswith(prefix)
        else:
            self._match = _glob_matcher(text)

    @property
    def matches_all(self) -> bool:
        """True for ``*``: callers may skip the test."""
        return self._match is _always

    def _compile_and_match(self, s: str) -> bool:
        import re

        body = self.text[1:-1]
        py = ere_to_python(body)
        try:
            self._match = re.compile(py, re.DOTALL).search
        except re.error as exc:  # pragma: no cover - the translation rejects what re would
            raise RegexError(REG_BADPAT) from exc
        return self._match(s) is not None

    def match(self, s: str) -> bool:
        """Whether ``s`` matches (may raise RegexError on a regex's first use)."""
        return bool(self._match(s))

    def __repr__(self) -> str:
        return f"Pattern({self.text!r})"


# --- selectors and selections -------------------------------------------------


def operand_fields(text: str) -> tuple[str, str, str, str] | None:
    """A ``module:instance:name:statistic`` operand's four patterns (empty -> ``*``).

    None when it has more than four fields (a usage error in kstat(8)).
    """
    fields = text.split(":")
    if len(fields) > 4:
        return None
    fields += [""] * (4 - len(fields))
    return (fields[0] or "*", fields[1] or "*", fields[2] or "*", fields[3] or "*")


class SelectorPatterns:
    """A selector's four patterns, compiled (regexes lazily)."""

    __slots__ = ("instance", "module", "name", "statistic")

    def __init__(self, module: Any = "*", instance: str = "*", name: str = "*", statistic: str = "*") -> None:
        if not isinstance(module, str):  # a kstat_args.Selector, as callers before kstatpy.select passed
            module, instance, name, statistic = module.fields()
        self.module = Pattern(module)
        self.instance = Pattern(instance)
        self.name = Pattern(name)
        self.statistic = Pattern(statistic)

    def fields(self) -> tuple[str, str, str, str]:
        """The four pattern texts."""
        return (self.module.text, self.instance.text, self.name.text, self.statistic.text)

    def exact_key(self) -> tuple[str, int, str] | None:
        """``(module, instance, name)`` when all three are plain names, else None."""
        m, i, n = self.module.text, self.instance.text, self.name.text
        if not (_plain(m) and _plain(n) and _plain(i)):
            return None
        try:
            inst = int(i)
        except ValueError:
            return None
        return (m, inst, n) if str(inst) == i else None


def _plain(text: str) -> bool:
    # Matched by equality: no glob metacharacter, not a regex.
    return not is_regex(text) and not any(ch in text for ch in "*?[\\")


class Selection:
    """Which kstats a set of selectors keeps, and which of their statistics.

    :param selectors: the selectors, in command-line order.
    :param ks_class: the class pattern (kstat(8) ``-c``), ``*`` for any.
    :param skip_name: kstats whose name matches this pattern are never kept
        (kstat(8) sends ``kstat_*``); None keeps every name.
    :param types: the ``KSTAT_TYPE_*`` numbers kept; None keeps every type.
    """

    __slots__ = ("_class", "_skip", "_types", "selectors")

    def __init__(
        self,
        selectors: list[SelectorPatterns],
        ks_class: str = "*",
        skip_name: str | None = None,
        types: frozenset[int] | None = None,
    ) -> None:
        self.selectors = selectors
        cls = Pattern(ks_class)
        self._class = None if cls.matches_all else cls.match
        self._skip = None if skip_name is None else Pattern(skip_name).match
        self._types = types

    def exact_keys(self) -> list[tuple[str, int, str]] | None:
        """The ``(module, instance, name)`` keys when every selector names one kstat exactly."""
        keys = []
        for sel in self.selectors:
            key = sel.exact_key()
            if key is None:
                return None
            keys.append(key)
        return keys

    def match(self, module: str, instance: int, name: str, ks_class: str, ks_type: int) -> Any:
        """False when not kept; else the statistic filter: None (all) or a list of match functions.

        :raises RegexError: a pattern evaluated here does not compile.
        """
        if (self._types is not None and ks_type not in self._types) or (
            self._skip is not None and self._skip(name)
        ):
            return False
        cls = self._class
        stat_matches: list[Callable[[str], bool]] | None = []
        kept = False
        inst_text = None
        for sel in self.selectors:
            if not sel.module.match(module) or not sel.name.match(name):
                continue
            ipat = sel.instance
            if not ipat.matches_all:
                if inst_text is None:
                    inst_text = str(instance)
                if not ipat.match(inst_text):
                    continue
            if cls is not None and not cls(ks_class):
                continue
            kept = True
            if stat_matches is not None:
                if sel.statistic.matches_all:
                    stat_matches = None
                else:
                    stat_matches.append(sel.statistic.match)
        return stat_matches if kept else False


def filter_named(data: list[Any], stat_matches: list[Callable[[str], bool]]) -> list[Any]:
    """The NAMED records (``[name, type, value]``) whose name some statistic pattern matches."""
    if len(stat_matches) == 1:
        m = stat_matches[0]
        return [rec for rec in data if m(rec[0])]
    return [rec for rec in data if any(m(rec[0]) for m in stat_matches)]
