"""Review's pure rules: who may see which queue, what a decision does to a case, priorities.

No database or web imports. :mod:`bastion.review.store` applies these rules inside transactions;
the console shows the dataclasses defined here. Keeping the rules here means the permission and
four-eyes logic is tested without a database and read in one place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol

from bastion.banks.model import normalize_labels
from bastion.vocab import (
    ADMIN,
    DEFAULT_SLA,
    PRIORITIES,
    REVIEWER,
    ROLES,
    SENIOR_REVIEWER,
)

if TYPE_CHECKING:
    from bastion.policy import QueueSpec, ReviewSettings

# -- vocabulary --------------------------------------------------------------------------------

#: A priority's rank (most urgent 0): the database stores it so cases sort by it.
PRIORITY_RANK: Mapping[str, int] = {p: i for i, p in enumerate(PRIORITIES)}

#: Industry classification codes. Only the codes appear in code and data.
CLASSIFICATIONS = ("A1", "A2", "B1", "B2")
#: What a confirmed *account* case found (an account, not a piece of content, was reviewed);
#: both map to the CyberTipline incident type "Online Enticement of Children for Sexual Act"
#: (:data:`bastion.reports.model.ACCOUNT_INCIDENT_TYPE`).
ACCOUNT_CLASSIFICATIONS = ("grooming", "sextortion")

#: What a case is about: content (items are pieces of content, the ``uploader_id`` their
#: uploader) or an account (items are snapshots of the account's behavioural risk, the
#: ``uploader_id`` the account). A case has one subject; an uploader can have one active case
#: of each.
CONTENT, ACCOUNT = "content", "account"
SUBJECTS = (CONTENT, ACCOUNT)
#: The kind of an account case's items (``NewItem.kind``): no media, ``signals`` holds one
#: :data:`RISK_SIGNAL` snapshot.
ACCOUNT_KIND = "account"
#: The ``type`` of the risk snapshot in an account item's ``signals``: ``{"type": RISK_SIGNAL,
#: "score", "band", "case_band", "at", "contributions": [{"detector", "points", "fired",
#: "explanation", "evidence": {name: count}}]}``.
RISK_SIGNAL = "contact_risk"
#: What a confirmed account case asks the platform to do: restrict the account. Never
#: ``remove_content`` (there is no content); the policy's ``on_confirmed`` is for content cases.
ACCOUNT_ON_CONFIRMED = ("restrict_account",)


def classifications_for(subject: str) -> tuple[str, ...]:
    """The classifications a confirmed case of this subject may carry."""
    return ACCOUNT_CLASSIFICATIONS if subject == ACCOUNT else CLASSIFICATIONS


def subject_of_kind(kind: str) -> str:
    """The subject of a case opened by an item of this kind."""
    return ACCOUNT if kind == ACCOUNT_KIND else CONTENT


OPEN, AWAITING_SECOND, CONFIRMED, NOT_ABUSIVE = (
    "open",
    "awaiting_second",
    "confirmed",
    "not_abusive",
)
ACTIVE_STATES = (OPEN, AWAITING_SECOND)
FINAL_STATES = (CONFIRMED, NOT_ABUSIVE)
STATES = ACTIVE_STATES + FINAL_STATES
#: The queue's state filters (console and API): a name for each set of states.
STATE_FILTERS: Mapping[str, tuple[str, ...]] = {
    "active": ACTIVE_STATES,
    "open": (OPEN,),
    "awaiting_second": (AWAITING_SECOND,),
    "confirmed": (CONFIRMED,),
    "not_abusive": (NOT_ABUSIVE,),
    "closed": FINAL_STATES,
}

DecisionKind = Literal["confirmed", "not_abusive", "escalate"]
DECISION_KINDS = ("confirmed", "not_abusive", "escalate")

#: How long after revealing an item its viewer may fetch it unblurred.
REVEAL_WINDOW = timedelta(minutes=10)
#: Defaults when no policy is configured (the policy file normally supplies all of these).
DEFAULT_LEASE = timedelta(minutes=15)
DEFAULT_QUEUE, DEFAULT_SENIOR_QUEUE = "default", "senior"
#: Media larger than this is not kept for review (the case notes why); a constant, not a setting,
#: because it bounds memory per request as much as disk.
MAX_MEDIA_BYTES = 100 * 2**20

#: Kinds of case history events (``case_events.kind``).
EV_OPEN, EV_JOIN, EV_CLAIM, EV_RELEASE = "open", "join", "claim", "release"
EV_REVEAL, EV_VIEW, EV_DECIDE, EV_ESCALATE = "reveal", "view", "decide", "escalate"


# -- errors ------------------------------------------------------------------------------------


class ReviewError(Exception):
    """Base for review errors; messages are meant for the reviewer."""


class CaseNotFound(ReviewError, LookupError):
    """No such case (or item in that case)."""


class Forbidden(ReviewError, PermissionError):
    """The viewer's role or queues do not allow this."""


