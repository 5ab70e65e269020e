"""Every keyword entry in one Aho-Corasick automaton (ahocorasick-rs), matched in one pass.

Each term's skeleton goes in padded with a space on each side, and the scanned text's skeleton
is searched with a space at each end, so a hit is a whole word or phrase (the skeleton has one
space between words). Scripts written without spaces (Chinese, Japanese, Thai, ...) get no pad on
that side. A phrase also goes in with its spaces removed: spacing out a whole phrase letter by
letter (``s e c r e t g a m e``) joins it into one word.

Additions and removals are cheap: a removed entry's patterns are dropped from the pattern table
(a hit on a pattern no entry holds is ignored), and patterns added since the last full build
sit in a second, small automaton; the main one is rebuilt, on the next lookup, once the small
one or the dead patterns grow past a share of the whole.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import ahocorasick_rs
import numpy as np

from bastion.text.normalise import (
    STEPS,
    needed,
    normalise,
    skeleton_of,
    span_map,
    squeeze,
)
from bastion.text.query import MIN_SKELETON, Keyword, parse_keyword

#: Spans reported per entry (the first ones in the text); the rest are counted.
MAX_SPANS = 10
#: Patterns added (or dropped) since the last full build before the main automaton is rebuilt:
#: this many, or a twentieth of all patterns, whichever is more.
REBUILD_AT = 1_000
#: Group number of a trend query's negative terms.
NOT = -1

_UNSPACED = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK
    (0xF900, 0xFAFF),  # CJK compatibility
    (0x20000, 0x3FFFF),  # CJK extensions B-H
)


def unspaced(ch: str) -> bool:
    """Whether ``ch`` belongs to a script written without spaces between words."""
    code = ord(ch)
    return any(lo <= code <= hi for lo, hi in _UNSPACED)


def patterns_for(term: str) -> list[tuple[str, bool]]:
    """The automaton keys of one term: its padded skeleton, and for a phrase the joined form
    (``True``). Empty when the skeleton is too short (validation refuses such terms)."""
    skel = normalise(term)
    out: list[tuple[str, bool]] = []
    forms = [(skel, False)]
    if " " in skel:
        forms.append((squeeze(skel.replace(" ", "")), True))
    for form, joined in forms:
        if len(form) < MIN_SKELETON:
            continue
        left = "" if unspaced(form[0]) else " "
        right = "" if unspaced(form[-1]) else " "
        out.append((f"{left}{form}{right}", joined))
    return out


@dataclass(frozen=True, slots=True)
class TextHit:
    """A keyword entry that matched: where in the original text, and what it took."""

    entry_id: int
    #: Spans in the original text (character offsets, end exclusive), first ones first.
    spans: tuple[tuple[int, int], ...]
    #: The normalisation steps the reported spans needed (see bastion.text.normalise.STEPS).
    normalisations: tuple[str, ...]
    #: Occurrences found in all (a query counts each positive term's).
    count: int


@dataclass(frozen=True, slots=True)
class _Use:
    entry_id: int
    group: int
    term: str
    joined: bool


class TextIndex:
    """Keyword entries by id, and the automata that find them."""

    def __init__(self) -> None:
        self._keywords: dict[int, Keyword] = {}
        self._uses: dict[str, list[_Use]] = {}
        self._main: _Automaton | None = None
        self._recent_keys: set[str] = set()
        self._recent: _Automaton | None = None
        self._dropped = 0
        #: The longest pattern ever added: how much context a split joined word needs.
        self._longest = 0

    def __len__(self) -> int:
        return len(self._keywords)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._keywords

    def add(self, entry_id: int, value: str) -> None:
        """Add or replace a keyword entry; ValueError if ``value`` is not a valid keyword."""
        keyword = parse_keyword(value)
        self.remove(entry_id)
        self._keywords[entry_id] = keyword
        groups = [(i, g) for i, g in enumerate(keyword.groups)] + [(NOT, keyword.negative)]
        for group, terms in groups:
            for term in terms:
                for key, joined in patterns_for(term):
                    uses = self._uses.get(key)
                    if uses is None:
                        uses = self._uses[key] = []
                        if self._main is None or key not in self._main.members:
                            self._recent_keys.add(key)
                            self._recent = None
                    uses.append(_Use(entry_id, group, term, joined))
                    self._longest = max(self._longest, len(key))

    def remove(self, entry_id: int) -> bool:
        keyword = self._keywords.pop(entry_id, None)
        if keyword is None:
            return False
        for term in keyword.terms:
            for key, _ in patterns_for(term):
                uses = self._uses.get(key)
                if uses is None:
                    continue
                uses[:] = [u for u in uses if u.entry_id != entry_id]
                if not uses:
                    del self._uses[key]
                    self._dropped += 1
        return True

    # -- automata -------------------------------------------------------------------------
    def _ready(self) -> list[_Automaton]:
        """The automata to search, built first where a change made them stale."""
        limit = max(REBUILD_AT, len(self._uses) // 20)
        if self._main is None or len(self._recent_keys) > limit or self._dropped > limit:
            self._main = _build(self._uses)
            self._recent_keys.clear()
            self._recent = None
            self._dropped = 0
        if self._recent_keys and self._recent is None:
            self._recent = _build(self._recent_keys)
        return [a for a in (self._main, self._recent) if a is not None]

    def build(self) -> None:
        """Build the automata now (else the first lookup after a change does)."""
        self._ready()

    # -- lookups --------------------------------------------------------------------------
    def _search(
        self,
        automata: list[_Automaton],
        padded: str,
        offset: int,
        inserted: tuple[int, ...],
        piece: int,
        found: Found,
    ) -> None:
        """Record every hit in ``padded``: ``offset`` turns its positions into the skeleton's,
        less the spaces ``inserted`` (positions in ``padded`` minus its first space)."""
        data = padded.encode("utf-8", "surrogatepass")
        chars: np.ndarray | None = None  # byte offset -> character offset, when not ASCII
        for automaton in automata:
            for index, start_b, end_b in automaton.search.find_matches_as_indexes(
                data, overlapping=True
            ):
                key = automaton.keys[index]
                uses = self._uses.get(key)
                if not uses:
                    continue  # every entry that had it was removed since the build
                if len(data) == len(padded):
                    start, stop = start_b, end_b
                else:
                    if chars is None:
                        lead = (np.frombuffer(data, dtype=np.uint8) & 0xC0) != 0x80
                        chars = np.concatenate(([0], np.cumsum(lead)))
                    start, stop = int(chars[start_b]), int(chars[end_b])
                a = start + (key[0] == " ") - 1
                b = stop - (key[-1] == " ") - 1
                if inserted:
                    a -= sum(1 for i in inserted if i < a)
                    b -= sum(1 for i in inserted if i < b)
                a, b = a + offset + 1, b + offset + 1
                for use in uses:
                    found[use.entry_id][use.group].append((piece, a, b, use))

    def match(self, text: str) -> list[TextHit]:
        """Every keyword entry that ``text`` matches, by entry id.

        A text longer than :data:`CHUNK` characters is normalised and searched in pieces cut at
        blank lines (so only the pieces with a hit are mapped back to the original); a phrase
        or spaced-out word does not run across a blank line there. Trend queries are decided
        on the whole text."""
        if not self._keywords:
            return []
        automata = self._ready()
        found: Found = defaultdict(lambda: defaultdict(list))
        pieces = list(_pieces(text))
        maps: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for n, (_, piece) in enumerate(pieces):
            done = skeleton_of(piece)
            skeleton, joined = done.text, done.joined
            if not skeleton:
                continue
            maps[n] = (done.starts, done.ends)
            self._search(automata, f" {skeleton} ", -1, (), n, found)
            if joined:
                window = max(self._longest, MIN_SKELETON)
                for part, start, inserted in _split_windows(skeleton, joined, window):
                    self._search(automata, f" {part} ", start - 1, inserted, n, found)
        hits = []
        for entry_id, groups in sorted(found.items()):
            keyword = self._keywords.get(entry_id)
            if keyword is None or groups.get(NOT):
                continue  # a negative term suppresses the whole query
            if any(not groups.get(i) for i in range(len(keyword.groups))):
                continue
            hits.append(_hit(entry_id, groups, pieces, maps))
        return hits


#: Texts longer than this (characters) are searched in pieces cut at blank lines.
CHUNK = 8_192
_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n")
#: Hits by entry, then by group: (piece, start, end in that piece's skeleton, the term).
Found = defaultdict[int, defaultdict[int, list[tuple[int, int, int, _Use]]]]


def _pieces(text: str) -> list[tuple[int, str]]:
    """``text`` as (offset, piece) pairs: whole when short, else cut at blank lines into pieces
    of at least :data:`CHUNK` characters."""
    if len(text) <= CHUNK:
        return [(0, text)]
    out: list[tuple[int, str]] = []
    start = 0
    for m in _BLANK_LINE.finditer(text):
        if m.end() - start >= CHUNK:
            out.append((start, text[start : m.end()]))
            start = m.end()
    out.append((start, text[start:]))
    return out


@dataclass(frozen=True, slots=True)
class _Automaton:
    """An immutable automaton over the UTF-8 of some patterns, and the patterns by index."""

    search: ahocorasick_rs.BytesAhoCorasick
    keys: list[str]
    members: frozenset[str]


def _build(keys: Iterable[str]) -> _Automaton | None:
    listed = list(keys)
    if not listed:
        return None
    search = ahocorasick_rs.BytesAhoCorasick(
        [k.encode("utf-8") for k in listed],
        implementation=ahocorasick_rs.Implementation.ContiguousNFA,
    )
    return _Automaton(search, listed, frozenset(listed))


def _split_windows(
    skeleton: str, joined: list[str], window: int
) -> list[tuple[str, int, tuple[int, ...]]]:
    """For each joined word, the skeleton around it (``window`` characters each side, to whole
    words) with the word's first letter, its last, or both split off (a lone word beside a
    spaced-out one was joined with it): the text to search, where it starts in the skeleton,
    and where (in it) the spaces were put in."""
    words = sorted({w for w in joined if len(w) > MIN_SKELETON}, key=len, reverse=True)
    if not words:
        return []
    out: list[tuple[str, int, tuple[int, ...]]] = []
    padded = f" {skeleton} "
    where = re.compile("(?<= )(?:" + "|".join(re.escape(w) for w in words) + ")(?= )")
    for m in where.finditer(padded):
        word, at = m.group(), m.start() - 1  # at: the space before the word
        splits: list[tuple[str, tuple[int, ...]]] = [
            (f"{word[0]} {word[1:]}", (1,)),
            (f"{word[:-1]} {word[-1]}", (len(word) - 1,)),
        ]
        if len(word) >= MIN_SKELETON + 2:
            splits.append((f"{word[0]} {word[1:-1]} {word[-1]}", (1, len(word))))
        lo = padded.rfind(" ", 0, max(at - window, 0) + 1)
        hi = padded.find(" ", at + len(word) + 1 + window)
        hi = len(padded) - 1 if hi == -1 else hi
        left = padded[lo + 1 : at + 1]  # ends with the space before the word
        right = padded[at + 1 + len(word) : hi]
        for split, inserted in splits:
            out.append((f"{left}{split}{right}", lo, tuple(len(left) + i for i in inserted)))
    return out


def _hit(
    entry_id: int,
    groups: dict[int, list[tuple[int, int, int, _Use]]],
    pieces: list[tuple[int, str]],
    maps: dict[int, tuple[np.ndarray, np.ndarray]],
) -> TextHit:
    occurrences = sorted(
        (o for g, occ in groups.items() if g != NOT for o in occ), key=lambda o: o[:3]
    )
    seen: set[tuple[int, int, int]] = set()
    spans: list[tuple[int, int]] = []
    steps: set[str] = set()
    for n, a, b, use in occurrences:
        if (n, a, b) in seen:
            continue
        seen.add((n, a, b))
        if len(spans) >= MAX_SPANS:
            continue
        offset, piece = pieces[n]
        mapped = maps.get(n)
        if mapped is None:
            mapped = maps[n] = span_map(piece)
        lo, hi = int(mapped[0][a]), int(mapped[1][b - 1])
        spans.append((offset + lo, offset + hi))
        steps.update(needed(piece[lo:hi], use.term, joined=use.joined))
    return TextHit(
        entry_id=entry_id,
        spans=tuple(spans),
        normalisations=tuple(s for s in STEPS if s in steps),
        count=len(seen),
    )
