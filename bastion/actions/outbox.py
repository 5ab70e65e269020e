"""The durable webhook outbox: actions wait here until a receiver acknowledges them.

An action is written in the same transaction as the decision that orders it (``enqueue_in``), so
a decision is never recorded without its action or the other way round. Workers claim due rows
with a lease (a conditional UPDATE; ``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so two workers
never send one row at the same time; a worker killed mid-delivery leaves a row whose lease runs
out and which is then sent again with the same idempotency key. Rows move
``pending -> delivering -> delivered``, back to ``pending`` with exponential backoff on a
retryable failure, or to ``dead`` on a permanent one or after ``max_attempts``.
"""

from __future__ import annotations

import builtins
import random
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Row, and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError

from bastion.actions.model import (
    Backoff,
    State,
    build_body,
    canonical_payload,
    validate_action,
    validate_key,
)
from bastion.actions.rows import OutboxRow
from bastion.banks.model import utcnow
from bastion.store import InvalidInput, StoreError, StoreUnavailable, append_audit

if TYPE_CHECKING:
    from bastion.db import Store

outbox_t = OutboxRow.__table__
_MAX_ERROR = 2000
_MAX_WORKER_ID = 128
ACTOR = "system"


class OutboxNotFound(StoreError):
    pass


class OutboxConflict(StoreError):
    """The row is not in a state that allows the request (e.g. retrying a delivered row)."""


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    action: str
    payload: dict[str, Any]
    body: str
    idempotency_key: str
    case_id: int | None
    state: str
    attempts: int
    next_attempt_at: datetime
    locked_by: str | None
    locked_until: datetime | None
    last_attempt_at: datetime | None
    last_error: str | None
    last_status: int | None
    target: str | None
    created_at: datetime
    delivered_at: datetime | None

    @property
    def body_bytes(self) -> bytes:
        return self.body.encode("utf-8")


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """Row counts per state (every state present), and how long the oldest undelivered row
    (pending, delivering or dead) has waited: the number to alert on."""

    counts: dict[str, int]
    oldest_pending_at: datetime | None
    oldest_pending_age: float | None
    last_delivered_at: datetime | None