class CaseLeased(ReviewError):
    """Another reviewer holds the case's lease until ``until``."""

    def __init__(self, holder: str, until: datetime) -> None:
        super().__init__(f"case is claimed by {holder} until {until.isoformat(timespec='seconds')}")
        self.holder = holder
        self.until = until


class NotLeased(ReviewError):
    """Deciding needs a live lease held by the decider (claim the case first)."""


class CaseClosed(ReviewError):
    """The case is already decided (confirmed or not abusive)."""


class RevealRequired(ReviewError):
    """The verdict required looking at the content: these items must be revealed first."""

    def __init__(self, item_ids: Iterable[int]) -> None:
        self.item_ids = tuple(item_ids)
        shown = ", ".join(str(i) for i in self.item_ids)
        super().__init__(f"reveal item(s) {shown} before deciding")


class InvalidDecision(ReviewError, ValueError):
    """A decision with missing or malformed fields."""


class DecisionMismatch(InvalidDecision):
    """A well-formed decision that does not fit this case (a content classification on an
    account case, detectors on a content case, a detector that did not fire): a conflict with
    the case's state, not a malformed request."""


class NoMedia(ReviewError, LookupError):
    """The item has no stored media (none was sent, or it was over the size limit)."""


class PreviewUnavailable(ReviewError):
    """No blurred preview can be made of this media (unknown type or undecodable)."""


# -- who is looking ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Viewer:
    """A logged-in console user as review sees them; ``queues`` matter for reviewers only."""

    name: str
    role: str
    queues: tuple[str, ...] = (DEFAULT_QUEUE,)
    #: The channel when not the console: ``key:<key id>`` for an API key bound to this user.
    via: str | None = None
    #: The console user who created that key, when a user did (``created_by`` ``user:<name>``):
    #: four-eyes treats them as a party to this viewer's decisions too.
    key_creator: str | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r} (expected one of {', '.join(ROLES)})")
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError("a viewer needs a name")
        object.__setattr__(self, "queues", tuple(self.queues))

    @property
    def actor(self) -> str:
        return f"user:{self.name}"

    @property
    def may_disable_entries(self) -> bool:
        return can_disable_entries(self)

    def is_party(self, reviewer: str | None) -> bool:
        """Whether ``reviewer`` (a first reviewer) stands behind this viewer: the same user, or
        the user who made the key this viewer acts through. Either way one person would make
        both findings of a four-eyes decision."""
        return reviewer is not None and reviewer in (self.name, self.key_creator)


class PolicyLike(Protocol):
    """What review reads from a policy (``bastion.policy.Policy`` has these attributes)."""

    @property
    def queues(self) -> Mapping[str, QueueSpec]: ...
    @property
    def sla(self) -> Mapping[str, timedelta]: ...
    @property
    def review(self) -> ReviewSettings: ...


