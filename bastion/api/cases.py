"""``/v1/cases``: the review queue for platforms that build their own tooling (scope ``review``).

Who acts. A case decision is a human's, so every call here acts as one console user: the API key
must be bound to that user (the key's ``user``, stored with it), which only the user themself (the
console's My API keys) or an operator on the host (``bastion key create tooling --user alice
--scopes review,media``) can do; the user must exist and be enabled when the key is made. The
user's role and queues are read afresh on every request, exactly as a console session reads them,
and the store's review rules apply unchanged: a reviewer reads and decides only in their own, non-
senior queues; an auditor is refused every case (no content); leases are the console's
(``lease_holder`` is the user's name, whichever channel claimed); four-eyes compares user names, so
a first confirmation through the API and a second through the console (or the other way round) must
come from two different users, and the same user twice is refused, as is a second review through a
key the first reviewer created. A decision's audit row names the key (``via``). A key *not* bound
to a user (a platform key, even one with ``admin``) is refused here outright: reading case content
is attributable to a person with a role, or does not happen. A disabled user's keys stop working at
once, here and on every other route (bastion.api.auth). Match distances are banded for keys without
``export``, as ``/v1/scan`` bands them (bastion.api.disclosure). Users are never deleted (only
disabled), so a binding cannot pass to a later user of the same name.

One decision path. Claims, releases, reveals, media and reads call :class:`ReviewStore`; a
decision calls :func:`bastion.pipeline.decide`, the console's own function (evidence, the
policy's actions and exchange feedback in the decision's transaction).

Audit. Opening a case (``case.view``), claims, releases, reveals, media reads
(``content.view``) and decisions are written by the review store with the user as actor
(``user:alice``), as in the console; refusals are written as ``access.denied``. Listing is
metadata only and, as in the console, not audited. The key's own use is in its ``key.use`` rows.

Account cases. A case's ``subject`` is ``content`` or ``account``: an account case (opened by
the worker from behavioural risk, bastion.contact.cases) holds snapshots of the account's risk
as its items (kind ``account``, no media), is confirmed as ``grooming`` or ``sextortion`` (the
CyberTipline incident type it maps to is in ``incident_type``), and found not abusive per
detector (``detectors``; none named means every detector that fired). Its confirmation queues
``restrict_account`` only. ``GET /v1/cases/detectors`` gives each detector's precision.

Media. Case reads never carry media bytes. With the ``media`` scope as well, an item's media can
be fetched: blurred and greyscale by default, clear only within a few minutes of this user's
deliberate reveal (``POST .../reveal``, which counts towards the user's daily exposure, as in
the console).
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from sqlalchemy.exc import SQLAlchemyError

from bastion import pipeline
from bastion.accounts.store import UserNotFound
from bastion.api.auth import require
from bastion.api.disclosure import sees_values, shown_distance, shown_reason
from bastion.api.problems import AUTH_RESPONSES, Problem, problem_for, problem_responses
from bastion.http_auth import Principal, client_address
from bastion.index.matcher import DEFAULT_PDQ_THRESHOLD
from bastion.index.probing import BANDS, band
from bastion.reports.drafting import JURISDICTIONS
from bastion.reports.model import ACCOUNT_INCIDENT_TYPES
from bastion.review import (
    Case,
    CaseClosed,
    CaseLeased,
    CaseNotFound,
    CaseSummary,
    Decision,
    Forbidden,
    InvalidDecision,
    NoMedia,
    NotLeased,
    Outcome,
    PreviewUnavailable,
    RevealRequired,
    Viewer,
)
from bastion.review.model import (
    ACCOUNT_CLASSIFICATIONS,
    CLASSIFICATIONS,
    STATE_FILTERS,
    require_cases,
)
from bastion.review.preview import inline_media_type
from bastion.runtime import Runtime, RuntimeDep, runtime
from bastion.store import InvalidInput, StoreError, StoreUnavailable

SCOPE = "review"
MEDIA_SCOPE = "media"
MAX_ID = 2**63 - 1
router = APIRouter(prefix="/v1/cases", tags=["cases"], responses=AUTH_RESPONSES)
ReviewKey = Annotated[Principal, Depends(require(SCOPE))]
CaseId = Annotated[int, Path(ge=1, le=MAX_ID, description="The case's id")]
ItemId = Annotated[int, Path(ge=1, le=MAX_ID, description="The item's id within the case")]

_READ = problem_responses(404, 422, 503)
_LIST = problem_responses(404, 422, 503)
_ACT = problem_responses(404, 409, 422, 503)
_BODY = problem_responses(400, 404, 409, 422, 503)


# -- who acts ---------------------------------------------------------------------------------


def _acting(request: Request, key: Principal) -> Viewer:
    """The console user this key acts as, read now (role and queues as of this request)."""
    rt = runtime(request)
    why = None
    if key.user is None:
        why = (
            "this API key is not bound to a console user; cases are read and decided by people: "
            "a user creates their own key in the console (My API keys), or an operator runs "
            "`bastion key create tooling --user alice --scopes review` on the host"
        )
    else:
        try:
            user = rt.accounts.get_user(key.user)
        except UserNotFound:
            why = f"the console user {key.user!r} this key is bound to does not exist"
        else:
            if user.disabled:
                why = f"the console user {key.user!r} this key is bound to is disabled"
            else:
                creator = (key.created_by or "").partition("user:")
                return Viewer(
                    name=user.name,
                    role=user.role,
                    queues=tuple(user.queues),
                    via=f"key:{key.key_id}" if key.key_id else f"key:{key.name}",
                    key_creator=creator[2] if not creator[0] and creator[1] else None,
                )
    # The refusal stands whether or not it could be recorded.
    with contextlib.suppress(StoreError, SQLAlchemyError):
        rt.audit(request, key, "access.denied", request.url.path[:2000], why=why)
    raise Problem(403, "Forbidden", detail=why, code="not_bound")


def _media_key(key: Principal) -> None:
    if not key.allows(MEDIA_SCOPE):
        raise Problem(
            403, "Forbidden", detail="this API key lacks the 'media' scope", code="no_media_scope"
        )


_ERRORS = (
    CaseNotFound,
    NoMedia,
    PreviewUnavailable,
    Forbidden,
    CaseLeased,
    NotLeased,
    CaseClosed,
    RevealRequired,
    InvalidDecision,
    InvalidInput,
    StoreUnavailable,
)


# -- models -----------------------------------------------------------------------------------


Note = Annotated[
    str,
    Field(max_length=10_000, pattern=r"^[^\x00]*$", description="Kept in the case history only"),
]
Label = Annotated[
    str,
    Field(min_length=1, max_length=64, pattern=r"^[^;\n\x00]*[^;\n\x00\s][^;\n\x00]*$"),
]

_SUMMARY_EXAMPLE: dict[str, Any] = {
    "id": 42,
    "state": "open",
    "queue": "default",
    "priority": "high",
    "opened_at": "2025-06-01T12:00:00Z",
    "updated_at": "2025-06-01T12:00:00Z",
    "due_at": "2025-06-01T16:00:00Z",
    "overdue": False,
    "uploader_id": "user-1234",
    "rule": "csam-confident",
    "reason": "pdq match in bank demo-bridge at distance 4",
    "item_count": 1,
    "lease_holder": None,
    "lease_until": None,
    "first_reviewer": None,
    "classification": None,
    "decided_at": None,
    "subject": "content",
}


class CaseSummaryOut(BaseModel):
    """A case in the queue: metadata only (no matches, signals or history)."""

    model_config = ConfigDict(json_schema_extra={"examples": [_SUMMARY_EXAMPLE]})

    id: int
    state: Literal["open", "awaiting_second", "confirmed", "not_abusive"]
    queue: str
    priority: Literal["critical", "high", "normal", "low"]
    opened_at: datetime
    updated_at: datetime
    due_at: datetime
    overdue: bool = Field(description="Still active and past its due time")
    uploader_id: str | None
    rule: str | None
    reason: str
    item_count: int
    lease_holder: str | None = Field(description="Who holds the live lease (a user name)")
    lease_until: datetime | None
    first_reviewer: str | None = Field(description="Who confirmed first (four-eyes)")
    classification: str | None
    decided_at: datetime | None
    subject: Literal["content", "account"] = Field(
        description="content: items are pieces of content; account: items are snapshots of the "
        "account's behavioural risk (kind account, no media)"
    )


class CasePage(BaseModel):
    cases: list[CaseSummaryOut]
    next_after: int | None = Field(None, description="Pass as `after` for the next page.")


class QueueOut(BaseModel):
    queue: str
    senior: bool
    open: int
    awaiting_second: int
    overdue: int


class ItemOut(BaseModel):
    id: int
    added_at: datetime
    kind: str
    format: str | None
    content_id: str | None
    uploader_id: str | None
    conversation_id: str | None
    source: str | None
    age_band: str | None
    scan_id: int | None
    verdict: str
    rule: str | None
    reason: str
    priority: Literal["critical", "high", "normal", "low"]
    queue: str
    actions: list[str]
    view_required: bool = Field(description="Confirming or clearing needs this item revealed")
    due_at: datetime
    signals: list[dict[str, Any]]
    matches: list[dict[str, Any]] = Field(
        description="As the scan answered: bank, entry, signal_type, distance, external_id, "
        "labels, ..."
    )
    has_media: bool
    media_type: str | None
    filename: str | None
    media_size: int | None
    media_note: str
    media_url: str | None = Field(
        description="Where the key can fetch this item's media: set when the item has media "
        "and the key holds the 'media' scope"
    )


class EventOut(BaseModel):
    id: int
    at: datetime
    actor: str
    kind: str
    item_id: int | None
    detail: dict[str, Any]


_CASE_EXAMPLE: dict[str, Any] = {
    **{k: v for k, v in _SUMMARY_EXAMPLE.items() if k != "item_count"},
    "second_reviewer": None,
    "labels": [],
    "items": [
        {
            "id": 7,
            "added_at": "2025-06-01T12:00:00Z",
            "kind": "image",
            "format": "JPEG",
            "content_id": "photo-1",
            "uploader_id": "user-1234",
            "conversation_id": None,
            "source": "upload",
            "age_band": None,
            "scan_id": 99,
            "verdict": "review",
            "rule": "csam-confident",
            "reason": "pdq match in bank demo-bridge at distance 4",
            "priority": "high",
            "queue": "default",
            "actions": [],
            "view_required": True,
            "due_at": "2025-06-01T16:00:00Z",
            "signals": [{"type": "pdq", "value": "f8f8f0ce...", "quality": 100}],
            "matches": [{"bank": "demo-bridge", "entry": 1, "signal_type": "pdq", "distance": 4}],
            "has_media": True,
            "media_type": "image/jpeg",
            "filename": "photo.jpg",
            "media_size": 53012,
            "media_note": "",
            "media_url": "/v1/cases/42/items/7/media",
        }
    ],
    "history": [
        {
            "id": 1,
            "at": "2025-06-01T12:00:00Z",
            "actor": "key:uploads",
            "kind": "open",
            "item_id": 7,
            "detail": {"verdict": "review", "queue": "default"},
        }
    ],
    "must_reveal": [7],
    "revealed": [],
    "viewable": [],
    "incident_type": None,
    "detectors_fired": [],
}


class CaseOut(BaseModel):
    """A case with its items (matches and signals, never media bytes) and its history."""

    model_config = ConfigDict(json_schema_extra={"examples": [_CASE_EXAMPLE]})

    id: int
    state: Literal["open", "awaiting_second", "confirmed", "not_abusive"]
    queue: str
    priority: Literal["critical", "high", "normal", "low"]
    opened_at: datetime
    updated_at: datetime
    due_at: datetime
    overdue: bool
    uploader_id: str | None
    rule: str | None
    reason: str
    lease_holder: str | None
    lease_until: datetime | None
    first_reviewer: str | None
    second_reviewer: str | None
    classification: str | None
    labels: list[str]
    decided_at: datetime | None
    items: list[ItemOut]
    history: list[EventOut]
    must_reveal: list[int] = Field(
        description="Items this user must reveal before confirming or clearing"
    )
    revealed: list[int] = Field(description="Items this user has revealed")
    viewable: list[int] = Field(description="Items this user may fetch clear right now")
    subject: Literal["content", "account"]
    incident_type: str | None = Field(
        description="A confirmed account case's CyberTipline incident type (what its "
        "classification maps to), for drafting its report"
    )
    detectors_fired: list[str] = Field(
        description="An account case: the risk detectors that fired in any of its snapshots "
        "(what a not-abusive decision naming none is recorded against)"
    )


class LeaseOut(BaseModel):
    """The case's lease after a claim: held by the key's user until ``lease_until``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "case_id": 42,
                    "state": "open",
                    "queue": "default",
                    "lease_holder": "alice",
                    "lease_until": "2025-06-01T12:15:00Z",
                }
            ]
        }
    )

    case_id: int
    state: str
    queue: str
    lease_holder: str | None
    lease_until: datetime | None


