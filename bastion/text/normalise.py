# ruff: noqa: RUF002  (look-alike characters are what this file is about)
"""Text normalisation for keyword matching: one canonical skeleton of a text, with a map back to
the characters of the original.

The same function normalises a bank's terms and the scanned text, so a term matches text that
differs from it only by the obfuscations below. Each step has a name, reported with a match when
the match needed it (:func:`needed`):

- ``nfkc``: compatibility forms folded (fullwidth letters, ligatures, mathematical alphanumerics);
- ``case``: Unicode case folding;
- ``marks``: combining marks removed (accents, strike-through and stacked "zalgo" marks);
- ``invisible``: zero-width and other format characters removed;
- ``confusables``: characters that look like a Latin letter or digit (Cyrillic ``а``, Greek
  ``ο``, ...) folded to it, by Unicode's confusables table as the confusable-homoglyphs package
  ships it;
- ``leetspeak``: digits and a few symbols standing for letters (``s3cr3t``, ``$ecret``, ``p@ss``);
  ``i``, ``l``, ``1``, ``|`` and ``!`` are one letter of the skeleton;
- ``separators``: a run of three or more single letters joined (``s.e.c.r.e.t``, ``s e c r e t``);
- ``repeats``: a letter repeated in a row kept once (``seeecret``).

Always: apostrophes are dropped (``don't`` = ``dont``) and every run of characters that are
neither letters, digits nor marks becomes one space, so terms match whole words and phrases.

The fast path (:func:`normalise`) runs in C (``str.translate``, ``re`` and numpy) because every
scanned byte goes through it; :func:`normalise_mapped` does the same steps in Python while
keeping, for each character of the skeleton, the span of the original it came from. It runs only
for text in which something matched. Tests check the two agree.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np
from confusable_homoglyphs import confusables as _confusables

from bastion.text import kernel

#: The reportable steps, in the order they are documented.
STEPS: tuple[str, ...] = (
    "nfkc",
    "case",
    "marks",
    "invisible",
    "confusables",
    "leetspeak",
    "separators",
    "repeats",
)
ALL_STEPS = frozenset(STEPS)

_APOSTROPHES = frozenset("'\u2019\u02bc\u2018\u0060\u00b4\uff07")
#: Symbols that stand for a letter inside a word (and ``$`` at a word's start).
_SYMBOL_LEET = {"@": "a", "$": "s", "!": "i", "|": "i", "+": "t"}
_DIGIT_LEET = {
    "0": "o",
    "1": "i",
    "2": "z",
    "3": "e",
    "4": "a",
    "5": "s",
    "6": "g",
    "7": "t",
    "8": "b",
    "9": "g",
    "l": "i",
}
_SYMBOLS = "".join(_SYMBOL_LEET)
_SYM_CLASS = re.escape(_SYMBOLS)
#: A run of symbols before a word character; :func:`_is_leet` then asks for a word character
#: before it too, or for ``$`` signs starting a word before a letter. (The pattern starts with
#: the symbols so that ``re`` can skip to them: a look-behind first would try every position.)
_SYM_RE = re.compile(rf"[{_SYM_CLASS}]+(?=[^\W_])")
#: Symbols that stand for no letter: separators.
_LONE_SYMBOLS_RE = re.compile(rf"[{_SYM_CLASS}]+")
#: What is left of separators after folding: runs of spaces and symbols.
_SPACES_RE = re.compile(rf"[ {_SYM_CLASS}]{{2,}}|[{_SYM_CLASS}]")
_REPEAT_RE = re.compile(r"(.)\1+", re.DOTALL)
#: Below this many characters, fixed costs make numpy slower than ``re``.
_SHORT = 512
#: Three or more one-character words in a row (the skeleton has single spaces only).
_SINGLES_RE = re.compile(r"(?<![^ ])[^ ](?: [^ ](?![^ ])){2,}")


@cache
def confusable_map() -> dict[str, str]:
    """Non-ASCII character -> the ASCII letter or digit Unicode lists it as confusable with."""
    out: dict[str, str] = {}
    for char, glyphs in _confusables.confusables_data.items():
        if len(char) != 1 or char.isascii():
            continue
        targets = [g["c"] for g in glyphs if len(g["c"]) == 1 and g["c"].isascii()]
        targets = [t for t in targets if t.isalnum()]
        if not targets:
            continue
        # Prefer a lowercase letter, then any letter, then a digit: the skeleton is lowercase.
        targets.sort(key=lambda t: (not t.islower(), not t.isalpha(), t))
        out[char] = targets[0].lower()
    return out


def _is_word(ch: str) -> bool:
    return ch.isalnum() or unicodedata.category(ch)[0] == "M"


def _fold_once(text: str, steps: frozenset[str]) -> str:
    text = unicodedata.normalize("NFKD" if "nfkc" in steps else "NFD", text)
    conf = confusable_map() if "confusables" in steps else None
    leet = "leetspeak" in steps
    out: list[str] = []
    for ch in text:
        if ch in _APOSTROPHES:
            continue
        cat = unicodedata.category(ch)
        if cat in ("Mn", "Me") and "marks" in steps:
            continue
        if cat == "Cf" and "invisible" in steps:
            continue
        folded = ch.casefold() if "case" in steps else ch
        for x in folded:
            if conf is not None:
                x = conf.get(x, x)
            if leet:
                x = _DIGIT_LEET.get(x, x)
            if x in _SYMBOL_LEET:
                out.append(x)  # kept for the context rule (_SYM_RE), else a separator
            elif _is_word(x):
                out.append(x)
            elif not out or out[-1] != " ":
                out.append(" ")
    return unicodedata.normalize("NFC", "".join(out))


def fold_char(ch: str, steps: frozenset[str] = ALL_STEPS) -> str:
    """What one character becomes: the per-character steps, repeated until nothing changes
    (a compatibility form can case-fold to one that decomposes again)."""
    out = ch
    for _ in range(6):
        nxt = "".join(_fold_once(c, steps) if c != " " else c for c in out)
        if nxt == out:
            break
        out = nxt
    return out


class _FoldTable(dict[int, str]):
    """``str.translate`` table filled on first sight of each character."""

    def __init__(self, steps: frozenset[str]) -> None:
        super().__init__()
        self.steps = steps

    def __missing__(self, code: int) -> str:
        value = fold_char(chr(code), self.steps)
        self[code] = value
        return value


_tables: dict[frozenset[str], _FoldTable] = {}
_tables_lock = threading.Lock()


def _table(steps: frozenset[str]) -> _FoldTable:
    table = _tables.get(steps)
    if table is None:
        with _tables_lock:
            table = _tables.setdefault(steps, _FoldTable(steps))
    return table


#: numpy fast path: code point -> folded code point, for the first two planes (every living
#: script, emoji and the mathematical alphanumerics); anything past them takes ``translate``.
_PLANES = 0x20000
_DELETE = np.uint32(0xFFFFFFFF)
_COMPLEX = np.uint32(0xFFFFFFFE)


@cache
def _plane_table() -> np.ndarray:
    table = np.empty(_PLANES, dtype=np.uint32)
    fold = _table(ALL_STEPS)
    for code in range(_PLANES):
        if 0xD800 <= code < 0xE000:
            table[code] = _COMPLEX  # a lone surrogate: left to the slow path
            continue
        value = fold[code]
        if value == "":
            table[code] = _DELETE
        elif len(value) == 1:
            table[code] = ord(value)
        else:
            table[code] = _COMPLEX
    return table


#: Past this many characters that fold to several, the numpy path gives way to ``translate``.
_MAX_COMPLEX = 256


def _decode(codes: np.ndarray) -> str:
    return str(codes[codes != _DELETE].tobytes().decode("utf-32-le"))


def _fold_fast(text: str) -> str:
    table = _table(ALL_STEPS)
    if text.isascii():
        return text.translate(table)
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    if int(codes.max()) < _PLANES:
        mapped = _plane_table()[codes]
        complex_at = np.flatnonzero(mapped == _COMPLEX)
        if not len(complex_at):
            return _decode(mapped)
        if len(complex_at) <= _MAX_COMPLEX:  # a few ß or ligatures: fold those one by one
            parts: list[str] = []
            prev = 0
            for i in complex_at.tolist():
                parts.append(_decode(mapped[prev:i]))
                parts.append(table[int(codes[i])])
                prev = i + 1
            parts.append(_decode(mapped[prev:]))
            return "".join(parts)
    return text.translate(table)


def squeeze(text: str) -> str:
    """Every run of one repeated character kept once (used for spaces and repeats): ``re`` for
    short text, numpy past :data:`_SHORT` characters, where it is several times faster."""
    if len(text) < _SHORT:
        return _REPEAT_RE.sub(r"\1", text)
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    keep = np.empty(len(codes), dtype=bool)
    keep[0] = True
    np.not_equal(codes[1:], codes[:-1], out=keep[1:])
    if keep.all():
        return text
    return codes[keep].tobytes().decode("utf-32-le", "surrogatepass")


def _is_leet(m: re.Match[str]) -> bool:
    """A symbol run (before a word character) stands for letters when a word character comes
    before it too (``p@ss``), or when it is ``$`` signs starting a word before a letter."""
    start = m.start()
    if start and m.string[start - 1].isalnum():
        return True
    return set(m.group()) == {"$"} and m.string[m.end()].isalpha()


def _symbol_sub(m: re.Match[str]) -> str:
    if not _is_leet(m):
        return m.group()
    return "".join(_SYMBOL_LEET[c] for c in m.group())


def normalise(text: str) -> str:
    """The skeleton of ``text`` under every step: what the automaton searches."""
    return normalise_joined(text)[0]


def normalise_joined(text: str) -> tuple[str, list[str]]:
    """The skeleton, and the words the ``separators`` step made by joining single letters.

    A lone letter beside a spaced-out word (``a s e c r e t``) is joined with it; the matcher
    also tries each joined word without its first or last letter."""
    done = _compiled(text)
    if done is None:
        return normalise_joined_re(text)
    return done.text, done.joined


def normalise_joined_re(text: str) -> tuple[str, list[str]]:
    """:func:`normalise_joined` with ``re`` and numpy only: the reference the compiled path is
    tested against, and the path for text beyond the first two planes."""
    joined: list[str] = []

    def single(m: re.Match[str]) -> str:
        word = m.group().replace(" ", "")
        joined.append(word)
        return word

    s = _fold_fast(text)
    if any(c in s for c in _SYMBOLS):
        s = _SYM_RE.sub(_symbol_sub, s)
        s = _LONE_SYMBOLS_RE.sub(" ", s)
    s = squeeze(s)  # repeats, and the runs of spaces the fold left
    if " " in s:
        s = _SINGLES_RE.sub(single, s)
        if joined:
            s = squeeze(s)
    return s.strip(" "), [squeeze(w) for w in joined]


# -- the mapped (slow) path and the reference for any set of steps ----------------------------


@dataclass(frozen=True, slots=True)
class Mapped:
    """A skeleton with, for each of its characters, the original's span it came from."""

    text: str
    starts: tuple[int, ...]
    ends: tuple[int, ...]

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original's span of skeleton characters ``start:end`` (end exclusive)."""
        return self.starts[start], self.ends[end - 1]


