"""API for contact safety's events and per-account risk (issue 15).

The platform's backend sends events with a key holding the ``events`` scope: ``POST /v1/events``
takes a batch of up to 1,000 (metadata and flags only: an unknown field, such as message text,
refuses that event). Each event gets its own result (``ok``, ``duplicate`` for a re-sent event,
``error`` with the reason); the valid ones are applied in one transaction. A ``text`` event
carries text the platform may lawfully see: Bastion matches it against the keyword banks and
stores only the ``flag`` events it derives (docs/contact-events.md#flags-from-text); the text is
never stored, logged or echoed. A key with
``risk`` reads an account's risk (score, band, each detector's points and evidence) and its
event timeline; every timeline read is audited. Erasing an account's events, and legal holds
that keep them, need ``admin``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from bastion.api.auth import require
from bastion.api.openapi import NO_NUL
from bastion.api.problems import AUTH_RESPONSES, Problem, problem_for, problem_responses
from bastion.banks.hygiene import BankRules
from bastion.banks.keywords import screen_text
from bastion.contact.model import MAX_BATCH
from bastion.contact.store import (
    AccountHeld,
    ContactStore,
    EventNotFound,
    HoldConflict,
    IngestResult,
)
from bastion.contact.textflags import TextPlan, expand
from bastion.http_auth import Principal, client_address
from bastion.runtime import Runtime, RuntimeDep
from bastion.signals.base import Signal, SignalType
from bastion.store import InvalidInput, StoreUnavailable

router = APIRouter(prefix="/v1", responses=AUTH_RESPONSES, tags=["contact"])

EventsKey = Annotated[Principal, Depends(require("events"))]
RiskKey = Annotated[Principal, Depends(require("risk"))]
AdminKey = Annotated[Principal, Depends(require("admin"))]
AccountPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=128,
        pattern=NO_NUL,
        description="The platform's account id.",
    ),
]


class EventsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[Any] = Field(
        ...,
        min_length=1,
        description=f"Up to {MAX_BATCH} events (docs/contact-events.md), each an object with "
        "event_id, time, type and the type's fields. No message text: unknown fields are "
        "refused. The one exception is a `text` event (account, target, conversation, text): "
        "text the platform may lawfully see, matched against the keyword banks and never "
        "stored; only the `flag` events it derives are.",
    )


class DerivedFlag(BaseModel):
    kind: str
    event_id: str = Field(description="The derived flag's id: the text event's id and the kind.")
    status: Literal["ok", "duplicate", "error"]


class EventResult(BaseModel):
    index: int
    event_id: str | None
    status: Literal["ok", "duplicate", "error"]
    error: str | None = None
    errors: list[dict[str, str]] = Field(default_factory=list)
    flags: list[DerivedFlag] | None = Field(
        None,
        description="A `text` event only: the flags its text derived (empty when nothing "
        "matched); the text itself is not stored.",
    )


class EventsOut(BaseModel):
    accepted: int = Field(description="Events stored and applied.")
    duplicates: int = Field(description="Events stored before (nothing changed).")
    refused: int
    results: list[EventResult] = Field(description="One per event, in request order.")


class ContributionOut(BaseModel):
    detector: str
    points: int
    fired: bool
    explanation: str
    evidence: dict[str, int]


class RiskOut(BaseModel):
    account: str
    score: int
    band: str
    updated_at: datetime
    contributions: list[ContributionOut]


class TimelineItem(BaseModel):
    seq: int
    received_at: datetime
    event: dict[str, Any]


class TimelineOut(BaseModel):
    account: str
    events: list[TimelineItem] = Field(description="Newest first.")
    next: str | None = Field(
        None, description="The next (older) page's `before`; null on the last page."
    )


class ErasureOut(BaseModel):
    account: str
    deleted: int
    kept: int = Field(description="Events kept because the other account is under legal hold.")


class HoldIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(..., min_length=1, max_length=2000, pattern=NO_NUL)


class HoldOut(BaseModel):
    account: str
    reason: str
    held_by: str
    held_at: datetime


@router.post(
    "/events",
    response_model=EventsOut,
    responses=problem_responses(400, 413, 422, 503),
)
def post_events(rt: RuntimeDep, body: EventsIn, _: EventsKey) -> EventsOut:
    """Store and apply a batch of contact events. Idempotent per event id: a re-sent event is a
    ``duplicate`` and changes nothing; the same id with other content is an ``error``. A bad
    event gets its own error and the rest are applied; over 1,000 events refuses the batch
    (413)."""
    if len(body.events) > MAX_BATCH:
        raise Problem(
            413,
            "Content Too Large",
            detail=f"a batch holds at most {MAX_BATCH} events, got {len(body.events)}",
        )
    text_flags = dict(rt.policy.current().contact.text_flags)
    batch, plan = expand(body.events, _labels_of(rt), text_flags)
    try:
        results = ContactStore.for_runtime(rt).ingest(batch, max_batch=max(len(batch), MAX_BATCH))
    except (StoreUnavailable, InvalidInput) as exc:
        raise problem_for(exc) from None
    out = [_result(index, step, results) for index, step in enumerate(plan)]
    return EventsOut(
        accepted=sum(1 for r in out if r.status == "ok"),
        duplicates=sum(1 for r in out if r.status == "duplicate"),
        refused=sum(1 for r in out if r.status == "error"),
        results=out,
    )


def _labels_of(rt: Runtime) -> Callable[[str], list[str]]:
    """The labels of the keyword entries a text matches, after the allow banks (as a text scan
    screens them); the banks' rules are read once per request, at the first match."""
    rules: dict[str, BankRules] = {}

    def labels_of(text: str) -> list[str]:
        with rt.index.read() as matcher:
            found = matcher.match([Signal(SignalType.TEXT, text)])
        if not found:
            return []
        if not rules:
            rules.update(rt.store.bank_rules())
        return [label for m in screen_text(found, rules).kept for label in m.labels]

    return labels_of


