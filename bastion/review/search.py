"""Finding cases by what a reviewer has in hand: a case id, a content id, an uploader, a hash or
a bank entry (issue 19). Results respect queue permissions exactly as the queue does: a case in
a queue the viewer may not see is simply not found (never a 403 that would say it exists).

A search names an uploader, a hash or an entry, so it is audited (``case.search``, with the
query) like other reads of who is under review; the results are case metadata only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import String, cast, func, or_, select

from bastion.review.model import Viewer, matched_entries, require_cases, reviewer_queues
from bastion.review.store import _summary, cases_t, items_t
from bastion.store.audit import append_audit
from bastion.store.errors import InvalidInput

if TYPE_CHECKING:
    from bastion.review.model import CaseSummary
    from bastion.review.store import ReviewStore

#: Hashes and other text are looked for inside stored signals and matches only from this length
#: on: a shorter fragment would match nearly everything.
MIN_FRAGMENT = 8
MAX_QUERY = 512
_CASE_ID = re.compile(r"#?(\d{1,18})")
_ENTRY = re.compile(r"entry:(\d{1,18})", re.IGNORECASE)


@dataclass(frozen=True)
class Found:
    """A case the search found and why (``case id``, ``content id``, ``uploader``, ``hash``,
    ``bank entry``)."""

    case: CaseSummary
    why: tuple[str, ...]


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _contains(column: Any, text: str) -> Any:
    return cast(column, String).like(f"%{_escape(text)}%", escape="\\")


def search_cases(
    review: ReviewStore, viewer: Viewer, query: str, *, limit: int = 50
) -> list[Found]:
    """Cases matching ``query``, most urgent first. ``#12`` or ``12``: that case id; ``entry:7``:
    cases whose items matched bank entry 7; anything else: an exact content id, uploader or bank
    external id, or a hash (a signal value) found in an item's signals or matches."""
    require_cases(viewer)
    if not isinstance(query, str) or len(query) > MAX_QUERY or "\x00" in query:
        raise InvalidInput(f"a search is text of at most {MAX_QUERY} characters")
    q = query.strip()
    if not q:
        return []
    allowed = reviewer_queues(viewer, review.config())
    if allowed is not None and not allowed:
        return []
    entry_id = int(m.group(1)) if (m := _ENTRY.fullmatch(q)) else None
    case_id = int(m.group(1)) if (m := _CASE_ID.fullmatch(q)) else None
    conds: list[Any] = []
    if case_id is not None:
        conds.append(cases_t.c.id == case_id)
    if entry_id is not None:
        conds.append(
            cases_t.c.id.in_(
                select(items_t.c.case_id).where(
                    _contains(items_t.c.matches, f'"entry": {entry_id}')
                )
            )
        )
    else:
        item_conds = [items_t.c.content_id == q, items_t.c.uploader_id == q]
        if len(q) >= MIN_FRAGMENT:
            item_conds += [
                _contains(items_t.c.signals, json.dumps(q)),
                _contains(items_t.c.matches, json.dumps(q)),
            ]
        conds += [
            cases_t.c.uploader_id == q,
            cases_t.c.id.in_(select(items_t.c.case_id).where(or_(*item_conds))),
        ]
    item_count = (
        select(func.count())
        .select_from(items_t)
        .where(items_t.c.case_id == cases_t.c.id)
        .scalar_subquery()
    )
    stmt = select(cases_t, item_count.label("item_count")).where(or_(*conds))
    if allowed is not None:
        stmt = stmt.where(cases_t.c.queue.in_(sorted(allowed)))
    stmt = stmt.order_by(cases_t.c.priority, cases_t.c.due_at, cases_t.c.id).limit(limit)
    now = review._now()
    found: list[Found] = []
    with review.store.begin_write() as conn:
        rows = conn.execute(stmt).all()
        for row in rows:
            items = conn.execute(
                select(
                    items_t.c.content_id,
                    items_t.c.uploader_id,
                    items_t.c.signals,
                    items_t.c.matches,
                ).where(items_t.c.case_id == row.id)
            ).all()
            why = _why(q, case_id, entry_id, row, items)
            if why:  # a text match can be a false friend (entry 1 inside "entry": 15)
                found.append(Found(_summary(row, now), why))
        append_audit(
            conn,
            actor=viewer.actor,
            action="case.search",
            target="cases",
            detail={"query": q[:200], "found": [f.case.id for f in found][:50]},
        )
    return found


def _why(
    q: str, case_id: int | None, entry_id: int | None, row: Any, items: Sequence[Any]
) -> tuple[str, ...]:
    why: list[str] = []
    if case_id is not None and row.id == case_id:
        why.append("case id")
    if entry_id is not None:
        if any(e == entry_id for i in items for _, e in matched_entries([i.matches or []])):
            why.append("bank entry")
        return tuple(why)
    if any(i.content_id == q for i in items):
        why.append("content id")
    if row.uploader_id == q or any(i.uploader_id == q for i in items):
        why.append("uploader")
    if len(q) >= MIN_FRAGMENT:
        if any(_has_value(i.signals, q) for i in items):
            why.append("hash")
        if any(
            isinstance(m, dict) and q in (m.get("external_id"), m.get("value"))
            for i in items
            for m in (i.matches or [])
        ):
            why.append("bank entry")
    return tuple(why)


def _has_value(signals: Any, q: str) -> bool:
    return any(isinstance(s, dict) and s.get("value") == q for s in signals or [])


__all__ = ["Found", "search_cases"]