@dataclass(frozen=True)
class ReviewConfig:
    """The parts of the policy review needs, in plain values."""

    queues: tuple[str, ...] = (DEFAULT_QUEUE, DEFAULT_SENIOR_QUEUE)
    senior_queues: frozenset[str] = frozenset({DEFAULT_SENIOR_QUEUE})
    sla: Mapping[str, timedelta] = field(default_factory=lambda: dict(DEFAULT_SLA))
    lease: timedelta = DEFAULT_LEASE
    escalation_queue: str = DEFAULT_SENIOR_QUEUE

    @classmethod
    def from_policy(cls, policy: PolicyLike) -> ReviewConfig:
        """The escalation queue always counts as senior, whatever the queue list says."""
        review = policy.review
        senior = {name for name, spec in policy.queues.items() if spec.senior}
        senior.add(review.escalation_queue)
        return cls(
            queues=tuple(sorted(set(policy.queues) | {review.escalation_queue})),
            senior_queues=frozenset(senior),
            sla={**DEFAULT_SLA, **dict(policy.sla)},
            lease=review.lease,
            escalation_queue=review.escalation_queue,
        )

    def due(self, priority: str, arrived: datetime) -> datetime:
        return arrived + self.sla.get(priority, DEFAULT_SLA[priority])


# -- permissions -------------------------------------------------------------------------------


def sees_all_queues(viewer: Viewer) -> bool:
    return viewer.role in (ADMIN, SENIOR_REVIEWER)


def can_see_queue(viewer: Viewer, queue: str, config: ReviewConfig) -> bool:
    """Admins and senior reviewers: every queue. Reviewers: their own queues, never a senior
    one (even if listed on their record). Auditors: none."""
    if sees_all_queues(viewer):
        return True
    if viewer.role == REVIEWER:
        return queue in viewer.queues and queue not in config.senior_queues
    return False


def reviewer_queues(viewer: Viewer, config: ReviewConfig) -> frozenset[str] | None:
    """The queues a viewer may list: None means all; an empty set means none (auditors)."""
    if sees_all_queues(viewer):
        return None
    if viewer.role == REVIEWER:
        return frozenset(q for q in viewer.queues if q not in config.senior_queues)
    return frozenset()


def require_cases(viewer: Viewer) -> None:
    """Auditors (and any future role without case access) stop here, before any query."""
    if viewer.role not in (ADMIN, SENIOR_REVIEWER, REVIEWER):
        raise Forbidden(f"role {viewer.role} has no access to cases or content")


def require_queue(viewer: Viewer, queue: str, config: ReviewConfig) -> None:
    require_cases(viewer)
    if not can_see_queue(viewer, queue, config):
        raise Forbidden(f"{viewer.name} may not open cases in queue {queue!r}")


def join_queue(current: str, incoming: str, config: ReviewConfig) -> str:
    """A case joined by an item routed to a senior queue moves there (a more serious item must
    not stay with reviewers who may not see its queue); otherwise it stays put."""
    if incoming in config.senior_queues and current not in config.senior_queues:
        return incoming
    return current


def can_disable_entries(viewer: Viewer) -> bool:
    """Disabling a bank entry stops known material matching anywhere on this instance, so it is
    a senior reviewer's or an admin's call, never a plain reviewer's."""
    return viewer.role in (ADMIN, SENIOR_REVIEWER)


_SAME_PERSON = (
    "the second review must be done by someone other than the first reviewer (nor through a "
    "key the first reviewer created)"
)


def check_claim(viewer: Viewer, state: str, first_reviewer: str | None) -> None:
    if state not in ACTIVE_STATES:
        raise CaseClosed(f"case is already {state}")
    if state == AWAITING_SECOND and viewer.is_party(first_reviewer):
        raise Forbidden(_SAME_PERSON)


class ReasonRequired(InvalidDecision):
    """Revealing content of a decided case needs a stated reason (it goes to the audit log)."""


def check_reveal_reason(reason: object) -> str:
    """A reveal's stated reason, stripped (empty when none was given)."""
    _text("reason", reason, 2000)
    assert isinstance(reason, str)
    return reason.strip()


