"""Opening and joining cases, queue visibility per role, ordering, counts and overdue flags."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from bastion.db import Store
from bastion.review import (
    AWAITING_SECOND,
    OPEN,
    CaseNotFound,
    Decision,
    Forbidden,
    NewItem,
    Submitted,
    Viewer,
)
from bastion.review.store import ReviewStore, cases_t, items_t
from bastion.store import InvalidInput
from tests.fixtures.clock import Clock

from .conftest import ALICE, AUDREY, BOB, CAROL, FOUR_EYES, ONE_REVIEW, ROOT, SAM, item, verdict


def _count(store: Store, table) -> int:  # type: ignore[no-untyped-def]
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_open_then_join_the_uploaders_open_case(review: ReviewStore, clock: Clock) -> None:
    first = review.submit(verdict("normal"), item("u1", content_id="c1"), actor="key:app")
    assert first.created
    clock.advance(timedelta(minutes=5))
    second = review.submit(verdict("high"), item("u1", content_id="c2"), actor="key:app")
    assert (second.created, second.case_id) == (False, first.case_id)
    other = review.submit(verdict("low"), item("u2"), actor="key:app")
    anonymous = [review.submit(verdict(), item(None), actor="system") for _ in range(2)]
    assert other.case_id != first.case_id
    assert len({s.case_id for s in anonymous} | {first.case_id, other.case_id}) == 4

    case = review.get_case(ROOT, first.case_id)
    assert [i.content_id for i in case.items] == ["c1", "c2"]
    # Priority is the highest of its items; due time the earliest SLA deadline (normal: 24 h
    # from arrival, high: 4 h from 5 minutes later).
    assert case.priority == "high"
    assert case.due_at == case.opened_at + timedelta(minutes=5, hours=4)
    assert case.reason == "test-rule matched"
    assert [e.kind for e in case.events] == ["open", "join"]
    assert case.events[1].detail["item"] == second.item_id
    actions = [e.action for e in review.store.iter_audit()]
    assert actions.count("case.open") == 4 and actions.count("case.join") == 1


def test_a_decided_case_is_not_joined(review: ReviewStore) -> None:
    first = review.submit(verdict(view_required=False), item("u1"), actor="key:app")
    review.claim(ALICE, first.case_id)
    review.decide(ALICE, first.case_id, Decision.not_abusive("benign"), policy_review=ONE_REVIEW)
    again = review.submit(verdict(), item("u1"), actor="key:app")
    assert again.created and again.case_id != first.case_id


def test_joining_moves_a_case_to_a_senior_queue_and_reopens_a_second_review(
    review: ReviewStore,
) -> None:
    first = review.submit(verdict(view_required=False), item("u1"), actor="key:app")
    review.claim(ALICE, first.case_id)
    review.decide(ALICE, first.case_id, Decision.confirmed("A2"), policy_review=FOUR_EYES)
    assert review.get_case(ROOT, first.case_id).state == AWAITING_SECOND
    joined = review.submit(verdict("critical", "senior"), item("u1"), actor="key:app")
    assert joined.case_id == first.case_id
    case = review.get_case(ROOT, first.case_id)
    # The first confirmation did not cover the new item: the case is open again, and it went to
    # the senior queue with its more serious item.
    assert (case.state, case.queue, case.priority) == (OPEN, "senior", "critical")
    assert case.first_reviewer is None and case.classification is None
    assert case.events[-1].detail["reopened_from"] == AWAITING_SECOND
    assert case.events[-1].detail["moved_from"] == "default"
    with pytest.raises(Forbidden):
        review.get_case(ALICE, first.case_id)


def test_allow_verdicts_and_bad_input_store_nothing(review: ReviewStore) -> None:
    with pytest.raises(InvalidInput, match="'allow' verdict does not open a case"):
        review.submit(verdict(decision="allow"), item(), actor="key:app")
    bad = [
        (verdict("urgent"), item()),
        (verdict(queue=""), item()),
        (verdict(), item(kind="")),
        (verdict(), item(uploader="x" * 513)),
        (verdict(), item(content_id="a\x00b")),
        (verdict(), item(signals="not a list")),
        (verdict(), item(matches=[{"bank": float("nan")}])),
        (verdict(), item(scan_id=-1)),
        (verdict(), item(media="not bytes")),
        (verdict(), item(media=b"x", media_type="jpeg")),
    ]
    for v, it in bad:
        with pytest.raises(InvalidInput):
            review.submit(v, it, actor="key:app")
    with pytest.raises(InvalidInput):
        review.submit(verdict(), NewItem(kind="image"), actor="")
    assert _count(review.store, cases_t) == 0 and _count(review.store, items_t) == 0
    assert review.store.iter_audit() == []


def test_then_runs_inside_the_transaction(review: ReviewStore) -> None:
    seen = []

    def then(conn, submitted) -> None:  # type: ignore[no-untyped-def]
        # The case is visible on the transaction's own connection before commit.
        seen.append(conn.execute(select(cases_t.c.id)).scalars().all())
        seen.append(submitted)

    done = review.submit(verdict(), item(), actor="key:app", then=then)
    assert seen == [[done.case_id], done]

    def fail(conn, submitted) -> None:  # type: ignore[no-untyped-def]
        raise RuntimeError("outbox unavailable")

    with pytest.raises(RuntimeError):
        review.submit(verdict(), item("u9"), actor="key:app", then=fail)
    assert _count(review.store, cases_t) == 1  # the failed submit left nothing behind
    assert [e.action for e in review.store.iter_audit()] == ["case.open"]


def _fill(review: ReviewStore, clock: Clock) -> dict[str, int]:
    ids = {}
    for name, prio, queue in [
        ("d-low", "low", "default"),
        ("d-normal", "normal", "default"),
        ("d-critical", "critical", "default"),
        ("n-high", "high", "ncii"),
        ("s-high", "high", "senior"),
        ("d-normal-later", "normal", "default"),
    ]:
        ids[name] = review.submit(verdict(prio, queue), item(name), actor="key:app").case_id
        clock.advance(timedelta(minutes=1))
    return ids


def test_queue_visibility_per_role(review: ReviewStore, clock: Clock) -> None:
    ids = _fill(review, clock)
    order = ["d-critical", "d-normal", "d-normal-later", "d-low"]
    assert [c.id for c in review.list_cases(ALICE)] == [ids[n] for n in order]
    assert [c.id for c in review.list_cases(CAROL)] == [ids[n] for n in order]
    assert {c.queue for c in review.list_cases(BOB)} == {"default", "ncii"}
    every = ["d-critical", "n-high", "s-high", "d-normal", "d-normal-later", "d-low"]
    for viewer in (SAM, ROOT):
        assert [c.id for c in review.list_cases(viewer)] == [ids[n] for n in every]
    assert [c.id for c in review.list_cases(SAM, queue="senior")] == [ids["s-high"]]

    for viewer, queue in ((ALICE, "ncii"), (ALICE, "senior"), (CAROL, "senior")):
        with pytest.raises(Forbidden):
            review.list_cases(viewer, queue=queue)
    with pytest.raises(Forbidden):
        review.get_case(ALICE, ids["n-high"])
    with pytest.raises(Forbidden):
        review.get_case(CAROL, ids["s-high"])
    review.get_case(BOB, ids["n-high"])

    for call in (
        lambda: review.list_cases(AUDREY),
        lambda: review.queue_counts(AUDREY),
        lambda: review.get_case(AUDREY, ids["d-low"]),
        lambda: review.claim(AUDREY, ids["d-low"]),
        lambda: review.reveal(AUDREY, ids["d-low"], 1),
        lambda: review.media(AUDREY, ids["d-low"], 1, clear=False),
    ):
        with pytest.raises(Forbidden):
            call()
    denied = [e for e in review.store.iter_audit() if e.action == "access.denied"]
    assert {e.actor for e in denied} == {"user:alice", "user:carol", "user:audrey"}
    assert denied[0].detail["attempted"] == "case.view"
    views = [e for e in review.store.iter_audit() if e.action == "case.view"]
    assert [(e.actor, e.target) for e in views] == [("user:bob", f"case:{ids['n-high']}")]


def test_paging_and_states_filter(review: ReviewStore, clock: Clock) -> None:
    ids = _fill(review, clock)
    first = review.list_cases(SAM, limit=2)
    rest = review.list_cases(SAM, limit=10, after=first[-1].id)
    assert [c.id for c in first + rest] == [c.id for c in review.list_cases(SAM)]
    assert len(first) == 2 and len(rest) == 4
    assert review.list_cases(SAM, after=rest[-1].id) == []
    review.claim(ALICE, ids["d-low"])
    review.decide(ALICE, ids["d-low"], Decision.escalate("not sure"), policy_review=FOUR_EYES)
    assert ids["d-low"] not in [c.id for c in review.list_cases(ALICE)]
    assert [c.id for c in review.list_cases(SAM, states=("confirmed", "not_abusive"))] == []
    with pytest.raises(InvalidInput):
        review.list_cases(SAM, states=("bogus",))
    with pytest.raises(InvalidInput):
        review.list_cases(SAM, limit=0)
    with pytest.raises(CaseNotFound):
        review.list_cases(SAM, after=10**6)


def test_counts_and_overdue(review: ReviewStore, clock: Clock) -> None:
    ids = _fill(review, clock)
    counts = review.queue_counts(ALICE)
    assert list(counts) == ["default"]
    assert list(review.queue_counts(BOB)) == ["default", "ncii"]
    # A queue on the reviewer's record is listed even when empty; a senior one never is.
    odd = Viewer("olga", "reviewer", ("zz", "senior", "default"))
    assert {q: c.open for q, c in review.queue_counts(odd).items()} == {"default": 4, "zz": 0}
    assert (counts["default"].open, counts["default"].overdue) == (4, 0)
    everything = review.queue_counts(ROOT)
    assert list(everything) == ["default", "ncii", "senior"]
    assert everything["senior"].senior and not everything["ncii"].senior
    assert (everything["ncii"].open, everything["senior"].open) == (1, 1)

    clock.advance(timedelta(hours=2))  # past the critical SLA (1 h) only
    summaries = {c.id: c for c in review.list_cases(ROOT)}
    assert summaries[ids["d-critical"]].overdue and not summaries[ids["n-high"]].overdue
    assert review.queue_counts(ROOT)["default"].overdue == 1
    assert review.get_case(ROOT, ids["d-critical"]).overdue
    clock.advance(timedelta(hours=3))  # past high (4 h) too
    assert review.queue_counts(ROOT)["senior"].overdue == 1
    assert summaries[ids["d-low"]].item_count == 1


def test_prior_confirmed_counts_only_confirmed_cases(review: ReviewStore) -> None:
    for _ in range(2):
        case = review.submit(verdict(view_required=False), item("repeat"), actor="key:app")
        review.claim(ALICE, case.case_id)
        review.decide(
            ALICE,
            case.case_id,
            Decision.confirmed("B1"),
            policy_review=ONE_REVIEW,
        )
    review.submit(verdict(), item("repeat"), actor="key:app")  # open: not counted
    assert review.prior_confirmed("repeat") == 2
    assert review.prior_confirmed("someone-else") == 0
    assert review.prior_confirmed(None) == 0


def test_unknown_ids(review: ReviewStore) -> None:
    for bad in (0, -1, 2**63, 999, "1", True):
        with pytest.raises(CaseNotFound):
            review.get_case(ROOT, bad)  # type: ignore[arg-type]


def test_simultaneous_scans_of_one_uploader_share_one_case(
    make_review: Callable[[], ReviewStore],
) -> None:
    stores = [make_review() for _ in range(4)]
    for round_ in range(3):
        uploader = f"burst-{round_}"
        barrier = threading.Barrier(len(stores))
        results: list[object] = []

        def run(
            rs: ReviewStore, uploader: str = uploader, barrier=barrier, results=results
        ) -> None:  # type: ignore[no-untyped-def]
            barrier.wait()
            try:
                results.append(rs.submit(verdict(), item(uploader), actor="k"))
            except BaseException as exc:
                results.append(exc)

        threads = [threading.Thread(target=run, args=(rs,)) for rs in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(isinstance(r, Submitted) for r in results), results
        assert len({r.case_id for r in results}) == 1  # type: ignore[attr-defined]
        assert sum(r.created for r in results) == 1  # type: ignore[attr-defined]
        case = stores[0].get_case(ROOT, results[0].case_id)  # type: ignore[attr-defined]
        assert len(case.items) == len(stores)