class ConfirmIn(BaseModel):
    """Confirmed: content is abuse material (classify it A1, A2, B1 or B2); an account case's
    account grooms or extorts children (grooming or sextortion). Label it as you need."""

    model_config = ConfigDict(extra="forbid")
    decision: Literal["confirmed"]
    classification: Literal["A1", "A2", "B1", "B2", "grooming", "sextortion"] = Field(
        description=f"A content case: {', '.join(CLASSIFICATIONS)}; an account case: "
        f"{', '.join(ACCOUNT_CLASSIFICATIONS)}"
    )
    labels: list[Label] = Field(default_factory=list, max_length=64)
    note: Note = ""


DetectorName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")]


class NotAbusiveIn(BaseModel):
    """Not abuse material: every matched bank entry gets a dispute with this reason, and with
    ``disable_entries`` is disabled in its bank (subject to the same role rules as the
    console)."""

    model_config = ConfigDict(extra="forbid")
    decision: Literal["not_abusive"]
    reason: Annotated[
        str,
        Field(min_length=1, max_length=2000, pattern=r"^[^\x00]*\S[^\x00]*$"),
    ]
    disable_entries: StrictBool = False
    detectors: list[DetectorName] = Field(
        default_factory=list,
        max_length=32,
        description="An account case only: the risk detectors found wrong (each must have "
        "fired in the case); none named means every detector that fired",
    )
    note: Note = ""


