"""Cases in the database: opening and joining them, queues, leases, reveals, decisions.

The rules (who may see what, what a decision does) live in :mod:`bastion.review.model`; this
module applies them inside transactions. Every write appends its audit event in the same
transaction, so a change and its record commit together. Media is sealed with
:mod:`bastion.crypto` under the master key and never stored in the clear.

Concurrency: leases are taken by one conditional UPDATE (``lease free, expired or mine``), which
the database serialises on the row, so of two reviewers claiming at once exactly one wins on
SQLite and PostgreSQL alike. On SQLite every write transaction takes the write lock with its
first statement (a deferred transaction that reads, then writes, fails outright if another
writer committed in between); on PostgreSQL case rows are locked with ``FOR UPDATE`` where a
decision depends on what was read.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, Row, and_, case, func, insert, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from bastion.banks.model import utcnow
from bastion.crypto import MasterKey, UnsealError, seal, unseal
from bastion.review.model import (
    ACCOUNT,
    ACCOUNT_ON_CONFIRMED,
    ACTIVE_STATES,
    AWAITING_SECOND,
    CONFIRMED,
    CONTENT,
    EV_CLAIM,
    EV_DECIDE,
    EV_ESCALATE,
    EV_JOIN,
    EV_OPEN,
    EV_RELEASE,
    EV_REVEAL,
    EV_VIEW,
    MAX_MEDIA_BYTES,
    NOT_ABUSIVE,
    OPEN,
    PRIORITY_RANK,
    REVEAL_WINDOW,
    STATES,
    SUBJECTS,
    UNJUDGED,
    Case,
    CaseEvent,
    CaseFacts,
    CaseItem,
    CaseLeased,
    CaseNotFound,
    CaseSummary,
    Decision,
    DecisionMismatch,
    DetectorPrecision,
    Forbidden,
    Media,
    NewItem,
    NoMedia,
    NotLeased,
    Outcome,
    PolicyLike,
    QueueCount,
    RevealRequired,
    ReviewConfig,
    Submitted,
    Viewer,
    check_claim,
    check_reveal,
    check_reveal_reason,
    join_queue,
    matched_entries,
    needs_reveal,
    require_cases,
    require_queue,
    reviewer_queues,
    subject_of_kind,
    transition,
)
from bastion.review.preview import PREVIEW_TYPE, blurred_preview
from bastion.review.rows import (
    CaseEventRow,
    CaseItemRow,
    CaseMediaRow,
    CaseRow,
    DetectorFindingRow,
    EntryDisputeRow,
)
from bastion.store.audit import append_audit
from bastion.store.bulk import json_doc, short_text
from bastion.store.errors import InvalidInput, StoreError, StoreUnavailable
from bastion.vocab import ADMIN, PRIORITIES, SENIOR_REVIEWER

if TYPE_CHECKING:
    from bastion.db import Store
    from bastion.policy import ReviewSettings, Verdict

cases_t = CaseRow.__table__
items_t = CaseItemRow.__table__
media_t = CaseMediaRow.__table__
events_t = CaseEventRow.__table__
disputes_t = EntryDisputeRow.__table__
findings_t = DetectorFindingRow.__table__

_MAX_JSON = 16 * 2**20
_MAX_ID = 2**63 - 1

T = TypeVar("T")


def media_aad(case_id: int, item_id: int) -> bytes:
    """What a media blob is bound to: moved to another item or case, it no longer opens."""
    return f"bastion/case-media/v1:case={case_id}:item={item_id}".encode()


class CaseIntake:
    """Opening and joining cases, and the counts the policy asks for: what the scan pipeline
    needs. The base of :class:`ReviewStore`, with its construction, clock and transactions."""

    def __init__(
        self,
        store: Store,
        master_key: MasterKey,
        *,
        policy: Callable[[], PolicyLike] | None = None,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.master_key = master_key
        self._policy = policy
        self._now = now

    def config(self) -> ReviewConfig:
        return ReviewConfig() if self._policy is None else ReviewConfig.from_policy(self._policy())

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        try:
            # The core's write transaction: on SQLite it takes the write lock at BEGIN.
            with self.store.begin_write() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"review store: {_reason(exc)}") from exc

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self.store.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"review store: {_reason(exc)}") from exc

    # -- opening cases -------------------------------------------------------------------------

    def submit(
        self,
        verdict: Verdict,
        item: NewItem,
        *,
        actor: str,
        then: Callable[[Connection, Submitted], None] | None = None,
    ) -> Submitted:
        """Open a case for ``item``, or add it to the uploader's case that is still open or
        awaiting a second review. The case takes the higher priority and the earlier due time;
        an item routed to a senior queue moves the case there. Joining a case awaiting its
        second review sends it back to ``open``: the first confirmation did not cover the new
        item. Media over :data:`MAX_MEDIA_BYTES` is not kept (the item notes why).

        An item of kind ``account`` (:data:`~bastion.review.model.ACCOUNT_KIND`) opens or joins
        the account's *account case* instead (subject ``account``, at most one active per
        account, beside any content case of the same uploader id): it needs the account as
        ``uploader_id`` and carries no media.

        ``then(conn, submitted)`` runs inside the transaction (e.g. to enqueue block actions).
        """
        v = _verdict(verdict)
        values, media, media_note = _item_values(item)
        subject = subject_of_kind(values["kind"])
        if subject == ACCOUNT and (values["uploader_id"] is None or item.media is not None):
            raise InvalidInput("an account item needs the account as uploader_id and no media")
        short_text("actor", actor, 255, empty=False)
        config = self.config()
        now = self._now()
        due = config.due(v["priority"], now)
        rank = PRIORITY_RANK[v["priority"]]
        uploader = values["uploader_id"]
        with self._tx() as conn:
            case_row, created = None, False
            for _attempt in range(3):
                case_row = _active_case(conn, uploader, subject) if uploader is not None else None
                if case_row is not None:
                    break
                try:
                    with conn.begin_nested():
                        case_id = _new_id(
                            conn.execute(
                                insert(cases_t).values(
                                    state=OPEN,
                                    queue=v["queue"],
                                    priority=rank,
                                    opened_at=now,
                                    updated_at=now,
                                    due_at=due,
                                    uploader_id=uploader,
                                    active_uploader=uploader if subject == CONTENT else None,
                                    active_account=uploader if subject == ACCOUNT else None,
                                    subject=subject,
                                    rule=v["rule"],
                                    reason=v["reason"],
                                    labels=[],
                                )
                            )
                        )
                    created = True
                    break
                except IntegrityError:
                    continue  # another scan of this uploader opened a case meanwhile: join it
            else:
                raise StoreUnavailable("review store: could not open or join a case")
            detail: dict[str, Any] = {}
            if created:
                case_id = int(case_id)
            else:
                assert case_row is not None
                case_id = int(case_row.id)
                changes: dict[str, Any] = {"updated_at": now}
                if rank < case_row.priority:
                    changes.update(priority=rank, rule=v["rule"], reason=v["reason"])
                if due < case_row.due_at:
                    changes["due_at"] = due
                queue = join_queue(case_row.queue, v["queue"], config)
                if queue != case_row.queue:
                    changes["queue"] = queue
                    detail["moved_from"] = case_row.queue
                if case_row.state == AWAITING_SECOND:
                    changes.update(state=OPEN, first_reviewer=None, classification=None, labels=[])
                    detail["reopened_from"] = AWAITING_SECOND
                conn.execute(update(cases_t).where(cases_t.c.id == case_id).values(**changes))
            item_id = _new_id(
                conn.execute(
                    insert(items_t).values(
                        case_id=case_id,
                        added_at=now,
                        verdict=v["decision"],
                        rule=v["rule"],
                        reason=v["reason"],
                        priority=rank,
                        queue=v["queue"],
                        actions=list(v["actions"]),
                        view_required=v["view_required"],
                        due_at=due,
                        media_note=media_note,
                        **values,
                    )
                )
            )
            if media is not None:
                sealed = seal(self.master_key, media, media_aad(case_id, item_id))
                conn.execute(insert(media_t).values(item_id=item_id, sealed=sealed))
            detail.update(
                item=item_id,
                verdict=v["decision"],
                rule=v["rule"],
                priority=v["priority"],
                queue=v["queue"],
                media=media is not None,
            )
            kind = EV_OPEN if created else EV_JOIN
            _event(conn, case_id, now, actor, kind, item_id, detail)
            append_audit(
                conn, actor=actor, action=f"case.{kind}", target=_target(case_id), detail=detail
            )
            result = Submitted(case_id=case_id, item_id=item_id, created=created)
            if then is not None:
                then(conn, result)
        return result

    # -- counts --------------------------------------------------------------------------------

    def prior_confirmed(self, uploader_id: str | None) -> int:
        """How many of this uploader's content cases were confirmed (policy input; an account
        case's confirmation is about behaviour, not content the uploader shared)."""
        if not isinstance(uploader_id, str) or not uploader_id:
            return 0
        stmt = (
            select(func.count())
            .select_from(cases_t)
            .where(
                cases_t.c.uploader_id == uploader_id,
                cases_t.c.state == CONFIRMED,
                cases_t.c.subject == CONTENT,
            )
        )
        with self._read() as conn:
            return int(conn.execute(stmt).scalar_one())

    def disputes_for_entry(self, entry_id: int) -> int:
        """How many times reviewers found a match to this entry not abusive."""
        if (
            not isinstance(entry_id, int)
            or isinstance(entry_id, bool)
            or not 0 < entry_id <= _MAX_ID
        ):
            return 0
        stmt = select(func.count()).select_from(disputes_t).where(disputes_t.c.entry_id == entry_id)
        with self._read() as conn:
            return int(conn.execute(stmt).scalar_one())


