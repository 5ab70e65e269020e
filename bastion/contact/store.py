"""Contact events in the database: idempotent batch ingest, incremental per-account risk kept
beside the events, timelines (audited), retention, legal holds and per-account erasure.

:meth:`ContactStore.ingest` is the one way events get in (``POST /v1/events`` and the stream
consumer both call it). A batch is validated event by event (a bad event gets its own error, the
rest are applied) and applied in one transaction: new events are inserted under their platform
``event_id`` (unique: a re-sent event is a ``duplicate`` and changes nothing; the same id with
other content is an error), fed to the process's :class:`~bastion.contact.risk.RiskState`, and
the accounts whose risk changed are written to ``contact_risk`` in the same transaction, with
the facts and connections the batch touched. ``GET risk`` is then one row read, and equals
:func:`bastion.contact.risk.recompute` over the stored events (the tests check it).

Ingest is serialised on the ``contact_state`` row (``FOR UPDATE`` on PostgreSQL, the write lock
on SQLite), so ``seq`` order is commit order. Each process keeps one ``RiskState`` per database
and, before applying a batch, catches up with the events other processes committed since (``seq``
above the last it applied), or reloads everything when ``generation`` says the events were
purged or erased meanwhile. A failed transaction drops the in-memory state (it is reloaded from
the database on the next batch), so memory never runs ahead of what committed.

Purging (:meth:`ContactStore.purge_expired`, run by the worker) and erasure
(:meth:`ContactStore.erase`) delete events and rebuild the projections from what is left, in
one transaction with their audit record. An event involving an account under legal hold
(:meth:`ContactStore.hold`, like the vault's evidence holds) is never purged or erased, nor is
one involving an account under review (:func:`protected_accounts`: an active account case, or a
confirmed one whose evidence the vault still keeps).
"""

from __future__ import annotations

