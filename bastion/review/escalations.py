"""Escalations seen from both sides (issue 19, item 6): who escalated a case and why, for the
senior queue and the case page, and a read-only view of the outcome for the reviewer who
escalated it (they may no longer open the senior queue it moved to).

The read-only view is the case's metadata, matches and history only: no media is served to it
(``ReviewStore.media`` still checks the queue), no claim or decision is possible from it, and
opening it is audited like any case view (``case.view`` with ``read_only``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select

from bastion.review.model import (
    EV_ESCALATE,
    Case,
    Forbidden,
    Viewer,
    require_cases,
)
from bastion.review.store import _case_row, _load, events_t
from bastion.store.audit import append_audit

if TYPE_CHECKING:
    from bastion.review.store import ReviewStore


@dataclass(frozen=True)
class Escalation:
    """The latest escalation of a case: by whom, when, from which queue, and the note."""

    case_id: int
    by: str
    at: datetime
    from_queue: str
    note: str
    disagreed: bool


def escalations(review: ReviewStore, case_ids: Iterable[int]) -> dict[int, Escalation]:
    """The latest escalation of each of these cases (those never escalated are left out). The
    caller lists only cases the viewer may see; this reads their history, nothing else."""
    ids = sorted({int(i) for i in case_ids})
    if not ids:
        return {}
    stmt = (
        select(events_t)
        .where(events_t.c.case_id.in_(ids), events_t.c.kind == EV_ESCALATE)
        .order_by(events_t.c.id)
    )
    out: dict[int, Escalation] = {}
    with review.store.engine.connect() as conn:
        for ev in conn.execute(stmt):
            d = dict(ev.detail or {})
            out[ev.case_id] = Escalation(
                case_id=ev.case_id,
                by=str(ev.actor).removeprefix("user:"),
                at=ev.at,
                from_queue=str(d.get("from_queue") or ""),
                note=str(d.get("note") or ""),
                disagreed=d.get("outcome") == "disagreed",
            )
    return out


def escalated_view(review: ReviewStore, viewer: Viewer, case_id: int) -> Case:
    """The case, read-only, for a viewer who escalated it and may no longer open its queue:
    :class:`Forbidden` for anyone else. Items carry no media flag (nothing to reveal)."""
    require_cases(viewer)
    with review.store.begin_write() as conn:
        row = _case_row(conn, case_id)
        mine = conn.execute(
            select(events_t.c.id)
            .where(
                events_t.c.case_id == row.id,
                events_t.c.kind == EV_ESCALATE,
                events_t.c.actor == viewer.actor,
            )
            .limit(1)
        ).first()
        if mine is None:
            raise Forbidden(f"{viewer.name} may not open cases in queue {row.queue!r}")
        case = _load(conn, row, viewer, review._now())
        append_audit(
            conn,
            actor=viewer.actor,
            action="case.view",
            target=f"case:{row.id}",
            detail={"read_only": True, "escalated_by_viewer": True},
        )
    items = tuple(replace(i, has_media=False) for i in case.items)
    return replace(case, items=items, revealed=frozenset(), viewable=frozenset())


__all__ = ["Escalation", "escalated_view", "escalations"]