class ReviewStore(CaseIntake):
    """Cases, queues, leases and decisions on top of :class:`~bastion.db.Store`.

    ``policy`` returns the current policy (queues, SLAs, lease time); without one the defaults
    in :class:`ReviewConfig` apply. ``now`` is the clock for case times, leases and the reveal
    window (tests pass a fake one; audit rows keep the real time).
    """

    # -- reading -------------------------------------------------------------------------------

    def list_cases(
        self,
        viewer: Viewer,
        *,
        queue: str | None = None,
        states: Sequence[str] = ACTIVE_STATES,
        limit: int = 50,
        after: int | None = None,
        priority: str | None = None,
        overdue: bool | None = None,
        subject: str | None = None,
        hide_own_pending: bool = False,
    ) -> list[CaseSummary]:
        """Cases in the viewer's queues, most urgent first (priority, then due time, then id).
        Page by passing the last id seen as ``after`` (a case this viewer may list; any other id
        is CaseNotFound). ``priority`` keeps one priority;
        ``overdue`` True keeps active cases past their due time, False the others; ``subject``
        keeps content or account cases. ``hide_own_pending`` leaves out cases awaiting a
        second review whose first review was the viewer's (they may not take it: the work
        queue should not offer it). Lists
        metadata only, so it is not audited; opening a case is."""
        require_cases(viewer)
        config = self.config()
        states = tuple(states)
        if not states or any(s not in STATES for s in states):
            raise InvalidInput(f"states must be some of {', '.join(STATES)}, not {states!r}")
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 500:
            raise InvalidInput(f"limit must be a whole number from 1 to 500, not {limit!r}")
        if priority is not None and priority not in PRIORITY_RANK:
            raise InvalidInput(f"priority must be one of {', '.join(PRIORITIES)}, not {priority!r}")
        if overdue is not None and not isinstance(overdue, bool):
            raise InvalidInput(f"overdue must be true or false, not {overdue!r}")
        if subject is not None and subject not in SUBJECTS:
            raise InvalidInput(f"subject must be one of {', '.join(SUBJECTS)}, not {subject!r}")
        allowed = reviewer_queues(viewer, config)
        if queue is not None:
            require_queue(viewer, queue, config)
        elif allowed is not None and not allowed:
            return []
        count = (
            select(func.count())
            .select_from(items_t)
            .where(items_t.c.case_id == cases_t.c.id)
            .scalar_subquery()
        )
        stmt = select(cases_t, count.label("item_count")).where(cases_t.c.state.in_(states))
        if queue is not None:
            stmt = stmt.where(cases_t.c.queue == queue)
        elif allowed is not None:
            stmt = stmt.where(cases_t.c.queue.in_(sorted(allowed)))
        if priority is not None:
            stmt = stmt.where(cases_t.c.priority == PRIORITY_RANK[priority])
        if subject is not None:
            stmt = stmt.where(cases_t.c.subject == subject)
        if hide_own_pending:
            mine = [n for n in (viewer.name, viewer.key_creator) if n]
            stmt = stmt.where(
                or_(
                    cases_t.c.state != AWAITING_SECOND,
                    cases_t.c.first_reviewer.is_(None),
                    cases_t.c.first_reviewer.not_in(mine),
                )
            )
        now = self._now()
        if overdue is not None:
            late = and_(cases_t.c.state.in_(ACTIVE_STATES), cases_t.c.due_at <= now)
            stmt = stmt.where(late if overdue else ~late)
        with self._read() as conn:
            if after is not None:
                mark = _case_row(conn, after)
                # A cursor must be a case this viewer may list, answered exactly as a missing
                # one: otherwise 200 against 404 would tell a reviewer which hidden cases exist
                # (and, by what sorts after it, their priority and due time).
                if allowed is not None and mark.queue not in allowed:
                    raise CaseNotFound(f"no case with id {after!r}")
                # Spelled out rather than a row-value comparison, so the due time binds as the
                # column's type (SQLite compares stored text).
                c = cases_t.c
                stmt = stmt.where(
                    or_(
                        c.priority > mark.priority,
                        and_(
                            c.priority == mark.priority,
                            or_(
                                c.due_at > mark.due_at,
                                and_(c.due_at == mark.due_at, c.id > mark.id),
                            ),
                        ),
                    )
                )
            rows = conn.execute(
                stmt.order_by(cases_t.c.priority, cases_t.c.due_at, cases_t.c.id).limit(limit)
            ).all()
        return [_summary(r, now) for r in rows]

    def queue_counts(self, viewer: Viewer) -> dict[str, QueueCount]:
        """Open, awaiting-second and overdue case counts per queue the viewer may see, empty
        queues included, in name order."""
        require_cases(viewer)
        config = self.config()
        allowed = reviewer_queues(viewer, config)
        now = self._now()
        overdue = func.sum(case((cases_t.c.due_at <= now, 1), else_=0))
        stmt = (
            select(cases_t.c.queue, cases_t.c.state, func.count(), overdue)
            .where(cases_t.c.state.in_(ACTIVE_STATES))
            .group_by(cases_t.c.queue, cases_t.c.state)
        )
        with self._read() as conn:
            rows = conn.execute(stmt).all()
        # A reviewer: each of their queues, even empty. Others: configured queues and any
        # queue that still holds cases (one since removed from the policy, say).
        names = set(allowed) if allowed is not None else set(config.queues) | {r[0] for r in rows}
        counts = {q: {"open": 0, "awaiting_second": 0, "overdue": 0} for q in sorted(names)}
        for queue, state, n, late in rows:
            if queue in counts:
                counts[queue][state] += int(n)
                counts[queue]["overdue"] += int(late or 0)
        return {
            q: QueueCount(queue=q, senior=q in config.senior_queues, **c) for q, c in counts.items()
        }

    def get_case(self, viewer: Viewer, case_id: int) -> Case:
        """The case with its items (no media bytes), matches and history; audits
        ``case.view``. Raises :class:`CaseNotFound` or :class:`Forbidden`."""
        config = self.config()
        with self._denials(viewer, "case.view", case_id), self._tx() as conn:
            require_cases(viewer)
            row = _case_row(conn, case_id)
            require_queue(viewer, row.queue, config)
            result = _load(conn, row, viewer, self._now())
            append_audit(conn, actor=viewer.actor, action="case.view", target=_target(row.id))
        return result

    # -- leases --------------------------------------------------------------------------------

    def claim(self, viewer: Viewer, case_id: int) -> Case:
        """Take the case's lease for the policy's lease time (the holder claiming again renews
        it). :class:`CaseLeased` when someone else holds a live lease. The lease is one
        conditional UPDATE, so racing claimers get exactly one winner."""
        config = self.config()
        now = self._now()
        until = now + config.lease
        with self._denials(viewer, "case.claim", case_id), self._tx() as conn:
            require_cases(viewer)
            for _attempt in range(3):
                row = _case_row(conn, case_id)
                require_queue(viewer, row.queue, config)
                check_claim(viewer, row.state, row.first_reviewer)
                claimed = conn.execute(
                    update(cases_t)
                    .where(
                        cases_t.c.id == row.id,
                        cases_t.c.state == row.state,
                        cases_t.c.queue == row.queue,
                        or_(
                            cases_t.c.lease_holder.is_(None),
                            cases_t.c.lease_holder == viewer.name,
                            cases_t.c.lease_until <= now,
                        ),
                    )
                    .values(lease_holder=viewer.name, lease_until=until)
                ).rowcount
                if claimed == 1:
                    break
                fresh = _case_row(conn, case_id)
                if (fresh.state, fresh.queue) == (row.state, row.queue):
                    raise CaseLeased(fresh.lease_holder, fresh.lease_until)
                # It changed state or queue under us: check again with what it is now.
            else:
                raise StoreUnavailable("review store: the case kept changing; try again")
            renewed = row.lease_holder == viewer.name and _live(row, now)
            detail = {"until": until.isoformat(), "renewed": renewed}
            _event(conn, row.id, now, viewer.actor, EV_CLAIM, None, detail)
            append_audit(
                conn,
                actor=viewer.actor,
                action="case.claim",
                target=_target(row.id),
                detail=detail,
            )
            return _load(conn, _case_row(conn, row.id), viewer, now)

    def release(self, viewer: Viewer, case_id: int) -> None:
        """Give up the lease. Admins and senior reviewers may release another reviewer's lease
        (recorded as forced). Releasing a case nobody holds changes nothing."""
        config = self.config()
        now = self._now()
        with self._denials(viewer, "case.release", case_id), self._tx() as conn:
            require_cases(viewer)
            row = _case_row(conn, case_id)
            require_queue(viewer, row.queue, config)
            if not _live(row, now):
                return
            forced = row.lease_holder != viewer.name
            if forced and viewer.role not in (ADMIN, SENIOR_REVIEWER):
                raise Forbidden(f"the case is claimed by {row.lease_holder}, not by you")
            released = conn.execute(
                update(cases_t)
                .where(cases_t.c.id == row.id, cases_t.c.lease_holder == row.lease_holder)
                .values(lease_holder=None, lease_until=None)
            ).rowcount
            if not released:
                return
            detail = {"holder": row.lease_holder, "forced": forced}
            _event(conn, row.id, now, viewer.actor, EV_RELEASE, None, detail)
            append_audit(
                conn,
                actor=viewer.actor,
                action="case.release",
                target=_target(row.id),
                detail=detail,
            )

    # -- content -------------------------------------------------------------------------------

    def reveal(
        self,
        viewer: Viewer,
        case_id: int,
        item_id: int,
        *,
        reason: str = "",
        then: Callable[[Connection], T] | None = None,
    ) -> T | None:
        """Record that the viewer chose to see this item unblurred: it opens a
        :data:`REVEAL_WINDOW` for ``media(clear=True)`` and counts towards deciding.
        ``then(conn)`` runs in the same transaction (the console counts the reviewer's exposure
        there, so the count commits with the reveal) and its result is returned.

        Need to know: on an active case only the holder of its live claim reveals
        (:class:`NotLeased` otherwise). A decided case shows its match details only; revealing
        there needs a stated ``reason``, kept in the history and the audit log
        (``content.reveal.closed``), and is not an exposure of review work: ``then`` is not
        run and None is returned."""
        config = self.config()
        now = self._now()
        why = check_reveal_reason(reason)
        with self._denials(viewer, "content.reveal", case_id, item_id), self._tx() as conn:
            require_cases(viewer)
            row = _case_row(conn, case_id)
            require_queue(viewer, row.queue, config)
            _item_with_media(conn, row.id, item_id)
            closed = not _active(row.state)
            check_reveal(viewer.name, row.state, row.lease_holder if _live(row, now) else None, why)
            detail = {"closed": True, "reason": why} if closed else {}
            _event(conn, row.id, now, viewer.actor, EV_REVEAL, item_id, detail)
            append_audit(
                conn,
                actor=viewer.actor,
                action="content.reveal.closed" if closed else "content.reveal",
                target=_target(row.id, item_id),
                detail=detail or None,
            )
            if closed:
                return None
            return then(conn) if then is not None else None

    def media(self, viewer: Viewer, case_id: int, item_id: int, *, clear: bool) -> Media:
        """The item's media. ``clear=False``: a blurred greyscale JPEG made here (a frame, for
        video). ``clear=True``: the original bytes, only within :data:`REVEAL_WINDOW` of this
        viewer's reveal of this item (else :class:`Forbidden`). Audits ``content.view``."""
        config = self.config()
        now = self._now()
        action = "content.view"
        with self._denials(viewer, action, case_id, item_id):
            require_cases(viewer)
            with self._read() as conn:
                row = _case_row(conn, case_id)
                require_queue(viewer, row.queue, config)
                item, sealed = _item_with_media(conn, row.id, item_id, blob=True)
                if clear and not _revealed_since(conn, row.id, item_id, viewer, now):
                    raise Forbidden(
                        f"reveal item {item_id} first (an unblurred view is allowed for "
                        f"{int(REVEAL_WINDOW.total_seconds() // 60)} minutes after revealing)"
                    )
            try:
                data = unseal(self.master_key, sealed, media_aad(row.id, item.id))
            except UnsealError as exc:
                raise StoreUnavailable(
                    f"media of case {row.id} item {item.id} cannot be decrypted ({exc}); was "
                    "the master key changed?"
                ) from None
            media_type = item.media_type or "application/octet-stream"
            out = (
                Media(data, media_type)
                if clear
                else Media(blurred_preview(data, media_type), PREVIEW_TYPE)
            )
            with self._tx() as conn:
                if clear:
                    _event(conn, row.id, now, viewer.actor, EV_VIEW, item.id, {"clear": True})
                append_audit(
                    conn,
                    actor=viewer.actor,
                    action=action,
                    target=_target(row.id, item.id),
                    detail={"clear": clear},
                )
        return out

    # -- decisions -----------------------------------------------------------------------------

    def decide(
        self,
        viewer: Viewer,
        case_id: int,
        decision: Decision,
        *,
        policy_review: ReviewSettings,
        then: Callable[[Connection, Outcome], None] | None = None,
    ) -> Outcome:
        """Apply a reviewer's decision (rules: :func:`bastion.review.model.transition`).

        Needs a live lease held by the viewer; confirming or clearing needs every item whose
        verdict said ``view_required`` (and that has media) revealed by this viewer. The lease
        is released. A final not-abusive decision (with four-eyes, only once a second reviewer
        agreed) records a dispute for every matched bank entry. ``then(conn, outcome)`` runs
        inside the transaction.

        With ``disable_entries`` (a senior reviewer's or an admin's: the rules refuse anyone
        else), the disputed entries are then disabled in their banks through
        :meth:`Store.disable_entry`: that is a bank write in its own transaction, run only
        after the decision has committed (the decision stands even if an entry is gone by
        then; ``Outcome.disable_errors`` says so).
        """
        if not isinstance(decision, Decision):
            raise InvalidInput("decision must be a bastion.review.Decision")
        config = self.config()
        now = self._now()
        with self._denials(viewer, "case.decide", case_id), self._tx() as conn:
            require_cases(viewer)
            row = _case_row(conn, case_id, lock=True)
            require_queue(viewer, row.queue, config)
            facts = CaseFacts(
                state=row.state,
                queue=row.queue,
                first_reviewer=row.first_reviewer,
                classification=row.classification,
                labels=tuple(row.labels or ()),
                subject=row.subject,
            )
            step = transition(
                facts,
                viewer,
                decision,
                four_eyes=bool(policy_review.four_eyes),
                escalation_queue=policy_review.escalation_queue,
            )
            if not (row.lease_holder == viewer.name and _live(row, now)):
                raise NotLeased("claim the case before deciding (you hold no live lease on it)")
            current = _load(conn, row, viewer, now)
            if needs_reveal(decision) and current.must_reveal():
                raise RevealRequired(current.must_reveal())
            detectors = _named_detectors(current, decision)
            active = None if step.final else row.uploader_id
            conn.execute(
                update(cases_t)
                .where(cases_t.c.id == row.id)
                .values(
                    state=step.state,
                    queue=step.queue,
                    first_reviewer=step.first_reviewer,
                    second_reviewer=step.second_reviewer,
                    classification=step.classification,
                    labels=list(step.labels),
                    decided_at=now if step.final else None,
                    active_uploader=active if row.subject != ACCOUNT else None,
                    active_account=active if row.subject == ACCOUNT else None,
                    lease_holder=None,
                    lease_until=None,
                    updated_at=now,
                )
            )
            detail: dict[str, Any] = {
                "decision": decision.kind,
                "outcome": step.event,
                "state": step.state,
                "queue": step.queue,
            }
            if step.escalated:
                detail["from_queue"] = row.queue
            if decision.kind == "confirmed":
                detail.update(classification=decision.classification, labels=list(decision.labels))
            if decision.kind == "not_abusive":
                detail.update(reason=decision.reason, disable_entries=decision.disable_entries)
                if row.subject == ACCOUNT:
                    detail["detectors"] = list(detectors)
            audit_detail = dict(detail)
            if viewer.via is not None:
                audit_detail["via"] = viewer.via  # which key, when not the console
            if decision.note:
                detail["note"] = decision.note  # history only: audit rows carry no free text
            kind = EV_ESCALATE if step.escalated else EV_DECIDE
            _event(conn, row.id, now, viewer.actor, kind, None, detail)
            append_audit(
                conn,
                actor=viewer.actor,
                action=f"case.{kind}",
                target=_target(row.id),
                detail=audit_detail,
            )
            disputed: list[tuple[str, int]] = []
            if step.state == NOT_ABUSIVE:
                disputed = matched_entries(i.matches for i in current.items)
                for bank, entry_id in disputed:
                    conn.execute(
                        insert(disputes_t).values(
                            entry_id=entry_id,
                            bank=bank,
                            case_id=row.id,
                            reviewer=viewer.name,
                            reason=decision.reason,
                            disable=step.disable,
                            at=now,
                        )
                    )
                    append_audit(
                        conn,
                        actor=viewer.actor,
                        action="entry.dispute",
                        target=f"{bank}/{entry_id}",
                        detail={
                            "case": row.id,
                            "reason": decision.reason,
                            "disable": step.disable,
                        },
                    )
            if row.subject == ACCOUNT and step.final:
                _record_findings(conn, current, step.state, detectors, viewer, now)
            on_confirmed = (
                ACCOUNT_ON_CONFIRMED if row.subject == ACCOUNT else policy_review.on_confirmed
            )
            actions = tuple(on_confirmed) if step.state == CONFIRMED else ()
            outcome = Outcome(
                case=_load(conn, _case_row(conn, row.id), viewer, now),
                final=step.final,
                actions=actions,
                event=step.event,
                disputed=tuple(disputed),
            )
            if then is not None:
                then(conn, outcome)
        if disputed and step.disable:
            outcome = self._disable(viewer, row.id, disputed, decision.reason, outcome)
        return outcome

    def detector_precision(self) -> list[DetectorPrecision]:
        """Per risk detector, how final decisions on the account cases it fired in went, and its
        precision (confirmed / (confirmed + not abusive); None before any). Counts only, no
        account, so reading them is not audited."""
        stmt = select(findings_t.c.detector, findings_t.c.outcome, func.count()).group_by(
            findings_t.c.detector, findings_t.c.outcome
        )
        with self._read() as conn:
            rows = conn.execute(stmt).all()
        counts: dict[str, dict[str, int]] = {}
        for detector, outcome, n in rows:
            counts.setdefault(detector, {})[outcome] = int(n)
        return [
            DetectorPrecision(
                detector=d,
                confirmed=c.get(CONFIRMED, 0),
                not_abusive=c.get(NOT_ABUSIVE, 0),
                unjudged=c.get(UNJUDGED, 0),
            )
            for d, c in sorted(counts.items())
        ]

    def _disable(
        self,
        viewer: Viewer,
        case_id: int,
        entries: Iterable[tuple[str, int]],
        reason: str,
        outcome: Outcome,
    ) -> Outcome:
        """Disable disputed entries, each in the bank it is in now (it may have been renamed)."""
        disabled: list[tuple[str, int]] = []
        errors: list[str] = []
        text = f"not abusive (case {case_id}, {viewer.name}): {reason}"[:2000]
        for bank, entry_id in entries:
            try:
                current = self.store.get_entry(entry_id).bank
                self.store.disable_entry(current, entry_id, text)
                self.store.record_audit(
                    actor=viewer.actor,
                    action="bank.entry.disable",
                    target=f"{current}/{entry_id}",
                    detail={"reason": text, "case": case_id},
                )
                disabled.append((current, entry_id))
            except (StoreError, SQLAlchemyError) as exc:
                errors.append(f"{bank}/{entry_id}: {exc}")
        return replace(outcome, disabled=tuple(disabled), disable_errors=tuple(errors))

    # -- helpers -------------------------------------------------------------------------------

    @contextmanager
    def _denials(
        self, viewer: Viewer, action: str, case_id: object, item_id: object = None
    ) -> Iterator[None]:
        """Record refused access attempts (``access.denied``) in the audit log, then re-raise."""
        try:
            yield
        except Forbidden as exc:
            target = f"case:{case_id}" if item_id is None else f"case:{case_id}/item:{item_id}"
            # The refusal stands whether or not it could be recorded.
            with contextlib.suppress(StoreError, SQLAlchemyError):
                self.store.record_audit(
                    actor=viewer.actor,
                    action="access.denied",
                    target=target[:2000],
                    detail={"attempted": action, "role": viewer.role, "why": str(exc)[:500]},
                )
            raise