class EscalateIn(BaseModel):
    """Send the case to the escalation (senior) queue."""

    model_config = ConfigDict(extra="forbid")
    decision: Literal["escalate"]
    note: Note = ""


DecisionIn = Annotated[ConfirmIn | NotAbusiveIn | EscalateIn, Field(discriminator="decision")]

_DECISION_EXAMPLES = {
    "confirmed": {
        "summary": "Confirm, with a classification and labels",
        "value": {"decision": "confirmed", "classification": "A2", "labels": ["csam"]},
    },
    "not_abusive": {
        "summary": "Not abusive: dispute the matched entries and disable them",
        "value": {
            "decision": "not_abusive",
            "reason": "a landscape photo; the bank entry is a false positive",
            "disable_entries": True,
        },
    },
    "account_confirmed": {
        "summary": "An account case: confirm grooming",
        "value": {"decision": "confirmed", "classification": "grooming"},
    },
    "account_not_abusive": {
        "summary": "An account case: not abusive, the fan-out detector was wrong",
        "value": {
            "decision": "not_abusive",
            "reason": "a youth football coach messaging the team",
            "detectors": ["fanout"],
        },
    },
    "escalate": {
        "summary": "Escalate to the senior queue",
        "value": {"decision": "escalate", "note": "needs a second opinion"},
    },
}