def _result(index: int, step: int | TextPlan, results: list[IngestResult]) -> EventResult:
    """The answer for the batch's event at ``index``, from what ingest said of its expansion."""
    if isinstance(step, int):
        r = results[step]
        errors = [dict(e) for e in r.errors]
        return EventResult(
            index=index, event_id=r.event_id, status=r.status, error=r.error, errors=errors
        )
    if step.errors:
        message = "; ".join(
            f"{e['loc']}: {e['msg']}" if e["loc"] else e["msg"] for e in step.errors
        )
        return EventResult(
            index=index,
            event_id=step.event_id,
            status="error",
            error=message,
            errors=[dict(e) for e in step.errors],
        )
    derived = [results[p] for p in step.positions]
    flags = [
        DerivedFlag(kind=kind, event_id=r.event_id or "", status=r.status)
        for kind, r in zip(step.kinds, derived, strict=True)
    ]
    failed = next((r for r in derived if r.status == "error"), None)
    status: Literal["ok", "duplicate", "error"] = "ok"
    if failed is not None:
        status = "error"
    elif derived and all(r.status == "duplicate" for r in derived):
        status = "duplicate"
    return EventResult(
        index=index,
        event_id=step.event_id,
        status=status,
        error=None if failed is None else f"derived flag {failed.event_id}: {failed.error}",
        flags=flags,
    )


@router.get(
    "/accounts/{account_id}/risk",
    response_model=RiskOut,
    responses=problem_responses(404, 422, 503),
)
def get_risk(rt: RuntimeDep, account_id: AccountPath, _: RiskKey) -> RiskOut:
    """The account's current risk: score, band, and each detector's points, explanation and
    evidence counts. Signals, not proof: a high band opens a case for a human, never an
    action on its own."""
    try:
        risk = ContactStore.for_runtime(rt).risk(account_id)
    except StoreUnavailable as exc:
        raise problem_for(exc) from None
    if risk is None:
        raise Problem(404, "Not found", detail=f"no events name account {account_id!r}")
    return RiskOut(
        account=risk.account,
        score=risk.score,
        band=risk.band,
        updated_at=risk.updated_at,
        contributions=[
            ContributionOut(
                detector=c.detector,
                points=c.points,
                fired=c.fired,
                explanation=c.explanation,
                evidence=dict(c.evidence),
            )
            for c in risk.contributions
        ],
    )