# -- row helpers -------------------------------------------------------------------------------


def _new_id(result: CursorResult[Any]) -> int:
    """The primary key an INSERT made."""
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    return text.splitlines()[0] if text else type(orig).__name__


def _target(case_id: int, item_id: int | None = None) -> str:
    return f"case:{case_id}" if item_id is None else f"case:{case_id}/item:{item_id}"


def _valid_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= _MAX_ID


def _case_row(conn: Connection, case_id: object, *, lock: bool = False) -> Row[Any]:
    row = None
    if _valid_id(case_id):
        stmt = select(cases_t).where(cases_t.c.id == case_id)
        if lock:
            stmt = stmt.with_for_update()
        row = conn.execute(stmt).first()
    if row is None:
        raise CaseNotFound(f"no case with id {case_id!r}")
    return row


def _active_case(conn: Connection, uploader: str, subject: str) -> Row[Any] | None:
    key = cases_t.c.active_account if subject == ACCOUNT else cases_t.c.active_uploader
    return conn.execute(
        select(cases_t).where(key == uploader, cases_t.c.state.in_(ACTIVE_STATES)).with_for_update()
    ).first()


def _named_detectors(case: Case, decision: Decision) -> tuple[str, ...]:
    """The detectors a not-abusive decision on an account case is recorded against: those it
    names (each must have fired in the case), else every one that fired."""
    if case.subject != ACCOUNT or decision.kind != "not_abusive":
        return ()
    fired = case.detectors_fired
    unknown = [d for d in decision.detectors if d not in fired]
    if unknown:
        shown = ", ".join(fired) or "none"
        raise DecisionMismatch(
            f"detector(s) {', '.join(unknown)} did not fire in this case (fired: {shown})"
        )
    return decision.detectors or fired