class DecisionOut(BaseModel):
    """What the decision did. ``event``: ``first_confirm`` (four-eyes: now awaiting a second
    reviewer), ``confirmed``, ``not_abusive``, ``escalated`` or ``disagreed`` (a second reviewer
    differed: escalated). ``actions`` are the policy's confirmation actions now queued as
    webhooks; ``disputed``/``disabled`` list ``bank/entry`` pairs."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "case_id": 42,
                    "event": "confirmed",
                    "final": True,
                    "state": "confirmed",
                    "queue": "default",
                    "classification": "A2",
                    "labels": ["csam"],
                    "first_reviewer": "alice",
                    "second_reviewer": None,
                    "actions": ["remove_content", "restrict_account", "preserve"],
                    "disputed": [],
                    "disabled": [],
                    "disable_errors": [],
                }
            ]
        }
    )

    case_id: int
    event: str
    final: bool
    state: str
    queue: str
    classification: str | None
    labels: list[str]
    first_reviewer: str | None
    second_reviewer: str | None
    actions: list[str]
    disputed: list[str]
    disabled: list[str]
    disable_errors: list[str]
    reports: list[int] = Field(
        default_factory=list,
        description="A finally confirmed case's report drafts (ids, US first): an account "
        "case's are drafted by the confirmation itself when the reporting contact "
        "(report_* settings) is configured; a person still sends them",
    )
    report_needed: bool = Field(
        default=False,
        description="The case is finally confirmed and has no CyberTipline draft: a person "
        "drafts its report(s) (POST /v1/reports or the console)",
    )


class DetectorOut(BaseModel):
    """How final decisions on the account cases a risk detector fired in went."""

    detector: str
    confirmed: int
    not_abusive: int
    unjudged: int = Field(
        description="Fired in a case found not abusive, but not named by the reviewer"
    )
    precision: float | None = Field(description="confirmed / (confirmed + not_abusive)")


class RevealOut(BaseModel):
    """The item is revealed to this user: its clear media may be fetched for a few minutes."""

    item_id: int
    count: int = Field(description="This user's reveals today")
    limit: int = Field(description="The daily soft limit (0: none)")
    media_url: str


# -- conversions ------------------------------------------------------------------------------


def _shown_matches(
    rt: Runtime, key: Principal, matches: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """An item's recorded matches as this key may see them: each with its ``band``, and for a
    key without ``export`` the band's representative distance in place of the exact one, in
    bank order within a band (as ``/v1/scan`` answers, see bastion.api.disclosure): exact
    distances next to the item's own signals would give a distance oracle on bank hashes."""
    near = rt.settings.match_near_distance
    exact = sees_values(key)
    out = []
    for m in matches:
        row = dict(m)
        d = row.get("distance")
        if isinstance(d, int) and not isinstance(d, bool):
            row["band"] = band(d, near)
            row["distance"] = shown_distance(rt, key, d, DEFAULT_PDQ_THRESHOLD)
        out.append(row)
    if not exact:
        rank = {b: i for i, b in enumerate(BANDS)}
        out.sort(
            key=lambda r: (rank.get(str(r.get("band")), 0), str(r.get("bank")), r.get("entry", 0))
        )
    return out


