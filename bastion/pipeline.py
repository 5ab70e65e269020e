"""The edge where the stages meet: matches → verdict (policy) → case (review) → actions (outbox).

Each stage is its own module and knows nothing of the stages after it; this module is the one place
that runs them in order for the API and the console. Actions that a verdict or a decision calls
for are put in the outbox inside the same transaction that opens the case or records the decision,
so a crash can never leave a decided case without its actions, nor actions without their case.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from bastion.exchanges.base import Verdict as ExchangeVerdict
from bastion.policy import ReviewSettings, Verdict, policy_input
from bastion.reports.drafting import draft_account_case_in
from bastion.review import Decision, NewItem, Outcome, Submitted, Viewer
from bastion.review.model import matched_entries
from bastion.store import append_audit

if TYPE_CHECKING:
    from bastion.banks.flood import Quarantined
    from bastion.db import Store
    from bastion.psi.records import OpenedAccount
    from bastion.runtime import Runtime

#: Bank labels change rarely; reading them once per scan would cost a query per request.
_BANK_LABELS_TTL = 5.0


class BankLabels:
    """Bank name → labels, refreshed at most every few seconds (a policy rule on bank labels may
    act on a relabelled bank that long after the change)."""

    def __init__(self, store: Store, ttl: float = _BANK_LABELS_TTL) -> None:
        self._store = store
        self._ttl = ttl
        self._labels: dict[str, frozenset[str]] = {}
        self._at = float("-inf")
        self._lock = threading.Lock()

    def get(self) -> Mapping[str, frozenset[str]]:
        with self._lock:
            if time.monotonic() - self._at > self._ttl:
                labels = self._store.bank_labels()
                self._labels = {name: frozenset(v) for name, v in labels.items()}
                self._at = time.monotonic()
            return self._labels


@dataclass(frozen=True, slots=True)
class Scanned:
    """One piece of content after hashing and matching, with the platform's context."""

    kind: str
    format: str | None
    context: Mapping[str, Any]
    signals: list[dict[str, Any]]
    matches: list[dict[str, Any]]
    media: bytes | None
    media_type: str | None
    filename: str | None


def action_payload(
    action: str, *, case_id: int, context: Mapping[str, Any], reason: str, **extra: Any
) -> dict[str, Any]:
    """What the platform needs to act: its own ids and why. Never content or hashes of it."""
    payload: dict[str, Any] = {
        "case_id": case_id,
        "content_id": context.get("content_id"),
        "uploader_id": context.get("uploader_id"),
        "conversation_id": context.get("conversation_id"),
        "reason": reason,
    }
    payload.update(extra)
    return {k: v for k, v in payload.items() if v is not None}


def verdict_for(rt: Runtime, scanned: Scanned) -> Verdict:
    """The active policy's verdict on scanned content, given the uploader's confirmed cases."""
    policy = rt.policy.current()
    matched = bool(scanned.matches)
    uploader = scanned.context.get("uploader_id")
    # Each lookup only when a rule could use it: most scans match nothing.
    history = uploader and policy.needs_uploader_history(matched)
    confirmed = rt.review.prior_confirmed(uploader) if history else 0
    labels = rt.bank_labels.get() if matched else None
    inp = policy_input(scanned.kind, scanned.context, scanned.matches, labels, confirmed)
    return policy.decide(inp)


def open_case(
    rt: Runtime,
    scanned: Scanned,
    verdict: Verdict,
    *,
    actor: str,
    scan_id: int | None,
    also: Callable[[Connection, Submitted], None] | None = None,
) -> Submitted:
    """Open (or join) a case for content the verdict did not allow, and queue the verdict's
    actions in the same transaction (with ``vault_on_block``, a block also preserves the item).
    ``also(conn, submitted)`` runs in that transaction too (the back-scan backlog marks its row
    opened there, so a crash can never open a case twice for one finding)."""
    ctx = scanned.context
    item = NewItem(
        kind=scanned.kind,
        format=scanned.format,
        content_id=ctx.get("content_id"),
        uploader_id=ctx.get("uploader_id"),
        conversation_id=ctx.get("conversation_id"),
        source=ctx.get("source"),
        age_band=ctx.get("age_band"),
        scan_id=scan_id,
        signals=scanned.signals,
        matches=scanned.matches,
        media=scanned.media,
        media_type=scanned.media_type,
        filename=scanned.filename,
    )

    def enqueue(conn: Connection, sub: Submitted) -> None:
        if verdict.decision == "block" and rt.settings.vault_on_block:
            rt.vault.preserve_in(
                conn, sub.case_id, actor=actor, reason="blocked", item_ids=[sub.item_id]
            )
        for action in verdict.actions:
            rt.outbox.enqueue_in(
                conn,
                action=action,
                payload=action_payload(
                    action,
                    case_id=sub.case_id,
                    context=ctx,
                    reason=verdict.reason,
                    verdict=verdict.decision,
                    rule=verdict.rule,
                ),
                idempotency_key=f"{action}:case-{sub.case_id}:item-{sub.item_id}",
                case_id=sub.case_id,
            )
        if also is not None:
            also(conn, sub)

    return rt.review.submit(verdict, item, actor=actor, then=enqueue)


