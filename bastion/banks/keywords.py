"""Bank hygiene for keyword matches: allow banks by overlap, bank versions stamped.

An allow bank's keyword entry (a known benign phrase that contains a listed term, say a game's
title) suppresses the other banks' keyword matches where their spans overlap one of its own: a
benign phrase in one sentence must not hide a listed term in the next. A match keeps the spans
no allow match covers, and is suppressed once none are left. Keyword matches have no
distance, so bank thresholds do not apply.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from bastion.banks.hygiene import BankRules, Screened
from bastion.index.matcher import Match, TextMatch


def _spans(m: Match) -> tuple[tuple[int, int], ...]:
    return m.spans if isinstance(m, TextMatch) else ()


def _covered(span: tuple[int, int], allowed: list[Match]) -> Match | None:
    x0, x1 = span
    return next((a for a in allowed for y0, y1 in _spans(a) if x0 < y1 and y0 < x1), None)


def screen_text(matches: Iterable[Match], rules: Mapping[str, BankRules]) -> Screened:
    """Keyword matches with their banks' versions, less those an allow bank's match covers."""
    kept: list[Match] = []
    allowed: list[Match] = []
    for m in matches:
        bank = rules.get(m.bank)
        if bank is not None:
            m = dataclasses.replace(m, bank_version=bank.version)
        (allowed if bank is not None and bank.allow else kept).append(m)
    out: list[Match] = []
    suppressed: list[tuple[Match, Match]] = []
    for m in kept:
        if not allowed or not isinstance(m, TextMatch):
            out.append(m)
            continue
        covers = [_covered(span, allowed) for span in m.spans]
        free = tuple(span for span, by in zip(m.spans, covers, strict=True) if by is None)
        if len(free) == len(m.spans):
            out.append(m)
        elif free:
            out.append(dataclasses.replace(m, spans=free))
        else:
            suppressed.append((m, next(by for by in covers if by is not None)))
    return Screened(out, suppressed, allowed)