def _summary_out(rt: Runtime, key: Principal, s: CaseSummary) -> CaseSummaryOut:
    out = CaseSummaryOut.model_validate(s, from_attributes=True)
    out.reason = shown_reason(rt, key, out.reason)
    return out


def _case_out(rt: Runtime, key: Principal, case: Case) -> CaseOut:
    """The case for this key: media links only with ``media``; match distances and the
    reasons that quote them banded unless the key holds ``export``."""
    media = key.allows(MEDIA_SCOPE)
    items = [
        ItemOut.model_validate(
            {
                **{k: getattr(i, k) for k in ItemOut.model_fields if k != "media_url"},
                "actions": list(i.actions),
                "reason": shown_reason(rt, key, i.reason),
                "matches": _shown_matches(rt, key, list(i.matches)),
                "media_url": (
                    f"/v1/cases/{case.id}/items/{i.id}/media" if media and i.has_media else None
                ),
            }
        )
        for i in case.items
    ]
    fields = {
        k: getattr(case, k)
        for k in CaseOut.model_fields
        if k
        not in (
            "items",
            "history",
            "must_reveal",
            "revealed",
            "viewable",
            "labels",
            "incident_type",
            "detectors_fired",
        )
    }
    fields["reason"] = shown_reason(rt, key, case.reason)
    incident = ACCOUNT_INCIDENT_TYPES.get(case.classification or "")
    fields["incident_type"] = incident if case.subject == "account" else None
    return CaseOut(
        **fields,
        detectors_fired=list(case.detectors_fired),
        labels=list(case.labels),
        items=items,
        history=[EventOut.model_validate(e, from_attributes=True) for e in case.events],
        must_reveal=list(case.must_reveal()),
        revealed=sorted(case.revealed),
        viewable=sorted(case.viewable),
    )