def _record_findings(
    conn: Connection,
    case: Case,
    state: str,
    named: Sequence[str],
    viewer: Viewer,
    now: datetime,
) -> None:
    """One row per detector that fired in a finally decided account case (see
    :class:`~bastion.review.rows.DetectorFindingRow`)."""
    rows = []
    for detector in case.detectors_fired:
        if state == CONFIRMED:
            outcome = CONFIRMED
        else:
            outcome = NOT_ABUSIVE if detector in named else UNJUDGED
        rows.append(
            {
                "case_id": case.id,
                "account": case.uploader_id or "",
                "detector": detector,
                "outcome": outcome,
                "reviewer": viewer.name,
                "at": now,
            }
        )
    if rows:
        conn.execute(insert(findings_t), rows)


def _item_with_media(
    conn: Connection, case_id: int, item_id: object, *, blob: bool = False
) -> tuple[Row[Any], bytes]:
    row = None
    if _valid_id(item_id):
        row = conn.execute(
            select(items_t).where(items_t.c.id == item_id, items_t.c.case_id == case_id)
        ).first()
    if row is None:
        raise CaseNotFound(f"case {case_id} has no item {item_id!r}")
    column = media_t.c.sealed if blob else media_t.c.item_id
    found = conn.execute(select(column).where(media_t.c.item_id == row.id)).first()
    if found is None:
        why = f": {row.media_note}" if row.media_note else ""
        raise NoMedia(f"item {row.id} has no stored media{why}")
    return row, (bytes(found[0]) if blob else b"")


