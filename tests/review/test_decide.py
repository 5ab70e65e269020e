"""Decisions: leases and reveals required, four-eyes, escalation, disputes and bank feedback,
callbacks inside the transaction, and the audit trail they leave."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from bastion.banks.model import NewEntry
from bastion.db import Store
from bastion.review import (
    AWAITING_SECOND,
    CONFIRMED,
    NOT_ABUSIVE,
    OPEN,
    CaseClosed,
    Decision,
    Forbidden,
    InvalidDecision,
    NotLeased,
    RevealRequired,
)
from bastion.review.store import ReviewStore, disputes_t
from bastion.signals.base import SignalType
from bastion.store import InvalidInput
from tests.fixtures.clock import Clock

from .conftest import ALICE, BOB, FOUR_EYES, ONE_REVIEW, ROOT, SAM, SUE, item, verdict

PIXEL = bytes.fromhex(  # a 1x1 grey PNG: benign media so reveal has something to gate
    "89504e470d0a1a0a0000000d4948445200000001000000010800000000"
    "3a7e9b550000000a49444154789c63680000000082008177cd72b60000000049454e44ae426082"
)


def _media_item(uploader: str = "u1", **kwargs: object):  # type: ignore[no-untyped-def]
    return item(uploader, media=PIXEL, media_type="image/png", **kwargs)


def test_deciding_needs_a_live_lease(review: ReviewStore, clock: Clock) -> None:
    case_id = review.submit(verdict(view_required=False), item(), actor="k").case_id
    with pytest.raises(NotLeased):
        review.decide(ALICE, case_id, Decision.confirmed("A1"), policy_review=ONE_REVIEW)
    review.claim(BOB, case_id)
    with pytest.raises(NotLeased):  # someone else's lease
        review.decide(ALICE, case_id, Decision.confirmed("A1"), policy_review=ONE_REVIEW)
    clock.advance(timedelta(minutes=16))
    with pytest.raises(NotLeased):  # bob's own lease has expired
        review.decide(BOB, case_id, Decision.confirmed("A1"), policy_review=ONE_REVIEW)
    review.claim(BOB, case_id)
    out = review.decide(BOB, case_id, Decision.confirmed("A1"), policy_review=ONE_REVIEW)
    assert out.final and out.case.state == CONFIRMED
    with pytest.raises(InvalidInput):
        review.decide(BOB, case_id, "confirmed", policy_review=ONE_REVIEW)  # type: ignore[arg-type]


def test_view_required_items_must_be_revealed_first(review: ReviewStore) -> None:
    first = review.submit(verdict(), _media_item(), actor="k")
    second = review.submit(verdict(view_required=False), _media_item(), actor="k")
    third = review.submit(verdict(), item("u1"), actor="k")  # no media: nothing to reveal
    case_id = first.case_id
    assert second.case_id == third.case_id == case_id
    review.claim(ALICE, case_id)
    with pytest.raises(RevealRequired) as err:
        review.decide(ALICE, case_id, Decision.confirmed("A1"), policy_review=ONE_REVIEW)
    assert err.value.item_ids == (first.item_id,)
    with pytest.raises(RevealRequired):
        review.decide(ALICE, case_id, Decision.not_abusive("benign"), policy_review=ONE_REVIEW)
    # Someone else's reveal does not count for alice (bob held the claim meanwhile).
    review.release(ALICE, case_id)
    review.claim(BOB, case_id)
    review.reveal(BOB, case_id, first.item_id)
    review.release(BOB, case_id)
    review.claim(ALICE, case_id)
    assert review.get_case(ALICE, case_id).must_reveal() == (first.item_id,)
    review.reveal(ALICE, case_id, first.item_id)
    case = review.get_case(ALICE, case_id)
    assert case.revealed == {first.item_id} and case.must_reveal() == ()
    out = review.decide(ALICE, case_id, Decision.confirmed("A1"), policy_review=ONE_REVIEW)
    assert out.case.state == CONFIRMED


def test_escalating_needs_no_reveal(review: ReviewStore) -> None:
    case_id = review.submit(verdict(), _media_item(), actor="k").case_id
    review.claim(ALICE, case_id)
    out = review.decide(ALICE, case_id, Decision.escalate("need a senior"), policy_review=FOUR_EYES)
    assert (out.final, out.event, out.case.state, out.case.queue) == (
        False,
        "escalated",
        OPEN,
        "senior",
    )
    assert out.case.lease_holder is None and out.actions == ()
    with pytest.raises(Forbidden):
        review.get_case(ALICE, case_id)  # reviewers never see the senior queue
    with pytest.raises(Forbidden):
        review.claim(ALICE, case_id)
    review.claim(SAM, case_id)
    with pytest.raises(InvalidDecision, match="already in the escalation queue"):
        review.decide(SAM, case_id, Decision.escalate(), policy_review=ONE_REVIEW)
    history = [e.kind for e in review.get_case(SAM, case_id).events]
    assert history == ["open", "claim", "escalate", "claim"]
    escalations = [e for e in review.store.iter_audit() if e.action == "case.escalate"]
    assert escalations[0].detail["from_queue"] == "default"
    assert "note" not in escalations[0].detail  # free text stays in the case history
    assert review.get_case(SAM, case_id).events[2].detail["note"] == "need a senior"


def test_four_eyes_agreement(review: ReviewStore) -> None:
    case_id = review.submit(verdict(view_required=False), item(), actor="k").case_id
    review.claim(ALICE, case_id)
    first = review.decide(
        ALICE, case_id, Decision.confirmed("B2", ["csam"]), policy_review=FOUR_EYES
    )
    assert (first.final, first.event, first.actions) == (False, "first_confirm", ())
    assert (first.case.state, first.case.first_reviewer, first.case.classification) == (
        AWAITING_SECOND,
        "alice",
        "B2",
    )
    assert first.case.lease_holder is None
    with pytest.raises(Forbidden, match="someone other"):
        review.claim(ALICE, case_id)
    review.claim(BOB, case_id)
    done = review.decide(BOB, case_id, Decision.confirmed("B2", ["video"]), policy_review=FOUR_EYES)
    assert done.final and done.event == "confirmed"
    assert done.actions == FOUR_EYES.on_confirmed and done.actions
    c = done.case
    assert (c.state, c.classification, c.first_reviewer, c.second_reviewer) == (
        CONFIRMED,
        "B2",
        "alice",
        "bob",
    )
    assert c.labels == ("csam", "video") and c.decided_at is not None
    with pytest.raises(CaseClosed):
        review.decide(BOB, case_id, Decision.escalate(), policy_review=FOUR_EYES)
    decisions = [e for e in review.store.iter_audit() if e.action == "case.decide"]
    assert [(e.actor, e.detail["outcome"]) for e in decisions] == [
        ("user:alice", "first_confirm"),
        ("user:bob", "confirmed"),
    ]
    assert review.store.verify_audit_chain() is None


def test_four_eyes_disagreement_escalates_and_keeps_history(review: ReviewStore) -> None:
    case_id = review.submit(verdict(view_required=False), item(), actor="k").case_id
    review.claim(ALICE, case_id)
    review.decide(ALICE, case_id, Decision.confirmed("A1"), policy_review=FOUR_EYES)
    review.claim(BOB, case_id)
    out = review.decide(BOB, case_id, Decision.confirmed("B1"), policy_review=FOUR_EYES)
    assert (out.final, out.event, out.case.state, out.case.queue) == (
        False,
        "disagreed",
        OPEN,
        "senior",
    )
    assert out.case.first_reviewer is None and out.case.classification is None
    # A senior confirms; under four-eyes another senior must agree.
    review.claim(SAM, case_id)
    mid = review.decide(SAM, case_id, Decision.confirmed("A1"), policy_review=FOUR_EYES)
    assert mid.case.state == AWAITING_SECOND and mid.case.queue == "senior"
    review.claim(SUE, case_id)
    final = review.decide(SUE, case_id, Decision.confirmed("A1"), policy_review=FOUR_EYES)
    assert (final.case.state, final.case.first_reviewer, final.case.second_reviewer) == (
        CONFIRMED,
        "sam",
        "sue",
    )
    events = [
        (e.actor, e.kind, e.detail.get("outcome")) for e in final.case.events if e.kind != "claim"
    ]
    assert events == [
        ("k", "open", None),
        ("user:alice", "decide", "first_confirm"),
        ("user:bob", "escalate", "disagreed"),
        ("user:sam", "decide", "first_confirm"),
        ("user:sue", "decide", "confirmed"),
    ]


def test_second_not_abusive_escalates_without_disputes(review: ReviewStore, store: Store) -> None:
    case_id = review.submit(
        verdict(view_required=False), item(matches=[{"bank": "b", "entry": 1}]), actor="k"
    ).case_id
    review.claim(ALICE, case_id)
    review.decide(ALICE, case_id, Decision.confirmed("A1"), policy_review=FOUR_EYES)
    review.claim(SAM, case_id)
    out = review.decide(
        SAM, case_id, Decision.not_abusive("benign", disable_entries=True), policy_review=FOUR_EYES
    )
    assert out.event == "disagreed" and out.case.queue == "senior"
    assert out.disputed == () and review.disputes_for_entry(1) == 0


def _bank(store: Store) -> list[int]:
    store.create_bank("hashes", labels=["csam"])
    store.add_entries(
        "hashes",
        [NewEntry(SignalType.MD5, f"{i:032x}", external_id=f"ext-{i}") for i in range(1, 4)],
    )
    return [e.id for e in store.list_entries("hashes")]


def _matches(entry_ids: list[int]) -> list[dict[str, object]]:
    return [
        {"bank": "hashes", "entry": e, "signal_type": "md5", "distance": 0, "labels": ["csam"]}
        for e in entry_ids
    ]


def test_not_abusive_disputes_and_disables_matched_entries(
    review: ReviewStore, store: Store
) -> None:
    e1, e2, e3 = _bank(store)
    s1 = review.submit(verdict(view_required=False), item(matches=_matches([e1, e2])), actor="k")
    review.submit(verdict(view_required=False), item(matches=_matches([e2])), actor="k")
    # The bank is renamed before the decision: entries are disabled where they are now.
    store.update_bank("hashes", name="hashes-v2")
    review.claim(SAM, s1.case_id)
    out = review.decide(
        SAM,
        s1.case_id,
        Decision.not_abusive("a stock photo", disable_entries=True),
        policy_review=ONE_REVIEW,
    )
    assert out.final and out.case.state == NOT_ABUSIVE and out.actions == ()
    assert out.disputed == (("hashes", e1), ("hashes", e2))
    assert out.disabled == (("hashes-v2", e1), ("hashes-v2", e2)) and out.disable_errors == ()
    for e in (e1, e2):
        entry = store.get_entry(e)
        assert not entry.enabled and "a stock photo" in entry.disabled_reason
        assert f"case {s1.case_id}" in entry.disabled_reason
        assert review.disputes_for_entry(e) == 1
    assert store.get_entry(e3).enabled and review.disputes_for_entry(e3) == 0
    with store.engine.connect() as conn:
        row = conn.execute(select(disputes_t).where(disputes_t.c.entry_id == e1)).one()
    assert (row.bank, row.case_id, row.reviewer, row.reason, row.disable) == (
        "hashes",
        s1.case_id,
        "sam",
        "a stock photo",
        True,
    )
    actions = [(e.action, e.target) for e in store.iter_audit()]
    assert ("entry.dispute", f"hashes/{e1}") in actions
    assert ("bank.entry.disable", f"hashes-v2/{e2}") in actions
    assert store.verify_audit_chain() is None


def test_not_abusive_without_disabling_keeps_entries(review: ReviewStore, store: Store) -> None:
    e1, _, _ = _bank(store)
    s = review.submit(verdict(view_required=False), item(matches=_matches([e1])), actor="k")
    store.remove_entry("hashes", e1)  # gone before the decision: the dispute is still kept
    review.claim(ALICE, s.case_id)
    out = review.decide(ALICE, s.case_id, Decision.not_abusive("ok"), policy_review=ONE_REVIEW)
    assert out.disputed == (("hashes", e1),) and out.disabled == ()
    assert review.disputes_for_entry(e1) == 1


def test_disabling_a_removed_entry_is_reported_not_fatal(review: ReviewStore, store: Store) -> None:
    e1, e2, _ = _bank(store)
    s = review.submit(verdict(view_required=False), item(matches=_matches([e1, e2])), actor="k")
    store.remove_entry("hashes", e1)
    review.claim(ROOT, s.case_id)
    out = review.decide(
        ROOT, s.case_id, Decision.not_abusive("ok", disable_entries=True), policy_review=ONE_REVIEW
    )
    assert out.case.state == NOT_ABUSIVE
    assert out.disabled == (("hashes", e2),)
    assert len(out.disable_errors) == 1 and str(e1) in out.disable_errors[0]
    assert not store.get_entry(e2).enabled


def test_then_sees_the_outcome_and_its_failure_rolls_back(review: ReviewStore) -> None:
    case_id = review.submit(verdict(view_required=False), item(), actor="k").case_id
    review.claim(ALICE, case_id)

    def fail(conn, outcome) -> None:  # type: ignore[no-untyped-def]
        assert outcome.case.state == CONFIRMED
        raise RuntimeError("outbox down")

    before = len(review.store.iter_audit())
    with pytest.raises(RuntimeError):
        review.decide(ALICE, case_id, Decision.confirmed("A1"), policy_review=ONE_REVIEW, then=fail)
    case = review.get_case(ROOT, case_id)
    assert case.state == OPEN and case.lease_holder == "alice"  # nothing changed
    assert len(review.store.iter_audit()) == before + 1  # only the case.view just now

    got = []
    out = review.decide(
        ALICE,
        case_id,
        Decision.confirmed("A1"),
        policy_review=ONE_REVIEW,
        then=lambda conn, outcome: got.append((outcome.final, outcome.actions)),
    )
    assert got == [(True, ONE_REVIEW.on_confirmed)] and out.final


def test_disputes_table_counts_nothing_for_bad_ids(review: ReviewStore, store: Store) -> None:
    assert review.disputes_for_entry(0) == 0 and review.disputes_for_entry(2**70) == 0
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(disputes_t)).scalar_one() == 0


# -- four-eyes on "not abusive", and who may disable entries (issue 12, finding 8) ------------


def test_a_plain_reviewer_cannot_whitelist_under_four_eyes(
    review: ReviewStore, store: Store
) -> None:
    """The attack: one plain reviewer clears a case with disable_entries. It is refused; without
    disabling, the finding waits for a second reviewer and nothing takes effect meanwhile."""
    e1, _, _ = _bank(store)
    s = review.submit(verdict(view_required=False), item(matches=_matches([e1])), actor="k")
    review.claim(ALICE, s.case_id)
    with pytest.raises(Forbidden, match="senior reviewer or an admin"):
        review.decide(
            ALICE,
            s.case_id,
            Decision.not_abusive("a stock photo", disable_entries=True),
            policy_review=FOUR_EYES,
        )
    case = review.get_case(ROOT, s.case_id)
    assert (case.state, case.lease_holder) == (OPEN, "alice")  # nothing changed
    assert store.get_entry(e1).enabled and review.disputes_for_entry(e1) == 0
    denied = [e for e in store.iter_audit() if e.action == "access.denied"]
    assert denied[-1].actor == "user:alice" and denied[-1].detail["attempted"] == "case.decide"

    first = review.decide(
        ALICE, s.case_id, Decision.not_abusive("a stock photo"), policy_review=FOUR_EYES
    )
    assert (first.final, first.event, first.disputed, first.disabled) == (
        False,
        "first_not_abusive",
        (),
        (),
    )
    assert (first.case.state, first.case.first_reviewer, first.case.classification) == (
        AWAITING_SECOND,
        "alice",
        None,
    )
    assert first.case.pending == "not_abusive" and first.case.decided_at is None
    assert store.get_entry(e1).enabled and review.disputes_for_entry(e1) == 0
    with pytest.raises(Forbidden, match="someone other"):
        review.claim(ALICE, s.case_id)
    # Another plain reviewer may agree, but not disable either.
    review.claim(BOB, s.case_id)
    with pytest.raises(Forbidden, match="senior reviewer or an admin"):
        review.decide(
            BOB,
            s.case_id,
            Decision.not_abusive("ok", disable_entries=True),
            policy_review=FOUR_EYES,
        )
    done = review.decide(BOB, s.case_id, Decision.not_abusive("agreed"), policy_review=FOUR_EYES)
    assert (done.final, done.event, done.case.state) == (True, "not_abusive", NOT_ABUSIVE)
    assert (done.case.first_reviewer, done.case.second_reviewer) == ("alice", "bob")
    assert done.disputed == (("hashes", e1),) and done.disabled == ()
    assert store.get_entry(e1).enabled and review.disputes_for_entry(e1) == 1
    outcomes = [e.detail["outcome"] for e in store.iter_audit() if e.action == "case.decide"]
    assert outcomes == ["first_not_abusive", "not_abusive"]
    assert store.verify_audit_chain() is None


def test_a_senior_second_reviewer_may_disable_under_four_eyes(
    review: ReviewStore, store: Store
) -> None:
    e1, e2, _ = _bank(store)
    s = review.submit(verdict(view_required=False), item(matches=_matches([e1, e2])), actor="k")
    # Even a senior's own finding waits for a second reviewer, and disables nothing yet.
    review.claim(SAM, s.case_id)
    first = review.decide(
        SAM, s.case_id, Decision.not_abusive("stock", disable_entries=True), policy_review=FOUR_EYES
    )
    assert first.case.state == AWAITING_SECOND and first.disabled == ()
    assert store.get_entry(e1).enabled and store.get_entry(e2).enabled
    review.claim(SUE, s.case_id)
    done = review.decide(
        SUE, s.case_id, Decision.not_abusive("stock", disable_entries=True), policy_review=FOUR_EYES
    )
    assert done.final and done.disabled == (("hashes", e1), ("hashes", e2))
    assert not store.get_entry(e1).enabled and not store.get_entry(e2).enabled
    with store.engine.connect() as conn:
        rows = conn.execute(select(disputes_t.c.reviewer, disputes_t.c.disable)).all()
    assert sorted(rows) == [("sue", True), ("sue", True)]


def test_a_second_reviewer_who_disagrees_with_not_abusive_escalates(review: ReviewStore) -> None:
    for second in (Decision.confirmed("A1"), Decision.escalate("unsure")):
        s = review.submit(
            verdict(view_required=False), item(f"u-{second.kind}", matches=_matches([1])), actor="k"
        )
        review.claim(ALICE, s.case_id)
        review.decide(ALICE, s.case_id, Decision.not_abusive("benign"), policy_review=FOUR_EYES)
        review.claim(BOB, s.case_id)
        out = review.decide(BOB, s.case_id, second, policy_review=FOUR_EYES)
        assert (out.final, out.case.state, out.case.queue) == (False, OPEN, "senior")
        assert out.event == ("disagreed" if second.kind == "confirmed" else "escalated")
        assert out.case.first_reviewer is None and out.disputed == ()
    assert review.disputes_for_entry(1) == 0
