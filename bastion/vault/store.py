"""The evidence vault in the database: preserving confirmed cases' content and metadata,
retention, legal hold, purging and integrity checks.

Rules (retention periods, holds, who may read) live in :mod:`bastion.vault.model`. Content is
unsealed from the review copy and sealed again under its own envelope (a fresh data key, AAD
bound to the evidence id, case and item), so evidence does not depend on review media surviving
and a blob moved to another row does not open. Every change and every read appends its audit
event in the same transaction, so there is no read or purge without its record.

Concurrency: preserving inserts under a unique (case, item) constraint inside a savepoint, so two
preservations of one case at once leave one row per item. Holds, releases and purges are
conditional UPDATEs (``not purged``, ``not held``, ``still expired``) that the database
serialises on the row, on SQLite and PostgreSQL alike; on SQLite every write transaction takes
the write lock with its first statement, as in :mod:`bastion.review.store`.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Row, and_, insert, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from bastion.banks.model import utcnow
from bastion.crypto import CryptoError, MasterKey, seal, unseal
from bastion.review.model import CaseNotFound
from bastion.review.rows import CaseEventRow, CaseItemRow, CaseMediaRow, CaseRow
from bastion.review.store import media_aad
from bastion.store.audit import append_audit
from bastion.store.bulk import short_text
from bastion.store.errors import InvalidInput, StoreError, StoreUnavailable
from bastion.vault.model import (
    ACTIVE,
    EXPIRED,
    HELD,
    PURGED,
    STATES,
    Evidence,
    EvidenceDamaged,
    EvidenceManifest,
    EvidenceNotFound,
    EvidencePurged,
    EvidenceSummary,
    Forbidden,
    HoldConflict,
    RetentionRules,
    VerifyReport,
    evidence_aad,
    jurisdiction_code,
    released_until,
    require_evidence_role,
    state_of,
)
from bastion.vault.rows import EvidenceRow
from bastion.vocab import PRIORITIES

if TYPE_CHECKING:
    from bastion.db import Store

evidence_t = EvidenceRow.__table__
cases_t = CaseRow.__table__
items_t = CaseItemRow.__table__
media_t = CaseMediaRow.__table__
events_t = CaseEventRow.__table__

_MAX_ID = 2**63 - 1
#: Rows unsealed per batch by :meth:`Vault.verify` (bounds memory with large media).
_VERIFY_BATCH = 50
#: Case-history keys left out of preserved metadata: reviewers' free-text notes.
_PRIVATE_EVENT_KEYS = frozenset({"note"})
#: Listing columns: everything but the sealed content and the metadata text.
_SUMMARY_COLUMNS = [c for c in evidence_t.c if c.name not in ("sealed", "metadata_json")]


class EvidenceIntake:
    """Preserving confirmed cases and recording their reports: what review and reporting hand
    the vault. The base of :class:`Vault`, with its construction, clock and transactions."""

    def __init__(
        self,
        store: Store,
        master_key: MasterKey,
        *,
        rules: RetentionRules | None = None,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.master_key = master_key
        self.rules = rules or RetentionRules()
        self._now = now

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        try:
            # The core's write transaction: on SQLite it takes the write lock at BEGIN.
            with self.store.begin_write() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"evidence vault: {_reason(exc)}") from exc

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self.store.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"evidence vault: {_reason(exc)}") from exc

    # -- preserving ----------------------------------------------------------------------------

    def preserve(
        self,
        case_id: int,
        *,
        actor: str,
        reason: str,
        jurisdictions: tuple[str, ...] = ("US",),
        item_ids: Sequence[int] | None = None,
    ) -> builtins.list[int]:
        """:meth:`preserve_in` in a transaction of its own."""
        with self._tx() as conn:
            return self.preserve_in(
                conn,
                case_id,
                actor=actor,
                reason=reason,
                jurisdictions=jurisdictions,
                item_ids=item_ids,
            )

    def preserve_in(
        self,
        conn: Connection,
        case_id: int,
        *,
        actor: str,
        reason: str,
        jurisdictions: tuple[str, ...] = ("US",),
        item_ids: Sequence[int] | None = None,
    ) -> builtins.list[int]:
        """Preserve the case's items (or only ``item_ids``) inside the caller's transaction, so
        a confirmation and its evidence commit together. Returns the ids of the evidence rows
        made now: items already preserved are skipped, so preserving twice adds nothing.

        Each item's review media is unsealed, hashed (SHA-256, MD5) and sealed again under the
        vault's own envelope; an item without media gets a metadata-only row. Media that cannot
        be decrypted does not block the decision: the row is metadata-only and says why (in its
        metadata and the audit event). Audits ``evidence.preserve`` per item."""
        short_text("actor", actor, 255, empty=False)
        reason = short_text("reason", reason, 2000)
        codes = _jurisdictions(jurisdictions)
        if not _valid_id(case_id):
            raise CaseNotFound(f"no case with id {case_id!r}")
        wanted = None if item_ids is None else {int(i) for i in item_ids}
        case_row = conn.execute(select(cases_t).where(cases_t.c.id == case_id)).first()
        if case_row is None:
            raise CaseNotFound(f"no case with id {case_id!r}")
        items = conn.execute(
            select(items_t).where(items_t.c.case_id == case_id).order_by(items_t.c.id)
        ).all()
        done = set(
            conn.execute(select(evidence_t.c.item_id).where(evidence_t.c.case_id == case_id))
            .scalars()
            .all()
        )
        todo = [i for i in items if i.id not in done and (wanted is None or i.id in wanted)]
        if not todo:
            return []
        events = conn.execute(
            select(events_t).where(events_t.c.case_id == case_id).order_by(events_t.c.id)
        ).all()
        now = self._now()
        retain_until = self.rules.preserved_until(now, codes)
        made: list[int] = []
        for item in todo:
            made_id = self._preserve_item(
                conn, case_row, item, events, now, retain_until, codes, actor, reason
            )
            if made_id is not None:
                made.append(made_id)
        return made

    def _preserve_item(
        self,
        conn: Connection,
        case_row: Row[Any],
        item: Row[Any],
        events: Sequence[Row[Any]],
        now: datetime,
        retain_until: datetime,
        codes: tuple[str, ...],
        actor: str,
        reason: str,
    ) -> int | None:
        sealed = conn.execute(
            select(media_t.c.sealed).where(media_t.c.item_id == item.id)
        ).scalar_one_or_none()
        data: bytes | None = None
        content_error = None
        if sealed is not None:
            try:
                data = unseal(self.master_key, bytes(sealed), media_aad(case_row.id, item.id))
            except CryptoError as exc:
                content_error = f"review media could not be decrypted: {exc}"
        metadata = _metadata(case_row, item, events, content_error)
        text = _canonical(metadata)
        values: dict[str, Any] = {
            "case_id": case_row.id,
            "item_id": item.id,
            "content_id": item.content_id,
            "uploader_id": item.uploader_id,
            "conversation_id": item.conversation_id,
            "media_type": item.media_type,
            "size": len(data) if data is not None else item.media_size,
            "sha256": hashlib.sha256(data).hexdigest() if data is not None else None,
            "md5": (
                hashlib.md5(data, usedforsecurity=False).hexdigest() if data is not None else None
            ),
            "has_content": data is not None,
            "sealed": None,
            "metadata_json": text,
            "metadata_sha256": hashlib.sha256(text.encode()).hexdigest(),
            "jurisdictions": list(codes),
            "preserved_at": now,
            "preserved_by": actor,
            "reason": reason,
            "retain_until": retain_until,
            "reports": [],
            "legal_hold": False,
        }
        try:
            with conn.begin_nested():
                evidence_id = _new_id(conn.execute(insert(evidence_t).values(**values)))
        except IntegrityError:
            return None  # preserved meanwhile by a concurrent transaction
        if data is not None:
            blob = seal(self.master_key, data, evidence_aad(evidence_id, case_row.id, item.id))
            conn.execute(
                update(evidence_t).where(evidence_t.c.id == evidence_id).values(sealed=blob)
            )
        detail: dict[str, Any] = {
            "case": case_row.id,
            "item": item.id,
            "content": data is not None,
            "size": values["size"],
            "sha256": values["sha256"],
            "retain_until": retain_until.isoformat(),
            "jurisdictions": list(codes),
            "reason": reason,
        }
        if content_error:
            detail["content_error"] = content_error[:500]
        append_audit(
            conn,
            actor=actor,
            action="evidence.preserve",
            target=_target(evidence_id),
            detail=detail,
        )
        return evidence_id

    # -- reports -------------------------------------------------------------------------------

    def mark_reported(
        self,
        case_id: int,
        *,
        reported_at: datetime,
        jurisdiction: str,
        reference: str,
        actor: str = "system",
    ) -> int:
        """:meth:`mark_reported_in` in a transaction of its own."""
        with self._tx() as conn:
            return self.mark_reported_in(
                conn,
                case_id,
                reported_at=reported_at,
                jurisdiction=jurisdiction,
                reference=reference,
                actor=actor,
            )

    def mark_reported_in(
        self,
        conn: Connection,
        case_id: int,
        *,
        reported_at: datetime,
        jurisdiction: str,
        reference: str,
        actor: str = "system",
    ) -> int:
        """Record a report of the case (e.g. a CyberTipline report id): the report starts the
        retention clock, ``retain_until = reported_at + period(jurisdiction)``; a later report
        only lengthens it. Purged rows are left alone. Returns how many rows were updated (0:
        nothing of this case is preserved). Audits ``evidence.report`` once per case."""
        code = jurisdiction_code(jurisdiction)
        reference = short_text("reference", reference, 255)
        short_text("actor", actor, 255, empty=False)
        if not isinstance(reported_at, datetime) or reported_at.tzinfo is None:
            raise InvalidInput("reported_at must be a timezone-aware datetime")
        if not _valid_id(case_id):
            return 0
        rows = conn.execute(
            select(evidence_t)
            .where(evidence_t.c.case_id == case_id, evidence_t.c.purged_at.is_(None))
            .order_by(evidence_t.c.id)
            .with_for_update()
        ).all()
        report = {
            "jurisdiction": code,
            "reference": reference,
            "reported_at": reported_at.isoformat(),
        }
        for row in rows:
            until = self.rules.reported_until(
                reported_at,
                code,
                current=row.retain_until,
                already_reported=row.reported_at is not None,
            )
            conn.execute(
                update(evidence_t)
                .where(evidence_t.c.id == row.id)
                .values(
                    retain_until=until,
                    reported_at=row.reported_at or reported_at,
                    reports=[*(row.reports or []), report],
                )
            )
        if rows:
            append_audit(
                conn,
                actor=actor,
                action="evidence.report",
                target=f"case:{case_id}",
                detail={**report, "evidence": [r.id for r in rows]},
            )
        return len(rows)


class Vault(EvidenceIntake):
    """Preserved evidence on top of :class:`~bastion.db.Store`.

    ``now`` is the clock for preservation, retention and purging (tests pass a fake one; audit
    rows keep the real time). ``rules`` default to one year everywhere (US: REPORT Act)."""

    @classmethod
    def from_settings(
        cls,
        store: Store,
        master_key: MasterKey,
        settings: Any,
        *,
        now: Callable[[], datetime] = utcnow,
    ) -> Vault:
        return cls(store, master_key, rules=RetentionRules.from_settings(settings), now=now)

    # -- retention -----------------------------------------------------------------------------

    def hold(self, evidence_id: int, *, actor: str, reason: str) -> EvidenceManifest:
        """Put evidence on legal hold: it is not purged, and its retention clock stops until
        :meth:`release`. Audits ``evidence.hold``."""
        short_text("actor", actor, 255, empty=False)
        reason = short_text("reason", reason, 2000, empty=False).strip()
        if not reason:
            raise InvalidInput("a legal hold needs a reason")
        now = self._now()
        with self._tx() as conn:
            row = _row(conn, evidence_id, lock=True)
            if row.purged_at is not None:
                raise EvidencePurged(f"evidence {row.id} was purged on {_day(row.purged_at)}")
            if row.legal_hold:
                raise HoldConflict(f"evidence {row.id} is already on legal hold")
            conn.execute(
                update(evidence_t)
                .where(evidence_t.c.id == row.id)
                .values(legal_hold=True, hold_reason=reason, held_at=now, held_by=actor)
            )
            append_audit(
                conn,
                actor=actor,
                action="evidence.hold",
                target=_target(row.id),
                detail={"case": row.case_id, "item": row.item_id, "reason": reason},
            )
            return _manifest(_row(conn, row.id), now)

    def release(self, evidence_id: int, *, actor: str, reason: str) -> EvidenceManifest:
        """End a legal hold. The time held (after the clock started) is added to retention.
        Audits ``evidence.release``."""
        short_text("actor", actor, 255, empty=False)
        reason = short_text("reason", reason, 2000, empty=False).strip()
        if not reason:
            raise InvalidInput("releasing a legal hold needs a reason")
        now = self._now()
        with self._tx() as conn:
            row = _row(conn, evidence_id, lock=True)
            if not row.legal_hold:
                raise HoldConflict(f"evidence {row.id} is not on legal hold")
            start = row.reported_at or row.preserved_at
            until = released_until(
                row.retain_until, held_at=row.held_at or now, released_at=now, clock_start=start
            )
            conn.execute(
                update(evidence_t)
                .where(evidence_t.c.id == row.id)
                .values(
                    legal_hold=False,
                    hold_reason=None,
                    held_at=None,
                    held_by=None,
                    retain_until=until,
                )
            )
            append_audit(
                conn,
                actor=actor,
                action="evidence.release",
                target=_target(row.id),
                detail={
                    "case": row.case_id,
                    "item": row.item_id,
                    "reason": reason,
                    "held_since": row.held_at.isoformat() if row.held_at else None,
                    "held_by": row.held_by,
                    "retain_until": until.isoformat(),
                },
            )
            return _manifest(_row(conn, row.id), now)

    def expired(self, *, limit: int = 10_000) -> builtins.list[EvidenceSummary]:
        """What :meth:`purge_expired` would purge now (for ``bastion vault purge --dry-run``)."""
        now = self._now()
        with self._read() as conn:
            rows = conn.execute(
                select(*_SUMMARY_COLUMNS)
                .where(_state_clause(EXPIRED, now))
                .order_by(evidence_t.c.id)
                .limit(limit)
            ).all()
        return [_summary(r, now) for r in rows]

    def purge_expired(self, *, actor: str = "system") -> int:
        """Delete the content of evidence past its retention and not on hold, keeping the row
        with its hashes and ``purged_at``. Each purge is one conditional UPDATE with its audit
        event (``evidence.purge``) in one transaction, so a hold placed meanwhile wins and
        concurrent purgers never purge (or audit) one item twice. Returns how many were
        purged."""
        short_text("actor", actor, 255, empty=False)
        purged = 0
        after = 0
        while True:
            now = self._now()
            with self._read() as conn:
                ids = (
                    conn.execute(
                        select(evidence_t.c.id)
                        .where(_state_clause(EXPIRED, now), evidence_t.c.id > after)
                        .order_by(evidence_t.c.id)
                        .limit(500)
                    )
                    .scalars()
                    .all()
                )
            if not ids:
                return purged
            for evidence_id in ids:
                after = evidence_id
                with self._tx() as conn:
                    done = conn.execute(
                        update(evidence_t)
                        .where(evidence_t.c.id == evidence_id, _state_clause(EXPIRED, now))
                        .values(sealed=None, purged_at=now)
                        .returning(
                            evidence_t.c.case_id,
                            evidence_t.c.item_id,
                            evidence_t.c.retain_until,
                            evidence_t.c.has_content,
                        )
                    ).first()
                    if done is None:
                        continue
                    append_audit(
                        conn,
                        actor=actor,
                        action="evidence.purge",
                        target=_target(evidence_id),
                        detail={
                            "case": done.case_id,
                            "item": done.item_id,
                            "retain_until": done.retain_until.isoformat(),
                            "content": bool(done.has_content),
                        },
                    )
                    purged += 1

    # -- reading -------------------------------------------------------------------------------

    def read(self, viewer_name: str, role: str, evidence_id: int, *, purpose: str) -> Evidence:
        """The evidence's content and metadata, for a role in :data:`EVIDENCE_ROLES`, with the
        purpose recorded. The content is checked against its recorded hashes before it is
        handed out (:class:`EvidenceDamaged` if not). Audits ``evidence.read``; a refused
        attempt is audited ``access.denied``."""
        actor = f"user:{short_text('viewer name', viewer_name, 240, empty=False)}"
        with self._denials(actor, role, "evidence.read", evidence_id):
            require_evidence_role(role)
            purpose = short_text("purpose", purpose, 500, empty=False).strip()
            if not purpose:
                raise InvalidInput("reading evidence needs a purpose")
            now = self._now()
            with self._tx() as conn:
                row = _row(conn, evidence_id)
                if row.purged_at is not None:
                    raise EvidencePurged(
                        f"the content of evidence {row.id} was purged on {_day(row.purged_at)} "
                        "at the end of its retention; its hashes and metadata remain"
                    )
                data = None
                if row.has_content:
                    problem, data = self._check(row)
                    if problem:
                        raise EvidenceDamaged(f"evidence {row.id}: {problem}")
                append_audit(
                    conn,
                    actor=actor,
                    action="evidence.read",
                    target=_target(row.id),
                    detail={
                        "case": row.case_id,
                        "item": row.item_id,
                        "role": role,
                        "purpose": purpose,
                        "content": data is not None,
                    },
                )
                manifest = _manifest(row, now)
        return Evidence(manifest=manifest, data=data)

    def show(self, actor: str, role: str, evidence_id: int) -> EvidenceManifest:
        """The evidence's metadata, hashes and retention, without content. Metadata names
        accounts and matches, so this too needs an evidence role and is audited
        (``evidence.show``)."""
        short_text("actor", actor, 255, empty=False)
        with self._denials(actor, role, "evidence.show", evidence_id):
            require_evidence_role(role)
            now = self._now()
            with self._tx() as conn:
                row = _row(conn, evidence_id)
                append_audit(
                    conn,
                    actor=actor,
                    action="evidence.show",
                    target=_target(row.id),
                    detail={"case": row.case_id, "item": row.item_id, "role": role},
                )
                return _manifest(row, now)

    def list(
        self,
        *,
        case_id: int | None = None,
        state: str | None = None,
        limit: int = 100,
        after: int | None = None,
    ) -> builtins.list[EvidenceSummary]:
        """Evidence rows in id order: ids, hashes, retention and state, never content or
        metadata (so this is not audited). Page with ``after`` = the last id seen."""
        if state is not None and state not in STATES:
            raise InvalidInput(f"state must be one of {', '.join(STATES)}, not {state!r}")
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 10_000:
            raise InvalidInput(f"limit must be a whole number from 1 to 10000, not {limit!r}")
        now = self._now()
        stmt = select(*_SUMMARY_COLUMNS)
        if case_id is not None:
            stmt = stmt.where(evidence_t.c.case_id == case_id)
        if state is not None:
            stmt = stmt.where(_state_clause(state, now))
        if after is not None:
            stmt = stmt.where(evidence_t.c.id > after)
        with self._read() as conn:
            rows = conn.execute(stmt.order_by(evidence_t.c.id).limit(limit)).all()
        return [_summary(r, now) for r in rows]

    # -- integrity -----------------------------------------------------------------------------

    def verify(self, *, actor: str = "system") -> VerifyReport:
        """Re-check every row: its metadata against its recorded SHA-256, and the content of
        every unpurged item (it must decrypt under its own row's AAD and match its recorded
        size, SHA-256 and MD5). A purged row must hold no content; a content row must hold
        some. Audits ``evidence.verify`` with the counts and failing ids."""
        short_text("actor", actor, 255, empty=False)
        checked, ok = 0, 0
        failures: list[tuple[int, str]] = []
        after = 0
        while True:
            with self._read() as conn:
                rows = conn.execute(
                    select(evidence_t)
                    .where(evidence_t.c.id > after)
                    .order_by(evidence_t.c.id)
                    .limit(_VERIFY_BATCH)
                ).all()
            if not rows:
                break
            for row in rows:
                after = row.id
                checked += 1
                problem = self._problem(row)
                if problem:
                    failures.append((row.id, problem))
                else:
                    ok += 1
        with self._tx() as conn:
            append_audit(
                conn,
                actor=actor,
                action="evidence.verify",
                detail={
                    "checked": checked,
                    "ok": ok,
                    "failed": [i for i, _ in failures[:100]],
                    "failures": len(failures),
                },
            )
        return VerifyReport(checked=checked, ok=ok, failures=failures)

    def _problem(self, row: Row[Any]) -> str | None:
        text = row.metadata_json or ""
        if hashlib.sha256(text.encode()).hexdigest() != row.metadata_sha256:
            return "metadata does not match its recorded SHA-256"
        if row.purged_at is not None:
            return "purged, but content is still stored" if row.sealed is not None else None
        if not row.has_content:
            return "content stored on a metadata-only row" if row.sealed is not None else None
        return self._check(row)[0]

    def _check(self, row: Row[Any]) -> tuple[str | None, bytes | None]:
        """(problem or None, plaintext) for a content row."""
        if row.sealed is None:
            return "content is missing (not purged)", None
        try:
            data = unseal(
                self.master_key, bytes(row.sealed), evidence_aad(row.id, row.case_id, row.item_id)
            )
        except CryptoError as exc:
            return f"content does not decrypt: {exc}", None
        if row.size is not None and len(data) != row.size:
            return f"content is {len(data)} bytes, {row.size} recorded", None
        if hashlib.sha256(data).hexdigest() != row.sha256:
            return "content does not match its recorded SHA-256", None
        if hashlib.md5(data, usedforsecurity=False).hexdigest() != row.md5:
            return "content does not match its recorded MD5", None
        return None, data

    @contextmanager
    def _denials(self, actor: str, role: str, action: str, evidence_id: object) -> Iterator[None]:
        """Record refused access (``access.denied``) in the audit log, then re-raise."""
        try:
            yield
        except Forbidden as exc:
            with contextlib.suppress(StoreError, SQLAlchemyError):
                self.store.record_audit(
                    actor=actor,
                    action="access.denied",
                    target=f"evidence:{evidence_id}"[:2000],
                    detail={"attempted": action, "role": str(role)[:64], "why": str(exc)[:500]},
                )
            raise


# -- helpers -----------------------------------------------------------------------------------


def _new_id(result: CursorResult[Any]) -> int:
    """The primary key an INSERT made."""
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    return text.splitlines()[0] if text else type(orig).__name__


def _valid_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= _MAX_ID


def _target(evidence_id: int) -> str:
    return f"evidence:{evidence_id}"


def _day(at: datetime) -> str:
    return at.date().isoformat()


def _jurisdictions(values: Sequence[str]) -> tuple[str, ...]:
    if isinstance(values, str) or not values:
        raise InvalidInput("jurisdictions must be a non-empty tuple of codes like ('US',)")
    try:
        return tuple(dict.fromkeys(jurisdiction_code(v) for v in values))
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def _row(conn: Connection, evidence_id: object, *, lock: bool = False) -> Row[Any]:
    row = None
    if _valid_id(evidence_id):
        stmt = select(evidence_t).where(evidence_t.c.id == evidence_id)
        if lock:
            stmt = stmt.with_for_update()
        row = conn.execute(stmt).first()
    if row is None:
        raise EvidenceNotFound(f"no evidence with id {evidence_id!r}")
    return row


def _state_clause(state: str, now: datetime) -> Any:
    c = evidence_t.c
    if state == PURGED:
        return c.purged_at.is_not(None)
    if state == HELD:
        return and_(c.purged_at.is_(None), c.legal_hold.is_(True))
    live = and_(c.purged_at.is_(None), c.legal_hold.is_(False))
    if state == EXPIRED:
        return and_(live, c.retain_until <= now)
    if state == ACTIVE:
        return and_(live, c.retain_until > now)
    raise InvalidInput(f"state must be one of {', '.join(STATES)}, not {state!r}")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _canonical(doc: dict[str, Any]) -> str:
    """One text for one document, so its hash can be recomputed from what is stored."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _metadata(
    case: Row[Any], item: Row[Any], events: Sequence[Row[Any]], content_error: str | None
) -> dict[str, Any]:
    """The case as it stood at preservation: its decision, the item's context and matches, and
    its history (who claimed, revealed, viewed and decided, when), without reviewers' notes."""
    doc: dict[str, Any] = {
        "format": "bastion/evidence-metadata/v1",
        "case": {
            "id": case.id,
            "state": case.state,
            "queue": case.queue,
            "priority": PRIORITIES[case.priority],
            "rule": case.rule,
            "reason": case.reason,
            "classification": case.classification,
            "labels": list(case.labels or ()),
            "uploader_id": case.uploader_id,
            "first_reviewer": case.first_reviewer,
            "second_reviewer": case.second_reviewer,
            "opened_at": _iso(case.opened_at),
            "decided_at": _iso(case.decided_at),
        },
        "item": {
            "id": item.id,
            "added_at": _iso(item.added_at),
            "kind": item.kind,
            "format": item.format,
            "content_id": item.content_id,
            "uploader_id": item.uploader_id,
            "conversation_id": item.conversation_id,
            "source": item.source,
            "age_band": item.age_band,
            "scan_id": item.scan_id,
            "verdict": item.verdict,
            "rule": item.rule,
            "reason": item.reason,
            "priority": PRIORITIES[item.priority],
            "actions": list(item.actions or ()),
            "filename": item.filename,
            "media_type": item.media_type,
            "media_size": item.media_size,
            "media_note": item.media_note,
            "signals": list(item.signals or ()),
            "matches": list(item.matches or ()),
        },
        "events": [
            {
                "at": _iso(e.at),
                "actor": e.actor,
                "kind": e.kind,
                "item": e.item_id,
                "detail": {
                    k: v for k, v in dict(e.detail or {}).items() if k not in _PRIVATE_EVENT_KEYS
                },
            }
            for e in events
        ],
    }
    if content_error:
        doc["content_error"] = content_error
    return doc