def _revealed_since(
    conn: Connection, case_id: int, item_id: int, viewer: Viewer, now: datetime
) -> bool:
    return (
        conn.execute(
            select(events_t.c.id)
            .where(
                events_t.c.case_id == case_id,
                events_t.c.item_id == item_id,
                events_t.c.kind == EV_REVEAL,
                events_t.c.actor == viewer.actor,
                events_t.c.at > now - REVEAL_WINDOW,
            )
            .limit(1)
        ).first()
        is not None
    )


def _event(
    conn: Connection,
    case_id: int,
    at: datetime,
    actor: str,
    kind: str,
    item_id: int | None,
    detail: dict[str, Any],
) -> None:
    conn.execute(
        insert(events_t).values(
            case_id=case_id, at=at, actor=actor, kind=kind, item_id=item_id, detail=detail
        )
    )


def _live(row: Row[Any], now: datetime) -> bool:
    return row.lease_holder is not None and row.lease_until is not None and row.lease_until > now


def _active(state: str) -> bool:
    return state in ACTIVE_STATES


def _case_fields(r: Row[Any], now: datetime) -> dict[str, Any]:
    """What a case summary and a full case both say of a ``cases`` row. An expired lease is
    shown as no lease."""
    live = _live(r, now)
    return {
        "id": r.id,
        "state": r.state,
        "queue": r.queue,
        "priority": PRIORITIES[r.priority],
        "opened_at": r.opened_at,
        "updated_at": r.updated_at,
        "due_at": r.due_at,
        "overdue": _active(r.state) and r.due_at <= now,
        "uploader_id": r.uploader_id,
        "rule": r.rule,
        "reason": r.reason,
        "lease_holder": r.lease_holder if live else None,
        "lease_until": r.lease_until if live else None,
        "first_reviewer": r.first_reviewer,
        "classification": r.classification,
        "decided_at": r.decided_at,
        "subject": r.subject,
    }