Repl = Callable[[re.Match[str]], list[tuple[str, int, int]]]


def _resub(
    pattern: re.Pattern[str], repl: Repl, s: str, st: list[int], en: list[int]
) -> tuple[str, list[int], list[int]]:
    """``pattern.sub`` that carries spans: ``repl`` gives each output character with the range
    of matched characters (relative to the match, inclusive) it stands for."""
    parts: list[str] = []
    nst: list[int] = []
    nen: list[int] = []
    last = 0
    for m in pattern.finditer(s):
        a, b = m.span()
        parts.append(s[last:a])
        nst.extend(st[last:a])
        nen.extend(en[last:a])
        for ch, lo, hi in repl(m):
            parts.append(ch)
            nst.append(st[a + lo])
            nen.append(en[a + hi])
        last = b
    if last == 0:
        return s, st, en
    parts.append(s[last:])
    nst.extend(st[last:])
    nen.extend(en[last:])
    return "".join(parts), nst, nen


def _r_symbols(m: re.Match[str]) -> list[tuple[str, int, int]]:
    if not _is_leet(m):
        return [(c, i, i) for i, c in enumerate(m.group())]
    return [(_SYMBOL_LEET[c], i, i) for i, c in enumerate(m.group())]


def _r_space(m: re.Match[str]) -> list[tuple[str, int, int]]:
    return [(" ", 0, len(m.group()) - 1)]


