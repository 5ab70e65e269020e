"""The review queue and the case view: claim, reveal, media, decide.

Wellbeing is the default here: media is served as the server's blurred greyscale derivative
unless this reviewer revealed that item moments ago (``ReviewStore.media`` enforces it), each
reveal counts towards the reviewer's daily exposure, and past the soft limit a break prompt
stands between the reviewer and the next reveal (continuing is a deliberate, audited choice).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Response
from fastapi.responses import JSONResponse

from bastion import pipeline
from bastion.review import (
    ACTIVE_STATES,
    AWAITING_SECOND,
    CLASSIFICATIONS,
    Case,
    CaseClosed,
    CaseLeased,
    Decision,
    Forbidden,
    InvalidDecision,
    NotLeased,
    RevealRequired,
)
from bastion.review.escalations import escalated_view, escalations
from bastion.review.model import STATE_FILTERS
from bastion.review.notes import add_note
from bastion.review.preview import inline_media_type
from bastion.store import EntryNotFound
from bastion.web import account_case, events
from bastion.web.base import (
    REVIEWERS,
    ConsoleJsonRoute,
    ConsoleRoute,
    Ctx,
    PageError,
    action,
    not_found,
    page,
    redirect,
    render,
    safe_next,
)

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
media_router = APIRouter(route_class=ConsoleJsonRoute, include_in_schema=False)

Reviewer = Annotated[Ctx, Depends(page(*REVIEWERS))]
ReviewerAction = Annotated[Ctx, Depends(action(*REVIEWERS))]

EVENT_MESSAGES = {
    "first_confirm": "confirmed; it now waits for a second reviewer",
    "first_not_abusive": "found not abusive; it now waits for a second reviewer",
    "confirmed": "confirmed",
    "not_abusive": "closed as not abusive",
    "escalated": "escalated",
    "disagreed": "escalated (the second review disagreed)",
}
MAX_ID = 2**63 - 1


def _id(value: int) -> int:
    if not 0 < value <= MAX_ID:
        raise not_found()
    return value


# -- queue --------------------------------------------------------------------------------------


@router.get("/cases")
def queue(
    ctx: Reviewer,
    queue: Annotated[str, Query(max_length=64)] = "",
    state: Annotated[str, Query(max_length=32)] = "active",
    after: Annotated[int, Query(ge=0)] = 0,
    done: Annotated[int, Query(ge=0)] = 0,
    event: Annotated[str, Query(max_length=32)] = "",
    disabled: Annotated[int, Query(ge=0, le=10_000)] = 0,
    failed: Annotated[int, Query(ge=0, le=10_000)] = 0,
    released: Annotated[int, Query(ge=0)] = 0,
    empty: Annotated[int, Query(ge=0, le=1)] = 0,
) -> Response:
    states = STATE_FILTERS.get(state)
    if states is None:
        raise PageError(400, "Invalid filter", f"unknown state filter {state!r}")
    counts = ctx.rt.review.queue_counts(ctx.viewer)
    limit = 50  # list_cases refuses (Forbidden) a queue the viewer may not see
    cases = ctx.rt.review.list_cases(
        ctx.viewer,
        queue=queue or None,
        states=states,
        limit=limit + 1,
        after=after or None,
        hide_own_pending=True,  # four-eyes: never offer a reviewer the second review of their own
    )
    more = len(cases) > limit
    cases = cases[:limit]
    notice = ""
    if done and event in EVENT_MESSAGES:
        notice = f"Case {done} {EVENT_MESSAGES[event]}."
        if disabled:
            notice += f" {disabled} matched bank entr{'y' if disabled == 1 else 'ies'} disabled."
        if failed:
            notice += f" {failed} could not be disabled (see the audit log)."
    elif empty:
        notice = "No case is waiting in your queues. Thank you."
    elif released:
        notice = (
            f"Your claim on case {released} is released; it is back in the queue. Take your time."
        )
    return render(
        "cases.html",
        ctx,
        cases=cases,
        escalated=escalations(ctx.rt.review, [c.id for c in cases]),
        counts=list(counts.values()),
        queue=queue,
        state=state,
        states=list(STATE_FILTERS),
        next_after=cases[-1].id if more and cases else None,
        notice=notice,
    )


# -- case view ----------------------------------------------------------------------------------


def _entry_facts(ctx: Ctx, case: Case) -> dict[int, dict[str, Any]]:
    """Bank-side facts for each matched entry (provenance, disputes), shown beside the match so
    a reviewer can decide from the match where policy allows it."""
    facts: dict[int, dict[str, Any]] = {}
    banks = {b.name: b for b in ctx.rt.store.list_banks()}
    for item in case.items:
        for m in item.matches:
            entry_id = m.get("entry")
            if not isinstance(entry_id, int) or entry_id in facts:
                continue
            info: dict[str, Any] = {"disputes": ctx.rt.review.disputes_for_entry(entry_id)}
            try:
                entry = ctx.rt.store.get_entry(entry_id)
            except EntryNotFound:
                info["missing"] = True
            else:
                info.update(
                    source=entry.source,
                    list_name=entry.list_name,
                    added_at=entry.added_at,
                    entry_labels=list(entry.labels),
                    enabled=entry.enabled,
                    disabled_reason=entry.disabled_reason,
                )
            bank = banks.get(str(m.get("bank")))
            if bank is not None:
                info.update(
                    bank_labels=list(bank.labels),
                    bank_source=bank.source,
                    bank_enabled=bank.enabled,
                    is_demo=bank.is_demo,
                )
            facts[entry_id] = info
    return facts


def _case_page(
    ctx: Ctx,
    case_id: int,
    *,
    error: PageError | None = None,
    status: int = 200,
    typed: dict[str, str] | None = None,
    notice: str = "",
) -> Response:
    case = ctx.rt.review.get_case(ctx.viewer, case_id)
    if error is not None and case.lease_holder and case.lease_holder != ctx.name:
        # Say who holds it now (an expired claim another reviewer took, say).
        error = PageError(
            error.status,
            error.title,
            f"{error.message} The case is now claimed by {case.lease_holder}.",
        )
    holder = case.lease_holder == ctx.name
    must_reveal = case.must_reveal()
    prior = ctx.rt.review.prior_confirmed(case.uploader_id) if case.uploader_id else 0
    # An account case: its panel (the timeline read is audited), and the account findings.
    item = account_case.account_item(case)
    account = account_case.build(ctx, case, item) if item is not None else None
    return render(
        "case.html",
        ctx,
        status=error.status if error else status,
        case=case,
        holder=holder,
        must_reveal=must_reveal,
        entries=_entry_facts(ctx, case),
        prior_confirmed=prior,
        classifications=account_case.ACCOUNT_CLASSIFICATIONS if account else CLASSIFICATIONS,
        account=account,
        error=error,
        can_decide=holder and not case.final,
        own_pending=case.state == AWAITING_SECOND and ctx.viewer.is_party(case.first_reviewer),
        typed=typed or {},
        notice=notice,
        presets=NOT_ABUSIVE_PRESETS,
        sent=_sent_actions(ctx, case.id),
        escalation=escalations(ctx.rt.review, [case.id]).get(case.id),
        findings=events.summary(case) if case.final else [],
        lease_left=_seconds_left(case.lease_until),
        lease_seconds=int(ctx.rt.review.config().lease.total_seconds()),
    )


def _sent_actions(ctx: Ctx, case_id: int) -> list[dict[str, Any]]:
    """Every action queued for the case, oldest first, with its delivery state and when it was
    queued: at scan (a block verdict), on confirmation, or undoing another (a false positive).
    Names and states only, no payload: what the platform was asked to do about this case."""
    out = []
    for o in reversed(ctx.rt.outbox.list(case_id=case_id, limit=200)):
        if "reverses" in o.payload:
            when = f"undoes {o.payload['reverses']}"
        elif o.idempotency_key.endswith(":confirmed"):
            when = "on confirmation"
        else:
            when = "at scan"
        out.append({"item": o, "when": when})
    return out


def _seconds_left(until: datetime | None) -> int | None:
    """Seconds until a live claim lapses, for the live countdown (the page counts from here, so
    the reviewer's clock being off does not matter)."""
    if until is None:
        return None
    return max(0, int((until - datetime.now(UTC)).total_seconds()))


@router.get("/cases/{case_id}")
def case_view(
    ctx: Reviewer,
    case_id: int,
    done: Annotated[int, Query(ge=0)] = 0,
    event: Annotated[str, Query(max_length=32)] = "",
) -> Response:
    notice = (
        f"Case {done} {EVENT_MESSAGES[event]}. This is the next case."
        if done and (event in EVENT_MESSAGES)
        else ""
    )
    try:
        return _case_page(ctx, _id(case_id), notice=notice)
    except Forbidden:
        # The reviewer who escalated it follows the outcome, read-only and without media.
        case = escalated_view(ctx.rt.review, ctx.viewer, case_id)
        return render(
            "case.html",
            ctx,
            case=case,
            holder=False,
            must_reveal=(),
            entries=_entry_facts(ctx, case),
            prior_confirmed=0,
            classifications=CLASSIFICATIONS,
            account=None,
            error=None,
            can_decide=False,
            own_pending=False,
            read_only=True,
            escalation=escalations(ctx.rt.review, [case.id]).get(case.id),
            typed={},
            sent=[],
            findings=events.summary(case) if case.final else [],
            lease_left=None,
            lease_seconds=0,
        )


def _on_case_error(
    ctx: Ctx, case_id: int, exc: Exception, typed: dict[str, str] | None = None
) -> Response:
    """A refused claim or decision: the case page again, with the reason on top and what the
    reviewer typed still in the form (``typed``), so an expired claim loses no work."""
    from bastion.web.base import page_error

    error = page_error(exc)
    if error is None or error.status in (403, 404):
        raise exc
    return _case_page(ctx, case_id, error=error, typed=typed)


@router.post("/cases/{case_id}/claim")
def claim(ctx: ReviewerAction, case_id: int) -> Response:
    case_id = _id(case_id)
    try:
        ctx.rt.review.claim(ctx.viewer, case_id)
    except (CaseLeased, CaseClosed) as exc:
        return _on_case_error(ctx, case_id, exc)
    except Forbidden as exc:
        # The first reviewer trying to take the second review: say why on the case itself.
        case = ctx.rt.review.get_case(ctx.viewer, case_id)
        if case.state != AWAITING_SECOND or not ctx.viewer.is_party(case.first_reviewer):
            raise
        why = PageError(403, "Not your second review", str(exc))
        return _case_page(ctx, case_id, error=why)
    return redirect(f"/cases/{case_id}")


@router.post("/cases/{case_id}/release")
def release(
    ctx: ReviewerAction,
    case_id: int,
    pause: Annotated[str, Form(alias="break", max_length=8)] = "",
) -> Response:
    """Give the claim back. ``break=1`` (the break prompt's "Take a break") says so on the
    queue: a reviewer stepping away must not keep a case from the others."""
    case_id = _id(case_id)
    ctx.rt.review.release(ctx.viewer, case_id)
    if not pause:
        return redirect("/cases")
    # Counted on the team view (breaks taken), never more than who and when.
    ctx.rt.store.record_audit(
        actor=ctx.actor,
        action="wellbeing.break",
        target=f"case:{case_id}",
        remote_addr=ctx.remote_addr,
    )
    return redirect(f"/cases?released={case_id}")


@media_router.post("/cases/{case_id}/renew")
def renew(ctx: ReviewerAction, case_id: int) -> Response:
    """Renew this reviewer's claim while they are active on the page (the page calls it as the
    claim runs down): 409 with the holder when someone else has it now."""
    try:
        case = ctx.rt.review.claim(ctx.viewer, _id(case_id))
    except CaseLeased as exc:
        return JSONResponse(
            {"title": "Claimed by someone else", "status": 409, "holder": exc.holder},
            status_code=409,
            media_type="application/problem+json",
        )
    return JSONResponse(
        {
            "holder": case.lease_holder,
            "remaining": _seconds_left(case.lease_until),
        }
    )


def _labels(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.replace("\n", ",").split(",") if p.strip())


@router.post("/cases/{case_id}/decide")
def decide(
    ctx: ReviewerAction,
    case_id: int,
    decision: Annotated[str, Form(max_length=32)],
    classification: Annotated[str, Form(max_length=32)] = "",
    labels: Annotated[str, Form(max_length=2000)] = "",
    note: Annotated[str, Form(max_length=10_000)] = "",
    reason: Annotated[str, Form(max_length=2000)] = "",
    disable_entries: Annotated[str, Form(max_length=8)] = "",
    detectors: Annotated[list[str] | None, Form(max_length=64)] = None,
    preset: Annotated[str, Form(max_length=200)] = "",
    then: Annotated[str, Form(max_length=8)] = "",
    back: Annotated[str, Form(max_length=512)] = "",
) -> Response:
    case_id = _id(case_id)
    full_reason = reason
    if decision == "not_abusive" and preset in NOT_ABUSIVE_PRESETS:
        # A preset reason, with the reviewer's own words after it when they gave any.
        full_reason = f"{preset}: {reason.strip()}" if reason.strip() else preset
    try:
        if decision == "confirmed":
            chosen = Decision.confirmed(classification, _labels(labels), note=note)
        elif decision == "not_abusive":
            chosen = Decision.not_abusive(
                full_reason,
                disable_entries=bool(disable_entries),
                note=note,
                detectors=account_case.wrong_detectors(detectors),
            )
        elif decision == "escalate":
            chosen = Decision.escalate(note)
        else:
            raise InvalidDecision(f"unknown decision {decision!r}")
        outcome = pipeline.decide(ctx.rt, ctx.viewer, case_id, chosen)
    except (InvalidDecision, NotLeased, CaseLeased, CaseClosed, RevealRequired) as exc:
        typed = {
            "decision": decision,
            "classification": classification,
            "labels": labels,
            "note": note,
            "reason": reason,
            "preset": preset,
        }
        return _on_case_error(ctx, case_id, exc, typed)
    done = f"done={case_id}&event={outcome.event or decision}"
    if outcome.disabled or outcome.disable_errors:
        done += f"&disabled={len(outcome.disabled)}&failed={len(outcome.disable_errors)}"
    if then == "next":
        following = take_next(ctx)
        if following is not None:
            return redirect(f"/cases/{following}?{done}")
    queue_url = back if _queue_url(back) else "/cases"
    return redirect(f"{queue_url}{'&' if '?' in queue_url else '?'}{done}")


#: Preset reasons for "not abusive" (the console's list; free text may follow).
NOT_ABUSIVE_PRESETS = (
    "benign image (no person)",
    "adult, consenting (not a minor)",
    "non-sexual image of a child (family, sport, medical)",
    "false match: a different image",
    "test or demo content",
)


def _queue_url(url: str) -> bool:
    """A queue page address to go back to after deciding: ``/cases`` with its filters only."""
    if url != "/cases" and not url.startswith("/cases?"):
        return False
    return safe_next(url) is not None and "done=" not in url


def take_next(ctx: Ctx, queue: str | None = None) -> int | None:
    """Claim the most urgent case of the viewer's queues (or ``queue``) that nobody else holds:
    the one-key "take next". None when there is none."""
    cases = ctx.rt.review.list_cases(
        ctx.viewer, queue=queue, states=ACTIVE_STATES, limit=100, hide_own_pending=True
    )
    for c in cases:
        if c.lease_holder and c.lease_holder != ctx.name:
            continue
        try:
            ctx.rt.review.claim(ctx.viewer, c.id)
        except (CaseLeased, CaseClosed, Forbidden):
            continue  # taken or decided meanwhile: the next one
        return c.id
    return None


@router.post("/cases/{case_id}/note")
def note(
    ctx: ReviewerAction, case_id: int, text: Annotated[str, Form(max_length=10_000)] = ""
) -> Response:
    """A note in the case's history, without deciding (what was checked, what to look at)."""
    case_id = _id(case_id)
    try:
        add_note(ctx.rt.review, ctx.viewer, case_id, text)
    except InvalidDecision as exc:
        return _on_case_error(ctx, case_id, exc)
    return redirect(f"/cases/{case_id}#history")


@router.post("/cases/next")
def claim_next(ctx: ReviewerAction, queue: Annotated[str, Form(max_length=64)] = "") -> Response:
    case_id = take_next(ctx, queue or None)
    if case_id is None:
        return redirect("/cases?empty=1")
    return redirect(f"/cases/{case_id}")


# -- reveal and media (fetch() and <img>: JSON errors, 401 without a session) -------------------


@media_router.post("/cases/{case_id}/items/{item_id}/reveal")
def reveal(
    ctx: ReviewerAction,
    case_id: int,
    item_id: int,
    continue_: Annotated[str, Form(alias="continue", max_length=8)] = "",
    reason: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Record a deliberate reveal (and the exposure) before the clear media may be fetched.
    Past the daily soft limit the answer is a break prompt unless the reviewer chose to go on.
    Only the claim holder reveals; a decided case needs a ``reason`` (audited, no exposure)."""
    case_id, item_id = _id(case_id), _id(item_id)
    done = pipeline.reveal(
        ctx.rt,
        ctx.viewer,
        case_id,
        item_id,
        go_on=continue_ == "1",
        remote_addr=ctx.remote_addr,
        reason=reason,
    )
    if done.paused:
        return JSONResponse(
            {"break": True, "count": done.count, "limit": done.limit}, status_code=409
        )
    return JSONResponse(
        {
            "item": item_id,
            "count": done.count,
            "limit": done.limit,
            "url": f"/cases/{case_id}/items/{item_id}/media?clear=1",
        }
    )


@media_router.get("/cases/{case_id}/items/{item_id}/media")
def media(
    ctx: Annotated[Ctx, Depends(page(*REVIEWERS))],
    case_id: int,
    item_id: int,
    clear: Annotated[int, Query(ge=0, le=1)] = 0,
) -> Response:
    media = ctx.rt.review.media(ctx.viewer, _id(case_id), _id(item_id), clear=bool(clear))
    inline = inline_media_type(media.media_type)
    headers = {
        "Cache-Control": "no-store, private",
        "Content-Disposition": "inline" if inline else "attachment",
    }
    return Response(media.data, media_type=inline or "application/octet-stream", headers=headers)