def _summary(r: Row[Any], now: datetime) -> CaseSummary:
    return CaseSummary(**_case_fields(r, now), item_count=int(r.item_count))


def _load(conn: Connection, r: Row[Any], viewer: Viewer, now: datetime) -> Case:
    items = conn.execute(
        select(items_t, media_t.c.item_id.label("media_item"))
        .outerjoin(media_t, media_t.c.item_id == items_t.c.id)
        .where(items_t.c.case_id == r.id)
        .order_by(items_t.c.id)
    ).all()
    events = conn.execute(
        select(events_t).where(events_t.c.case_id == r.id).order_by(events_t.c.id)
    ).all()
    reveals = [e for e in events if e.kind == EV_REVEAL and e.actor == viewer.actor and e.item_id]
    return Case(
        **_case_fields(r, now),
        second_reviewer=r.second_reviewer,
        labels=tuple(r.labels or ()),
        items=tuple(_item(i) for i in items),
        events=tuple(
            CaseEvent(e.id, e.at, e.actor, e.kind, e.item_id, dict(e.detail or {})) for e in events
        ),
        revealed=frozenset(e.item_id for e in reveals),
        viewable=frozenset(e.item_id for e in reveals if e.at > now - REVEAL_WINDOW),
    )


def _item(i: Row[Any]) -> CaseItem:
    return CaseItem(
        id=i.id,
        case_id=i.case_id,
        added_at=i.added_at,
        kind=i.kind,
        format=i.format,
        content_id=i.content_id,
        uploader_id=i.uploader_id,
        conversation_id=i.conversation_id,
        source=i.source,
        age_band=i.age_band,
        scan_id=i.scan_id,
        verdict=i.verdict,
        rule=i.rule,
        reason=i.reason,
        priority=PRIORITIES[i.priority],
        queue=i.queue,
        actions=tuple(i.actions or ()),
        view_required=bool(i.view_required),
        due_at=i.due_at,
        signals=list(i.signals or ()),
        matches=list(i.matches or ()),
        has_media=i.media_item is not None,
        media_type=i.media_type,
        filename=i.filename,
        media_size=i.media_size,
        media_note=i.media_note,
    )


