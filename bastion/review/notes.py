"""Notes on a case without deciding it (issue 19, item 14): a reviewer writes down what they
found or what the next person should check. A note is a history event (``note``) of a case
the writer may open; the audit log records that a note was added (``case.note``), not its text,
like decisions' notes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.review.model import InvalidDecision, Viewer, require_cases, require_queue
from bastion.review.store import _case_row, _event, _target
from bastion.store.audit import append_audit

if TYPE_CHECKING:
    from bastion.review.store import ReviewStore

EV_NOTE = "note"
MAX_NOTE = 10_000


def add_note(review: ReviewStore, viewer: Viewer, case_id: int, text: object) -> None:
    """Add ``text`` to the case's history as this viewer's note; any case state (a decided case
    can still gain context). :class:`InvalidDecision` for empty or oversized text."""
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_NOTE or "\x00" in text:
        raise InvalidDecision(f"a note is text of 1 to {MAX_NOTE} characters")
    config = review.config()
    now = review._now()
    with review._denials(viewer, "case.note", case_id), review.store.begin_write() as conn:
        require_cases(viewer)
        row = _case_row(conn, case_id)
        require_queue(viewer, row.queue, config)
        _event(conn, row.id, now, viewer.actor, EV_NOTE, None, {"note": text.strip()})
        append_audit(
            conn,
            actor=viewer.actor,
            action="case.note",
            target=_target(row.id),
            detail={"length": len(text.strip())},
        )


__all__ = ["EV_NOTE", "add_note"]
