"""Account cases on SQLite and PostgreSQL (issue 15): the worker's loop opens one account case
per account at or above the policy's case band through review's intake, joins it only when the
evidence grew, never opens a duplicate, and after a not-abusive decision opens a new one only
on new evidence; decisions are recorded per detector (precision); an account under an account
case keeps its events through the retention purge and erasure. Events are flags and metadata
only, never text."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, select, update

from bastion.contact.cases import AccountCaseLoop, Pass, grew, risk_t, snapshot
from bastion.contact.model import Event
from bastion.contact.store import AccountHeld, ContactStore
from bastion.crypto import MasterKey
from bastion.db import Store
from bastion.policy import ContactPolicy, Policy, QueueSpec, ReviewSettings, parse_policy
from bastion.review import ACCOUNT, CONTENT, Decision, InvalidDecision, NewItem, Outcome, Viewer
from bastion.review.store import ReviewStore, findings_t
from bastion.vault.store import Vault
from tests.contact.helpers import account, at, ev, message
from tests.fixtures.clock import Clock
from tests.fixtures.stores import Database

ALICE = Viewer("alice", "reviewer", ("default", "contact"))
BOB = Viewer("bob", "reviewer", ("default", "contact"))
ONE_REVIEW = ReviewSettings(four_eyes=False)
POLICY = Policy(
    rules=(),
    queues={
        "default": QueueSpec("default"),
        "contact": QueueSpec("contact"),
        "senior": QueueSpec("senior", senior=True),
    },
    review=ONE_REVIEW,
    contact=ContactPolicy(case_queue="contact", case_priority="critical"),
    text="account cases test policy",
)


def groomer(name: str = "g", kids: int = 8) -> list[Event]:
    """An adult contacting many unconnected 13-15s, few of whom respond (fan-out, age gap)."""
    events: list[Event] = [account(name, "adult", country="GB")]
    events += [account(f"{name}-k{i}", "13-15", country="GB") for i in range(kids)]
    events += [
        ev("connection_request", at(minutes=10 * i), actor=name, target=f"{name}-k{i}")
        for i in range(kids)
    ]
    events.append(message("other1", "other2", at(hours=12)))  # the stream moves past the grace
    return events


def ban_evader(name: str = "g") -> list[Event]:
    """A banned account sharing a device hash with ``name``: ban evasion fires for ``name``."""
    return [
        account(f"{name}-old", "adult", device_hashes=["dev:0123456789"]),
        ev("ban", at(hours=13), account=f"{name}-old"),
        account(name, "adult", at(hours=14), country="GB", device_hashes=["dev:0123456789"]),
    ]


@pytest.fixture
def review(store: Store, clock: Clock) -> ReviewStore:
    return ReviewStore(store, MasterKey.generate(), policy=lambda: POLICY, now=clock)


@pytest.fixture
def contact(store: Store) -> ContactStore:
    return ContactStore(store, POLICY.contact.risk)


@pytest.fixture
def loop(store: Store, review: ReviewStore) -> AccountCaseLoop:
    return AccountCaseLoop(store, review, lambda: POLICY)


def _ingest(cs: ContactStore, events: list[Event]) -> None:
    assert {r.status for r in cs.ingest(events)} == {"ok"}


def _naming(cs: ContactStore, name: str) -> list[str]:
    """The ids of the stored events that name ``name``."""
    return sorted(
        e.event_id
        for e in cs.stored_events()
        if name
        in (getattr(e, "actor", None), getattr(e, "target", None), getattr(e, "account", None))
    )


def _account_cases(review: ReviewStore, account_id: str) -> list[int]:
    root = Viewer("root", "admin")
    found = review.list_cases(root, states=("open", "awaiting_second", "confirmed", "not_abusive"))
    return sorted(c.id for c in found if c.uploader_id == account_id and c.subject == ACCOUNT)


def test_an_account_at_the_case_band_gets_one_account_case(
    contact: ContactStore, review: ReviewStore, loop: AccountCaseLoop
) -> None:
    _ingest(contact, groomer())
    risk = contact.risk("g")
    assert risk is not None and risk.band == "high"
    assert (contact.risk("g-k0") or risk).band == "low"
    first = loop.run_once()
    assert (first.opened, first.joined) == (1, 0)
    [case_id] = _account_cases(review, "g")
    case = review.get_case(ALICE, case_id)
    assert (case.subject, case.queue, case.priority, case.rule) == (
        ACCOUNT,
        "contact",
        "critical",
        "contact.case_band",
    )
    [item] = case.items
    assert (item.kind, item.uploader_id, item.has_media, item.view_required) == (
        "account",
        "g",
        False,
        False,
    )
    assert item.age_band == "adult" and item.source == "contact-risk"
    snap = case.risk
    assert snap is not None
    assert (snap["score"], snap["band"], snap["case_band"]) == (risk.score, "high", "high")
    assert [
        (c["detector"], c["points"], c["fired"], c["evidence"]) for c in snap["contributions"]
    ] == [(c.detector, c.points, c.fired, dict(c.evidence)) for c in risk.contributions]
    assert set(case.detectors_fired) >= {"fanout", "age_gap"}
    # Run again (and again): nothing new, nothing opened or joined.
    for _ in range(2):
        again = loop.run_once()
        assert (again.opened, again.joined) == (0, 0)
    fresh = AccountCaseLoop(loop.store, review, lambda: POLICY)  # another worker, no memory
    assert (fresh.run_once().opened, fresh.run_once().joined) == (0, 0)
    assert _account_cases(review, "g") == [case_id]
    assert len(review.get_case(ALICE, case_id).items) == 1


def test_a_row_committed_late_with_an_older_time_is_still_seen(
    store: Store, contact: ContactStore, review: ReviewStore, loop: AccountCaseLoop
) -> None:
    """A row's updated_at is its writer's clock at the start of its transaction, which may
    commit after a pass saw newer rows: the next pass still reads it."""
    _ingest(contact, groomer("g"))
    assert loop.run_once().opened == 1
    seen = (contact.risk("g") or contact.risk("x")).updated_at  # type: ignore[union-attr]
    _ingest(contact, groomer("h"))
    with store.engine.begin() as conn:
        conn.execute(
            update(risk_t)
            .where(risk_t.c.account == "h")
            .values(updated_at=seen - timedelta(minutes=5))
        )
    assert loop.run_once().opened == 1
    assert _account_cases(review, "h")


def test_workers_racing_never_open_two_cases_for_an_account(
    db: Database, store: Store, contact: ContactStore, review: ReviewStore
) -> None:
    """Four workers, each with its own connections, pass over the same risk at once: one case
    per account (the unique index), one snapshot in it (the growth check made again inside the
    intake's transaction), whoever wins."""
    _ingest(contact, [*groomer("g"), *groomer("h")])
    key = review.master_key
    loops = [
        AccountCaseLoop(other, ReviewStore(other, key, policy=lambda: POLICY), lambda: POLICY)
        for other in (db.open() for _ in range(4))
    ]
    barrier = threading.Barrier(len(loops))
    passes: list[Pass] = []

    def run(loop: AccountCaseLoop) -> None:
        barrier.wait()
        passes.append(loop.run_once())

    threads = [threading.Thread(target=run, args=(loop,)) for loop in loops]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(passes) == 4 and not any(p.failed for p in passes)
    assert sum(p.opened for p in passes) == 2
    assert sum(p.joined for p in passes) == 0
    for name in ("g", "h"):
        [case_id] = _account_cases(review, name)
        assert len(review.get_case(ALICE, case_id).items) == 1  # nor the same evidence twice
    # and afterwards nothing more, from any of them
    assert all(loop.run_once().opened == loop.run_once().joined == 0 for loop in loops)


def test_an_account_case_sits_beside_the_uploaders_content_case(
    contact: ContactStore, review: ReviewStore, loop: AccountCaseLoop
) -> None:
    from bastion.policy import Verdict

    content = review.submit(
        Verdict("review", "r", "match", "normal", "default", (), False),
        NewItem(kind="image", uploader_id="g"),
        actor="k",
    )
    _ingest(contact, groomer())
    loop.run_once()
    [account_case] = _account_cases(review, "g")
    assert account_case != content.case_id
    assert review.get_case(ALICE, content.case_id).subject == CONTENT
    # a content item of the same uploader still joins the content case, not the account case
    joined = review.submit(
        Verdict("review", "r", "match", "normal", "default", (), False),
        NewItem(kind="image", uploader_id="g"),
        actor="k",
    )
    assert joined.case_id == content.case_id and not joined.created
    kinds = [c.subject for c in review.list_cases(ALICE) if c.uploader_id == "g"]
    assert sorted(kinds) == [ACCOUNT, CONTENT]


def test_evidence_growth_joins_the_open_case(
    contact: ContactStore, review: ReviewStore, loop: AccountCaseLoop
) -> None:
    _ingest(contact, groomer())
    loop.run_once()
    [case_id] = _account_cases(review, "g")
    _ingest(contact, ban_evader())
    done = loop.run_once()
    assert (done.opened, done.joined) == (0, 1)
    case = review.get_case(ALICE, case_id)
    assert len(case.items) == 2 and "ban_evasion" in case.detectors_fired
    assert _account_cases(review, "g") == [case_id]


def test_not_abusive_is_recorded_per_detector_and_reopens_only_on_new_evidence(
    contact: ContactStore, review: ReviewStore, loop: AccountCaseLoop
) -> None:
    _ingest(contact, groomer())
    loop.run_once()
    [case_id] = _account_cases(review, "g")
    fired = review.get_case(ALICE, case_id).detectors_fired
    review.claim(ALICE, case_id)
    with pytest.raises(InvalidDecision, match="did not fire"):
        review.decide(
            ALICE,
            case_id,
            Decision.not_abusive("a coach", detectors=["ban_evasion"]),
            policy_review=ONE_REVIEW,
        )
    with pytest.raises(InvalidDecision, match="grooming, sextortion"):
        review.decide(ALICE, case_id, Decision.confirmed("A1"), policy_review=ONE_REVIEW)
    out = review.decide(
        ALICE,
        case_id,
        Decision.not_abusive("a football coach's club", detectors=["fanout"]),
        policy_review=ONE_REVIEW,
    )
    assert out.final and out.case.state == "not_abusive" and out.actions == ()
    with review.store.engine.connect() as conn:
        rows = conn.execute(
            select(findings_t.c.detector, findings_t.c.outcome, findings_t.c.account)
        ).all()
    assert {(d, o) for d, o, _ in rows} == {
        (d, "not_abusive" if d == "fanout" else "unjudged") for d in fired
    }
    assert {a for _, _, a in rows} == {"g"}
    by = {p.detector: p for p in review.detector_precision()}
    assert by["fanout"].not_abusive == 1 and by["fanout"].precision == 0.0
    assert by["age_gap"].unjudged == 1 and by["age_gap"].precision is None
    # The same risk, again and again: no new case.
    for _ in range(2):
        assert loop.run_once().opened == 0
    # More of the same (another stranger child, the score barely moves): still none.
    _ingest(contact, [account("g-k99", "13-15", country="GB")])
    assert loop.run_once().opened == 0
    # A detector that had not fired: a new case.
    _ingest(contact, ban_evader())
    assert loop.run_once().opened == 1
    cases = _account_cases(review, "g")
    assert len(cases) == 2 and cases[0] == case_id


def test_confirmed_records_every_fired_detector(
    contact: ContactStore, review: ReviewStore, loop: AccountCaseLoop
) -> None:
    _ingest(contact, groomer())
    loop.run_once()
    [case_id] = _account_cases(review, "g")
    review.claim(BOB, case_id)
    out = review.decide(BOB, case_id, Decision.confirmed("grooming"), policy_review=ONE_REVIEW)
    assert out.case.classification == "grooming" and out.actions == ("restrict_account",)
    by = {p.detector: p for p in review.detector_precision()}
    assert set(by) == set(out.case.detectors_fired)
    assert all(p.confirmed == 1 and p.precision == 1.0 for p in by.values())


def test_sextortion_fits_the_classification_column(
    contact: ContactStore, review: ReviewStore, loop: AccountCaseLoop
) -> None:
    """'sextortion' is 10 characters: the widened column holds it on PostgreSQL too."""
    _ingest(contact, groomer())
    loop.run_once()
    [case_id] = _account_cases(review, "g")
    review.claim(BOB, case_id)
    review.decide(BOB, case_id, Decision.confirmed("sextortion"), policy_review=ONE_REVIEW)
    assert review.get_case(BOB, case_id).classification == "sextortion"


def test_a_lower_policy_band_is_picked_up_at_once(
    store: Store, contact: ContactStore, review: ReviewStore
) -> None:
    current = {"policy": POLICY}
    loop = AccountCaseLoop(store, review, lambda: current["policy"])
    _ingest(contact, [*ban_evader("m"), account("m", "adult")])
    assert (contact.risk("m") or contact.risk("g")).band == "medium"  # type: ignore[union-attr]
    assert loop.run_once().opened == 0
    current["policy"] = replace(
        POLICY, contact=replace(POLICY.contact, case_band="medium"), text="lower band"
    )
    assert loop.run_once().opened == 1


def test_grew() -> None:
    def snap(score: int, *fired: str) -> dict[str, Any]:
        contributions: list[dict[str, Any]] = [
            {"detector": d, "points": 1, "fired": d in fired, "evidence": {}}
            for d in ("fanout", "age_gap", "ban_evasion")
        ]
        return snapshot(score, "high", contributions, case_band="high", at=at())

    before = snap(60, "fanout", "age_gap")
    assert grew(None, before, 10)
    assert not grew(before, snap(69, "fanout", "age_gap"), 10)
    assert grew(before, snap(70, "fanout", "age_gap"), 10)
    assert grew(before, snap(60, "fanout", "ban_evasion"), 10)  # a new detector
    assert not grew(before, snap(40, "fanout"), 10)


def test_the_case_policy_settings_are_validated() -> None:
    text = """version: 1
rules:
  - name: any
    when: {labels_any: [csam]}
    verdict: review
queues:
  contact: {}
contact:
  case_band: medium
  case_queue: contact
  case_priority: critical
  case_reopen_margin: 25
"""
    p = parse_policy(text)
    assert (p.contact.case_queue, p.contact.case_priority, p.contact.case_reopen_margin) == (
        "contact",
        "critical",
        25,
    )
    assert p.as_dict()["contact"]["case_queue"] == "contact"
    bad = text.replace("case_queue: contact", "case_queue: nowhere").replace(
        "case_priority: critical", "case_priority: urgent"
    )
    bad = bad.replace("case_reopen_margin: 25", "case_reopen_margin: 0")
    with pytest.raises(ValueError) as err:
        parse_policy(bad)
    message = str(err.value)
    assert "contact.case_queue 'nowhere' is not a defined queue" in message
    assert "contact.case_priority 'urgent' is not one of" in message
    assert "contact.case_reopen_margin must be from 1 to 1000, not 0" in message
    defaults = parse_policy(text.partition("queues:")[0]).contact
    assert (defaults.case_queue, defaults.case_priority, defaults.case_reopen_margin) == (
        "default",
        "high",
        10,
    )


# -- data protection ---------------------------------------------------------------------------


def test_purge_and_erasure_keep_an_account_under_an_account_case(
    store: Store, contact: ContactStore, review: ReviewStore, loop: AccountCaseLoop, clock: Clock
) -> None:
    cs = ContactStore(store, POLICY.contact.risk, retention_days=30, now=clock)
    _ingest(cs, groomer())
    loop.run_once()
    [case_id] = _account_cases(review, "g")
    before = _naming(cs, "g")
    assert len(before) == 9  # g's account event and its 8 requests
    clock.advance(timedelta(days=400))
    # Every event naming g stays; the rest (the children's account events, the unrelated
    # message) are past retention and go.
    assert cs.purge_expired() == 9
    assert _naming(cs, "g") == before and len(cs.stored_events()) == 9
    # (g's recomputed risk may fall now the children's own account events are gone; the case
    # keeps the snapshot it was opened on)
    assert review.get_case(ALICE, case_id).risk["band"] == "high"  # type: ignore[index]
    with pytest.raises(AccountHeld, match="under review"):
        cs.erase("g", actor="user:admin")
    # a child's erasure keeps the events shared with the account under review
    kept = cs.erase("g-k1", actor="user:admin")
    assert (kept.deleted, kept.kept) == (0, 1)
    # Decided not abusive: the account is no longer under review and its events go.
    review.claim(ALICE, case_id)
    review.decide(ALICE, case_id, Decision.not_abusive("a coach"), policy_review=ONE_REVIEW)
    assert cs.purge_expired() > 0
    assert not [
        e
        for e in cs.stored_events()
        if "g" in (getattr(e, "actor", None), getattr(e, "account", None))
    ]


def test_a_confirmed_account_is_kept_while_the_vault_keeps_its_evidence(
    store: Store, review: ReviewStore, loop: AccountCaseLoop, clock: Clock
) -> None:
    clock.at = at(hours=15)  # the events' own time: the evidence's retention starts here
    cs = ContactStore(store, POLICY.contact.risk, retention_days=30, now=clock)
    _ingest(cs, groomer())
    loop.run_once()
    [case_id] = _account_cases(review, "g")
    vault = Vault(store, review.master_key, now=clock)
    review.claim(BOB, case_id)

    def preserve(conn: Connection, _out: Outcome) -> None:
        vault.preserve_in(conn, case_id, actor="user:bob", reason="confirmed")

    review.decide(
        BOB, case_id, Decision.confirmed("grooming"), policy_review=ONE_REVIEW, then=preserve
    )
    assert len(vault.list(case_id=case_id)) == 1  # the account item, metadata only
    clock.advance(timedelta(days=100))
    assert cs.purge_expired() == 9  # all but the 9 events naming g
    assert len(_naming(cs, "g")) == 9
    with pytest.raises(AccountHeld):
        cs.erase("g", actor="user:admin")
    # Once the vault has purged that evidence (its retention over), the events go too.
    clock.advance(timedelta(days=400))
    assert vault.purge_expired() == 1
    assert cs.purge_expired() == 9
    assert cs.stored_events() == []