# -- input validation --------------------------------------------------------------------------


def _verdict(verdict: Any) -> dict[str, Any]:
    """The verdict's fields, checked: only review and block verdicts open cases."""
    try:
        decision = verdict.decision
        values = {
            "decision": decision,
            "rule": verdict.rule,
            "reason": verdict.reason,
            "priority": verdict.priority,
            "queue": verdict.queue,
            "actions": tuple(verdict.actions),
            "view_required": verdict.view_required,
        }
    except (AttributeError, TypeError):
        raise InvalidInput("verdict must be a bastion.policy.Verdict") from None
    if decision not in ("review", "block"):
        raise InvalidInput(f"a {decision!r} verdict does not open a case (only review and block)")
    if values["priority"] not in PRIORITY_RANK:
        raise InvalidInput(f"verdict priority must be one of {', '.join(PRIORITIES)}")
    short_text("verdict queue", values["queue"], 64, empty=False)
    if values["rule"] is not None:
        short_text("verdict rule", values["rule"], 255)
    short_text("verdict reason", values["reason"], 10_000)
    if not isinstance(values["view_required"], bool):
        raise InvalidInput("verdict view_required must be true or false")
    for action in values["actions"]:
        short_text("verdict action", action, 64, empty=False)
    return values


def _optional(what: str, value: object, limit: int) -> str | None:
    return None if value is None else short_text(what, value, limit)