def check_reveal(viewer: str, state: str, holder: str | None, reason: str) -> None:
    """Need to know: while a case is active only the holder of its live claim may reveal its
    content; once decided, anyone who may open it sees the match details, and a reveal needs
    a stated reason (a decided case needs no further look as part of review work)."""
    if state in ACTIVE_STATES:
        if holder != viewer:
            held = f"it is claimed by {holder}" if holder else "nobody holds it"
            raise NotLeased(f"claim the case before revealing its content ({held})")
    elif not reason:
        raise ReasonRequired(
            "the case is decided: state why you need to see this item (the reason is recorded "
            "in the audit log)"
        )


# -- decisions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """A reviewer's finding. Build with :meth:`confirmed`, :meth:`not_abusive` or
    :meth:`escalate`; fields are validated on construction."""

    kind: DecisionKind
    classification: str | None = None
    labels: tuple[str, ...] = ()
    note: str = ""
    reason: str = ""
    disable_entries: bool = False
    #: Not abusive, on an account case: the risk detectors the reviewer found wrong (recorded
    #: per detector, for each detector's precision). Empty means every detector that fired.
    detectors: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in DECISION_KINDS:
            raise InvalidDecision(
                f"unknown decision {self.kind!r} (expected one of {', '.join(DECISION_KINDS)})"
            )
        _text("note", self.note, 10_000)
        _text("reason", self.reason, 2000)
        if not isinstance(self.disable_entries, bool):
            raise InvalidDecision("disable_entries must be true or false")
        try:
            labels = tuple(normalize_labels(list(self.labels)))
        except (TypeError, ValueError) as exc:
            raise InvalidDecision(str(exc)) from None
        object.__setattr__(self, "labels", labels)
        if not isinstance(self.detectors, list | tuple) or not all(
            isinstance(d, str) and 0 < len(d) <= 64 and d.strip() == d and "\x00" not in d
            for d in self.detectors
        ):
            raise InvalidDecision("detectors must be a list of detector names")
        object.__setattr__(self, "detectors", tuple(dict.fromkeys(self.detectors)))
        if self.detectors and self.kind != "not_abusive":
            raise InvalidDecision("only a not-abusive decision names detectors")
        if self.kind == "confirmed":
            known = CLASSIFICATIONS + ACCOUNT_CLASSIFICATIONS
            if self.classification not in known:
                raise InvalidDecision(
                    f"a confirmed decision needs a classification, one of "
                    f"{', '.join(known)}; got {self.classification!r}"
                )
        elif self.classification is not None or self.labels:
            raise InvalidDecision("only a confirmed decision carries a classification or labels")
        if self.kind == "not_abusive" and not self.reason.strip():
            raise InvalidDecision("a not-abusive decision needs a reason (it goes to the bank)")
        if self.kind != "not_abusive" and self.disable_entries:
            raise InvalidDecision("only a not-abusive decision can disable bank entries")

    @classmethod
    def confirmed(cls, classification: str, labels: Iterable[str] = (), note: str = "") -> Decision:
        return cls("confirmed", classification=classification, labels=tuple(labels), note=note)

    @classmethod
    def not_abusive(
        cls,
        reason: str,
        *,
        disable_entries: bool = False,
        note: str = "",
        detectors: Iterable[str] = (),
    ) -> Decision:
        return cls(
            "not_abusive",
            reason=reason,
            disable_entries=disable_entries,
            note=note,
            detectors=tuple(detectors),
        )

    @classmethod
    def escalate(cls, note: str = "") -> Decision:
        return cls("escalate", note=note)


def _text(what: str, value: object, limit: int) -> None:
    if not isinstance(value, str) or len(value) > limit or "\x00" in value:
        raise InvalidDecision(f"{what} must be text of at most {limit} characters")


@dataclass(frozen=True)
class CaseFacts:
    """What the decision rules need to know about a case. While it awaits a second review,
    ``classification`` tells which finding waits: a confirmation always has one, a not-abusive
    finding never does (see :func:`pending_finding`)."""

    state: str
    queue: str
    first_reviewer: str | None = None
    classification: str | None = None
    labels: tuple[str, ...] = ()
    subject: str = CONTENT


def check_subject(subject: str, decision: Decision) -> None:
    """A decision fits the case's subject: content is classified A1/A2/B1/B2 and may dispute
    bank entries; an account is classified grooming or sextortion, has no bank entries to
    disable, and its not-abusive finding may name detectors."""
    if decision.kind == "confirmed" and decision.classification not in classifications_for(subject):
        raise DecisionMismatch(
            f"a confirmed {subject} case needs a classification, one of "
            f"{', '.join(classifications_for(subject))}; got {decision.classification!r}"
        )
    if subject != ACCOUNT and decision.detectors:
        raise DecisionMismatch("only an account case's not-abusive decision names detectors")
    if subject == ACCOUNT and decision.disable_entries:
        raise DecisionMismatch("an account case has no bank entries to disable")


def pending_finding(state: str, classification: str | None) -> DecisionKind | None:
    """The first reviewer's finding a case awaiting its second review waits to have agreed:
    ``confirmed`` (it carries a classification) or ``not_abusive`` (it carries none)."""
    if state != AWAITING_SECOND:
        return None
    return "confirmed" if classification else "not_abusive"


@dataclass(frozen=True)
class Transition:
    """The result of a decision: the case's new state and queue and who decided what.

    ``event`` is ``first_confirm`` or ``first_not_abusive`` (four-eyes, awaiting a second),
    ``confirmed``, ``not_abusive``, ``escalated`` (asked for) or ``disagreed`` (second reviewer
    differed; escalated). ``disable``: the final not-abusive finding disables the matched bank
    entries (only ever true for a senior reviewer's or an admin's decision)."""

    state: str
    queue: str
    final: bool
    event: str
    first_reviewer: str | None
    second_reviewer: str | None
    classification: str | None
    labels: tuple[str, ...]
    disable: bool = False

    @property
    def escalated(self) -> bool:
        return self.event in ("escalated", "disagreed")


def transition(
    case: CaseFacts,
    viewer: Viewer,
    decision: Decision,
    *,
    four_eyes: bool,
    escalation_queue: str,
) -> Transition:
    """Apply ``decision`` by ``viewer`` to ``case``.

    - open + confirmed: final, or ``awaiting_second`` with four-eyes (the first reviewer and the
      classification are recorded).
    - open + not abusive: final, or ``awaiting_second`` with four-eyes, like a confirmation
      (nothing is disputed, disabled or sent upstream until a second reviewer agrees).
    - awaiting_second: only someone else may decide. The same finding (confirmed with the same
      classification, or not abusive) finalises it (labels of both are kept); anything else
      sends it to the escalation queue, open, with the first finding cleared (it stays in the
      case history): the senior decision then runs the same rules again.
    - escalate: the escalation queue, unless already there.

    The decision must fit the case's subject (:func:`check_subject`). Disabling the matched
    entries (``disable_entries``) needs a senior reviewer or an admin
    (:class:`Forbidden` otherwise); it takes effect with the final not-abusive decision, as
    that decision asks. These rules are the one place that says so, for every caller.
    """
    if case.state in FINAL_STATES:
        raise CaseClosed(f"case is already {case.state}")
    if case.state not in ACTIVE_STATES:
        raise CaseClosed(f"case is in unknown state {case.state!r}")
    check_subject(case.subject, decision)
    if decision.disable_entries and not can_disable_entries(viewer):
        raise Forbidden(
            "disabling bank entries needs a senior reviewer or an admin: record the finding "
            "without disabling them (a senior can disable them later), or escalate"
        )

    def escalate(event: str) -> Transition:
        return Transition(OPEN, escalation_queue, False, event, None, None, None, ())

    if case.state == AWAITING_SECOND:
        if viewer.is_party(case.first_reviewer):
            raise Forbidden(_SAME_PERSON)
        pending = pending_finding(case.state, case.classification)
        if pending == "not_abusive":
            if decision.kind != "not_abusive":
                return escalate("escalated" if decision.kind == "escalate" else "disagreed")
            return Transition(
                NOT_ABUSIVE,
                case.queue,
                True,
                "not_abusive",
                case.first_reviewer,
                viewer.name,
                None,
                (),
                disable=decision.disable_entries,
            )
        if decision.kind == "confirmed" and decision.classification == case.classification:
            labels = tuple(dict.fromkeys(case.labels + decision.labels))
            return Transition(
                CONFIRMED,
                case.queue,
                True,
                "confirmed",
                case.first_reviewer,
                viewer.name,
                case.classification,
                labels,
            )
        return escalate("escalated" if decision.kind == "escalate" else "disagreed")

    if decision.kind == "escalate":
        if case.queue == escalation_queue:
            raise InvalidDecision(f"case is already in the escalation queue {escalation_queue!r}")
        return escalate("escalated")
    if decision.kind == "not_abusive":
        if four_eyes:
            return Transition(
                AWAITING_SECOND, case.queue, False, "first_not_abusive", viewer.name, None, None, ()
            )
        return Transition(
            NOT_ABUSIVE,
            case.queue,
            True,
            "not_abusive",
            viewer.name,
            None,
            None,
            (),
            disable=decision.disable_entries,
        )
    if four_eyes:
        return Transition(
            AWAITING_SECOND,
            case.queue,
            False,
            "first_confirm",
            viewer.name,
            None,
            decision.classification,
            decision.labels,
        )
    return Transition(
        CONFIRMED,
        case.queue,
        True,
        "confirmed",
        viewer.name,
        None,
        decision.classification,
        decision.labels,
    )


def needs_reveal(decision: Decision) -> bool:
    """Escalating never requires looking at content; the other decisions do (when the verdict
    said so)."""
    return decision.kind != "escalate"


# -- what goes in and comes out ----------------------------------------------------------------


@dataclass(frozen=True)
class NewItem:
    """One piece of content to review, as the scan pipeline saw it. ``matches`` are the API's
    MatchOut dicts (bank, entry, signal_type, distance, external_id, labels, ...)."""

    kind: str
    format: str | None = None
    content_id: str | None = None
    uploader_id: str | None = None
    conversation_id: str | None = None
    source: str | None = None
    age_band: str | None = None
    scan_id: int | None = None
    signals: list[dict[str, Any]] = field(default_factory=list)
    matches: list[dict[str, Any]] = field(default_factory=list)
    media: bytes | None = None
    media_type: str | None = None
    filename: str | None = None


@dataclass(frozen=True)
class Submitted:
    case_id: int
    item_id: int
    created: bool


@dataclass(frozen=True)
class CaseItem:
    id: int
    case_id: int
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
    priority: str
    queue: str
    actions: tuple[str, ...]
    view_required: bool
    due_at: datetime
    signals: list[dict[str, Any]]
    matches: list[dict[str, Any]]
    has_media: bool
    media_type: str | None
    filename: str | None
    media_size: int | None
    media_note: str


@dataclass(frozen=True)
class CaseEvent:
    """One line of a case's history: who did what when (never content)."""

    id: int
    at: datetime
    actor: str
    kind: str
    item_id: int | None
    detail: dict[str, Any]


