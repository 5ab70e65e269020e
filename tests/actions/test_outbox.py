"""The outbox store on SQLite and PostgreSQL: idempotent enqueue inside the caller's transaction,
exclusive claims, backoff, dead-lettering, lease expiry and retry, all audited."""

from __future__ import annotations

import json
import random
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import text

from bastion.actions import Backoff
from bastion.actions.outbox import Outbox, OutboxConflict, OutboxNotFound, enqueue_in
from bastion.db import Store
from bastion.store import InvalidInput
from tests.fixtures.clock import Clock

from .conftest import Database

LEASE = timedelta(seconds=60)


@pytest.fixture
def outbox(store: Store, clock: Clock) -> Outbox:
    return Outbox(
        store,
        max_attempts=4,
        backoff=Backoff(base=10, cap=60, jitter=0.25),
        clock=clock,
        rng=random.Random(7),
    )


def audit_actions(store: Store) -> list[str]:
    return [e.action for e in store.iter_audit()]


def add(outbox: Outbox, n: int = 1, action: str = "remove_content") -> list[int]:
    ids = []
    for i in range(n):
        new = outbox.enqueue(
            action=action,
            payload={"content_id": f"c{i}"},
            idempotency_key=f"{action}:{i}",
            case_id=i + 1,
        )
        assert new is not None
        ids.append(new)
    return ids


def test_enqueue_stores_the_body_once_and_is_idempotent(outbox: Outbox, store: Store) -> None:
    first = outbox.enqueue(
        action="remove_content",
        payload={"content_id": "c-9", "reason": "confirmed A1"},
        idempotency_key="case-9:remove_content",
        case_id=9,
    )
    again = outbox.enqueue(
        action="remove_content",
        payload={"content_id": "different"},
        idempotency_key="case-9:remove_content",
        case_id=9,
    )
    assert first is not None and again is None
    items = outbox.list()
    assert [i.id for i in items] == [first]
    item = items[0]
    assert item.state == "pending" and item.attempts == 0 and item.case_id == 9
    body = json.loads(item.body)
    assert body == {
        "id": "case-9:remove_content",
        "action": "remove_content",
        "created_at": "2025-06-01T12:00:00Z",
        "case_id": 9,
        "data": {"content_id": "c-9", "reason": "confirmed A1"},
    }
    assert item.payload == body["data"]
    assert audit_actions(store) == ["action.enqueue"]  # the duplicate wrote nothing


