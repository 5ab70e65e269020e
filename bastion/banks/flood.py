"""Flood protection: one poisoned or colliding hash must not take down thousands of benign
uploads. Each match of an entry whose bank sets ``expected_rate`` is counted by minute; once the
last hour's count passes the rate, the entry is quarantined: its matches still reach review, but
never act on their own, until a person releases it or disputes it (which disables it).

The count and the check run in one transaction with the match's scan, counters locked row by row
(PostgreSQL) or under the write lock (SQLite), so concurrent scans on any number of replicas see
one running total and at most ``expected_rate`` matches an hour act before the quarantine.
:class:`FloodOps` is a part of :class:`bastion.db.Store`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bastion.banks.hygiene import BankRules
from bastion.banks.model import utcnow
from bastion.banks.rows import MatchCountRow, QuarantineRow
from bastion.banks.sql import banks_t, entries_t, touch_bank
from bastion.store.audit import append_audit
from bastion.store.engine import Database
from bastion.store.errors import EntryNotFound, InvalidInput

counts_t = MatchCountRow.__table__
quarantine_t = QuarantineRow.__table__

#: The window an entry's expected rate is measured over, in minutes.
WINDOW_MINUTES = 60
QUARANTINED = "quarantined"


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A quarantined (or formerly quarantined) entry, for the console and the API."""

    entry_id: int
    bank: str
    state: str
    matches: int
    expected_rate: int
    quarantined_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None


def _minute(now: datetime) -> int:
    return int(now.timestamp()) // 60


def _to_quarantined(r: Any) -> Quarantined:
    return Quarantined(
        entry_id=r.entry_id,
        bank=r.bank_name,
        state=r.state,
        matches=r.matches,
        expected_rate=r.expected_rate,
        quarantined_at=r.quarantined_at,
        resolved_at=r.resolved_at,
        resolved_by=r.resolved_by,
    )