@dataclass(frozen=True)
class CaseSummary:
    id: int
    state: str
    queue: str
    priority: str
    opened_at: datetime
    updated_at: datetime
    due_at: datetime
    overdue: bool
    uploader_id: str | None
    rule: str | None
    reason: str
    item_count: int
    lease_holder: str | None
    lease_until: datetime | None
    first_reviewer: str | None
    classification: str | None = None
    decided_at: datetime | None = None
    subject: str = CONTENT


@dataclass(frozen=True)
class Case:
    """A case with its items and history. ``lease_holder`` is set only while the lease is live.
    ``revealed`` lists items this viewer has ever revealed (what deciding requires);
    ``viewable`` those they may fetch unblurred right now (revealed within REVEAL_WINDOW)."""

    id: int
    state: str
    queue: str
    priority: str
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
    labels: tuple[str, ...]
    decided_at: datetime | None
    items: tuple[CaseItem, ...]
    events: tuple[CaseEvent, ...]
    revealed: frozenset[int] = frozenset()
    viewable: frozenset[int] = frozenset()
    subject: str = CONTENT

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def pending(self) -> DecisionKind | None:
        """The finding awaiting a second review, if any (see :func:`pending_finding`)."""
        return pending_finding(self.state, self.classification)

    @property
    def view_required(self) -> bool:
        return any(i.view_required and i.has_media for i in self.items)

    @property
    def risk(self) -> dict[str, Any] | None:
        """An account case's latest risk snapshot (its newest item's), None for content."""
        for item in reversed(self.items):
            snap = risk_snapshot(item.signals)
            if snap is not None:
                return snap
        return None

    @property
    def detectors_fired(self) -> tuple[str, ...]:
        """The detectors that fired in any of an account case's snapshots, first seen first:
        what a not-abusive decision that names none is recorded against."""
        return fired_detectors(i.signals for i in self.items)

    def must_reveal(self) -> tuple[int, ...]:
        """Items this viewer still has to reveal before confirming or clearing the case."""
        return tuple(
            i.id
            for i in self.items
            if i.view_required and i.has_media and i.id not in self.revealed
        )


