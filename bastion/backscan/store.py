"""The back-scan backlog and dataset registry in SQL (:class:`BackscanStore`)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from bastion.backscan.rows import BackscanDatasetRow, BackscanIntakeRow
from bastion.banks.model import utcnow
from bastion.store.bulk import json_doc, short_text
from bastion.store.engine import Database
from bastion.store.errors import StoreError

intake_t = BackscanIntakeRow.__table__
datasets_t = BackscanDatasetRow.__table__
PENDING, OPENED = "pending", "opened"
_MAX_PAYLOAD = 4 * 1024 * 1024


class AlreadyOpened(StoreError):
    """Another worker opened this finding first; the case transaction is rolled back."""


def dedupe_key(content_key: str, entry_ids: Iterable[int]) -> str:
    """One finding: the content and the entries it matched (order-free)."""
    ids = ",".join(str(i) for i in sorted(set(entry_ids)))
    return hashlib.sha256(f"{content_key}|{ids}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Finding:
    """A match to hand to review: what :func:`bastion.pipeline.open_case` needs, in ``payload``
    (``scanned``: kind, format, context, signals, matches; ``verdict``: the policy's)."""

    dedupe: str
    origin: str  # backscan | rematch
    label: str
    queue: str
    priority: int
    bank_revision: int | None
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Pending:
    id: int
    queue: str
    priority: int
    bank_revision: int | None
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class QueueBacklog:
    """One queue's backlog, as the console and ``backscan status`` show it."""

    queue: str
    pending: int
    opened_last_hour: int
    per_hour: int
    #: Hours to empty the backlog at the set rate (None when the rate is 0: it never empties).
    eta_hours: float | None


@dataclass(frozen=True, slots=True)
class StoredDataset:
    id: int
    path: str
    source: str
    objects: int
    matched_revision: int


class BackscanStore:
    """Findings waiting for review, and the datasets re-matching follows."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- the backlog ----------------------------------------------------------------------------
    def enqueue(self, findings: Sequence[Finding]) -> tuple[int, int]:
        """Add findings to the backlog; returns (added, already known). A finding already
        there (pending or opened) is left alone: reruns open no second case."""
        added = known = 0
        now = utcnow()
        with self.db.begin_write() as conn:
            for f in findings:
                values = {
                    "dedupe": short_text("dedupe", f.dedupe, 64, empty=False),
                    "origin": short_text("origin", f.origin, 16, empty=False),
                    "label": f.label[:1024],
                    "state": PENDING,
                    "queue": short_text("queue", f.queue, 64, empty=False),
                    "priority": int(f.priority),
                    "bank_revision": f.bank_revision,
                    "payload": json_doc("payload", f.payload, dict, _MAX_PAYLOAD),
                    "created_at": now,
                }
                exists = conn.execute(
                    select(intake_t.c.id).where(intake_t.c.dedupe == f.dedupe)
                ).first()
                if exists is not None:
                    known += 1
                    continue
                try:
                    with conn.begin_nested():
                        conn.execute(insert(intake_t).values(**values))
                    added += 1
                except IntegrityError:
                    known += 1  # another process added it meanwhile
        return added, known

    def opened_since(self, queue: str, since: datetime) -> int:
        with self.db.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(intake_t)
                    .where(intake_t.c.queue == queue, intake_t.c.opened_at >= since)
                ).scalar_one()
            )

    def due(self, queue: str, limit: int) -> list[Pending]:
        """The next ``limit`` pending findings of ``queue``: highest priority, then oldest."""
        if limit <= 0:
            return []
        stmt = (
            select(intake_t)
            .where(intake_t.c.state == PENDING, intake_t.c.queue == queue)
            .order_by(intake_t.c.priority, intake_t.c.id)
            .limit(limit)
        )
        with self.db.engine.connect() as conn:
            return [
                Pending(r.id, r.queue, r.priority, r.bank_revision, dict(r.payload))
                for r in conn.execute(stmt)
            ]

    def mark_opened_in(self, conn: Connection, intake_id: int, case_id: int) -> None:
        """In the case's transaction: the finding is opened, once (a second opener rolls back)."""
        result = conn.execute(
            update(intake_t)
            .where(intake_t.c.id == intake_id, intake_t.c.state == PENDING)
            .values(state=OPENED, opened_at=utcnow(), case_id=case_id)
        )
        if result.rowcount != 1:
            raise AlreadyOpened(f"backscan finding {intake_id} was already opened")

    def backlog(self, per_hour: int, *, now: datetime | None = None) -> list[QueueBacklog]:
        """Per queue: pending findings, cases opened in the last hour, and the ETA at the rate."""
        since = (now or utcnow()) - timedelta(hours=1)
        with self.db.engine.connect() as conn:
            pending: dict[str, int] = dict(
                conn.execute(
                    select(intake_t.c.queue, func.count())
                    .where(intake_t.c.state == PENDING)
                    .group_by(intake_t.c.queue)
                ).all()
            )
            recent: dict[str, int] = dict(
                conn.execute(
                    select(intake_t.c.queue, func.count())
                    .where(intake_t.c.opened_at >= since)
                    .group_by(intake_t.c.queue)
                ).all()
            )
        out = []
        for queue in sorted(set(pending) | set(recent)):
            n = int(pending.get(queue, 0))
            eta = (n / per_hour) if per_hour > 0 else (0.0 if n == 0 else None)
            out.append(QueueBacklog(queue, n, int(recent.get(queue, 0)), per_hour, eta))
        return out

    def findings(self, *, origin: str | None = None) -> list[dict[str, Any]]:
        """Every finding (for tests and the status command), oldest first."""
        stmt = select(intake_t).order_by(intake_t.c.id)
        if origin is not None:
            stmt = stmt.where(intake_t.c.origin == origin)
        with self.db.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]

    # -- datasets ---------------------------------------------------------------------------
    def register_dataset(self, path: str, source: str, objects: int, revision: int) -> None:
        """Record a completed dataset (again: its count and revision are brought up to date,
        never lowered past what re-matching has covered)."""
        with self.db.begin_write() as conn:
            row = conn.execute(select(datasets_t).where(datasets_t.c.path == path)).first()
            if row is None:
                conn.execute(
                    insert(datasets_t).values(
                        path=path[:1024],
                        source=source[:1024],
                        objects=objects,
                        registered_at=utcnow(),
                        matched_revision=revision,
                    )
                )
            else:
                conn.execute(
                    update(datasets_t)
                    .where(datasets_t.c.id == row.id)
                    .values(objects=objects, matched_revision=min(row.matched_revision, revision))
                )

    def datasets(self) -> list[StoredDataset]:
        with self.db.engine.connect() as conn:
            return [
                StoredDataset(r.id, r.path, r.source, r.objects, r.matched_revision)
                for r in conn.execute(select(datasets_t).order_by(datasets_t.c.id))
            ]

    def set_matched_revision(self, dataset_id: int, revision: int) -> None:
        with self.db.begin_write() as conn:
            conn.execute(
                update(datasets_t)
                .where(datasets_t.c.id == dataset_id)
                .values(matched_revision=revision)
            )