def test_enqueue_in_commits_and_rolls_back_with_the_callers_transaction(
    outbox: Outbox, store: Store
) -> None:
    with pytest.raises(RuntimeError), store.engine.begin() as conn:
        enqueue_in(conn, action="preserve", payload={}, idempotency_key="k-rolled-back")
        raise RuntimeError("the decision failed after the action was queued")
    assert outbox.list() == [] and audit_actions(store) == []
    with store.engine.begin() as conn:
        conn.execute(text("SELECT 1"))
        new = outbox.enqueue_in(conn, action="preserve", payload={}, idempotency_key="k-kept")
        dup = outbox.enqueue_in(conn, action="preserve", payload={}, idempotency_key="k-kept")
    assert new is not None and dup is None
    assert [i.idempotency_key for i in outbox.list()] == ["k-kept"]
    assert store.verify_audit_chain() is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"action": "Bad Name"}, "invalid action name"),
        ({"idempotency_key": "has space"}, "invalid idempotency key"),
        ({"payload": ["not", "an", "object"]}, "JSON object"),
        ({"payload": {"x": "\x00"}}, "NUL"),
        ({"case_id": 0}, "case_id"),
        ({"case_id": True}, "case_id"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_stored(
    outbox: Outbox, kwargs: dict[str, object], message: str
) -> None:
    args: dict[str, object] = {"action": "preserve", "payload": {}, "idempotency_key": "k1"}
    args.update(kwargs)
    with pytest.raises(InvalidInput, match=message):
        outbox.enqueue(**args)  # type: ignore[arg-type]
    assert outbox.list() == []


def test_claim_takes_due_rows_once_and_counts_the_attempt(outbox: Outbox, clock: Clock) -> None:
    ids = add(outbox, 3)
    got = outbox.claim_due("w1", 2, LEASE)
    assert [i.id for i in got] == ids[:2]
    assert all(i.state == "delivering" and i.attempts == 1 and i.locked_by == "w1" for i in got)
    assert got[0].locked_until == clock.now + LEASE
    assert [i.id for i in outbox.claim_due("w2", 5, LEASE)] == ids[2:]
    assert outbox.claim_due("w3", 5, LEASE) == []


def test_claim_filters_by_routable_actions(outbox: Outbox) -> None:
    add(outbox, 1, "remove_content")
    (pres,) = add(outbox, 1, "preserve")
    assert [i.id for i in outbox.claim_due("w", 5, LEASE, actions=frozenset({"preserve"}))] == [
        pres
    ]
    assert outbox.claim_due("w", 5, LEASE, actions=frozenset({"preserve"})) == []
    assert outbox.claim_due("w", 5, LEASE, actions=frozenset()) == []


def test_concurrent_claimers_never_share_a_row(db: Database, clock: Clock) -> None:
    """Threads with their own engines (as separate workers would be) claim all rows between
    them, each exactly once."""
    setup = Outbox(db.open(), clock=clock)
    total = 120
    for i in range(total):
        setup.enqueue(action="preserve", payload={"n": i}, idempotency_key=f"k{i}")
    claimed: dict[str, list[int]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(4, timeout=60)
    boxes = [Outbox(db.open(), clock=clock) for _ in range(4)]

    def claimer(name: str, box: Outbox) -> None:
        mine: list[int] = []
        try:
            start.wait()
            while batch := box.claim_due(name, 3, LEASE):
                mine += [i.id for i in batch]
                # A worker delivers between claims; without that pause one thread can win
                # SQLite's write lock every time on a loaded machine and claim everything.
                time.sleep(0.002)
        except BaseException as exc:  # reported below
            errors.append(exc)
        claimed[name] = mine

    threads = [threading.Thread(target=claimer, args=(f"w{n}", boxes[n])) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    everything = [i for ids in claimed.values() for i in ids]
    assert len(everything) == total and len(set(everything)) == total
    assert sum(1 for ids in claimed.values() if ids) >= 2  # really concurrent
    # The database agrees: every row is held by the worker that got it.
    for name, ids in claimed.items():
        for item_id in ids[:5]:
            assert setup.get(item_id).locked_by == name


def test_failures_back_off_exponentially_then_dead_letter(
    outbox: Outbox, clock: Clock, store: Store
) -> None:
    (item_id,) = add(outbox)
    ceilings = []
    for attempt in range(1, 4):
        (item,) = outbox.claim_due("w", 1, LEASE)
        assert item.attempts == attempt
        assert outbox.mark_failed(item, "w", error="HTTP 503: down", status=503) == "pending"
        row = outbox.get(item_id)
        wait = (row.next_attempt_at - clock.now).total_seconds()
        ceiling = min(60, 10 * 2 ** (attempt - 1))
        assert 0.75 * ceiling <= wait <= ceiling
        ceilings.append(ceiling)
        assert row.last_error == "HTTP 503: down" and row.last_status == 503
        assert row.locked_by is None
        clock.advance(wait - 0.5)
        assert outbox.claim_due("w", 1, LEASE) == []  # not due yet
        clock.advance(0.5)
    assert ceilings == [10, 20, 40]
    (item,) = outbox.claim_due("w", 1, LEASE)
    assert item.attempts == 4
    assert outbox.mark_failed(item, "w", error="HTTP 500", status=500) == "dead"
    assert outbox.get(item_id).state == "dead"
    clock.advance(10_000)
    assert outbox.claim_due("w", 1, LEASE) == []
    events = [e for e in store.iter_audit() if e.action == "action.dead"]
    assert len(events) == 1 and events[0].actor == "system"
    assert events[0].detail["attempts"] == 4 and events[0].detail["status"] == 500


def test_permanent_failure_is_dead_at_once(outbox: Outbox) -> None:
    (item_id,) = add(outbox)
    (item,) = outbox.claim_due("w", 1, LEASE)
    assert outbox.mark_failed(item, "w", error="HTTP 401", status=401, permanent=True) == "dead"
    assert outbox.get(item_id).attempts == 1


def test_expired_lease_makes_the_row_due_again_with_the_same_key(
    outbox: Outbox, clock: Clock, store: Store
) -> None:
    (item_id,) = add(outbox)
    (first,) = outbox.claim_due("killed-worker", 1, LEASE)
    clock.advance(59)
    assert outbox.claim_due("w2", 1, LEASE) == []  # still leased
    clock.advance(1)
    (second,) = outbox.claim_due("w2", 1, LEASE)
    assert second.id == item_id and second.attempts == 2 and second.locked_by == "w2"
    assert second.idempotency_key == first.idempotency_key and second.body == first.body
    # The first worker's late failure no longer counts; its late success does, once.
    assert outbox.mark_failed(first, "killed-worker", error="late") is None
    assert outbox.mark_delivered(first, status=200, target="default") is True
    assert outbox.mark_delivered(second, status=200, target="default") is False
    row = outbox.get(item_id)
    assert row.state == "delivered" and row.delivered_at == clock.now and row.last_error is None
    assert audit_actions(store).count("action.delivered") == 1


def test_lease_expiring_on_the_last_attempt_dead_letters(outbox: Outbox, clock: Clock) -> None:
    (item_id,) = add(outbox)
    for _ in range(4):
        clock.advance(LEASE.total_seconds())
        (item,) = outbox.claim_due("crashing", 1, LEASE)  # the worker dies every time
    assert item.attempts == 4
    clock.advance(LEASE.total_seconds())
    assert outbox.claim_due("w", 1, LEASE) == []
    row = outbox.get(item_id)
    assert row.state == "dead" and "lease expired" in (row.last_error or "")


def test_retry_revives_a_dead_row_and_is_audited(outbox: Outbox, store: Store) -> None:
    (item_id,) = add(outbox)
    (item,) = outbox.claim_due("w", 1, LEASE)
    with pytest.raises(OutboxConflict, match="only dead items"):
        outbox.retry(item_id, actor="user:alice")
    outbox.mark_failed(item, "w", error="HTTP 410", status=410, permanent=True)
    revived = outbox.retry(item_id, actor="user:alice", remote_addr="192.0.2.1")
    assert revived.state == "pending" and revived.attempts == 0
    assert revived.idempotency_key == item.idempotency_key
    (again,) = outbox.claim_due("w", 1, LEASE)
    assert again.id == item_id and again.attempts == 1
    event = next(e for e in store.iter_audit() if e.action == "outbox.retry")
    assert event.actor == "user:alice" and event.remote_addr == "192.0.2.1"
    assert event.target == f"outbox:{item_id}" and event.detail["previous_attempts"] == 1
    with pytest.raises(OutboxNotFound):
        outbox.retry(item_id + 100, actor="user:alice")
    with pytest.raises(InvalidInput):
        outbox.retry(-1, actor="user:alice")


def test_stats_list_get_and_next_due(outbox: Outbox, clock: Clock) -> None:
    assert outbox.stats().counts == {"pending": 0, "delivering": 0, "delivered": 0, "dead": 0}
    assert outbox.stats().oldest_pending_age is None and outbox.next_due() is None
    ids = add(outbox, 4)
    clock.advance(90)
    a, b = outbox.claim_due("w", 2, LEASE)
    outbox.mark_delivered(a, status=204, target="default")
    outbox.mark_failed(b, "w", error="boom", permanent=True)
    s = outbox.stats()
    assert s.counts == {"pending": 2, "delivering": 0, "delivered": 1, "dead": 1}
    assert s.oldest_pending_age == 90 and s.last_delivered_at == clock.now
    assert outbox.next_due() == clock.now - timedelta(seconds=90)
    assert outbox.next_due(actions=frozenset({"preserve"})) is None
    assert [i.id for i in outbox.list()] == ids[::-1]
    assert [i.id for i in outbox.list(state="dead")] == [b.id]
    assert [i.id for i in outbox.list(case_id=1)] == [ids[0]]
    assert [i.id for i in outbox.list(limit=2, before=ids[3])] == [ids[2], ids[1]]
    assert outbox.get(a.id).last_status == 204 and outbox.get(a.id).target == "default"
    with pytest.raises(OutboxNotFound):
        outbox.get(10_000)
    with pytest.raises(InvalidInput, match="unknown outbox state"):
        outbox.list(state="lost")


def test_rows_without_a_target_wait_visibly(outbox: Outbox) -> None:
    (kept,) = add(outbox, 1, "custom_action")
    add(outbox, 1, "preserve")
    assert outbox.note_unroutable(None) == 0
    assert outbox.note_unroutable(frozenset({"preserve"})) == 1
    assert outbox.note_unroutable(frozenset({"preserve"})) == 0  # already marked
    row = outbox.get(kept)
    assert row.state == "pending" and row.attempts == 0
    assert row.last_error == "no webhook target configured for custom_action"
    assert [i.last_error for i in outbox.list(state="pending") if i.action == "preserve"] == [None]