class Outbox:
    """Outbox rows on a :class:`Store`'s engine. ``clock`` and ``rng`` are injectable so tests can
    walk the backoff schedule without waiting."""

    def __init__(
        self,
        store: Store,
        *,
        max_attempts: int = 12,
        backoff: Backoff | None = None,
        clock: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
    ) -> None:
        if not isinstance(max_attempts, int) or max_attempts < 1:
            raise InvalidInput(f"outbox max_attempts must be at least 1, not {max_attempts!r}")
        self.store = store
        self.max_attempts = max_attempts
        self.backoff = backoff or Backoff()
        self.clock = clock
        self.rng = rng or random.Random()

    @classmethod
    def from_settings(cls, store: Store, settings: Any) -> Outbox:
        """Build from :class:`bastion.config.Settings` (raises ValueError on bad numbers)."""
        backoff = Backoff(
            base=float(settings.outbox_backoff_seconds),
            cap=float(settings.outbox_backoff_max_seconds),
        )
        return cls(store, max_attempts=int(settings.outbox_max_attempts), backoff=backoff)

    @contextmanager
    def _db(self) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except SQLAlchemyError as exc:
            orig = getattr(exc, "orig", None) or exc
            first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
            raise StoreUnavailable(f"outbox database error: {first}") from exc

    # -- enqueue -------------------------------------------------------------------------------

    def enqueue_in(
        self,
        conn: Connection,
        *,
        action: str,
        payload: dict[str, Any],
        idempotency_key: str,
        case_id: int | None = None,
        actor: str = ACTOR,
    ) -> int | None:
        """Add an action inside the caller's transaction; None when a row with this idempotency
        key already exists (then nothing is written and the first row stands). Audited as
        ``action.enqueue`` in the same transaction."""
        with self._db():
            return enqueue_in(
                conn,
                action=action,
                payload=payload,
                idempotency_key=idempotency_key,
                case_id=case_id,
                actor=actor,
                now=self.clock(),
            )

    def enqueue(
        self,
        *,
        action: str,
        payload: dict[str, Any],
        idempotency_key: str,
        case_id: int | None = None,
        actor: str = ACTOR,
    ) -> int | None:
        """:meth:`enqueue_in` in a transaction of its own."""
        with self._db(), self.store.engine.begin() as conn:
            return self.enqueue_in(
                conn,
                action=action,
                payload=payload,
                idempotency_key=idempotency_key,
                case_id=case_id,
                actor=actor,
            )

    # -- workers -------------------------------------------------------------------------------

    def _due(self, now: datetime, actions: frozenset[str] | None) -> Any:
        due = or_(
            and_(outbox_t.c.state == State.PENDING, outbox_t.c.next_attempt_at <= now),
            and_(outbox_t.c.state == State.DELIVERING, outbox_t.c.locked_until <= now),
        )
        if actions is not None:
            due = and_(due, outbox_t.c.action.in_(sorted(actions)))
        return due

    def claim_due(
        self,
        worker_id: str,
        limit: int = 1,
        lease: timedelta = timedelta(seconds=60),
        *,
        actions: frozenset[str] | None = None,
    ) -> builtins.list[OutboxItem]:
        """Take up to ``limit`` due rows for ``worker_id`` until now + ``lease``, counting the
        attempt now (so a worker that dies mid-delivery still uses one up). Due means pending
        and past ``next_attempt_at``, or delivering with an expired lease. ``actions`` limits
        the claim to actions this worker has a target for (None: any). A row whose lease expired
        on its last allowed attempt is dead-lettered rather than sent again."""
        if not isinstance(worker_id, str) or not 0 < len(worker_id) <= _MAX_WORKER_ID:
            raise InvalidInput(f"worker id must be 1 to {_MAX_WORKER_ID} characters")
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
            raise InvalidInput(f"limit must be a whole number from 1 to 1000, not {limit!r}")
        if lease <= timedelta(0):
            raise InvalidInput("lease must be positive")
        now = self.clock()
        with self._db(), self.store.engine.begin() as conn:
            self._bury_expired(conn, now)
            candidates = (
                select(outbox_t.c.id)
                .where(self._due(now, actions))
                .order_by(outbox_t.c.next_attempt_at, outbox_t.c.id)
                .limit(limit)
            )
            if conn.dialect.name == "postgresql":
                # Materialised: an inlined subquery may be re-run during the UPDATE and, having
                # skipped rows it just locked, return others too, exceeding the limit.
                due = (
                    candidates.with_for_update(skip_locked=True)
                    .cte("due")
                    .prefix_with("MATERIALIZED", dialect="postgresql")
                )
                candidates = select(due.c.id)
            rows = conn.execute(
                update(outbox_t)
                .where(outbox_t.c.id.in_(candidates), self._due(now, actions))
                .values(
                    state=State.DELIVERING.value,
                    locked_by=worker_id,
                    locked_until=now + lease,
                    last_attempt_at=now,
                    attempts=outbox_t.c.attempts + 1,
                )
                .returning(*outbox_t.c)
            ).all()
        return sorted((_to_item(r) for r in rows), key=lambda i: (i.next_attempt_at, i.id))

    def _bury_expired(self, conn: Connection, now: datetime) -> None:
        rows = conn.execute(
            update(outbox_t)
            .where(
                outbox_t.c.state == State.DELIVERING,
                outbox_t.c.locked_until <= now,
                outbox_t.c.attempts >= self.max_attempts,
            )
            .values(
                state=State.DEAD.value,
                locked_by=None,
                locked_until=None,
                last_error="the worker stopped during the last allowed attempt (lease expired)",
            )
            .returning(*outbox_t.c)
        ).all()
        for r in rows:
            self._audit_outcome(conn, _to_item(r), "action.dead")

    def next_due(self, *, actions: frozenset[str] | None = None) -> datetime | None:
        """When the soonest row this worker could claim becomes due (may be in the past)."""
        filt = [] if actions is None else [outbox_t.c.action.in_(sorted(actions))]
        with self._db(), self.store.engine.connect() as conn:
            pending = conn.execute(
                select(func.min(outbox_t.c.next_attempt_at)).where(
                    outbox_t.c.state == State.PENDING, *filt
                )
            ).scalar()
            leased = conn.execute(
                select(func.min(outbox_t.c.locked_until)).where(
                    outbox_t.c.state == State.DELIVERING, *filt
                )
            ).scalar()
        times = [t for t in (pending, leased) if t is not None]
        return min(times) if times else None

    def mark_delivered(
        self, item: OutboxItem, *, status: int | None = None, target: str | None = None
    ) -> bool:
        """Record the receiver's acknowledgement. An acknowledgement is the truth whoever holds
        the row now (a lease may have run out during a slow answer), so only an already
        delivered row is left alone. True when this call made it delivered."""
        now = self.clock()
        with self._db(), self.store.engine.begin() as conn:
            row = conn.execute(
                update(outbox_t)
                .where(outbox_t.c.id == item.id, outbox_t.c.state != State.DELIVERED)
                .values(
                    state=State.DELIVERED.value,
                    delivered_at=now,
                    locked_by=None,
                    locked_until=None,
                    last_status=status,
                    last_error=None,
                    target=target,
                )
                .returning(*outbox_t.c)
            ).first()
            if row is None:
                return False
            self._audit_outcome(conn, _to_item(row), "action.delivered")
        return True

    def mark_failed(
        self,
        item: OutboxItem,
        worker_id: str,
        *,
        error: str,
        status: int | None = None,
        permanent: bool = False,
        target: str | None = None,
    ) -> State | None:
        """Record a failed attempt by the worker holding ``item``: dead when ``permanent`` or
        out of attempts, else pending again after the backoff delay. None when the row is no
        longer this worker's (its lease ran out and another worker took it over)."""
        now = self.clock()
        dead = permanent or item.attempts >= self.max_attempts
        values: dict[str, Any] = {
            "state": (State.DEAD if dead else State.PENDING).value,
            "locked_by": None,
            "locked_until": None,
            "last_error": _clip(error),
            "last_status": status,
            "target": target,
        }
        if not dead:
            delay = self.backoff.delay(item.attempts, self.rng)
            values["next_attempt_at"] = now + timedelta(seconds=delay)
        with self._db(), self.store.engine.begin() as conn:
            row = conn.execute(
                update(outbox_t)
                .where(
                    outbox_t.c.id == item.id,
                    outbox_t.c.state == State.DELIVERING,
                    outbox_t.c.locked_by == worker_id,
                    outbox_t.c.attempts == item.attempts,
                )
                .values(**values)
                .returning(*outbox_t.c)
            ).first()
            if row is None:
                return None
            if dead:
                self._audit_outcome(conn, _to_item(row), "action.dead")
        return State.DEAD if dead else State.PENDING

    def note_unroutable(self, routable: frozenset[str] | None) -> int:
        """Set ``last_error`` on pending rows whose action no target takes, so the console shows
        why they wait (they are kept, not dropped, until a target is configured). Returns the
        number of rows newly marked."""
        if routable is None:
            return 0
        marked = 0
        with self._db(), self.store.engine.begin() as conn:
            actions = conn.execute(
                select(outbox_t.c.action)
                .where(
                    outbox_t.c.state == State.PENDING,
                    outbox_t.c.action.not_in(sorted(routable)),
                )
                .distinct()
            ).scalars()
            for action in builtins.list(actions):
                message = f"no webhook target configured for {action}"
                marked += conn.execute(
                    update(outbox_t)
                    .where(
                        outbox_t.c.state == State.PENDING,
                        outbox_t.c.action == action,
                        or_(outbox_t.c.last_error.is_(None), outbox_t.c.last_error != message),
                    )
                    .values(last_error=message)
                ).rowcount
        return marked

    def _audit_outcome(self, conn: Connection, item: OutboxItem, what: str) -> None:
        detail: dict[str, Any] = {
            "action": item.action,
            "idempotency_key": item.idempotency_key,
            "case_id": item.case_id,
            "attempts": item.attempts,
            "status": item.last_status,
            "target": item.target,
        }
        if what == "action.dead":
            detail["error"] = (item.last_error or "")[:500]
        append_audit(conn, actor=ACTOR, action=what, target=f"outbox:{item.id}", detail=detail)

    # -- console -------------------------------------------------------------------------------

    def get(self, item_id: int) -> OutboxItem:
        item_id = _item_id(item_id)
        with self._db(), self.store.engine.connect() as conn:
            row = conn.execute(select(outbox_t).where(outbox_t.c.id == item_id)).first()
        if row is None:
            raise OutboxNotFound(f"no outbox item {item_id}")
        return _to_item(row)

    def retry(self, item_id: int, *, actor: str, remote_addr: str | None = None) -> OutboxItem:
        """Send a dead row again: back to pending, due now, with a fresh set of attempts and the
        same idempotency key (a receiver that did apply it will only acknowledge it). Audited
        as ``outbox.retry``."""
        item_id = _item_id(item_id)
        with self._db(), self.store.engine.begin() as conn:
            before = conn.execute(select(outbox_t).where(outbox_t.c.id == item_id)).first()
            if before is None:
                raise OutboxNotFound(f"no outbox item {item_id}")
            row = conn.execute(
                update(outbox_t)
                .where(outbox_t.c.id == item_id, outbox_t.c.state == State.DEAD)
                .values(
                    state=State.PENDING.value,
                    attempts=0,
                    next_attempt_at=self.clock(),
                    locked_by=None,
                    locked_until=None,
                )
                .returning(*outbox_t.c)
            ).first()
            if row is None:
                raise OutboxConflict(
                    f"outbox item {item_id} is {before.state}; only dead items can be retried"
                )
            append_audit(
                conn,
                actor=actor,
                action="outbox.retry",
                target=f"outbox:{item_id}",
                detail={
                    "action": row.action,
                    "idempotency_key": row.idempotency_key,
                    "case_id": row.case_id,
                    "previous_attempts": before.attempts,
                    "previous_error": (before.last_error or "")[:500],
                },
                remote_addr=remote_addr,
            )
        return _to_item(row)

    def retry_dead(
        self,
        ids: Iterable[int] | None = None,
        *,
        actor: str,
        remote_addr: str | None = None,
        limit: int = 1000,
    ) -> builtins.list[OutboxItem]:
        """Send several dead rows again (:meth:`retry` each, so each is audited as
        ``outbox.retry``): those in ``ids``, or with None every dead row (at most ``limit``,
        oldest first). A row that is no longer dead is skipped, not an error: another admin may
        have retried it meanwhile."""
        if ids is None:
            with self._db(), self.store.engine.connect() as conn:
                wanted = list(
                    conn.execute(
                        select(outbox_t.c.id)
                        .where(outbox_t.c.state == State.DEAD)
                        .order_by(outbox_t.c.id)
                        .limit(limit)
                    ).scalars()
                )
        else:
            wanted = [_item_id(i) for i in ids][:limit]
        done: builtins.list[OutboxItem] = []
        for item_id in dict.fromkeys(wanted):
            try:
                done.append(self.retry(item_id, actor=actor, remote_addr=remote_addr))
            except OutboxConflict:
                continue
        return done

    def for_case_in(self, conn: Connection, case_id: int) -> builtins.list[OutboxItem]:
        """A case's actions, oldest first, read in the caller's transaction (a decision that
        undoes what went out reads them where it queues the reversals)."""
        rows = conn.execute(
            select(outbox_t).where(outbox_t.c.case_id == _item_id(case_id)).order_by(outbox_t.c.id)
        )
        return [_to_item(r) for r in rows]

    def stats(self) -> OutboxStats:
        with self._db(), self.store.engine.connect() as conn:
            counts = {s.value: 0 for s in State}
            for state, n in conn.execute(
                select(outbox_t.c.state, func.count()).group_by(outbox_t.c.state)
            ):
                counts[state] = int(n)
            oldest = conn.execute(
                select(func.min(outbox_t.c.created_at)).where(
                    # Dead rows are undelivered too: an action that failed for good is the
                    # oldest thing the platform has not done.
                    outbox_t.c.state.in_([State.PENDING, State.DELIVERING, State.DEAD])
                )
            ).scalar()
            last = conn.execute(select(func.max(outbox_t.c.delivered_at))).scalar()
        age = None if oldest is None else max(0.0, (self.clock() - oldest).total_seconds())
        return OutboxStats(counts, oldest, age, last)

    def list(
        self,
        *,
        state: str | None = None,
        case_id: int | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> builtins.list[OutboxItem]:
        """Newest first; ``before`` (an id) pages further back."""
        if state is not None and state not in {s.value for s in State}:
            raise InvalidInput(
                f"unknown outbox state {state!r}: one of {', '.join(s.value for s in State)}"
            )
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
            raise InvalidInput(f"limit must be a whole number from 1 to 1000, not {limit!r}")
        stmt = select(outbox_t).order_by(outbox_t.c.id.desc()).limit(limit)
        if state is not None:
            stmt = stmt.where(outbox_t.c.state == state)
        if case_id is not None:
            stmt = stmt.where(outbox_t.c.case_id == _item_id(case_id))
        if before is not None:
            stmt = stmt.where(outbox_t.c.id < _item_id(before))
        with self._db(), self.store.engine.connect() as conn:
            return [_to_item(r) for r in conn.execute(stmt)]


def enqueue_in(
    conn: Connection,
    *,
    action: str,
    payload: dict[str, Any],
    idempotency_key: str,
    case_id: int | None = None,
    actor: str = ACTOR,
    now: datetime | None = None,
) -> int | None:
    """:meth:`Outbox.enqueue_in` for callers holding only a connection: enqueueing needs no
    settings. Raises InvalidInput before writing anything when an argument is bad."""
    values = _new_row(action, payload, idempotency_key, case_id, now or utcnow())
    ins = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = (
        ins(outbox_t)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(outbox_t.c.id)
    )
    new_id = conn.execute(stmt).scalar_one_or_none()
    if new_id is None:
        return None
    append_audit(
        conn,
        actor=actor,
        action="action.enqueue",
        target=f"outbox:{new_id}",
        detail={
            "action": values["action"],
            "idempotency_key": values["idempotency_key"],
            "case_id": case_id,
        },
    )
    return int(new_id)


def _new_row(
    action: str, payload: dict[str, Any], key: str, case_id: int | None, now: datetime
) -> dict[str, Any]:
    try:
        action = validate_action(action)
        key = validate_key(key)
        data = canonical_payload(payload)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    if case_id is not None and (
        not isinstance(case_id, int) or isinstance(case_id, bool) or not 0 < case_id < 2**63
    ):
        raise InvalidInput(f"case_id must be a positive whole number or None, not {case_id!r}")
    try:
        body = build_body(key=key, action=action, created_at=now, case_id=case_id, payload=data)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    return {
        "action": action,
        "payload": data,
        "body": body,
        "idempotency_key": key,
        "case_id": case_id,
        "state": State.PENDING.value,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


def _item_id(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**63:
        raise InvalidInput(f"an outbox id must be a positive whole number, not {value!r}")
    return value


def _clip(text: str) -> str:
    text = str(text).replace("\x00", "")
    return text if len(text) <= _MAX_ERROR else text[: _MAX_ERROR - 1] + "…"


def _to_item(r: Row[Any]) -> OutboxItem:
    m = r._mapping
    return OutboxItem(
        id=int(m["id"]),
        action=m["action"],
        payload=dict(m["payload"] or {}),
        body=m["body"],
        idempotency_key=m["idempotency_key"],
        case_id=m["case_id"],
        state=m["state"],
        attempts=int(m["attempts"]),
        next_attempt_at=m["next_attempt_at"],
        locked_by=m["locked_by"],
        locked_until=m["locked_until"],
        last_attempt_at=m["last_attempt_at"],
        last_error=m["last_error"],
        last_status=m["last_status"],
        target=m["target"],
        created_at=m["created_at"],
        delivered_at=m["delivered_at"],
    )
