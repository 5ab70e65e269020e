"""The pure review rules: queue permissions, decision validation, state transitions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bastion.policy import Policy, QueueSpec, ReviewSettings
from bastion.review import (
    AWAITING_SECOND,
    CONFIRMED,
    NOT_ABUSIVE,
    OPEN,
    CaseClosed,
    Decision,
    Forbidden,
    InvalidDecision,
    ReviewConfig,
    Viewer,
)
from bastion.review.model import (
    CaseFacts,
    can_see_queue,
    check_claim,
    higher,
    join_queue,
    matched_entries,
    pending_finding,
    require_cases,
    require_queue,
    reviewer_queues,
    transition,
)

from .conftest import ALICE, AUDREY, BOB, CAROL, POLICY, ROOT, SAM, SUE

CONFIG = ReviewConfig.from_policy(POLICY)


def test_config_from_policy_marks_senior_and_escalation_queues() -> None:
    assert CONFIG.senior_queues == {"senior"}
    assert set(CONFIG.queues) == {"default", "ncii", "senior"}
    assert CONFIG.lease == timedelta(minutes=15)
    other = Policy(
        rules=(),
        queues={"default": QueueSpec("default"), "t2": QueueSpec("t2")},
        review=ReviewSettings(escalation_queue="t2", lease=timedelta(minutes=3)),
    )
    config = ReviewConfig.from_policy(other)
    # The escalation queue is senior even when the queue list does not say so.
    assert config.senior_queues == {"t2"} and config.lease == timedelta(minutes=3)
    arrived = datetime(2025, 1, 1, tzinfo=UTC)
    assert config.due("critical", arrived) == arrived + timedelta(hours=1)


@pytest.mark.parametrize(
    ("viewer", "queue", "allowed"),
    [
        (ALICE, "default", True),
        (ALICE, "ncii", False),
        (ALICE, "senior", False),
        (BOB, "ncii", True),
        (CAROL, "senior", False),  # listed on her record, still never a senior queue
        (SAM, "senior", True),
        (SAM, "anything", True),
        (ROOT, "senior", True),
        (AUDREY, "default", False),
    ],
)
def test_queue_permissions(viewer: Viewer, queue: str, allowed: bool) -> None:
    assert can_see_queue(viewer, queue, CONFIG) is allowed
    if allowed:
        require_queue(viewer, queue, CONFIG)
    else:
        with pytest.raises(Forbidden):
            require_queue(viewer, queue, CONFIG)


def test_listable_queues_per_role() -> None:
    assert reviewer_queues(ALICE, CONFIG) == {"default"}
    assert reviewer_queues(CAROL, CONFIG) == {"default"}
    assert reviewer_queues(SAM, CONFIG) is None and reviewer_queues(ROOT, CONFIG) is None
    assert reviewer_queues(AUDREY, CONFIG) == frozenset()
    with pytest.raises(Forbidden, match="auditor has no access"):
        require_cases(AUDREY)


def test_viewer_validation() -> None:
    with pytest.raises(ValueError, match="unknown role"):
        Viewer("x", "superuser")
    with pytest.raises(ValueError, match="name"):
        Viewer(" ", "reviewer")
    assert Viewer("x", "reviewer", ["default"]).queues == ("default",)  # type: ignore[arg-type]
    assert ALICE.actor == "user:alice"


def test_decision_validation() -> None:
    d = Decision.confirmed("B2", labels=[" csam ", "csam", "video"])
    assert d.labels == ("csam", "video")
    with pytest.raises(InvalidDecision, match="classification"):
        Decision.confirmed("C3")
    with pytest.raises(InvalidDecision, match="classification"):
        Decision("confirmed")
    with pytest.raises(InvalidDecision, match="needs a reason"):
        Decision.not_abusive("  ")
    with pytest.raises(InvalidDecision, match="only a not-abusive"):
        Decision("escalate", disable_entries=True)
    with pytest.raises(InvalidDecision, match="only a confirmed"):
        Decision("escalate", classification="A1")
    with pytest.raises(InvalidDecision, match="unknown decision"):
        Decision("delete")  # type: ignore[arg-type]
    with pytest.raises(InvalidDecision, match="note"):
        Decision.escalate("x" * 10_001)
    with pytest.raises(InvalidDecision, match="label"):
        Decision.confirmed("A1", labels=["a;b"])


def _t(facts: CaseFacts, viewer: Viewer, decision: Decision, four_eyes: bool = False):  # type: ignore[no-untyped-def]
    return transition(facts, viewer, decision, four_eyes=four_eyes, escalation_queue="senior")


def test_single_review_transitions() -> None:
    open_case = CaseFacts(OPEN, "default")
    t = _t(open_case, ALICE, Decision.confirmed("A2", ["x"]))
    assert (t.state, t.final, t.event, t.first_reviewer, t.classification, t.labels) == (
        CONFIRMED,
        True,
        "confirmed",
        "alice",
        "A2",
        ("x",),
    )
    t = _t(open_case, ALICE, Decision.not_abusive("benign"))
    assert (t.state, t.final, t.queue) == (NOT_ABUSIVE, True, "default")
    t = _t(open_case, ALICE, Decision.escalate("unsure"))
    assert (t.state, t.queue, t.final, t.escalated) == (OPEN, "senior", False, True)
    with pytest.raises(InvalidDecision, match="already in the escalation queue"):
        _t(CaseFacts(OPEN, "senior"), SAM, Decision.escalate())
    for final in (CONFIRMED, NOT_ABUSIVE):
        with pytest.raises(CaseClosed):
            _t(CaseFacts(final, "default"), ALICE, Decision.escalate())


def test_four_eyes_transitions() -> None:
    first = _t(CaseFacts(OPEN, "default"), ALICE, Decision.confirmed("A1", ["a"]), True)
    assert (first.state, first.final, first.event) == (AWAITING_SECOND, False, "first_confirm")
    waiting = CaseFacts(AWAITING_SECOND, "default", "alice", "A1", ("a",))
    with pytest.raises(Forbidden, match="someone other"):
        _t(waiting, ALICE, Decision.confirmed("A1"), True)
    agreed = _t(waiting, BOB, Decision.confirmed("A1", ["b", "a"]), True)
    assert (agreed.state, agreed.final, agreed.first_reviewer, agreed.second_reviewer) == (
        CONFIRMED,
        True,
        "alice",
        "bob",
    )
    assert agreed.labels == ("a", "b")
    for other in (Decision.confirmed("B1"), Decision.not_abusive("no"), Decision.escalate()):
        t = _t(waiting, BOB, other, True)
        assert (t.state, t.queue, t.final, t.first_reviewer, t.classification) == (
            OPEN,
            "senior",
            False,
            None,
            None,
        )
        assert t.escalated
    assert _t(waiting, BOB, Decision.confirmed("B1"), True).event == "disagreed"
    # A senior confirmation after escalation needs its own second reviewer under four-eyes.
    again = _t(CaseFacts(OPEN, "senior"), SAM, Decision.confirmed("A1"), True)
    assert again.state == AWAITING_SECOND
    done = _t(CaseFacts(AWAITING_SECOND, "senior", "sam", "A1"), SUE, Decision.confirmed("A1"))
    assert done.state == CONFIRMED


def test_claim_rules() -> None:
    check_claim(ALICE, OPEN, None)
    check_claim(BOB, AWAITING_SECOND, "alice")
    with pytest.raises(Forbidden):
        check_claim(ALICE, AWAITING_SECOND, "alice")
    with pytest.raises(CaseClosed):
        check_claim(ALICE, CONFIRMED, None)


def test_join_queue_moves_only_towards_senior() -> None:
    assert join_queue("default", "senior", CONFIG) == "senior"
    assert join_queue("senior", "default", CONFIG) == "senior"
    assert join_queue("default", "ncii", CONFIG) == "default"


def test_small_helpers() -> None:
    assert higher("low", "high") == "high" and higher("critical", "normal") == "critical"
    matches = [
        [{"bank": "b", "entry": 1}, {"bank": "b", "entry": 2}],
        [{"bank": "b", "entry": 1}, {"bank": "c", "entry": True}, {"entry": 5}],
    ]
    assert matched_entries(matches) == [("b", 1), ("b", 2)]


def test_four_eyes_applies_to_not_abusive_and_disabling_needs_a_senior() -> None:
    open_case = CaseFacts(OPEN, "default")
    first = _t(open_case, ALICE, Decision.not_abusive("benign"), True)
    assert (first.state, first.final, first.event, first.first_reviewer) == (
        AWAITING_SECOND,
        False,
        "first_not_abusive",
        "alice",
    )
    assert first.classification is None and not first.disable
    waiting = CaseFacts(AWAITING_SECOND, "default", "alice", None)
    assert pending_finding(waiting.state, waiting.classification) == "not_abusive"
    assert pending_finding(AWAITING_SECOND, "A1") == "confirmed"
    assert pending_finding(OPEN, None) is None
    with pytest.raises(Forbidden, match="someone other"):
        _t(waiting, ALICE, Decision.not_abusive("benign"), True)
    agreed = _t(waiting, BOB, Decision.not_abusive("agree"), True)
    assert (agreed.state, agreed.final, agreed.first_reviewer, agreed.second_reviewer) == (
        NOT_ABUSIVE,
        True,
        "alice",
        "bob",
    )
    assert not agreed.disable
    # Any other second finding escalates, with the first one cleared.
    for other in (Decision.confirmed("A1"), Decision.escalate()):
        t = _t(waiting, BOB, other, True)
        assert (t.state, t.queue, t.first_reviewer, t.escalated) == (OPEN, "senior", None, True)
    # Disabling entries: refused to reviewers on every path, allowed to seniors and admins.
    disable = Decision.not_abusive("benign", disable_entries=True)
    for facts, four_eyes in ((open_case, False), (open_case, True), (waiting, True)):
        with pytest.raises(Forbidden, match="senior reviewer or an admin"):
            _t(facts, BOB, disable, four_eyes)
    assert _t(open_case, SAM, disable).disable
    assert _t(waiting, ROOT, disable, True).disable
    assert not _t(open_case, SAM, disable, True).disable  # waits: nothing disabled yet
    assert not ALICE.may_disable_entries and SAM.may_disable_entries and ROOT.may_disable_entries