#: Actions about an account rather than a piece of content: sent once per uploader in a case.
ACCOUNT_ACTIONS = frozenset({"restrict_account"})


def decide(rt: Runtime, viewer: Viewer, case_id: int, decision: Decision) -> Outcome:
    """Record a reviewer's decision; when it finally confirms the case, preserve its evidence
    and queue the policy's confirmation actions in the same transaction: one per item, or one
    per uploader for account actions. Entries disabled by a 'not abusive' decision leave the
    index at once."""

    def enqueue(conn: Connection, outcome: Outcome) -> None:
        case = outcome.case
        if outcome.final and case.state == "confirmed":
            # The evidence commits with the decision: a confirmed case is never left unpreserved.
            rt.vault.preserve_in(conn, case.id, actor=viewer.actor, reason="confirmed")
            if case.subject == "account":
                # Its report drafts too, when the reporting contact is set (see there why here).
                draft_account_case_in(rt, conn, case)
        for action in outcome.actions:
            seen: set[str] = set()
            for item in case.items:
                if action in ACCOUNT_ACTIONS:
                    if not item.uploader_id or item.uploader_id in seen:
                        continue
                    seen.add(item.uploader_id)
                    # A platform id may hold anything; the key must stay short, plain ASCII.
                    who = hashlib.sha256(item.uploader_id.encode()).hexdigest()[:24]
                    key = f"{action}:case-{case.id}:uploader-{who}:confirmed"
                    context: dict[str, Any] = {"uploader_id": item.uploader_id}
                else:
                    key = f"{action}:case-{case.id}:item-{item.id}:confirmed"
                    context = {
                        "content_id": item.content_id,
                        "uploader_id": item.uploader_id,
                        "conversation_id": item.conversation_id,
                    }
                rt.outbox.enqueue_in(
                    conn,
                    action=action,
                    payload=action_payload(
                        action,
                        case_id=case.id,
                        context=context,
                        reason="confirmed by review",
                        classification=case.classification,
                    ),
                    idempotency_key=key,
                    case_id=case.id,
                )
        # Findings on exchange entries go back upstream (the worker sends them).
        if outcome.final and case.state in ("confirmed", "not_abusive"):
            confirmed = case.state == "confirmed"
            rt.exchanges.queue_feedback_in(
                conn,
                matched_entries(i.matches for i in case.items),
                ExchangeVerdict.POSITIVE if confirmed else ExchangeVerdict.NEGATIVE,
                case_id=case.id,
                # A code, never the reviewer's free text.
                reason=(
                    f"confirmed:{case.classification}"
                    if confirmed and case.classification
                    else case.state
                ),
            )

    review_settings = rt.policy.current().review

    def enqueue_and_undo(conn: Connection, outcome: Outcome) -> None:
        enqueue(conn, outcome)
        if outcome.final and outcome.case.state == "not_abusive":
            queue_reversals(rt, conn, outcome.case.id, review_settings)

    outcome: Outcome = rt.review.decide(
        viewer, case_id, decision, policy_review=review_settings, then=enqueue_and_undo
    )
    if outcome.disabled:
        rt.index.refresh()
    return outcome


def queue_reversals(rt: Runtime, conn: Connection, case_id: int, review: ReviewSettings) -> int:
    """A false positive is undone on the platform: for each action queued for the case that
    the policy's ``review.reversals`` can undo (a removal at scan time, a restriction), queue
    its reversal in the same outbox, in the decision's transaction. The key is the original's
    with the reversal's name in front, so each is sent exactly once however often this runs
    (appeals reuse it). The body names the original key and its delivery state, so the
    platform can match them even when the original has not arrived yet. Returns how many."""
    queued = 0
    for done in rt.outbox.for_case_in(conn, case_id):
        undo = review.reversal_of(done.action)
        if undo is None:
            continue
        key = f"{undo}:{done.idempotency_key}"
        if len(key) > 200:
            key = f"{undo}:{hashlib.sha256(done.idempotency_key.encode()).hexdigest()}"
        context = {k: done.payload.get(k) for k in ("content_id", "uploader_id", "conversation_id")}
        new = rt.outbox.enqueue_in(
            conn,
            action=undo,
            payload=action_payload(
                undo,
                case_id=case_id,
                context=context,
                reason="found not abusive by review",
                reverses=done.action,
                reverses_key=done.idempotency_key,
                original_state=done.state,
            ),
            idempotency_key=key,
            case_id=case_id,
        )
        queued += new is not None
    return queued


@dataclass(frozen=True, slots=True)
class Revealed:
    """What a reveal did. ``paused``: the reviewer is at the daily soft limit and did not choose
    to go on, so nothing was revealed (the console shows a break prompt)."""

    item_id: int
    count: int
    limit: int
    paused: bool = False