def _pairs(pairs: tuple[tuple[str, int], ...]) -> list[str]:
    return [f"{bank}/{entry}" for bank, entry in pairs]


def _decision_out(outcome: Outcome) -> DecisionOut:
    case = outcome.case
    return DecisionOut(
        case_id=case.id,
        event=outcome.event,
        final=outcome.final,
        state=case.state,
        queue=case.queue,
        classification=case.classification,
        labels=list(case.labels),
        first_reviewer=case.first_reviewer,
        second_reviewer=case.second_reviewer,
        actions=list(outcome.actions),
        disputed=_pairs(outcome.disputed),
        disabled=_pairs(outcome.disabled),
        disable_errors=list(outcome.disable_errors),
    )


# -- routes -----------------------------------------------------------------------------------


@router.get("", response_model=CasePage, responses=_LIST)
def list_cases(
    request: Request,
    rt: RuntimeDep,
    key: ReviewKey,
    queue: Annotated[
        str | None, Query(min_length=1, max_length=64, description="One queue (yours, if set)")
    ] = None,
    state: Annotated[
        Literal["active", "open", "awaiting_second", "confirmed", "not_abusive", "closed"],
        Query(description="active: open or awaiting a second review; closed: decided"),
    ] = "active",
    priority: Annotated[Literal["critical", "high", "normal", "low"] | None, Query()] = None,
    overdue: Annotated[
        bool | None, Query(description="true: active and past due; false: the others")
    ] = None,
    after: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="The last case id of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    subject: Annotated[
        Literal["content", "account"] | None,
        Query(description="content or account cases only"),
    ] = None,
) -> CasePage:
    """Cases in the queues this user may see, most urgent first (priority, then due time). A
    queue the user may not see is refused (403). Metadata only; open a case to see its
    matches."""
    viewer = _acting(request, key)
    # One more than asked says whether there is a next page; the store's cap is 500, so a full
    # page of 500 gets a cursor (whose page may be empty).
    peek = min(limit + 1, 500)
    try:
        found = rt.review.list_cases(
            viewer,
            queue=queue,
            states=STATE_FILTERS[state],
            limit=peek,
            after=after,
            priority=priority,
            overdue=overdue,
            subject=subject,
        )
    except _ERRORS as exc:
        raise problem_for(exc, codes=True) from None
    more = len(found) > limit or len(found) == peek == limit
    found = found[:limit]
    return CasePage(
        cases=[_summary_out(rt, key, s) for s in found], next_after=found[-1].id if more else None
    )