@router.get(
    "/accounts/{account_id}/timeline",
    response_model=TimelineOut,
    responses=problem_responses(404, 422, 503),
)
def get_timeline(
    request: Request,
    rt: RuntimeDep,
    account_id: AccountPath,
    principal: RiskKey,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    before: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=128,
            pattern=NO_NUL,
            description="An event id (the previous page's `next`): the page starts after it.",
        ),
    ] = None,
) -> TimelineOut:
    """The events that name the account, newest first (metadata and flags only). Every read is
    audited (``contact.timeline``, with the key and address). Page with ``next``; 404 when
    ``before`` names no event of this account."""
    try:
        page = ContactStore.for_runtime(rt).timeline(
            account_id,
            actor=f"key:{principal.name}",
            limit=limit,
            before=before,
            remote_addr=client_address(request, rt.settings),
        )
    except (EventNotFound, StoreUnavailable, InvalidInput) as exc:
        raise problem_for(exc) from None
    cursor = page[-1].event["event_id"] if len(page) == limit else None
    return TimelineOut(
        account=account_id,
        events=[TimelineItem(seq=e.seq, received_at=e.received_at, event=e.event) for e in page],
        next=cursor,
    )


@router.delete(
    "/accounts/{account_id}/events",
    response_model=ErasureOut,
    responses=problem_responses(409, 422, 503),
)
def erase_account(
    request: Request, rt: RuntimeDep, account_id: AccountPath, principal: AdminKey
) -> ErasureOut:
    """Erase every event naming the account (admin), except events whose other account is under
    legal hold or review (an account case); 409 when the account itself is. Audited
    (``contact.erase``)."""
    try:
        done = ContactStore.for_runtime(rt).erase(
            account_id,
            actor=f"key:{principal.name}",
            remote_addr=client_address(request, rt.settings),
        )
    except (AccountHeld, StoreUnavailable, InvalidInput) as exc:
        raise problem_for(exc) from None
    return ErasureOut(account=done.account, deleted=done.deleted, kept=done.kept)


@router.put(
    "/accounts/{account_id}/hold",
    response_model=HoldOut,
    responses=problem_responses(409, 422, 503),
)
def hold_account(
    rt: RuntimeDep, account_id: AccountPath, body: HoldIn, principal: AdminKey
) -> HoldOut:
    """Put the account under legal hold (admin): its events are neither purged nor erased until
    released. Audited (``contact.hold``)."""
    try:
        hold = ContactStore.for_runtime(rt).hold(
            account_id, actor=f"key:{principal.name}", reason=body.reason
        )
    except (HoldConflict, StoreUnavailable, InvalidInput) as exc:
        raise problem_for(exc) from None
    return HoldOut(
        account=hold.account, reason=hold.reason, held_by=hold.held_by, held_at=hold.held_at
    )


@router.delete(
    "/accounts/{account_id}/hold",
    status_code=204,
    responses=problem_responses(409, 422, 503),
)
def release_account(
    rt: RuntimeDep,
    account_id: AccountPath,
    principal: AdminKey,
    reason: Annotated[str, Query(min_length=1, max_length=2000, pattern=NO_NUL)],
) -> None:
    """End the account's legal hold (admin), with a reason. Audited (``contact.release``)."""
    try:
        ContactStore.for_runtime(rt).release(
            account_id, actor=f"key:{principal.name}", reason=reason
        )
    except (HoldConflict, StoreUnavailable, InvalidInput) as exc:
        raise problem_for(exc) from None