def _state(r: Row[Any], now: datetime) -> str:
    return state_of(
        retain_until=r.retain_until, legal_hold=bool(r.legal_hold), purged_at=r.purged_at, now=now
    )


def _summary(r: Row[Any], now: datetime) -> EvidenceSummary:
    return EvidenceSummary(
        id=r.id,
        case_id=r.case_id,
        item_id=r.item_id,
        content_id=r.content_id,
        media_type=r.media_type,
        size=r.size,
        sha256=r.sha256,
        has_content=bool(r.has_content),
        preserved_at=r.preserved_at,
        retain_until=r.retain_until,
        reported_at=r.reported_at,
        legal_hold=bool(r.legal_hold),
        purged_at=r.purged_at,
        state=_state(r, now),
    )


def _manifest(r: Row[Any], now: datetime) -> EvidenceManifest:
    try:
        metadata = json.loads(r.metadata_json)
    except ValueError:
        metadata = {}
    return EvidenceManifest(
        id=r.id,
        case_id=r.case_id,
        item_id=r.item_id,
        content_id=r.content_id,
        uploader_id=r.uploader_id,
        conversation_id=r.conversation_id,
        media_type=r.media_type,
        size=r.size,
        sha256=r.sha256,
        md5=r.md5,
        has_content=bool(r.has_content),
        metadata=metadata if isinstance(metadata, dict) else {},
        metadata_sha256=r.metadata_sha256,
        jurisdictions=tuple(r.jurisdictions or ()),
        preserved_at=r.preserved_at,
        preserved_by=r.preserved_by,
        reason=r.reason,
        retain_until=r.retain_until,
        reported_at=r.reported_at,
        reports=tuple(r.reports or ()),
        legal_hold=bool(r.legal_hold),
        hold_reason=r.hold_reason,
        held_at=r.held_at,
        purged_at=r.purged_at,
        state=_state(r, now),
    )


__all__ = ["EvidenceIntake", "Vault"]