class FloodOps(Database):
    """Bank settings for the scan path, match counting and the quarantine."""

    def bank_rules(self) -> dict[str, BankRules]:
        """Every bank's hygiene settings and version: one read of the banks table."""
        cols = (
            banks_t.c.name,
            banks_t.c.version,
            banks_t.c.kind,
            banks_t.c.thresholds,
            banks_t.c.expected_rate,
        )
        with self.engine.connect() as conn:
            return {
                r.name: BankRules(r.name, r.version, r.kind, dict(r.thresholds or {}), r.rate)
                for r in conn.execute(select(*cols[:4], cols[4].label("rate")))
            }

    def search_rules(self, ttl: float = 5.0) -> dict[str, BankRules]:
        """:meth:`bank_rules` read at most every ``ttl`` seconds: for the radius a scan
        searches the index at, before it knows whether anything matched. What a match records
        (version, threshold, allow) comes from a fresh :meth:`bank_rules`."""
        cached: tuple[float, dict[str, BankRules]] | None = getattr(self, "_rules_cache", None)
        if cached is None or time.monotonic() - cached[0] > ttl:
            cached = (time.monotonic(), self.bank_rules())
            self._rules_cache = cached
        return cached[1]

    def note_matches(
        self,
        hits: Mapping[int, str],
        rules: Mapping[str, BankRules],
        *,
        now: datetime | None = None,
    ) -> set[int]:
        """Count one match of each entry in ``hits`` (entry id -> bank name) and return the
        entries among them now in quarantine (quarantined by this call or earlier).

        Only entries of banks with an ``expected_rate`` are counted, and only while not already
        quarantined; the call that takes an entry past its rate quarantines it in the same
        transaction (``bank.entry.quarantine`` audited, actor ``system``), so that match is
        already held back.
        """
        if not hits:
            return set()
        now = now or utcnow()
        ids = sorted(hits)
        rated = {e: rules[b].expected_rate for e, b in hits.items() if b in rules}
        counted = sorted(e for e, rate in rated.items() if rate is not None)
        if not counted:
            with self.engine.connect() as conn:
                return self._held(conn, ids)
        minute = _minute(now)
        with self.begin_write() as conn:
            held = self._held(conn, ids)
            for entry_id in counted:
                if entry_id in held:
                    continue
                rate = rated[entry_id]
                assert rate is not None
                total = _count(conn, entry_id, minute)
                if total > rate:
                    _quarantine(conn, entry_id, hits[entry_id], total, rate, now)
                    held.add(entry_id)
            return held

    @staticmethod
    def _held(conn: Connection, ids: Iterable[int]) -> set[int]:
        stmt = select(quarantine_t.c.entry_id).where(
            quarantine_t.c.entry_id.in_(list(ids)), quarantine_t.c.state == QUARANTINED
        )
        return set(conn.execute(stmt).scalars())

    def quarantined(self, *, state: str | None = QUARANTINED) -> list[Quarantined]:
        """Quarantined entries (``state`` None: every state), newest first."""
        stmt = select(quarantine_t).order_by(quarantine_t.c.quarantined_at.desc()).limit(1000)
        if state is not None:
            stmt = stmt.where(quarantine_t.c.state == state)
        with self.engine.connect() as conn:
            return [_to_quarantined(r) for r in conn.execute(stmt)]

    def get_quarantine(self, entry_id: int) -> Quarantined:
        row = None
        if isinstance(entry_id, int) and 0 < entry_id < 2**63:
            with self.engine.connect() as conn:
                row = conn.execute(
                    select(quarantine_t).where(quarantine_t.c.entry_id == entry_id)
                ).first()
        if row is None:
            raise EntryNotFound(f"entry {entry_id} is not in quarantine")
        return _to_quarantined(row)

    def resolve_quarantine(
        self,
        entry_id: int,
        outcome: str,
        *,
        actor: str,
        reason: str = "",
        remote_addr: str | None = None,
        then: Callable[[Connection, Quarantined], None] | None = None,
    ) -> Quarantined:
        """End a quarantine. ``released``: the entry acts again and its count starts over.
        ``disputed``: the entry is wrong for this list (a colliding or poisoned hash), so it is
        also disabled, leaving every index at the next refresh. Audited in the same transaction
        (``bank.entry.release`` or ``bank.entry.dispute``); ``then(conn, quarantined)`` runs in
        that transaction too (the pipeline queues a dispute's feedback to the entry's exchange)."""
        if outcome not in ("released", "disputed"):
            raise InvalidInput("a quarantine ends released or disputed")
        if not isinstance(reason, str) or len(reason) > 2000 or "\x00" in reason:
            raise InvalidInput("reason must be text of at most 2000 characters")
        current = self.get_quarantine(entry_id)
        if current.state != QUARANTINED:
            raise InvalidInput(f"entry {entry_id} is not quarantined (it was {current.state})")
        now = utcnow()
        with self.write() as (conn, rev):
            done = conn.execute(
                update(quarantine_t)
                .where(quarantine_t.c.entry_id == entry_id, quarantine_t.c.state == QUARANTINED)
                .values(state=outcome, resolved_at=now, resolved_by=actor[:255])
            ).rowcount
            if not done:  # another reviewer resolved it first
                raise InvalidInput(f"entry {entry_id} is no longer quarantined")
            conn.execute(delete(counts_t).where(counts_t.c.entry_id == entry_id))
            if outcome == "disputed":
                bank_id = conn.execute(
                    select(entries_t.c.bank_id).where(entries_t.c.id == entry_id)
                ).scalar()
                text = reason or "disputed: flooded past its bank's expected rate"
                conn.execute(
                    update(entries_t)
                    .where(entries_t.c.id == entry_id)
                    .values(enabled=False, disabled_reason=text, revision=rev, updated_at=now)
                )
                if bank_id is not None:
                    touch_bank(conn, bank_id)
            action = "bank.entry.dispute" if outcome == "disputed" else "bank.entry.release"
            append_audit(
                conn,
                actor=actor,
                action=action,
                target=f"{current.bank}/{entry_id}",
                detail={"reason": reason, "matches": current.matches},
                remote_addr=remote_addr,
            )
            if then is not None:
                then(conn, current)
        return self.get_quarantine(entry_id)

    def purge_match_counts(self, *, now: datetime | None = None) -> int:
        """Drop counts older than the window (housekeeping); returns how many rows went."""
        oldest = _minute(now or utcnow()) - WINDOW_MINUTES
        with self.engine.begin() as conn:
            return int(conn.execute(delete(counts_t).where(counts_t.c.minute < oldest)).rowcount)


def _count(conn: Connection, entry_id: int, minute: int) -> int:
    """Add one to the entry's count for ``minute`` and return its total over the window. The
    upsert takes the counter row's lock, so concurrent scans of one entry count one by one."""
    ins = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = ins(counts_t).values(entry_id=entry_id, minute=minute, n=1)
    stmt = stmt.on_conflict_do_update(
        index_elements=[counts_t.c.entry_id, counts_t.c.minute], set_={"n": counts_t.c.n + 1}
    )
    conn.execute(stmt)
    total = conn.execute(
        select(func.coalesce(func.sum(counts_t.c.n), 0)).where(
            counts_t.c.entry_id == entry_id, counts_t.c.minute > minute - WINDOW_MINUTES
        )
    ).scalar_one()
    return int(total)


def _quarantine(
    conn: Connection, entry_id: int, bank: str, total: int, rate: int, now: datetime
) -> None:
    values = {
        "bank_name": bank,
        "state": QUARANTINED,
        "matches": total,
        "expected_rate": rate,
        "quarantined_at": now,
        "resolved_at": None,
        "resolved_by": None,
    }
    ins = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = ins(quarantine_t).values(entry_id=entry_id, **values)
    conn.execute(stmt.on_conflict_do_update(index_elements=[quarantine_t.c.entry_id], set_=values))
    append_audit(
        conn,
        actor="system",
        action="bank.entry.quarantine",
        target=f"{bank}/{entry_id}",
        detail={"matches_last_hour": total, "expected_rate": rate},
    )
