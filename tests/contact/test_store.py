"""The contact store on SQLite and PostgreSQL: idempotent, order-independent ingest with per-event
results; stored risk equal to a from-scratch recomputation over the stored events (also with two
processes writing); facts and connections; audited timelines; retention purge, legal holds and
erasure. Events are metadata and flags only."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest

from bastion.contact.model import MAX_BATCH, BatchTooLarge, Event, event_to_json
from bastion.contact.risk import RiskSettings, recompute
from bastion.contact.simulate import simulate
from bastion.contact.store import AccountHeld, ContactStore, EventNotFound, HoldConflict
from bastion.db import Store
from tests.contact.helpers import T0, account, at, connect, ev, message
from tests.fixtures.clock import Clock
from tests.fixtures.stores import Database


def _raw(events: list[Event]) -> list[dict[str, Any]]:
    return [event_to_json(e) for e in events]


def _assert_matches_scratch(cs: ContactStore) -> None:
    """The stored risk rows are exactly a from-scratch recomputation over the stored events."""
    scratch = recompute(cs.stored_events(), cs.settings)
    stored = cs.all_risk()
    assert set(stored) == set(scratch)
    for name, result in scratch.items():
        score, band, contributions = stored[name]
        assert (score, band) == (result.score, result.band), name
        assert [(c["detector"], c["points"], c["evidence"]) for c in contributions] == [
            (c.detector, c.points, dict(c.evidence)) for c in result.contributions
        ], name


def _groomer_events() -> list[Event]:
    """An adult messaging six stranger children within hours; none answers."""
    events = [account("g", "adult", country="GB")]
    for i in range(6):
        events.append(account(f"k{i}", "13-15", country="GB"))
        events.append(message("g", f"k{i}", at(minutes=20 * i)))
    events.append(ev("message", at(hours=30), actor="x", target="y", conversation="c"))
    return events


def test_ingest_results_duplicates_and_conflicts(store: Store) -> None:
    cs = ContactStore(store)
    events = _groomer_events()
    first = cs.ingest(_raw(events))
    assert [r.status for r in first] == ["ok"] * len(events)
    assert [r.index for r in first] == list(range(len(events)))
    before = cs.all_risk()
    # a re-sent batch changes nothing
    again = cs.ingest(_raw(events))
    assert {r.status for r in again} == {"duplicate"}
    assert cs.all_risk() == before
    assert len(cs.stored_events()) == len(events)
    # the same id with other content is an error, the rest of the batch applies
    changed = {**event_to_json(events[1]), "age_band": "adult"}
    fresh = event_to_json(message("g", "k9", at(hours=1)))
    results = cs.ingest([changed, fresh, fresh])
    assert [r.status for r in results] == ["error", "ok", "duplicate"]
    assert results[0].error is not None and "conflict" in results[0].error
    assert results[0].event_id == events[1].event_id
    assert cs.facts("k0") is not None and cs.facts("k0")["age_band"] == "13-15"  # type: ignore[index]
    _assert_matches_scratch(cs)


def test_bad_events_get_their_own_error_and_text_is_refused(store: Store) -> None:
    cs = ContactStore(store)
    good = event_to_json(message("a", "b", at()))
    with_text = {**event_to_json(message("a", "b", at(1))), "text": "add me on another app"}
    no_time = {"event_id": "e-no-time", "type": "block", "actor": "a", "target": "b"}
    results = cs.ingest([with_text, good, no_time, "not an object", {"type": "nope"}])
    assert [r.status for r in results] == ["error", "ok", "error", "error", "error"]
    assert results[0].event_id == with_text["event_id"]
    assert results[0].error is not None and "text" in results[0].error
    assert any(e["loc"].endswith("text") for e in results[0].errors)
    assert results[2].event_id == "e-no-time" and "time" in (results[2].error or "")
    assert results[3].event_id is None
    stored = cs.stored_events()
    assert [e.event_id for e in stored] == [good["event_id"]]
    assert "add me" not in repr(cs.timeline("a", actor="test"))


def test_a_batch_over_the_limit_is_refused_whole(store: Store) -> None:
    cs = ContactStore(store)
    batch = [event_to_json(message("a", "b", at(i))) for i in range(MAX_BATCH + 1)]
    with pytest.raises(BatchTooLarge):
        cs.ingest(batch)
    assert cs.stored_events() == []
    assert cs.ingest([]) == []


def test_the_stream_consumer_may_take_larger_batches(store: Store) -> None:
    """``max_batch`` (the consumer's --batch) lifts the API's limit for one transaction."""
    cs = ContactStore(store)
    batch = [message("a", f"b{i}", at(minutes=i)) for i in range(MAX_BATCH + 200)]
    with pytest.raises(BatchTooLarge):
        cs.ingest(batch, max_batch=MAX_BATCH + 199)
    results = cs.ingest(batch, max_batch=MAX_BATCH + 200)
    assert [r.status for r in results] == ["ok"] * len(batch)
    assert len(cs.stored_events()) == len(batch)
    _assert_matches_scratch(cs)


def test_stored_contributions_are_the_results_in_full(store: Store) -> None:
    """Every field of every stored contribution (the explanation and whether it fired too) is
    the from-scratch result's, however the row was written (COPY of memoised JSON text on
    PostgreSQL), batch after batch."""
    events, _ = simulate(150, 2, seed=4)
    cs = ContactStore(store)
    for start in range(0, len(events), 700):
        cs.ingest(events[start : start + 700])
    scratch = recompute(cs.stored_events(), cs.settings)
    stored = cs.all_risk()
    assert set(stored) == set(scratch)
    for name, result in scratch.items():
        assert stored[name][2] == [
            {
                "detector": c.detector,
                "points": c.points,
                "fired": c.fired,
                "explanation": c.explanation,
                "evidence": dict(c.evidence),
            }
            for c in result.contributions
        ], name
    assert any(c["fired"] for _, _, contributions in stored.values() for c in contributions)


def test_out_of_order_batches_equal_in_order_and_from_scratch(db: Database) -> None:
    events = _groomer_events()
    ordered = db.open()
    cs = ContactStore(ordered)
    cs.ingest(_raw(sorted(events, key=lambda e: e.time)))
    expected = cs.all_risk()
    assert expected["g"][0] >= 30 and expected["g"][1] in ("medium", "high")
    _assert_matches_scratch(cs)
    # the same events backwards, one per batch, on a fresh database
    other = db.open()
    with other.engine.begin() as conn:
        for table in ("contact_events", "contact_risk", "contact_accounts"):
            conn.exec_driver_sql(f"DELETE FROM {table}")
        conn.exec_driver_sql(
            "UPDATE contact_state SET applied_seq = 0, generation = generation + 1"
        )
    cs2 = ContactStore(other)
    for event in sorted(events, key=lambda e: e.time, reverse=True):
        assert cs2.ingest([event_to_json(event)])[0].status == "ok"
    got = cs2.all_risk()
    assert {a: v[:2] for a, v in got.items()} == {a: v[:2] for a, v in expected.items()}
    _assert_matches_scratch(cs2)


def test_incremental_equals_from_scratch_on_simulated_events(store: Store) -> None:
    events, _ = simulate(120, 2, seed=5)
    raw = _raw(events)
    rng = random.Random(3)
    rng.shuffle(raw)
    raw += rng.sample(raw, 200)  # re-sent events
    cs = ContactStore(store, RiskSettings(max_mutuals=1))
    statuses: dict[str, int] = {}
    start = 0
    while start < len(raw):
        size = rng.randint(1, 400)
        for r in cs.ingest(raw[start : start + size]):
            statuses[r.status] = statuses.get(r.status, 0) + 1
        start += size
    assert statuses == {"ok": len(events), "duplicate": 200}
    _assert_matches_scratch(cs)
    assert any(band != "low" for _, band, _ in cs.all_risk().values())


def test_two_processes_writing_one_database_stay_equal_to_scratch(db: Database) -> None:
    """Each Store is one process: its own engine and in-memory risk state."""
    events, _ = simulate(100, 2, seed=9)
    raw = _raw(events)
    one, two = ContactStore(db.open()), ContactStore(db.open())
    for n, start in enumerate(range(0, len(raw), 150)):
        (one if n % 2 else two).ingest(raw[start : start + 150])
    _assert_matches_scratch(one)
    _assert_matches_scratch(two)
    # a process whose state is gone (restart) reloads from the database
    three = ContactStore(db.open())
    three.ingest(_raw([message("late", "k", at(days=3))]))
    _assert_matches_scratch(three)


def test_facts_and_connections(store: Store) -> None:
    cs = ContactStore(store)
    cs.ingest(
        _raw(
            [
                account("a", "13-15", country="FR", age_source="estimated", age_confidence=0.8),
                account("b", "adult"),
                *connect("a", "b", at()),
                ev("profile_change", at(5), account="a", changed=["country"], country="DE"),
            ]
        )
    )
    facts = cs.facts("a")
    assert facts is not None
    assert (facts["age_band"], facts["age_source"], facts["age_confidence"], facts["country"]) == (
        "13-15",
        "estimated",
        0.8,
        "DE",
    )
    assert facts["created_at"] == T0 - timedelta(days=400)
    assert cs.connections("a") == ["b"] and cs.connections("b") == ["a"]
    cs.ingest(_raw([ev("connection_remove", at(10), actor="b", target="a")]))
    assert cs.connections("a") == []
    # an older accept arriving late does not reconnect them
    cs.ingest(_raw([ev("connection_accept", at(2), actor="a", target="b")]))
    assert cs.connections("a") == []
    assert cs.facts("nobody") is None


def test_timeline_reads_are_audited(store: Store) -> None:
    cs = ContactStore(store)
    cs.ingest(_raw(_groomer_events()))
    head = store.audit_head()[0]
    page = cs.timeline("g", actor="user:alice", limit=4, remote_addr="10.0.0.1")
    assert len(page) == 4
    times = [p.event["time"] for p in page]
    assert times == sorted(times, reverse=True)
    last = page[-1].event
    rest = cs.timeline("g", actor="user:alice", before=last["event_id"])
    assert len(page) + len(rest) == 7  # its account event and six messages
    records = store.iter_audit(since_id=head)
    assert [(r.action, r.actor, r.target) for r in records] == [
        ("contact.timeline", "user:alice", "account:g"),
        ("contact.timeline", "user:alice", "account:g"),
    ]
    assert records[0].detail["events"] == 4 and records[0].remote_addr == "10.0.0.1"
    assert cs.timeline("nobody", actor="user:alice") == []
    assert store.iter_audit(since_id=head)[-1].target == "account:nobody"
    assert store.verify_audit_chain() is None
    other = cs.stored_events()[-1]  # x -> y: does not name g
    with pytest.raises(EventNotFound):
        cs.timeline("g", actor="user:alice", before=other.event_id)


def test_purge_keeps_held_accounts_and_rebuilds_risk(store: Store) -> None:
    clock = Clock(T0 + timedelta(days=10))
    cs = ContactStore(store, retention_days=90, now=clock)
    old = _groomer_events()  # around T0
    held_old = [message("h", "k0", at(hours=2)), account("h", "adult")]
    recent = [message("g", "k5", at(days=95)), account("n", "adult", at(days=95))]
    cs.ingest(_raw(old + held_old + recent))
    cs.hold("h", actor="user:admin", reason="law enforcement request 42")
    with pytest.raises(HoldConflict):
        cs.hold("h", actor="user:admin", reason="again")
    assert cs.purge_expired() == 0  # nothing is older than 90 days yet
    clock.advance(timedelta(days=100))
    head = store.audit_head()[0]
    purged = cs.purge_expired()
    left = {e.event_id for e in cs.stored_events()}
    assert purged == len(old)
    assert left == {e.event_id for e in held_old + recent}
    _assert_matches_scratch(cs)
    assert "k1" not in cs.all_risk()
    [record] = store.iter_audit(since_id=head)
    assert record.action == "contact.purge" and record.detail["deleted"] == purged
    # released, the held account's old events go at the next purge
    cs.release("h", actor="user:admin", reason="case closed")
    with pytest.raises(HoldConflict):
        cs.release("h", actor="user:admin", reason="case closed")
    assert cs.purge_expired() == len(held_old)
    assert {e.event_id for e in cs.stored_events()} == {e.event_id for e in recent}
    _assert_matches_scratch(cs)


def test_erasure_spares_held_counterparts_and_held_accounts(db: Database) -> None:
    store = db.open()
    cs = ContactStore(store)
    events = _groomer_events()
    cs.ingest(_raw(events))
    other = ContactStore(db.open())  # another process, with its own state
    other.ingest(_raw([message("k1", "k2", at(50))]))
    cs.hold("k3", actor="user:admin", reason="evidence for case 7")
    head = store.audit_head()[0]
    erased = cs.erase("g", actor="key:ops", remote_addr="10.0.0.2")
    assert (erased.deleted, erased.kept) == (6, 1)  # its account event and 5 messages; k3's kept
    to_k3 = next(e for e in events if getattr(e, "target", None) == "k3")
    left = cs.stored_events()
    assert [e.event_id for e in left if getattr(e, "actor", None) == "g"] == [to_k3.event_id]
    [record] = store.iter_audit(since_id=head)
    assert (record.action, record.target) == ("contact.erase", "account:g")
    assert record.detail == {"deleted": 6, "kept_for_holds": 1}
    _assert_matches_scratch(cs)
    assert cs.facts("g") is None
    # the other process notices the rebuild and stays exact
    other.ingest(_raw([message("k2", "k1", at(51))]))
    _assert_matches_scratch(other)
    with pytest.raises(AccountHeld):
        cs.erase("k3", actor="key:ops")
    assert any(e.event_id == to_k3.event_id for e in cs.stored_events())


def test_the_worker_housekeeping_purges_expired_events(store: Store) -> None:
    from bastion.config import Settings
    from bastion.crypto import MasterKey
    from bastion.housekeeping import Housekeeping

    clock = Clock(T0 + timedelta(days=200))
    settings = Settings(contact_retention_days=30, contact_purge_interval_seconds=60)
    ticks = [0.0]
    chores = Housekeeping.for_store(
        store, MasterKey.generate(), settings, worker_id="test", clock=lambda: ticks[0]
    )
    chores.contact = lambda: ContactStore(store, retention_days=30, now=clock)
    chores.contact_every = 60.0
    cs = ContactStore(store, now=clock)
    cs.ingest(_raw([message("a", "b", at()), message("a", "c", at(days=190))]))
    chores.run_once()
    assert chores.contact_purged == 1
    assert [e.time for e in cs.stored_events()] == [at(days=190)]
    cs.ingest(_raw([message("a", "d", at(days=1))]))
    ticks[0] = 30.0
    chores.run_once()  # not due yet
    assert chores.contact_purged == 1
    ticks[0] = 61.0
    chores.run_once()
    assert chores.contact_purged == 2
    _assert_matches_scratch(cs)


def test_other_risk_settings_rebuild_every_stored_row(db: Database) -> None:
    events = _groomer_events()
    cs = ContactStore(db.open())
    cs.ingest(_raw(events))
    before = cs.all_risk()["g"][0]
    # another process with a policy that turns fan-out off
    strict = RiskSettings(fanout={"enabled": False})
    other = ContactStore(db.open(), strict)
    other.ingest(_raw([message("z", "k1", at(days=2))]))
    _assert_matches_scratch(other)
    assert other.all_risk()["g"][0] < before
    # and back: the first process rebuilds too
    cs.ingest(_raw([message("z", "k2", at(days=2))]))
    _assert_matches_scratch(cs)
    assert cs.all_risk()["g"][0] == before


def test_concurrent_ingest_from_two_processes_is_serialised(db: Database) -> None:
    """Two processes (stores) ingesting at the same time: batches commit one at a time, so
    neither misses the other's events and the stored risk stays exact."""
    import threading

    events, _ = simulate(100, 2, seed=13)
    raw = _raw(events)
    batches = [raw[i : i + 100] for i in range(0, len(raw), 100)]
    stores = [ContactStore(db.open()), ContactStore(db.open())]
    failures: list[BaseException] = []

    def run(cs: ContactStore, mine: list[list[dict[str, Any]]]) -> None:
        try:
            for batch in mine:
                assert {r.status for r in cs.ingest(batch)} == {"ok"}
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [
        threading.Thread(target=run, args=(cs, batches[n::2])) for n, cs in enumerate(stores)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert failures == []
    assert len(stores[0].stored_events()) == len(events)
    _assert_matches_scratch(stores[0])