@router.get("/queues", response_model=list[QueueOut], responses=problem_responses(503))
def queues(request: Request, rt: RuntimeDep, key: ReviewKey) -> list[QueueOut]:
    """Open, awaiting-second and overdue counts for each queue this user may see."""
    viewer = _acting(request, key)
    try:
        counts = rt.review.queue_counts(viewer)
    except _ERRORS as exc:
        raise problem_for(exc, codes=True) from None
    return [QueueOut.model_validate(c, from_attributes=True) for c in counts.values()]


@router.get("/detectors", response_model=list[DetectorOut], responses=problem_responses(503))
def detectors(request: Request, rt: RuntimeDep, key: ReviewKey) -> list[DetectorOut]:
    """Each risk detector's record in account-case decisions: confirmed, not abusive (named by
    the reviewer), unjudged, and its precision. Counts only (no account or case)."""
    viewer = _acting(request, key)
    try:
        require_cases(viewer)
        found = rt.review.detector_precision()
    except _ERRORS as exc:
        raise problem_for(exc, codes=True) from None
    return [
        DetectorOut(
            detector=p.detector,
            confirmed=p.confirmed,
            not_abusive=p.not_abusive,
            unjudged=p.unjudged,
            precision=p.precision,
        )
        for p in found
    ]


@router.get("/{case_id}", response_model=CaseOut, responses=_READ)
def get_case(request: Request, rt: RuntimeDep, key: ReviewKey, case_id: CaseId) -> CaseOut:
    """The case with its items, matches, signals and history (never media bytes). Audited
    (``case.view``, actor ``user:<name>``), as opening it in the console is."""
    viewer = _acting(request, key)
    try:
        case = rt.review.get_case(viewer, case_id)
    except _ERRORS as exc:
        raise problem_for(exc, codes=True) from None
    return _case_out(rt, key, case)


@router.post("/{case_id}/claim", response_model=LeaseOut, responses=_ACT)
def claim(request: Request, rt: RuntimeDep, key: ReviewKey, case_id: CaseId) -> LeaseOut:
    """Take the case's lease (the console's lease: one holder at a time, whichever channel;
    claiming again renews it). 409 ``case_leased`` when someone else holds it."""
    viewer = _acting(request, key)
    try:
        case = rt.review.claim(viewer, case_id)
    except _ERRORS as exc:
        raise problem_for(exc, codes=True) from None
    return LeaseOut(
        case_id=case.id,
        state=case.state,
        queue=case.queue,
        lease_holder=case.lease_holder,
        lease_until=case.lease_until,
    )


@router.post("/{case_id}/release", status_code=204, responses=_ACT)
def release(request: Request, rt: RuntimeDep, key: ReviewKey, case_id: CaseId) -> Response:
    """Give the lease up (admins and senior reviewers may release another user's lease)."""
    viewer = _acting(request, key)
    try:
        rt.review.release(viewer, case_id)
    except _ERRORS as exc:
        raise problem_for(exc, codes=True) from None
    return Response(status_code=204)


@router.post("/{case_id}/decide", response_model=DecisionOut, responses=_BODY)
def decide(
    request: Request,
    rt: RuntimeDep,
    key: ReviewKey,
    case_id: CaseId,
    body: Annotated[DecisionIn, Body(openapi_examples=_DECISION_EXAMPLES)],
) -> DecisionOut:
    """Decide a case this user has claimed, by the console's rules and code path: confirmed
    (with a classification: A1/A2/B1/B2 for content, grooming/sextortion for an account case),
    not abusive (with a reason; optionally disabling the matched entries, or, for an account
    case, naming the detectors found wrong), or escalate. Confirming or clearing needs every
    ``view_required`` item revealed by this user (409 ``reveal_required``); with four-eyes a
    confirmation waits for a second, different user, through the API or the console."""
    viewer = _acting(request, key)
    try:
        chosen = Decision(
            kind=body.decision,
            classification=getattr(body, "classification", None),
            labels=tuple(getattr(body, "labels", ())),
            note=body.note,
            reason=getattr(body, "reason", ""),
            disable_entries=getattr(body, "disable_entries", False),
            detectors=tuple(getattr(body, "detectors", ())),
        )
        outcome = pipeline.decide(rt, viewer, case_id, chosen)
        out = _decision_out(outcome)
        if outcome.final and outcome.case.state == "confirmed":
            found = [rt.reports.for_case(case_id, a) for a in JURISDICTIONS.values()]
            out.reports = [r.id for r in found if r is not None]
            out.report_needed = found[0] is None  # the CyberTipline (US) draft
    except _ERRORS as exc:
        raise problem_for(exc, codes=True) from None
    return out


