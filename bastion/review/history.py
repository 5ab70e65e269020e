"""An uploader's cases, for the case page's "previous cases": an account case's uploader is the
account itself, so this lists what review already found about it, content cases included.

Only cases in queues the viewer may open are listed, so the list tells a reviewer nothing of
cases they could not open themselves (the same rule as the queue). Metadata only, like the
queue, so reading it is not audited; opening one of the cases is.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from bastion.review.model import CaseSummary, Viewer, require_cases, reviewer_queues
from bastion.review.store import ReviewStore, _summary, cases_t, items_t
from bastion.store.bulk import short_text

__all__ = ["UploaderCase", "uploader_cases"]


@dataclass(frozen=True)
class UploaderCase:
    """One of the uploader's cases, with the kinds of its items (``account``, ``image``, ...)."""

    case: CaseSummary
    kinds: tuple[str, ...]


def uploader_cases(
    review: ReviewStore,
    viewer: Viewer,
    uploader_id: str,
    *,
    exclude: int | None = None,
    limit: int = 20,
) -> list[UploaderCase]:
    """The uploader's cases the viewer may open, newest first, without ``exclude`` (the case
    being shown). Raises :class:`~bastion.review.Forbidden` for a role without cases."""
    require_cases(viewer)
    short_text("uploader_id", uploader_id, 512, empty=False)
    if not 1 <= limit <= 500:
        raise ValueError("limit must be from 1 to 500")
    allowed = reviewer_queues(viewer, review.config())
    if allowed is not None and not allowed:
        return []
    count = (
        select(func.count())
        .select_from(items_t)
        .where(items_t.c.case_id == cases_t.c.id)
        .scalar_subquery()
    )
    stmt = select(cases_t, count.label("item_count")).where(cases_t.c.uploader_id == uploader_id)
    if exclude is not None:
        stmt = stmt.where(cases_t.c.id != exclude)
    if allowed is not None:
        stmt = stmt.where(cases_t.c.queue.in_(sorted(allowed)))
    stmt = stmt.order_by(cases_t.c.opened_at.desc(), cases_t.c.id.desc()).limit(limit)
    now = review._now()
    with review._read() as conn:
        rows = conn.execute(stmt).all()
        ids = [r.id for r in rows]
        kinds: dict[int, set[str]] = {i: set() for i in ids}
        if ids:
            for case_id, kind in conn.execute(
                select(items_t.c.case_id, items_t.c.kind)
                .where(items_t.c.case_id.in_(ids))
                .distinct()
            ):
                kinds[case_id].add(kind)
    return [UploaderCase(_summary(r, now), tuple(sorted(kinds[r.id]))) for r in rows]
