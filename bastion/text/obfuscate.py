"""Obfuscations of a term, as people write them to slip past keyword lists: the generator the
property tests and the recall benchmark use. Each kind undoes under one normalisation step of
:mod:`bastion.text.normalise`; ``mixed`` applies several at once.

Only obfuscations the matcher is meant to see through are made: symbols stand for letters inside
a word (``$`` also at its start), letters are spaced out word by word (a word of three or more
letters) or for a whole phrase at once, and a confusable is only used where Unicode's table
folds it to the letter it replaces.
"""

from __future__ import annotations

import random
from functools import cache

from bastion.text.normalise import confusable_map, fold_char

KINDS: tuple[str, ...] = (
    "case",
    "nfkc",
    "marks",
    "invisible",
    "confusables",
    "leetspeak",
    "symbols",
    "separators",
    "repeats",
    "mixed",
)

_DIGITS = {"o": "0", "i": "1", "l": "1", "e": "3", "a": "4", "s": "5", "t": "7", "b": "8", "g": "9"}
_SYMBOLS = {"a": "@", "s": "$", "i": "!", "l": "|", "t": "+"}
_MARKS = ("\u0301", "\u0308", "\u0336", "\u0335", "\u0332")
_INVISIBLE = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad")
_SEPARATORS = (".", " ", "-", "_", "*", ". ", "·")


@cache
def _lookalikes() -> dict[str, tuple[str, ...]]:
    """ASCII letter -> characters from other scripts that fold to the same skeleton letter."""
    out: dict[str, list[str]] = {}
    for char, target in confusable_map().items():
        if target.isalpha() and fold_char(char) == fold_char(target) and char.isalpha():
            out.setdefault(target, []).append(char)
    return {k: tuple(sorted(v)) for k, v in out.items()}


def _case(term: str, rng: random.Random) -> str:
    return "".join(c.upper() if rng.random() < 0.5 else c for c in term)


def _nfkc(term: str, rng: random.Random) -> str:
    def wide(c: str) -> str:
        if not c.isascii() or not c.isalnum():
            return c
        if rng.random() < 0.5:
            return chr(ord(c) - 0x21 + 0xFF01)  # fullwidth
        if c.islower():
            return chr(0x1D41A + ord(c) - ord("a"))  # mathematical bold small
        return c

    return "".join(wide(c) for c in term)


def _marks(term: str, rng: random.Random) -> str:
    return "".join(
        c + rng.choice(_MARKS) if c.isalpha() and rng.random() < 0.6 else c for c in term
    )


def _invisible(term: str, rng: random.Random) -> str:
    out = []
    for i, c in enumerate(term):
        out.append(c)
        if i + 1 < len(term) and rng.random() < 0.5:
            out.append(rng.choice(_INVISIBLE))
    return "".join(out)


def _confusables(term: str, rng: random.Random) -> str:
    table = _lookalikes()
    return "".join(rng.choice(table[c]) if c in table and rng.random() < 0.6 else c for c in term)


def _leetspeak(term: str, rng: random.Random) -> str:
    return "".join(_DIGITS[c] if c in _DIGITS and rng.random() < 0.6 else c for c in term)


def _symbols(term: str, rng: random.Random) -> str:
    words = term.split(" ")
    out = []
    for word in words:
        chars = list(word)
        for i, c in enumerate(chars):
            inside = 0 < i < len(chars) - 1
            start = i == 0 and c == "s" and len(chars) > 1 and chars[1].isalpha()
            if c in _SYMBOLS and (inside or start) and rng.random() < 0.6:
                # Inside a word a symbol must sit between letters: one at a time.
                if not start and (not chars[i - 1].isalnum() or not chars[i + 1].isalnum()):
                    continue
                chars[i] = _SYMBOLS[c]
        out.append("".join(chars))
    return " ".join(out)


def _separators(term: str, rng: random.Random) -> str:
    words = term.split(" ")
    sep = rng.choice(_SEPARATORS)
    long_words = [i for i, w in enumerate(words) if len(w) >= 3 and w.isalpha()]
    if (len(words) > 1 and rng.random() < 0.5) or not long_words:
        # The whole phrase spaced out, letter by letter.
        return sep.join(c for c in term if c != " ")
    i = rng.choice(long_words)
    words[i] = sep.join(words[i])
    return " ".join(words)


def _repeats(term: str, rng: random.Random) -> str:
    return "".join(c * rng.randint(2, 4) if c.isalpha() and rng.random() < 0.4 else c for c in term)


_ONE = {
    "case": _case,
    "nfkc": _nfkc,
    "marks": _marks,
    "invisible": _invisible,
    "confusables": _confusables,
    "leetspeak": _leetspeak,
    "symbols": _symbols,
    "separators": _separators,
    "repeats": _repeats,
}


def obfuscate(term: str, kind: str, rng: random.Random) -> str:
    """``term`` obfuscated one way (``kind`` from :data:`KINDS`); ``mixed`` chains two to four."""
    if kind != "mixed":
        return _ONE[kind](term, rng)
    # Order matters: letter swaps, then spacing out, then symbols (only between two letters
    # still), then the character-level disguises around them.
    first = rng.sample(["case", "confusables", "leetspeak", "symbols", "repeats"], 2)
    last = rng.sample(["separators", "marks", "invisible", "nfkc"], rng.randint(0, 2))
    chosen = set(first) | set(last)
    order = [
        k
        for k in (
            "repeats",
            "leetspeak",
            "confusables",
            "case",
            "separators",
            "symbols",
            "nfkc",
            "marks",
            "invisible",
        )
        if k in chosen
    ]
    out = term
    for step in order:
        out = _ONE[step](out, rng)
    return out
