"""Account cases' decision rules (issue 15): a case knows its subject, an account case is
classified grooming or sextortion, its not-abusive finding names detectors."""

from __future__ import annotations

import pytest

from bastion.review.model import (
    ACCOUNT,
    ACCOUNT_CLASSIFICATIONS,
    AWAITING_SECOND,
    CLASSIFICATIONS,
    CONTENT,
    OPEN,
    CaseFacts,
    Decision,
    InvalidDecision,
    Transition,
    Viewer,
    fired_detectors,
    risk_snapshot,
    subject_of_kind,
    transition,
)

ALICE = Viewer("alice", "reviewer")
BOB = Viewer("bob", "reviewer")
SAM = Viewer("sam", "senior_reviewer")


def _t(case: CaseFacts, viewer: Viewer, decision: Decision, four_eyes: bool = False) -> Transition:
    return transition(case, viewer, decision, four_eyes=four_eyes, escalation_queue="senior")


def test_account_classifications_are_grooming_and_sextortion_and_fit_only_accounts() -> None:
    assert ACCOUNT_CLASSIFICATIONS == ("grooming", "sextortion")
    account = CaseFacts(OPEN, "default", subject=ACCOUNT)
    for c in ACCOUNT_CLASSIFICATIONS:
        step = _t(account, ALICE, Decision.confirmed(c))
        assert (step.state, step.classification) == ("confirmed", c)
        with pytest.raises(InvalidDecision, match="content case"):
            _t(CaseFacts(OPEN, "default"), ALICE, Decision.confirmed(c))
    for c in CLASSIFICATIONS:
        with pytest.raises(InvalidDecision, match="account case"):
            _t(account, ALICE, Decision.confirmed(c))
    with pytest.raises(InvalidDecision, match="classification"):
        Decision.confirmed("enticement")


def test_detectors_only_on_a_not_abusive_account_decision() -> None:
    d = Decision.not_abusive("a coach", detectors=["fanout", "fanout", "age_gap"])
    assert d.detectors == ("fanout", "age_gap")
    assert Decision.not_abusive("x").detectors == ()
    with pytest.raises(InvalidDecision, match="only a not-abusive"):
        Decision("confirmed", classification="grooming", detectors=("fanout",))
    for bad in ([""], [" fanout"], ["a" * 65], [3], "fanout"):
        with pytest.raises(InvalidDecision, match="detectors"):
            Decision("not_abusive", reason="x", detectors=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidDecision, match="account case"):
        _t(CaseFacts(OPEN, "default"), ALICE, d)
    step = _t(CaseFacts(OPEN, "default", subject=ACCOUNT), ALICE, d)
    assert step.state == "not_abusive"


def test_an_account_case_has_no_entries_to_disable() -> None:
    with pytest.raises(InvalidDecision, match="no bank entries"):
        _t(
            CaseFacts(OPEN, "default", subject=ACCOUNT),
            SAM,
            Decision.not_abusive("x", disable_entries=True),
        )


def test_four_eyes_apply_to_account_cases_as_to_content() -> None:
    open_case = CaseFacts(OPEN, "default", subject=ACCOUNT)
    first = _t(open_case, ALICE, Decision.confirmed("sextortion"), True)
    assert (first.state, first.event) == (AWAITING_SECOND, "first_confirm")
    waiting = CaseFacts(AWAITING_SECOND, "default", "alice", "sextortion", subject=ACCOUNT)
    with pytest.raises(Exception, match="someone other"):
        _t(waiting, ALICE, Decision.confirmed("sextortion"))
    assert _t(waiting, BOB, Decision.confirmed("sextortion")).state == "confirmed"
    # a second reviewer who finds grooming rather than sextortion disagrees: escalated
    assert _t(waiting, BOB, Decision.confirmed("grooming")).event == "disagreed"
    na = _t(open_case, ALICE, Decision.not_abusive("coach", detectors=["fanout"]), True)
    assert (na.state, na.event) == (AWAITING_SECOND, "first_not_abusive")


def test_subject_and_snapshots() -> None:
    assert subject_of_kind("account") == ACCOUNT
    assert subject_of_kind("image") == CONTENT
    snap = {
        "type": "contact_risk",
        "score": 70,
        "contributions": [
            {"detector": "fanout", "fired": True},
            {"detector": "age_gap", "fired": False},
            {"detector": "new_account", "fired": True},
        ],
    }
    assert risk_snapshot([{"type": "pdq"}, snap]) == snap
    assert risk_snapshot([{"type": "pdq"}]) is None
    later = {"type": "contact_risk", "contributions": [{"detector": "ban_evasion", "fired": True}]}
    assert fired_detectors([[snap], [later], []]) == ("fanout", "new_account", "ban_evasion")