def _item_values(item: NewItem) -> tuple[dict[str, Any], bytes | None, str]:
    """Checked column values for the item, the media to seal (None if none or too large), and
    the note saying why media was not kept."""
    if not isinstance(item, NewItem):
        raise InvalidInput("item must be a bastion.review.NewItem")
    scan_id = item.scan_id
    if scan_id is not None and not _valid_id(scan_id):
        raise InvalidInput(f"scan_id must be a positive whole number, not {scan_id!r}")
    filename = _optional("filename", item.filename, 4096)
    if filename is not None:
        filename = os.path.basename(filename.replace("\\", "/"))[:255] or None
    values: dict[str, Any] = {
        "kind": short_text("kind", item.kind, 32, empty=False),
        "format": _optional("format", item.format, 32),
        "content_id": _optional("content_id", item.content_id, 512),
        "uploader_id": _optional("uploader_id", item.uploader_id, 512) or None,
        "conversation_id": _optional("conversation_id", item.conversation_id, 512),
        "source": _optional("source", item.source, 255),
        "age_band": _optional("age_band", item.age_band, 16),
        "scan_id": scan_id,
        "signals": json_doc("signals", item.signals, list, _MAX_JSON),
        "matches": json_doc("matches", item.matches, list, _MAX_JSON),
        "filename": filename,
    }
    media, note, media_type = item.media, "", None
    if media is not None:
        if not isinstance(media, bytes | bytearray | memoryview):
            raise InvalidInput(f"media must be bytes, not {type(media).__name__}")
        media = bytes(media)
        media_type = _media_type(item.media_type, media)
        values["media_size"] = len(media)
        if not media:
            media, note = None, "media was empty"
        elif len(media) > MAX_MEDIA_BYTES:
            note = (
                f"media not kept for review: {len(media)} bytes is over the "
                f"{MAX_MEDIA_BYTES} byte limit"
            )
            media = None
    elif item.media_type is not None:
        media_type = _media_type(item.media_type, b"")
    values["media_type"] = media_type
    return values, media, note


def _media_type(given: object, data: bytes) -> str:
    """A checked ``type/subtype``, or sniffed from the bytes (images only) when not given."""
    if given is not None:
        text = short_text("media_type", given, 255, empty=False).strip().lower()
        main, _, sub = text.partition("/")
        if not main or not sub or any(c.isspace() for c in text):
            raise InvalidInput(f"media_type must look like 'image/jpeg', not {given!r}")
        return text
    if data:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data)) as img:
                mime = Image.MIME.get(img.format or "")
            if mime:
                return mime
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
            pass
        except Image.DecompressionBombError:
            pass
    return "application/octet-stream"


__all__ = ["CaseIntake", "ReviewStore", "media_aad"]
