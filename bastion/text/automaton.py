"""Every keyword entry in one Aho-Corasick automaton (pyahocorasick), matched in one pass.

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

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import ahocorasick

from bastion.text.normalise import (
    STEPS,
    Mapped,
    needed,
    normalise,
    normalise_joined,
    normalise_mapped,
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
        self._main: ahocorasick.Automaton | None = None
        self._recent_keys: set[str] = set()
        self._recent: ahocorasick.Automaton | None = None
        self._dropped = 0

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
                        if self._main is None or key not in self._main:
                            self._recent_keys.add(key)
                            self._recent = None
                    uses.append(_Use(entry_id, group, term, joined))

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
    def _ready(self) -> list[ahocorasick.Automaton]:
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
        automata: list[ahocorasick.Automaton],
        padded: str,
        offset: int,
        inserted: tuple[int, ...],
        found: defaultdict[int, defaultdict[int, list[tuple[int, int, _Use]]]],
    ) -> None:
        """Record every hit in ``padded``: ``offset`` turns its positions into the skeleton's,
        less the spaces ``inserted`` (positions in ``padded`` minus its first space)."""
        for automaton in automata:
            for end, key in automaton.iter(padded):
                uses = self._uses.get(key)
                if not uses:
                    continue  # every entry that had it was removed since the build
                start = end - len(key) + 1
                a = start + (key[0] == " ") - 1
                b = end + 1 - (key[-1] == " ") - 1
                if inserted:
                    a -= sum(1 for i in inserted if i < a)
                    b -= sum(1 for i in inserted if i < b)
                a, b = a + offset + 1, b + offset + 1
                for use in uses:
                    found[use.entry_id][use.group].append((a, b, use))

    def match(self, text: str) -> list[TextHit]:
        """Every keyword entry that ``text`` matches, by entry id."""
        if not self._keywords:
            return []
        skeleton, joined = normalise_joined(text)
        if not skeleton:
            return []
        found: defaultdict[int, defaultdict[int, list[tuple[int, int, _Use]]]] = defaultdict(
            lambda: defaultdict(list)
        )
        automata = self._ready()
        self._search(automata, f" {skeleton} ", -1, (), found)
        for window, start, inserted in _split_windows(skeleton, joined):
            self._search(automata, f" {window} ", start - 1, inserted, found)
        hits = []
        mapped: Mapped | None = None
        for entry_id, groups in sorted(found.items()):
            keyword = self._keywords.get(entry_id)
            if keyword is None or groups.get(NOT):
                continue  # a negative term suppresses the whole query
            if any(not groups.get(i) for i in range(len(keyword.groups))):
                continue
            if mapped is None:
                mapped = normalise_mapped(text)
            hits.append(_hit(entry_id, groups, text, skeleton, mapped))
        return hits


def _build(keys: Iterable[str]) -> ahocorasick.Automaton | None:
    automaton = ahocorasick.Automaton()
    for key in keys:
        automaton.add_word(key, key)
    if len(automaton):
        automaton.make_automaton()
        return automaton
    return None


#: Context kept each side of a joined word when it is searched split (longer than any phrase).
_WINDOW = 2 * 500


def _split_windows(skeleton: str, joined: list[str]) -> list[tuple[str, int, tuple[int, ...]]]:
    """For each joined word, the skeleton around it with the word's first letter, its last, or
    both split off (a lone word beside a spaced-out one was joined with it): the window, where
    it starts in the skeleton, and where (in the window) the spaces were put in."""
    out: list[tuple[str, int, tuple[int, ...]]] = []
    padded = f" {skeleton} "
    for word in set(joined):
        if len(word) < MIN_SKELETON + 1:
            continue
        splits: list[tuple[str, tuple[int, ...]]] = [
            (f"{word[0]} {word[1:]}", (1,)),
            (f"{word[:-1]} {word[-1]}", (len(word) - 1,)),
        ]
        if len(word) >= MIN_SKELETON + 2:
            splits.append((f"{word[0]} {word[1:-1]} {word[-1]}", (1, len(word))))
        at = padded.find(f" {word} ")
        while at != -1:
            lo = padded.rfind(" ", 0, max(at - _WINDOW, 0) + 1)
            hi = padded.find(" ", at + len(word) + 1 + _WINDOW)
            hi = len(padded) - 1 if hi == -1 else hi
            left = padded[lo + 1 : at + 1]  # ends with the space before the word
            right = padded[at + 1 + len(word) : hi]
            for split, inserted in splits:
                window = f"{left}{split}{right}"
                out.append((window, lo, tuple(len(left) + i for i in inserted)))
            at = padded.find(f" {word} ", at + 1)
    return out


def _hit(
    entry_id: int,
    groups: dict[int, list[tuple[int, int, _Use]]],
    text: str,
    skeleton: str,
    mapped: Mapped,
) -> TextHit:
    occurrences = sorted(o for g, occ in groups.items() if g != NOT for o in occ)
    seen: set[tuple[int, int]] = set()
    spans: list[tuple[int, int]] = []
    steps: set[str] = set()
    same = mapped.text == skeleton
    for a, b, use in occurrences:
        if (a, b) in seen:
            continue
        seen.add((a, b))
        if len(spans) >= MAX_SPANS:
            continue
        if same:
            lo, hi = mapped.span(a, b)
            spans.append((lo, hi))
            steps.update(needed(text[lo:hi], use.term, joined=use.joined))
    return TextHit(
        entry_id=entry_id,
        spans=tuple(spans),
        normalisations=tuple(s for s in STEPS if s in steps),
        count=len(seen),
    )