def _r_repeat(m: re.Match[str]) -> list[tuple[str, int, int]]:
    return [(m.group(1), 0, len(m.group()) - 1)]


def _r_singles(m: re.Match[str]) -> list[tuple[str, int, int]]:
    return [(c, i, i) for i, c in enumerate(m.group()) if c != " "]


def _mapped(text: str, steps: frozenset[str]) -> tuple[str, list[int], list[int]]:
    table = _table(steps)
    parts: list[str] = []
    st: list[int] = []
    en: list[int] = []
    for i, ch in enumerate(text):
        folded = table[ord(ch)]
        if folded:
            parts.append(folded)
            st.extend([i] * len(folded))
            en.extend([i + 1] * len(folded))
    s = "".join(parts)
    if "leetspeak" in steps:
        s, st, en = _resub(_SYM_RE, _r_symbols, s, st, en)
    s, st, en = _resub(_SPACES_RE, _r_space, s, st, en)
    if "repeats" in steps:
        s, st, en = _resub(_REPEAT_RE, _r_repeat, s, st, en)
    if "separators" in steps:
        s, st, en = _resub(_SINGLES_RE, _r_singles, s, st, en)
        if "repeats" in steps:
            s, st, en = _resub(_REPEAT_RE, _r_repeat, s, st, en)
    # Strip the edges' spaces.
    lo, hi = 0, len(s)
    while lo < hi and s[lo] == " ":
        lo += 1
    while hi > lo and s[hi - 1] == " ":
        hi -= 1
    return s[lo:hi], st[lo:hi], en[lo:hi]


