"""Leases: exclusive, renewable, expiring, released; racing claimers get exactly one winner."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

import pytest

from bastion.review import CaseClosed, CaseLeased, Decision, Forbidden, Viewer
from bastion.review.store import ReviewStore
from tests.fixtures.clock import Clock

from .conftest import ALICE, AUDREY, BOB, LEASE, ONE_REVIEW, ROOT, SAM, item, verdict


def test_claim_is_exclusive_until_it_expires(review: ReviewStore, clock: Clock) -> None:
    case_id = review.submit(verdict(), item(), actor="key:app").case_id
    start = clock()
    case = review.claim(ALICE, case_id)
    assert (case.lease_holder, case.lease_until) == ("alice", start + LEASE)
    with pytest.raises(CaseLeased) as err:
        review.claim(BOB, case_id)
    assert (err.value.holder, err.value.until) == ("alice", start + LEASE)
    assert "alice" in str(err.value)

    clock.advance(timedelta(minutes=10))
    renewed = review.claim(ALICE, case_id)  # the holder renews
    assert renewed.lease_until == clock() + LEASE
    clock.advance(timedelta(minutes=14))
    with pytest.raises(CaseLeased):
        review.claim(BOB, case_id)
    clock.advance(timedelta(minutes=1))  # now exactly at expiry
    assert review.get_case(ROOT, case_id).lease_holder is None
    assert review.list_cases(ROOT)[0].lease_holder is None
    assert review.claim(BOB, case_id).lease_holder == "bob"
    claims = [e for e in review.get_case(ROOT, case_id).events if e.kind == "claim"]
    assert [(e.actor, e.detail["renewed"]) for e in claims] == [
        ("user:alice", False),
        ("user:alice", True),
        ("user:bob", False),
    ]
    assert [e.action for e in review.store.iter_audit()].count("case.claim") == 3


def test_release(review: ReviewStore) -> None:
    case_id = review.submit(verdict(), item(), actor="key:app").case_id
    review.claim(ALICE, case_id)
    with pytest.raises(Forbidden, match="claimed by alice"):
        review.release(BOB, case_id)
    review.release(ALICE, case_id)
    assert review.get_case(ROOT, case_id).lease_holder is None
    review.release(ALICE, case_id)  # nothing held: nothing changes
    review.claim(BOB, case_id)
    review.release(SAM, case_id)  # a senior reviewer may break a stuck lease
    case = review.get_case(ROOT, case_id)
    releases = [e for e in case.events if e.kind == "release"]
    assert [(e.actor, e.detail["forced"]) for e in releases] == [
        ("user:alice", False),
        ("user:sam", True),
    ]
    audit = [e for e in review.store.iter_audit() if e.action == "case.release"]
    assert len(audit) == 2 and audit[1].detail == {"holder": "bob", "forced": True}
    with pytest.raises(Forbidden):
        review.release(AUDREY, case_id)


def test_decided_cases_cannot_be_claimed(review: ReviewStore) -> None:
    case_id = review.submit(verdict(view_required=False), item(), actor="key:app").case_id
    review.claim(ALICE, case_id)
    out = review.decide(ALICE, case_id, Decision.confirmed("A1"), policy_review=ONE_REVIEW)
    assert out.case.lease_holder is None  # deciding releases the lease
    with pytest.raises(CaseClosed):
        review.claim(BOB, case_id)


def _race(stores: list[ReviewStore], viewers: list[Viewer], case_id: int) -> dict[str, list]:
    """Every store claims ``case_id`` for its viewer, released together by a barrier."""
    barrier = threading.Barrier(len(stores))
    out: dict[str, list] = {"won": [], "lost": [], "errors": []}

    def run(rs: ReviewStore, viewer: Viewer) -> None:
        barrier.wait()
        try:
            rs.claim(viewer, case_id)
            out["won"].append(viewer.name)
        except CaseLeased as exc:
            out["lost"].append(exc.holder)
        except BaseException as exc:
            out["errors"].append(exc)

    threads = [
        threading.Thread(target=run, args=(rs, v)) for rs, v in zip(stores, viewers, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_racing_claims_have_exactly_one_winner(make_review: Callable[[], ReviewStore]) -> None:
    """Separate stores (own engines and connections) claim the same cases at the same moment."""
    stores = [make_review() for _ in range(4)]
    viewers = [ALICE, BOB, SAM, ROOT]
    case_ids = [stores[0].submit(verdict(), item(f"u{i}"), actor="k").case_id for i in range(6)]
    for case_id in case_ids:
        out = _race(stores, viewers, case_id)
        assert out["errors"] == []
        assert len(out["won"]) == 1 and len(out["lost"]) == len(stores) - 1
        assert set(out["lost"]) == set(out["won"])  # every loser was told who won
        assert stores[0].get_case(ROOT, case_id).lease_holder == out["won"][0]