def reveal(
    rt: Runtime,
    viewer: Viewer,
    case_id: int,
    item_id: int,
    *,
    go_on: bool,
    remote_addr: str | None = None,
    reason: str = "",
) -> Revealed:
    """A deliberate reveal of one item, for the console and the API alike: it opens the
    reviewer's window on the clear media and counts towards their daily exposure. Past the
    soft limit it happens only when the reviewer chose to go on, and that choice is audited.
    Only the claim holder reveals an active case; a decided case's reveal needs ``reason``
    and is audited as such, not counted as an exposure (``ReviewStore.reveal``)."""
    limit = int(rt.settings.exposure_soft_limit)
    count = int(rt.accounts.exposure_today(viewer.name))
    over = limit > 0 and count >= limit
    if over and not go_on:
        return Revealed(item_id, count, limit, paused=True)

    def count_exposure(conn: Connection) -> int:
        # In the reveal's transaction: the count, and a chosen overrun, commit with the reveal.
        if over:
            append_audit(
                conn,
                actor=viewer.actor,
                action="exposure.continue",
                target=f"case:{case_id}",
                detail={"item": item_id, "count": count, "limit": limit},
                remote_addr=remote_addr,
            )
        return int(rt.accounts.record_exposure_in(conn, viewer.name))

    counted = rt.review.reveal(viewer, case_id, item_id, reason=reason, then=count_exposure)
    return Revealed(item_id, count if counted is None else int(counted), limit)


#: The ``source`` of content that reached review through E2EE safety vouchers.
VOUCHER_SOURCE = "e2ee-voucher"


def open_voucher_cases(rt: Runtime, opened: OpenedAccount) -> list[Submitted]:
    """Hand an account's threshold opening (``OpenedAccount``) to review:
    each opened item goes through the policy like a scan, as content of the account with source
    ``e2ee-voucher`` and its low-resolution derivative as media, and joins the account's case.
    Items the policy allows open no case. The voucher store calls this after its own commit and
    retries the whole account if it raises.

    An opening only ever goes to review (:func:`review_only`): whatever the policy says, it
    blocks nothing, queues no action and preserves nothing until a person has looked at it.
    Matching on a device is a weaker signal than a scan the platform runs itself (crafted
    collisions are practical, and the opened items are the sender's own claims), so the
    policy's rule picks the priority and queue, a human decides."""
    out = []
    for item in opened.items:
        scanned = Scanned(
            kind="image",
            format=item.media_type.partition("/")[2] or None,
            context={
                "content_id": item.item_id,
                "uploader_id": opened.account,
                "source": VOUCHER_SOURCE,
            },
            signals=[{"type": "pdq", "value": item.pdq, "quality": item.quality}],
            matches=list(item.matches),
            media=item.media or None,
            media_type=item.media_type or None,  # "": no picture survived re-encoding
            filename=None,
        )
        verdict = review_only(verdict_for(rt, scanned))
        if verdict.decision != "allow":
            out.append(open_case(rt, scanned, verdict, actor="system", scan_id=None))
    return out


def review_only(verdict: Verdict) -> Verdict:
    """A verdict for a voucher opening: a block becomes a review at the rule's priority, with no
    immediate actions, and the reviewer must view the derivative before deciding."""
    if verdict.decision == "allow":
        return verdict
    reason = verdict.reason
    if verdict.decision == "block":
        reason = f"{reason} (E2EE voucher opening: review only)"
    return dataclasses.replace(
        verdict, decision="review", actions=(), view_required=True, reason=reason
    )


def held_verdict(rt: Runtime, scanned: Scanned, held: set[int]) -> Verdict:
    """The verdict when some matched entries are quarantined for flooding (``held``): the
    other matches decide as usual when they call for anything; otherwise the content goes to
    review at the policy's priority, with no actions (a quarantined entry never acts alone)."""
    if not held:
        return verdict_for(rt, scanned)
    free = [m for m in scanned.matches if m.get("entry") not in held]
    if free:
        verdict = verdict_for(rt, dataclasses.replace(scanned, matches=free))
        if verdict.decision != "allow":
            return verdict
    verdict = verdict_for(rt, scanned)
    note = f"entries {sorted(held)} quarantined for flooding: review only"
    return dataclasses.replace(
        verdict,
        decision="review",
        actions=(),
        view_required=True,
        reason=f"{verdict.reason} ({note})",
    )


def resolve_quarantine(
    rt: Runtime,
    entry_id: int,
    outcome: str,
    *,
    actor: str,
    reason: str = "",
    remote_addr: str | None = None,
) -> Quarantined:
    """End a flood quarantine for the API and the console alike. A dispute (the entry is a
    colliding or poisoned hash) disables the entry and, for an entry an exchange keeps, queues
    a negative finding for its upstream list in the same transaction; the index drops it now."""

    def feedback(conn: Connection, held: Quarantined) -> None:
        if outcome == "disputed":
            rt.exchanges.queue_feedback_in(
                conn,
                [(held.bank, held.entry_id)],
                ExchangeVerdict.NEGATIVE,
                case_id=None,
                reason="disputed:flood",
            )

    done = rt.store.resolve_quarantine(
        entry_id, outcome, actor=actor, reason=reason, remote_addr=remote_addr, then=feedback
    )
    rt.index.refresh()
    return done