#: A detector that fired in an account case found not abusive, but which the reviewer did not
#: name: it counts neither for nor against its precision.
UNJUDGED = "unjudged"


@dataclass(frozen=True)
class DetectorPrecision:
    """How the final decisions on account cases a risk detector fired in went."""

    detector: str
    confirmed: int
    not_abusive: int
    unjudged: int

    @property
    def precision(self) -> float | None:
        judged = self.confirmed + self.not_abusive
        return self.confirmed / judged if judged else None


@dataclass(frozen=True)
class QueueCount:
    queue: str
    senior: bool
    open: int = 0
    awaiting_second: int = 0
    overdue: int = 0


@dataclass(frozen=True)
class Media:
    data: bytes
    media_type: str


@dataclass(frozen=True)
class Outcome:
    """What a decision did. ``actions`` are the policy's on-confirmed actions when the case was
    finally confirmed, else empty. ``disputed`` lists (bank, entry id) pairs that got a dispute;
    ``disabled`` those then disabled in their bank, ``disable_errors`` why others were not (both
    filled only after the decision committed, so ``then`` callbacks see them empty)."""

    case: Case
    final: bool
    actions: tuple[str, ...]
    event: str = ""
    disputed: tuple[tuple[str, int], ...] = ()
    disabled: tuple[tuple[str, int], ...] = ()
    disable_errors: tuple[str, ...] = ()


