"""The feedback queue: reviewers' findings about exchanges' entries, sent upstream by the
worker. A decision queues its findings inside its own transaction
(:meth:`FeedbackQueue.queue_feedback_in`); the worker claims each due finding, sends it and
records the outcome, backing off on failures."""

from __future__ import annotations

import builtins
import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Row, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bastion.banks.sql import banks_t, entries_t
from bastion.exchanges.base import (
    Exchange,
    ExchangeError,
    FeedbackItem,
    FeedbackUnsupported,
    PermanentError,
    Verdict,
    exchange_type,
)
from bastion.exchanges.model import FeedbackRecord, chunks, clip
from bastion.exchanges.registry import database_errors, page_limit
from bastion.exchanges.rows import ex_t, fb_t
from bastion.store.audit import append_audit
from bastion.store.errors import StoreError

if TYPE_CHECKING:
    from bastion.exchanges.store import ExchangeStore

log = logging.getLogger("bastion.exchanges")

_FEEDBACK_LEASE = timedelta(minutes=5)


class FeedbackQueue:
    """Queues findings for exchanges that send feedback, and sends them when due."""

    def __init__(self, xs: ExchangeStore) -> None:
        self.xs = xs

    def feedback(self, name: str, *, limit: int = 50) -> builtins.list[FeedbackRecord]:
        exchange, rows = self.xs.registry.latest(name, fb_t, limit)
        return [_feedback_record(exchange, r) for r in rows]

    def queue_feedback_in(
        self,
        conn: Connection,
        matched: Iterable[tuple[str, int]],
        verdict: Verdict,
        *,
        case_id: int | None,
        reason: str = "",
    ) -> int:
        """Queue one finding per matched entry that lives in an exchange's bank (whose
        exchange sends feedback), inside the caller's transaction. Returns how many rows were
        queued; a decision retried queues nothing twice. Verdicts the exchange's kind cannot
        send are recorded as ``unsupported`` at once."""
        verdict = Verdict(verdict)
        ids = sorted({int(e) for _b, e in matched if isinstance(e, int) and 0 < e < 2**63})
        if not ids:
            return 0
        reason = clip(reason, 64)
        now = self.xs.clock()
        rows: list[dict[str, Any]] = []
        for chunk in chunks(ids):
            for r in conn.execute(
                select(
                    entries_t.c.id,
                    entries_t.c.external_id,
                    entries_t.c.signal_type,
                    entries_t.c.value,
                    entries_t.c.metadata,
                    ex_t.c.id.label("xid"),
                    ex_t.c.kind,
                )
                .join(ex_t, ex_t.c.bank_id == entries_t.c.bank_id)
                .where(
                    entries_t.c.id.in_(chunk),
                    ex_t.c.send_feedback.is_(True),
                    entries_t.c.external_id.is_not(None),
                )
            ):
                try:
                    supported = verdict in exchange_type(r.kind).feedback
                except ValueError:
                    supported = True  # unknown here; the sender decides
                rows.append(
                    {
                        "exchange_id": r.xid,
                        "entry_id": r.id,
                        "key": r.external_id,
                        "signal_type": r.signal_type,
                        "value": r.value,
                        "metadata": dict(r.metadata or {}),
                        "verdict": verdict.value,
                        "reason": reason,
                        "case_id": int(case_id or 0),
                        "state": "pending" if supported else "unsupported",
                        "attempts": 0,
                        "next_attempt_at": now,
                        "created_at": now,
                    }
                )
        if not rows:
            return 0
        dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        stmt = dialect_insert(fb_t).on_conflict_do_nothing(
            index_elements=["exchange_id", "key", "verdict", "case_id"]
        )
        queued = 0
        for row in rows:  # RETURNING says whether it went in: rowcount is not reliable here
            queued += len(conn.execute(stmt.values(**row).returning(fb_t.c.id)).all())
        if queued:
            append_audit(
                conn,
                actor="system",
                action="exchange.feedback.queue",
                target=f"case-{case_id}" if case_id else "",
                detail={"verdict": verdict.value, "reason": reason, "queued": queued},
            )
        return queued

    def send_due_feedback(self, worker_id: str, *, limit: int = 100) -> dict[str, int]:
        """Send queued findings whose time has come; returns counts by outcome (sent, retry,
        failed, unsupported, skipped)."""
        now = self.xs.clock()
        counts = dict.fromkeys(("sent", "retry", "failed", "unsupported", "skipped"), 0)
        due = or_(
            fb_t.c.state == "pending",
            fb_t.c.state == "sending",  # a sender died holding it
        )
        with database_errors(), self.xs.store.engine.connect() as conn:
            rows = conn.execute(
                select(fb_t.c.id, fb_t.c.exchange_id)
                .where(due, fb_t.c.next_attempt_at <= now)
                .order_by(fb_t.c.next_attempt_at, fb_t.c.id)
                .limit(page_limit(limit, 10_000))
            ).all()
        by_exchange: dict[int, list[int]] = {}
        for r in rows:
            by_exchange.setdefault(int(r.exchange_id), []).append(int(r.id))
        for xid, ids in by_exchange.items():
            with database_errors(), self.xs.store.engine.connect() as conn:
                xrow = conn.execute(
                    select(ex_t, banks_t.c.name.label("bank_name"))
                    .join(banks_t, banks_t.c.id == ex_t.c.bank_id)
                    .where(ex_t.c.id == xid)
                ).first()
            if xrow is None:
                continue
            try:
                exchange = self.xs.registry.open_row(xrow)
            except StoreError as exc:
                log.warning("exchange %s: feedback not sent: %s", xrow.name, exc)
                counts["skipped"] += len(ids)
                continue
            try:
                for fid in ids:
                    outcome = self.send_one(xrow, exchange, fid)
                    if outcome:
                        counts[outcome] += 1
            finally:
                try:
                    exchange.close()
                except Exception:  # pragma: no cover
                    log.debug("exchange %s: close failed", xrow.name, exc_info=True)
        return counts

    def send_one(self, xrow: Row[Any], exchange: Exchange, fid: int) -> str | None:
        now = self.xs.clock()
        with database_errors(), self.xs.store.begin_write() as conn:
            claimed = conn.execute(
                update(fb_t)
                .where(
                    fb_t.c.id == fid,
                    fb_t.c.state.in_(("pending", "sending")),
                    fb_t.c.next_attempt_at <= now,
                )
                .values(
                    state="sending",
                    attempts=fb_t.c.attempts + 1,
                    next_attempt_at=now + _FEEDBACK_LEASE,
                )
                .returning(*fb_t.c)
            ).first()
        if claimed is None:
            return None
        item = FeedbackItem(
            key=claimed.key,
            verdict=Verdict(claimed.verdict),
            signal_type=claimed.signal_type,
            value=claimed.value,
            reason=claimed.reason,
            metadata=dict(claimed.metadata or {}),
        )
        values: dict[str, Any]
        try:
            if item.verdict not in type(exchange).feedback:
                raise FeedbackUnsupported(f"{xrow.kind} exchanges take no {item.verdict} feedback")
            exchange.send_feedback(item)
        except FeedbackUnsupported as exc:
            outcome, values = "unsupported", {"state": "unsupported", "last_error": clip(exc)}
        except PermanentError as exc:
            outcome, values = "failed", {"state": "failed", "last_error": clip(exc)}
        except Exception as exc:
            text = clip(exc if isinstance(exc, ExchangeError) else type(exc).__name__)
            if claimed.attempts >= self.xs.feedback_max_attempts:
                outcome, values = "failed", {"state": "failed", "last_error": text}
            else:
                delay = self.xs.backoff.delay(claimed.attempts, self.xs.rng)
                retry_after = getattr(exc, "retry_after", None)
                if isinstance(retry_after, int | float) and retry_after > 0:
                    delay = max(delay, min(float(retry_after), 7 * 86400.0))
                outcome = "retry"
                values = {
                    "state": "pending",
                    "last_error": text,
                    "next_attempt_at": self.xs.clock() + timedelta(seconds=delay),
                }
        else:
            outcome, values = (
                "sent",
                {"state": "sent", "sent_at": self.xs.clock(), "last_error": None},
            )
        with database_errors(), self.xs.store.begin_write() as conn:
            conn.execute(update(fb_t).where(fb_t.c.id == fid).values(**values))
            if outcome in ("sent", "failed", "unsupported"):
                append_audit(
                    conn,
                    actor="system",
                    action=f"exchange.feedback.{outcome}",
                    target=xrow.name,
                    detail={
                        "entry": int(claimed.entry_id),
                        "verdict": claimed.verdict,
                        "case": int(claimed.case_id) or None,
                        "attempts": int(claimed.attempts),
                    },
                )
        return outcome


def _feedback_record(exchange: str, r: Row[Any]) -> FeedbackRecord:
    return FeedbackRecord(
        id=r.id,
        exchange=exchange,
        entry_id=r.entry_id,
        key=r.key,
        signal_type=r.signal_type,
        verdict=r.verdict,
        reason=r.reason,
        case_id=int(r.case_id) or None,
        state=r.state,
        attempts=r.attempts,
        next_attempt_at=r.next_attempt_at,
        last_error=r.last_error,
        created_at=r.created_at,
        sent_at=r.sent_at,
    )