def _squeeze_mapped(s: str, st: list[int], en: list[int]) -> tuple[str, list[int], list[int]]:
    """:func:`squeeze` carrying spans: a run's one character spans the whole run."""
    if len(s) < 2:
        return s, st, en
    codes = np.frombuffer(s.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    keep = np.empty(len(codes), dtype=bool)
    keep[0] = True
    np.not_equal(codes[1:], codes[:-1], out=keep[1:])
    if keep.all():
        return s, st, en
    kept = np.flatnonzero(keep)
    last = np.empty(len(kept), dtype=np.int64)
    last[:-1] = kept[1:] - 1
    last[-1] = len(codes) - 1
    starts = np.asarray(st, dtype=np.int64)[kept]
    ends = np.asarray(en, dtype=np.int64)[last]
    text = codes[kept].tobytes().decode("utf-32-le", "surrogatepass")
    return text, starts.tolist(), ends.tolist()


def _fold_mapped(text: str) -> tuple[str, list[int], list[int]]:
    """The fold with spans, in numpy where every character folds to at most one."""
    table = _table(ALL_STEPS)
    if text:
        codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        if int(codes.max()) < _PLANES:
            mapped = _plane_table()[codes]
            complex_at = np.flatnonzero(mapped == _COMPLEX)
            if len(complex_at) <= _MAX_COMPLEX:
                parts: list[str] = []
                starts: list[int] = []
                prev = 0
                for i in [*complex_at.tolist(), len(codes)]:
                    kept = np.flatnonzero(mapped[prev:i] != _DELETE) + prev
                    parts.append(mapped[kept].tobytes().decode("utf-32-le"))
                    starts.extend(kept.tolist())
                    if i < len(codes):
                        folded = table[int(codes[i])]
                        parts.append(folded)
                        starts.extend([i] * len(folded))
                    prev = i + 1
                return "".join(parts), starts, [i + 1 for i in starts]
    out: list[str] = []
    st: list[int] = []
    en: list[int] = []
    for i, ch in enumerate(text):
        folded = table[ord(ch)]
        if folded:
            out.append(folded)
            st.extend([i] * len(folded))
            en.extend([i + 1] * len(folded))
    return "".join(out), st, en


def normalise_mapped(text: str) -> Mapped:
    """:func:`normalise` with the map back to the original."""
    done = _compiled(text)
    if done is None:
        return normalise_mapped_re(text)
    return Mapped(done.text, tuple(done.starts.tolist()), tuple(done.ends.tolist()))


def skeleton_of(text: str) -> Compiled:
    """The skeleton, its spans in ``text`` and the words joined from letters, in one pass (the
    compiled path, or the ``re`` one past the first two planes)."""
    done = _compiled(text)
    if done is not None:
        return done
    mapped = normalise_mapped_re(text)
    return Compiled(
        mapped.text,
        np.asarray(mapped.starts, dtype=np.int64),
        np.asarray(mapped.ends, dtype=np.int64),
        normalise_joined_re(text)[1],
    )


def span_map(text: str) -> tuple[np.ndarray, np.ndarray]:
    """For each character of the skeleton, its start and end in ``text`` (arrays: cheaper
    than :func:`normalise_mapped`'s tuples when only a few spans are looked up)."""
    done = _compiled(text)
    if done is not None:
        return done.starts, done.ends
    mapped = normalise_mapped_re(text)
    return np.asarray(mapped.starts, dtype=np.int64), np.asarray(mapped.ends, dtype=np.int64)


def normalise_mapped_re(text: str) -> Mapped:
    """:func:`normalise_mapped` with ``re`` and numpy only: the same steps as the fast path,
    carrying each character's span (Python per regex match)."""
    s, st, en = _fold_mapped(text)
    if any(c in s for c in _SYMBOLS):
        s, st, en = _resub(_SYM_RE, _r_symbols, s, st, en)
        s, st, en = _resub(_LONE_SYMBOLS_RE, _r_space, s, st, en)
    s, st, en = _squeeze_mapped(s, st, en)
    if " " in s:
        before = s
        s, st, en = _resub(_SINGLES_RE, _r_singles, s, st, en)
        if s is not before:
            s, st, en = _squeeze_mapped(s, st, en)
    lo, hi = 0, len(s)
    while lo < hi and s[lo] == " ":
        lo += 1
    while hi > lo and s[hi - 1] == " ":
        hi -= 1
    return Mapped(s[lo:hi], tuple(st[lo:hi]), tuple(en[lo:hi]))


def normalise_with_spans(text: str, steps: Iterable[str]) -> Mapped:
    """:func:`normalise_with` carrying spans, in Python (the reference the others agree with)."""
    out, st, en = _mapped(text, frozenset(steps))
    return Mapped(out, tuple(st), tuple(en))


def normalise_with(text: str, steps: Iterable[str]) -> str:
    """The skeleton under some of the steps only: the reference :func:`needed` compares with."""
    return _skeleton_with(text, frozenset(steps))


@lru_cache(maxsize=65_536)
def _skeleton_with(text: str, steps: frozenset[str]) -> str:
    """The string :func:`_mapped` gives, without carrying spans (``translate`` and ``re``)."""
    s = text.translate(_table(steps))
    if "leetspeak" in steps:
        s = _SYM_RE.sub(_symbol_sub, s)
    s = _SPACES_RE.sub(" ", s)
    if "repeats" in steps:
        s = _REPEAT_RE.sub(r"\1", s)
    if "separators" in steps:
        s = _SINGLES_RE.sub(_join_singles, s)
        if "repeats" in steps:
            s = _REPEAT_RE.sub(r"\1", s)
    return s.strip(" ")


def _join_singles(m: re.Match[str]) -> str:
    return m.group().replace(" ", "")


def needed(original: str, term: str, *, joined: bool = False) -> tuple[str, ...]:
    """The steps a match of ``term`` on ``original`` (the matched span) took: applying the
    steps in order, each one that changed either side while the two still differed. Where two
    steps would both do (a mathematical bold letter is both a compatibility form and a
    confusable), the earlier one is named. ``joined``: the match was the phrase's spaced-out
    form (its words run together), which is the ``separators`` step."""

    if not joined:
        if original == term:
            return ()
        if original.casefold() == term.casefold() and original.isascii() and term.isascii():
            return ("case",)  # the common case, without running the steps

    def form(text: str, steps: frozenset[str]) -> str:
        out = normalise_with(text, steps)
        return squeeze(out.replace(" ", "")) if joined else out

    out: list[str] = []
    done: frozenset[str] = frozenset()
    mine, theirs = form(original, done), form(term, done)
    for step in STEPS:
        if mine == theirs:
            break
        done = done | {step}
        mine2, theirs2 = form(original, done), form(term, done)
        if mine2 != mine or theirs2 != theirs:
            out.append(step)
        mine, theirs = mine2, theirs2
    if joined and "separators" not in out:
        out.append("separators")
    return tuple(s for s in STEPS if s in out)


# -- the compiled path -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Compiled:
    """A skeleton from the compiled path: its text, spans and the words joined from letters."""

    text: str
    starts: np.ndarray
    ends: np.ndarray
    joined: list[str]


@cache
def _char_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per code point of the first two planes: ``isalnum``, ``isalpha`` and the letter a
    symbol stands for (0 for none)."""
    alnum = np.zeros(_PLANES, dtype=np.bool_)
    alpha = np.zeros(_PLANES, dtype=np.bool_)
    for code in range(_PLANES):
        ch = chr(code)
        alnum[code] = ch.isalnum()
        alpha[code] = ch.isalpha()
    leet = np.zeros(_PLANES, dtype=np.uint32)
    for sym, letter in _SYMBOL_LEET.items():
        leet[ord(sym)] = ord(letter)
    return alnum, alpha, leet


def _fold_arrays(text: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The fold as code points with each one's start in the original (its end is start + 1),
    or None beyond the first two planes or with many multi-character folds."""
    if not text:
        return np.zeros(0, dtype=np.uint32), np.zeros(0, dtype=np.int64)
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    if int(codes.max()) >= _PLANES:
        return None
    mapped = _plane_table()[codes]
    complex_at = np.flatnonzero(mapped == _COMPLEX)
    if not len(complex_at):
        kept = np.flatnonzero(mapped != _DELETE)
        return mapped[kept], kept
    if len(complex_at) > _MAX_COMPLEX:
        return None
    table = _table(ALL_STEPS)
    out_codes: list[np.ndarray] = []
    out_starts: list[np.ndarray] = []
    prev = 0
    for i in [*complex_at.tolist(), len(codes)]:
        kept = np.flatnonzero(mapped[prev:i] != _DELETE) + prev
        out_codes.append(mapped[kept])
        out_starts.append(kept)
        if i < len(codes):
            folded = table[int(codes[i])]
            out_codes.append(np.array([ord(c) for c in folded], dtype=np.uint32))
            out_starts.append(np.full(len(folded), i, dtype=np.int64))
        prev = i + 1
    return np.concatenate(out_codes), np.concatenate(out_starts)


def _compiled(text: str) -> Compiled | None:
    """The skeleton through the compiled kernel, or None where only the ``re`` path goes."""
    global _kernel_args
    if _kernel_args is None:
        _kernel_args = (_plane_table(), *_char_tables())
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    c, st, en, mark, ok = kernel.fold_and_skeleton(codes, *_kernel_args)
    if not ok:
        arrays = _fold_arrays(text)
        if arrays is None:
            return None
        folded, starts = arrays
        if len(folded) and int(folded.max()) >= _PLANES:
            return None
        c, st, en, mark = kernel.skeleton(folded, starts, starts + 1, *_kernel_args[1:])
    out = c.tobytes().decode("utf-32-le")
    joined: list[str] = []
    if mark.any():
        edges = np.flatnonzero(np.diff(np.concatenate(([False], mark, [False])).astype(np.int8)))
        for a, b in zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True):
            joined.append(out[a:b])
    return Compiled(out, st, en, joined)


#: The kernel's tables (the fold, isalnum, isalpha, the symbols' letters), built on first use.
_kernel_args: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