@router.post(
    "/{case_id}/items/{item_id}/reveal",
    response_model=RevealOut,
    responses=problem_responses(404, 409, 422, 503),
)
def reveal(
    request: Request,
    rt: RuntimeDep,
    key: ReviewKey,
    case_id: CaseId,
    item_id: ItemId,
    continue_past_limit: Annotated[
        bool,
        Query(
            description="Past the daily soft limit a reveal is refused (409 `take_a_break`) "
            "unless this is true; going on is audited"
        ),
    ] = False,
    reason: Annotated[
        str,
        Query(
            max_length=2000,
            description="Why you need to see an item of a decided case (required there; "
            "recorded in the audit log). An active case is revealed by its claim holder only",
        ),
    ] = "",
) -> RevealOut:
    """Deliberately reveal one item to this user (needs the ``media`` scope too): its clear
    media may then be fetched for a few minutes, and it counts towards deciding and towards
    the user's daily exposure. Audited (``content.reveal``)."""
    _media_key(key)
    viewer = _acting(request, key)

    try:
        done = pipeline.reveal(
            rt,
            viewer,
            case_id,
            item_id,
            go_on=continue_past_limit,
            remote_addr=client_address(request, rt.settings),
            reason=reason,
        )
    except _ERRORS as exc:
        raise problem_for(exc, codes=True) from None
    if done.paused:
        raise Problem(
            409,
            "Take a break",
            detail=f"{done.count} reveals today reach the soft limit of {done.limit}; pass "
            "continue_past_limit=true to go on",
            code="take_a_break",
            count=done.count,
            limit=done.limit,
        )
    return RevealOut(
        item_id=item_id,
        count=done.count,
        limit=done.limit,
        media_url=f"/v1/cases/{case_id}/items/{item_id}/media?clear=true",
    )


@router.get(
    "/{case_id}/items/{item_id}/media",
    response_class=Response,
    responses={
        200: {
            "description": "The media: a blurred greyscale JPEG, or the original bytes",
            "content": {
                "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                "image/*": {"schema": {"type": "string", "format": "binary"}},
                "video/*": {"schema": {"type": "string", "format": "binary"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        },
        **problem_responses(404, 422, 503),
    },
)
def media(
    request: Request,
    rt: RuntimeDep,
    key: ReviewKey,
    case_id: CaseId,
    item_id: ItemId,
    clear: Annotated[
        bool,
        Query(description="The original bytes: only within minutes of this user's reveal"),
    ] = False,
) -> Response:
    """An item's media (needs the ``media`` scope too). Blurred and greyscale unless ``clear``,
    which needs a recent reveal by this user (403 otherwise). Every read is audited
    (``content.view``)."""
    _media_key(key)
    viewer = _acting(request, key)
    try:
        found = rt.review.media(viewer, case_id, item_id, clear=clear)
    except _ERRORS as exc:
        raise problem_for(exc, codes=True) from None
    # Only an allowlisted raster or video type keeps its type; anything else goes out as bytes.
    media_type = inline_media_type(found.media_type) or "application/octet-stream"
    headers = {
        "Cache-Control": "no-store, private",
        "Content-Disposition": "attachment",
        "X-Content-Type-Options": "nosniff",
    }
    return Response(found.data, media_type=media_type, headers=headers)


__all__ = ["MEDIA_SCOPE", "SCOPE", "router"]
