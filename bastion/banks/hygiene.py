"""Bank hygiene on the scan path: per-bank thresholds, allow banks, and the bank version on every
match. Pure: it takes the index's matches and each bank's settings and says which matches count.

- A bank's ``thresholds`` (``{"pdq": 16}``) replace the scan's threshold for that bank's
  entries, so a PDQ bank shared for NCII can demand a tighter distance than a CSAM bank (or a
  curated bank a wider one); the index is searched at the widest of them.
- An ``allow`` bank holds known benign items. Its matches are never verdicts; they suppress the
  other banks' matches of the same content: an exact hash (md5, sha256) allow entry suppresses
  every match (the bytes are the benign file), any other type suppresses the matches of its own
  signal type (a benign picture's PDQ suppresses PDQ collisions, not a byte-identical listed file).
- Each kept match records its bank's version, so a decision can be traced to the list as it was.

Flood quarantine, which needs counts across requests and replicas, is in :mod:`bastion.banks.flood`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from bastion.index.matcher import Match
from bastion.signals.base import SignalType

#: Allow entries of these types identify the bytes themselves, so they suppress every match.
_WHOLE_CONTENT = frozenset({SignalType.MD5, SignalType.SHA256})


@dataclass(frozen=True, slots=True)
class BankRules:
    """What the scan path needs of one bank."""

    name: str
    version: int
    kind: str = "block"
    thresholds: Mapping[str, int] = field(default_factory=dict)
    expected_rate: int | None = None

    @property
    def allow(self) -> bool:
        return self.kind == "allow"


@dataclass(frozen=True, slots=True)
class Screened:
    """The outcome of :func:`screen`: ``kept`` matches go to policy; ``suppressed`` pairs each
    set-aside match with the allow match that suppressed it; ``allowed`` are the allow banks'
    own matches."""

    kept: list[Match]
    suppressed: list[tuple[Match, Match]]
    allowed: list[Match]


def search_threshold(requested: int, rules: Iterable[BankRules]) -> int:
    """The radius to search the index at: the scan's threshold or any bank's wider one."""
    widest = [t for r in rules for t in r.thresholds.values()]
    return max([requested, *widest])


def within(m: Match, requested: int, rules: Mapping[str, BankRules]) -> bool:
    """Whether ``m`` is close enough for its bank (its own threshold, else the scan's)."""
    bank = rules.get(m.bank)
    limit = requested
    if bank is not None:
        limit = bank.thresholds.get(str(m.signal_type), requested)
    return m.distance <= limit


def screen(matches: Iterable[Match], requested: int, rules: Mapping[str, BankRules]) -> Screened:
    """Apply thresholds and allow banks, and stamp each match with its bank's version."""
    kept: list[Match] = []
    allowed: list[Match] = []
    for m in matches:
        if not within(m, requested, rules):
            continue
        bank = rules.get(m.bank)
        if bank is not None:
            m = dataclasses.replace(m, bank_version=bank.version)
        (allowed if bank is not None and bank.allow else kept).append(m)
    if not allowed:
        return Screened(kept, [], [])
    out: list[Match] = []
    suppressed: list[tuple[Match, Match]] = []
    for m in kept:
        covers = (
            a for a in allowed if a.signal_type in _WHOLE_CONTENT or a.signal_type == m.signal_type
        )
        by = next(covers, None)
        if by is None:
            out.append(m)
        else:
            suppressed.append((m, by))
    return Screened(out, suppressed, allowed)