import hashlib
import json
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError
from sqlalchemy import (
    CompoundSelect,
    Connection,
    and_,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    tuple_,
    union,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from bastion.contact.model import (
    MAX_BATCH,
    AccountEvent,
    BanEvent,
    BatchTooLarge,
    BlockEvent,
    ConnectionAccept,
    ConnectionRemove,
    ConnectionRequest,
    Event,
    FlagEvent,
    GiftEvent,
    MessageEvent,
    PaymentEvent,
    ProfileChange,
    ReportEvent,
    event_to_json,
    parse_event,
)
from bastion.contact.risk import Contribution, RiskResult, RiskSettings, RiskState
from bastion.contact.rows import (
    ContactAccountRow,
    ContactConnectionRow,
    ContactEventRow,
    ContactHoldRow,
    ContactRiskRow,
    ContactStateRow,
)
from bastion.review.rows import CaseRow
from bastion.store.audit import append_audit
from bastion.store.bulk import short_text, utcnow
from bastion.store.errors import InvalidInput, StoreError, StoreUnavailable
from bastion.vault.rows import EvidenceRow

if TYPE_CHECKING:
    from bastion.runtime import Runtime
    from bastion.store.engine import Database

__all__ = [
    "DEFAULT_RETENTION_DAYS",
    "AccountHeld",
    "AccountRisk",
    "ContactStore",
    "Erasure",
    "EventNotFound",
    "Hold",
    "HoldConflict",
    "IngestResult",
    "TimelineEvent",
    "protected_accounts",
]

events_t = ContactEventRow.__table__
accounts_t = ContactAccountRow.__table__
connections_t = ContactConnectionRow.__table__
risk_t = ContactRiskRow.__table__
holds_t = ContactHoldRow.__table__
state_t = ContactStateRow.__table__
cases_t = CaseRow.__table__
evidence_t = EvidenceRow.__table__

#: Events older than this many days are purged (``contact_retention_days``).
DEFAULT_RETENTION_DAYS = 90
#: Rows per IN list or executemany chunk (SQLite; PostgreSQL takes arrays and COPY).
_CHUNK = 500
_EVENT_COLUMNS = ("event_id", "type", "account", "target", "time", "digest", "body", "received_at")
_RISK_COLUMNS = ("account", "score", "band", "contributions", "updated_at")
_FACT_COLUMNS = (
    "account",
    "age_band",
    "age_source",
    "age_confidence",
    "country",
    "created_at",
    "banned",
)
_EVENT_CLASSES = (
    AccountEvent,
    ProfileChange,
    BanEvent,
    ConnectionRequest,
    ConnectionAccept,
    ConnectionRemove,
    MessageEvent,
    BlockEvent,
    ReportEvent,
    GiftEvent,
    PaymentEvent,
    FlagEvent,
)


class HoldConflict(StoreError):
    """The account is already (or is not) under legal hold."""


class EventNotFound(StoreError):
    """No such event (for the account asked about)."""


class AccountHeld(StoreError):
    """The account is under legal hold: its events cannot be erased."""


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What became of the event at ``index`` of a batch: ``ok`` (stored and applied),
    ``duplicate`` (the same event was stored before: nothing changed) or ``error`` (refused:
    ``error`` says why, ``errors`` lists pydantic's complaints for an invalid event)."""

    index: int
    event_id: str | None
    status: Literal["ok", "duplicate", "error"]
    error: str | None = None
    errors: tuple[dict[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class AccountRisk:
    account: str
    score: int
    band: str
    contributions: tuple[Contribution, ...]
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    seq: int
    event: dict[str, Any]
    received_at: datetime


@dataclass(frozen=True, slots=True)
class Hold:
    account: str
    reason: str
    held_by: str
    held_at: datetime


@dataclass(frozen=True, slots=True)
class Erasure:
    account: str
    deleted: int
    #: Events kept because the other account in them is under legal hold.
    kept: int


@dataclass(eq=False)
class _Shared:
    """One process's risk state for one database (see the module docstring)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    state: RiskState | None = None
    applied_seq: int = 0
    generation: int = -1


_SHARED: weakref.WeakKeyDictionary[Engine, _Shared] = weakref.WeakKeyDictionary()
_SHARED_LOCK = threading.Lock()


def _shared(engine: Engine) -> _Shared:
    with _SHARED_LOCK:
        found = _SHARED.get(engine)
        if found is None:
            found = _SHARED[engine] = _Shared()
        return found


def protected_accounts() -> CompoundSelect[tuple[str]]:
    """The accounts whose events are neither purged nor erased: under legal hold
    (``contact_holds``), under an active account case (open or awaiting its second review), or
    with a confirmed account case whose evidence the vault still keeps (its retention or legal
    hold has not run out: the report may need the events behind it)."""
    c = cases_t.c
    return union(
        select(holds_t.c.account),
        select(c.active_account).where(c.active_account.is_not(None)),
        select(c.uploader_id).where(
            c.subject == "account",
            c.state == "confirmed",
            c.uploader_id.is_not(None),
            exists().where(evidence_t.c.case_id == c.id, evidence_t.c.purged_at.is_(None)),
        ),
    )


def _canonical(event: Event) -> tuple[str, str]:
    """The event's canonical JSON (what is stored) and its SHA-256."""
    doc = json.dumps(event_to_json(event), sort_keys=True, separators=(",", ":"))
    return doc, hashlib.sha256(doc.encode()).hexdigest()


def settings_digest(settings: RiskSettings) -> str:
    """SHA-256 of the settings' canonical JSON (sets sorted: their order varies by process)."""

    def canonical(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: canonical(v) for k, v in value.items()}
        if isinstance(value, list):
            return sorted((canonical(v) for v in value), key=repr)
        return value

    doc = canonical(settings.model_dump(mode="json"))
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _parties(event: Event) -> tuple[str, str | None]:
    """The event's account (or actor) and its counterpart, if any."""
    if isinstance(event, AccountEvent | ProfileChange | BanEvent | FlagEvent):
        return event.account, getattr(event, "target", None)
    return event.actor, event.target


def _message(errors: tuple[dict[str, str], ...]) -> str:
    return "; ".join(f"{e['loc']}: {e['msg']}" if e["loc"] else e["msg"] for e in errors)


def _errors(exc: ValidationError) -> tuple[dict[str, str], ...]:
    return tuple(
        {
            "loc": ".".join(str(part) for part in err["loc"]),
            "type": err["type"],
            "msg": err["msg"],
        }
        for err in exc.errors(include_url=False, include_input=False)
    )


def _contributions_json(result: RiskResult) -> list[dict[str, Any]]:
    return [
        {
            "detector": c.detector,
            "points": c.points,
            "fired": c.fired,
            "explanation": c.explanation,
            "evidence": dict(c.evidence),
        }
        for c in result.contributions
    ]


#: Each contribution's JSON text by its content (:func:`_contributions_text`), cleared when full.
_FRAGMENTS: dict[tuple[Any, ...], str] = {}
_FRAGMENTS_MAX = 50_000


def _contributions_text(result: RiskResult) -> str:
    """``json.dumps(_contributions_json(result))``, the same text, from a memo of each
    contribution's JSON: most of a rescored account's detectors come out as they did before, or
    as another account's, and serialising them again was most of a risk row's cost."""
    parts = []
    for c in result.contributions:
        key = (c.detector, c.points, c.fired, c.text_key(), tuple(c.evidence.items()))
        text = _FRAGMENTS.get(key)
        if text is None:
            if len(_FRAGMENTS) >= _FRAGMENTS_MAX:
                _FRAGMENTS.clear()
            text = _FRAGMENTS[key] = json.dumps(
                {
                    "detector": c.detector,
                    "points": c.points,
                    "fired": c.fired,
                    "explanation": c.explanation,
                    "evidence": dict(c.evidence),
                }
            )
        parts.append(text)
    return "[" + ", ".join(parts) + "]"


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


class ContactStore:
    """Contact events and what is derived from them, over one :class:`~bastion.db.Store`.

    Cheap to construct (per request is fine): the risk state lives per process and database.
    ``settings`` are the policy's risk settings; ``retention_days`` the events' retention."""

    def __init__(
        self,
        store: Database,
        settings: RiskSettings | None = None,
        *,
        retention_days: float = DEFAULT_RETENTION_DAYS,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        if retention_days <= 0:
            raise InvalidInput("the contact events' retention must be positive")
        self.store = store
        self.settings = settings or RiskSettings()
        self.retention = timedelta(days=retention_days)
        self._now = now
        self._shared = _shared(store.engine)
        self._settings_digest = settings_digest(self.settings)

    @classmethod
    def for_runtime(cls, rt: Runtime) -> ContactStore:
        """Over the runtime's store, with the current policy's risk settings and the configured
        retention (the API, the worker and the stream consumer build it this way)."""
        return cls(
            rt.store,
            rt.policy.current().contact.risk,
            retention_days=rt.settings.contact_retention_days,
        )

    # -- transactions --------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction holding the ingest lock (the ``contact_state`` row), with the
        process's state caught up with the database; a failure drops the in-memory state."""
        shared = self._shared
        with shared.lock:
            try:
                with self.store.begin_write() as conn:
                    yield conn
            except SQLAlchemyError as exc:
                shared.state = None
                raise StoreUnavailable(f"contact events: {_reason(exc)}") from exc
            except BaseException:
                shared.state = None
                raise

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self.store.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"contact events: {_reason(exc)}") from exc

    def _lock(self, conn: Connection) -> tuple[int, int, str]:
        row = conn.execute(
            select(state_t.c.applied_seq, state_t.c.generation, state_t.c.settings_digest)
            .where(state_t.c.id == 1)
            .with_for_update()
        ).one()
        return int(row.applied_seq), int(row.generation), row.settings_digest

    def _catch_up(self, conn: Connection) -> RiskState:
        """The process's state with every committed event applied (caller holds the lock)."""
        shared = self._shared
        applied, generation, digest = self._lock(conn)
        if digest != self._settings_digest:  # stored risk was computed under other settings
            self.refresh(conn=conn)
            assert shared.state is not None
            return shared.state
        state = shared.state
        if (
            state is None
            or shared.generation != generation
            or state.settings != self.settings
            or shared.applied_seq > applied
        ):
            state = self._load(conn)
            shared.generation = generation
        elif shared.applied_seq < applied:
            rows = conn.execute(
                select(events_t.c.body)
                .where(events_t.c.seq > shared.applied_seq, events_t.c.seq <= applied)
                .order_by(events_t.c.seq)
            ).scalars()
            for body in rows:
                state.apply(parse_event(json.loads(body)))
            state.rescore()  # the committer wrote these results already
        shared.state = state
        shared.applied_seq = applied
        return state

    def _load(self, conn: Connection) -> RiskState:
        state = RiskState(self.settings)
        for event in self._stored_events(conn):
            state.apply(event)
        state.rescore()
        return state

    def _stored_events(self, conn: Connection) -> Iterator[Event]:
        rows = conn.execute(
            select(events_t.c.body).order_by(events_t.c.time, events_t.c.event_id)
        ).scalars()
        for body in rows:
            yield parse_event(json.loads(body))

    # -- intake --------------------------------------------------------------------------------

    def ingest(self, events: Sequence[object], *, max_batch: int = MAX_BATCH) -> list[IngestResult]:
        """Validate and apply a batch of events (raw JSON objects or parsed
        :data:`~bastion.contact.model.Event` instances) in one transaction; one result per event,
        in order. Raises :class:`~bastion.contact.model.BatchTooLarge` over ``max_batch``
        events (:data:`~bastion.contact.model.MAX_BATCH`, an API request's limit; the stream
        consumer takes larger batches, since an account touched several times in a batch is
        rescored and written once), :class:`StoreUnavailable` when the database fails (nothing
        of the batch is applied then)."""
        if len(events) > max_batch:
            raise BatchTooLarge(f"a batch holds at most {max_batch} events, got {len(events)}")
        results: list[IngestResult | None] = [None] * len(events)
        parsed: list[tuple[int, Event, tuple[str, str]]] = []
        for index, raw in enumerate(events):
            if isinstance(raw, _EVENT_CLASSES):
                parsed.append((index, raw, _canonical(raw)))
                continue
            try:
                event = parse_event(raw)
            except ValidationError as exc:
                errors = _errors(exc)
                results[index] = IngestResult(
                    index, _raw_id(raw), "error", _message(errors), errors
                )
                continue
            parsed.append((index, event, _canonical(event)))
        if parsed:
            self._apply(parsed, results)
        return [r for r in results if r is not None]

    def _apply(
        self,
        parsed: list[tuple[int, Event, tuple[str, str]]],
        results: list[IngestResult | None],
    ) -> None:
        now = self._now()
        with self._write() as conn:
            state = self._catch_up(conn)
            known = _known_digests(conn, sorted({event.event_id for _, event, _ in parsed}))
            fresh: list[Event] = []
            rows: list[tuple[Any, ...]] = []
            for index, event, (body, digest) in parsed:
                prior = known.get(event.event_id)
                if prior is not None:
                    results[index] = (
                        IngestResult(index, event.event_id, "duplicate")
                        if prior == digest
                        else IngestResult(
                            index,
                            event.event_id,
                            "error",
                            "conflict: this event_id was stored before with other content",
                        )
                    )
                    continue
                known[event.event_id] = digest
                account, target = _parties(event)
                rows.append(
                    (event.event_id, event.type, account, target, event.time, digest, body, now)
                )
                fresh.append(event)
                results[index] = IngestResult(index, event.event_id, "ok")
            if not fresh:
                return
            _insert_events(conn, rows)
            last = int(conn.execute(select(func.max(events_t.c.seq))).scalar_one())
            for event in fresh:
                if state.apply(event) != "applied":  # memory and database disagree: reload
                    raise StoreError(f"event {event.event_id!r} was already applied in memory")
            self._project(conn, state, fresh, now)
            conn.execute(update(state_t).where(state_t.c.id == 1).values(applied_seq=last))
            self._shared.applied_seq = last

    def _project(
        self, conn: Connection, state: RiskState, fresh: list[Event], now: datetime
    ) -> None:
        """Write what ``fresh`` changed: risk, the facts and connections it touched."""
        before = {a: state._results.get(a) for a in state._dirty}
        rescored = state.rescore()
        # only rows whose result changed (a rescored account often comes out the same)
        changed = [r for a, r in rescored.items() if before.get(a) != r]
        _replace_risk(conn, changed, now)
        facts = sorted(
            {e.account for e in fresh if isinstance(e, AccountEvent | ProfileChange | BanEvent)}
        )
        _replace_facts(conn, state, facts)
        pairs = sorted(
            {
                (min(e.actor, e.target), max(e.actor, e.target))
                for e in fresh
                if isinstance(e, ConnectionRequest | ConnectionAccept | ConnectionRemove)
            }
        )
        _replace_connections(conn, state, pairs)

    def refresh(self, *, conn: Connection | None = None) -> int:
        """Recompute every projection from the stored events (after a purge or an erasure, or
        when the risk settings changed) and bump ``generation`` so other processes reload.
        Returns how many accounts have a risk row."""
        if conn is None:
            with self._write() as own:
                return self.refresh(conn=own)
        self._lock(conn)
        state = self._load(conn)
        results = state.results()
        now = self._now()
        conn.execute(delete(risk_t))
        conn.execute(delete(accounts_t))
        conn.execute(delete(connections_t))
        _replace_risk(conn, results.values(), now, emptied=True)
        # facts come from account, profile and ban events only, as in _project
        stated = {a for a, evs in state._profile.items() if evs}
        stated |= {a for a, bans in state._bans.items() if bans}
        _replace_facts(conn, state, sorted(stated), emptied=True)
        _replace_connections(conn, state, _all_pairs(state), emptied=True)
        last = conn.execute(select(func.max(events_t.c.seq))).scalar_one_or_none() or 0
        generation = conn.execute(
            update(state_t)
            .where(state_t.c.id == 1)
            .values(
                applied_seq=last,
                generation=state_t.c.generation + 1,
                settings_digest=self._settings_digest,
            )
            .returning(state_t.c.generation)
        ).scalar_one()
        self._shared.state = state
        self._shared.applied_seq = int(last)
        self._shared.generation = int(generation)
        return len(results)

    # -- reading -------------------------------------------------------------------------------

    def risk(self, account: str) -> AccountRisk | None:
        """The account's stored risk (None: no event names it)."""
        with self._read() as conn:
            row = conn.execute(select(risk_t).where(risk_t.c.account == account)).first()
        if row is None:
            return None
        return AccountRisk(
            account=row.account,
            score=int(row.score),
            band=row.band,
            contributions=tuple(
                Contribution(
                    c["detector"],
                    int(c["points"]),
                    bool(c["fired"]),
                    c["explanation"],
                    {k: int(v) for k, v in c["evidence"].items()},
                )
                for c in row.contributions
            ),
            updated_at=row.updated_at,
        )

    def all_risk(self) -> dict[str, tuple[int, str, list[dict[str, Any]]]]:
        """Every stored risk row as (score, band, contributions), for checks and tests."""
        with self._read() as conn:
            rows = conn.execute(
                select(risk_t.c.account, risk_t.c.score, risk_t.c.band, risk_t.c.contributions)
            ).all()
        return {r.account: (int(r.score), r.band, list(r.contributions)) for r in rows}

    def stored_events(self) -> list[Event]:
        """Every stored event, in (time, event_id) order."""
        with self._read() as conn:
            return list(self._stored_events(conn))

    def facts(self, account: str) -> dict[str, Any] | None:
        with self._read() as conn:
            row = conn.execute(select(accounts_t).where(accounts_t.c.account == account)).first()
        return None if row is None else dict(row._mapping)

    def connections(self, account: str) -> list[str]:
        with self._read() as conn:
            rows = conn.execute(
                select(connections_t.c.a, connections_t.c.b).where(
                    or_(connections_t.c.a == account, connections_t.c.b == account)
                )
            ).all()
        return sorted(r.b if r.a == account else r.a for r in rows)

    def timeline(
        self,
        account: str,
        *,
        actor: str,
        limit: int = 500,
        before: str | None = None,
        remote_addr: str | None = None,
    ) -> list[TimelineEvent]:
        """The events naming ``account``, newest first (by time, then event id). ``before`` is an
        event id, the last page's oldest: the page starts after it. Raises
        :class:`EventNotFound` when no event with that id names the account. The read is
        audited (``contact.timeline``) in the same transaction, so there is no read without its
        record."""
        short_text("actor", actor, 255, empty=False)
        if not 1 <= limit <= 1000:
            raise InvalidInput("limit must be between 1 and 1000")
        c = events_t.c
        names = or_(c.account == account, c.target == account)
        stmt = select(c.seq, c.body, c.received_at, c.time, c.event_id).where(names)
        try:
            with self.store.begin_write() as conn:
                if before is not None:
                    at = conn.execute(
                        select(c.time).where(names, c.event_id == before)
                    ).scalar_one_or_none()
                    if at is None:
                        raise EventNotFound(f"no event {before!r} names account {account!r}")
                    stmt = stmt.where(or_(c.time < at, and_(c.time == at, c.event_id < before)))
                stmt = stmt.order_by(c.time.desc(), c.event_id.desc()).limit(limit)
                rows = conn.execute(stmt).all()
                append_audit(
                    conn,
                    actor=actor,
                    action="contact.timeline",
                    target=f"account:{account}",
                    detail={"events": len(rows), "before": before},
                    remote_addr=remote_addr,
                )
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"contact events: {_reason(exc)}") from exc
        return [TimelineEvent(r.seq, json.loads(r.body), r.received_at) for r in rows]

    # -- holds, retention, erasure -------------------------------------------------------------

    def hold(self, account: str, *, actor: str, reason: str) -> Hold:
        """Put an account under legal hold: no event it is part of is purged or erased until
        :meth:`release`. Audits ``contact.hold``."""
        short_text("account", account, 128, empty=False)
        short_text("actor", actor, 255, empty=False)
        reason = short_text("reason", reason, 2000, empty=False).strip()
        if not reason:
            raise InvalidInput("a legal hold needs a reason")
        now = self._now()
        with self._write() as conn:
            if conn.execute(select(holds_t.c.account).where(holds_t.c.account == account)).first():
                raise HoldConflict(f"account {account!r} is already under legal hold")
            conn.execute(
                insert(holds_t).values(account=account, reason=reason, held_by=actor, held_at=now)
            )
            append_audit(
                conn,
                actor=actor,
                action="contact.hold",
                target=f"account:{account}",
                detail={"reason": reason},
            )
        return Hold(account, reason, actor, now)

    def release(self, account: str, *, actor: str, reason: str) -> None:
        """End an account's legal hold. Audits ``contact.release``."""
        short_text("actor", actor, 255, empty=False)
        reason = short_text("reason", reason, 2000, empty=False).strip()
        if not reason:
            raise InvalidInput("releasing a legal hold needs a reason")
        with self._write() as conn:
            gone = conn.execute(delete(holds_t).where(holds_t.c.account == account)).rowcount
            if not gone:
                raise HoldConflict(f"account {account!r} is not under legal hold")
            append_audit(
                conn,
                actor=actor,
                action="contact.release",
                target=f"account:{account}",
                detail={"reason": reason},
            )

    def holds(self) -> list[Hold]:
        with self._read() as conn:
            rows = conn.execute(select(holds_t).order_by(holds_t.c.account)).all()
        return [Hold(r.account, r.reason, r.held_by, r.held_at) for r in rows]

    def purge_expired(self, *, actor: str = "system") -> int:
        """Delete events older than the retention window, except those naming an account under
        legal hold or review (:func:`protected_accounts`), and rebuild the projections from what
        is left, in one transaction with its audit record (``contact.purge``). Returns how many
        events were deleted."""
        cutoff = self._now() - self.retention
        held = protected_accounts()
        c = events_t.c
        with self._write() as conn:
            self._lock(conn)
            deleted = conn.execute(
                delete(events_t).where(
                    c.time < cutoff,
                    c.account.not_in(held),
                    or_(c.target.is_(None), c.target.not_in(held)),
                )
            ).rowcount
            if deleted:
                self.refresh(conn=conn)
                append_audit(
                    conn,
                    actor=actor,
                    action="contact.purge",
                    target="contact_events",
                    detail={"deleted": deleted, "before": cutoff.isoformat()},
                )
        return int(deleted or 0)

    def erase(self, account: str, *, actor: str, remote_addr: str | None = None) -> Erasure:
        """Delete every event naming ``account`` except those whose other account is under legal
        hold or review, and rebuild the projections, with its audit record (``contact.erase``).
        Raises :class:`AccountHeld` when the account itself is under hold or review
        (:func:`protected_accounts`; nothing is erased)."""
        short_text("account", account, 128, empty=False)
        short_text("actor", actor, 255, empty=False)
        c = events_t.c
        held = protected_accounts()
        with self._write() as conn:
            self._lock(conn)
            if conn.execute(select(holds_t.c.account).where(holds_t.c.account == account)).first():
                raise AccountHeld(f"account {account!r} is under legal hold: nothing erased")
            under = held.subquery()
            if conn.execute(
                select(under.c.account).where(under.c.account == account).limit(1)
            ).first():
                raise AccountHeld(
                    f"account {account!r} is under review (an account case, or a confirmed one "
                    "whose evidence is kept): nothing erased"
                )
            names = or_(c.account == account, c.target == account)
            deleted = conn.execute(
                delete(events_t).where(
                    names,
                    c.account.not_in(held),
                    or_(c.target.is_(None), c.target.not_in(held)),
                )
            ).rowcount
            kept = conn.execute(select(func.count()).select_from(events_t).where(names)).scalar()
            self.refresh(conn=conn)
            append_audit(
                conn,
                actor=actor,
                action="contact.erase",
                target=f"account:{account}",
                detail={"deleted": deleted, "kept_for_holds": kept},
                remote_addr=remote_addr,
            )
        return Erasure(account, int(deleted or 0), int(kept or 0))


def _raw_id(raw: object) -> str | None:
    if isinstance(raw, dict):
        candidate = raw.get("event_id")
        if isinstance(candidate, str) and len(candidate) <= 128:
            return candidate
    return None


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    return text.splitlines()[0] if text else type(orig).__name__


def _postgres(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def _copy(
    conn: Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    """PostgreSQL: ``rows`` into ``table`` by COPY, in the connection's transaction (a fraction
    of an INSERT's cost per row). JSON goes as its text, timestamps as aware datetimes, as the
    column types bind them; a refusal by the driver is raised as SQLAlchemy's ``DBAPIError``,
    like any other statement's."""
    raw: Any = conn.connection.dbapi_connection
    assert raw is not None
    dbapi_error = conn.dialect.loaded_dbapi.Error
    try:
        with (
            raw.cursor() as cur,
            cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
        ):
            write = copy.write_row
            for row in rows:
                write(row)
    except dbapi_error as exc:
        raise DBAPIError.instance(f"COPY {table}", None, exc, dbapi_error) from exc


def _known_digests(conn: Connection, ids: Sequence[str]) -> dict[str, str]:
    """The stored digest of each of ``ids`` already stored."""
    if _postgres(conn):
        found = conn.exec_driver_sql(
            f"SELECT event_id, digest FROM {events_t.name} WHERE event_id = ANY(%(ids)s)",
            {"ids": list(ids)},
        )
        return {event_id: digest for event_id, digest in found}
    known: dict[str, str] = {}
    for chunk in _chunks(ids):
        for event_id, digest in conn.execute(
            select(events_t.c.event_id, events_t.c.digest).where(events_t.c.event_id.in_(chunk))
        ):
            known[event_id] = digest
    return known


def _insert_events(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """New events' rows (:data:`_EVENT_COLUMNS`), none of them stored (the caller checked under
    the ingest lock), in order: ``seq`` follows it."""
    if _postgres(conn):
        _copy(conn, events_t.name, _EVENT_COLUMNS, rows)
        return
    for chunk in _chunks(rows):
        conn.execute(insert(events_t), [dict(zip(_EVENT_COLUMNS, r, strict=True)) for r in chunk])


def _replace(
    conn: Connection,
    table: Any,
    columns: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
    *,
    emptied: bool,
) -> None:
    """Replace the rows of ``table`` keyed by their first column with ``rows`` (``emptied``:
    the table was just emptied, nothing to delete)."""
    if not rows:
        return
    key = table.c[columns[0]]
    if _postgres(conn):
        if not emptied:
            conn.exec_driver_sql(
                f"DELETE FROM {table.name} WHERE {key.name} = ANY(%(keys)s)",
                {"keys": [r[0] for r in rows]},
            )
        _copy(conn, table.name, columns, rows)
        return
    for chunk in _chunks(rows):
        if not emptied:
            conn.execute(delete(table).where(key.in_([r[0] for r in chunk])))
        conn.execute(insert(table), [dict(zip(columns, r, strict=True)) for r in chunk])


def _replace_risk(
    conn: Connection, results: Iterable[RiskResult], now: datetime, *, emptied: bool = False
) -> None:
    postgres = _postgres(conn)
    rows = [
        (
            r.account,
            r.score,
            r.band,
            # COPY takes JSON as its text; SQLAlchemy's JSON type serialises it itself
            _contributions_text(r) if postgres else _contributions_json(r),
            now,
        )
        for r in results
    ]
    _replace(conn, risk_t, _RISK_COLUMNS, rows, emptied=emptied)


def _replace_facts(
    conn: Connection, state: RiskState, accounts: Sequence[str], *, emptied: bool = False
) -> None:
    rows: list[tuple[Any, ...]] = []
    for account in accounts:
        facts = state.facts(account)
        source: str | None = None
        confidence: float | None = None
        # how the age is known: the latest account event's, unless a later change restated it
        for _, ev in state._profile.get(account, ()):
            if isinstance(ev, AccountEvent):
                source, confidence = ev.age_source, ev.age_confidence
            elif ev.age_source is not None:
                source, confidence = ev.age_source, None
        rows.append(
            (
                account,
                facts.age_band,
                source,
                confidence,
                facts.country,
                facts.created_at,
                facts.banned,
            )
        )
    _replace(conn, accounts_t, _FACT_COLUMNS, rows, emptied=emptied)


def _all_pairs(state: RiskState) -> list[tuple[str, str]]:
    return sorted(
        {(min(a, b), max(a, b)) for a, others in state._neighbours.items() for b in others}
    )


def _replace_connections(
    conn: Connection,
    state: RiskState,
    pairs: Sequence[tuple[str, str]],
    *,
    emptied: bool = False,
) -> None:
    c = connections_t.c
    if _postgres(conn) and pairs:
        if not emptied:
            conn.exec_driver_sql(
                f"DELETE FROM {connections_t.name} WHERE (a, b) IN "
                "(SELECT * FROM unnest(%(a)s::text[], %(b)s::text[]))",
                {"a": [a for a, _ in pairs], "b": [b for _, b in pairs]},
            )
        _copy(conn, connections_t.name, ("a", "b"), [p for p in pairs if state.connected(*p)])
        return
    for chunk in _chunks(pairs):
        if not emptied:
            conn.execute(delete(connections_t).where(tuple_(c.a, c.b).in_(list(chunk))))
        now_connected = [{"a": a, "b": b} for a, b in chunk if state.connected(a, b)]
        if now_connected:
            conn.execute(insert(connections_t), now_connected)