def higher(a: str, b: str) -> str:
    """The more urgent of two priorities."""
    return a if PRIORITY_RANK[a] <= PRIORITY_RANK[b] else b


def matched_entries(
    matches_per_item: Iterable[Iterable[Mapping[str, Any]]],
) -> list[tuple[str, int]]:
    """Distinct (bank, entry id) pairs across items' matches, in first-seen order; malformed
    match dicts are skipped (they come from our own scan, but old rows may differ)."""
    out: dict[tuple[str, int], None] = {}
    for matches in matches_per_item:
        for m in matches:
            bank, entry = m.get("bank"), m.get("entry")
            if isinstance(bank, str) and isinstance(entry, int) and not isinstance(entry, bool):
                out[(bank, entry)] = None
    return list(out)


def risk_snapshot(signals: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The :data:`RISK_SIGNAL` snapshot among an item's signals, if any."""
    for sig in signals:
        if isinstance(sig, Mapping) and sig.get("type") == RISK_SIGNAL:
            return dict(sig)
    return None


def fired_detectors(signals_per_item: Iterable[Iterable[Mapping[str, Any]]]) -> tuple[str, ...]:
    """Distinct detectors that fired in the items' risk snapshots, first seen first."""
    out: dict[str, None] = {}
    for signals in signals_per_item:
        snap = risk_snapshot(signals)
        for c in (snap or {}).get("contributions") or ():
            if isinstance(c, Mapping) and c.get("fired") and isinstance(c.get("detector"), str):
                out[c["detector"]] = None
    return tuple(out)
