"""The stream intake's loop and its Redis transport, against the real Redis at 127.0.0.1:6379.

Each test uses its own stream (and dead-letter stream), deleted afterwards. ``apply`` here is a
recording stand-in for the store's ingest (idempotent by event id, like the store); the tests
that go through the real store are in tests/contact/test_stream_store.py.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pytest
import redis

from bastion.contact.model import Event, EventError, event_to_json
from bastion.contact.stream import Delivery, RedisStream, StreamConsumer, decode
from tests.contact.helpers import account, at, message

REDIS_URL = os.environ.get("BASTION_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@dataclass
class Recorder:
    """Applies events idempotently by id and records the order it saw them in."""

    seen: list[str] = field(default_factory=list)
    applied: dict[str, Event] = field(default_factory=dict)
    duplicates: int = 0
    refuse: set[str] = field(default_factory=set)
    during: list[object] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, events: Sequence[Event]) -> list[EventError]:
        errors = []
        with self.lock:
            for index, event in enumerate(events):
                if event.event_id in self.refuse:
                    errors.append(
                        EventError(
                            index=index,
                            event_id=event.event_id,
                            errors=({"loc": "event_id", "type": "refused", "msg": "refused"},),
                        )
                    )
                    continue
                self.seen.append(event.event_id)
                if event.event_id in self.applied:
                    self.duplicates += 1
                self.applied[event.event_id] = event
        return errors


@pytest.fixture
def stream_name() -> Iterator[str]:
    name = f"test:bastion:events:{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    client.delete(name, f"{name}:dead")
    client.close()


def transport(stream: str, consumer: str, group: str = "g") -> RedisStream:
    return RedisStream(REDIS_URL, stream, group, consumer)


def payload(event: Event) -> bytes:
    return json.dumps(event_to_json(event)).encode()


def events(n: int, accounts: int = 5) -> list[Event]:
    out: list[Event] = [account(f"a{i}", "adult") for i in range(accounts)]
    for i in range(n - accounts):
        out.append(message(f"a{i % accounts}", f"b{i}", at(minutes=i)))
    return out


def drain(*consumers: StreamConsumer, rounds: int = 1000) -> None:
    """Poll round-robin until a whole round reads nothing."""
    for _ in range(rounds):
        if not sum(c.poll().entries for c in consumers):
            return
    raise AssertionError("the stream did not drain")


def test_several_consumers_share_the_work_and_every_event_is_applied_once(
    stream_name: str,
) -> None:
    evs = events(600)
    first = transport(stream_name, "c1")
    first.publish([payload(e) for e in evs])
    rec = Recorder()
    counts: dict[str, int] = {}
    consumers = []
    for name in ("c1", "c2", "c3"):
        t = first if name == "c1" else transport(stream_name, name)
        consumers.append(StreamConsumer(t, rec, batch=50, block_ms=10))
    for _ in range(100):
        read = 0
        for c in consumers:
            n = c.poll().entries
            counts[c.transport.name] = counts.get(c.transport.name, 0) + n
            read += n
        if not read:
            break
    assert sorted(rec.applied) == sorted(e.event_id for e in evs)
    assert rec.duplicates == 0
    assert all(n > 0 for n in counts.values()) and len(counts) == 3
    assert first.pending() == 0
    for c in consumers:
        c.transport.close()


def test_consumers_in_threads_share_the_stream(stream_name: str) -> None:
    evs = events(2000, accounts=20)
    pub = transport(stream_name, "pub")
    pub.publish([payload(e) for e in evs])
    rec = Recorder()
    totals: dict[str, int] = {}

    def work(name: str) -> None:
        c = StreamConsumer(transport(stream_name, name), rec, batch=100, block_ms=50)
        totals[name] = c.run(until_idle=True).applied
        c.transport.close()

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(rec.applied) == len(evs) and rec.duplicates == 0
    assert sum(totals.values()) == len(evs)
    assert pub.pending() == 0
    pub.close()


def test_an_entry_is_acknowledged_only_after_apply_returns(stream_name: str) -> None:
    evs = events(30)
    t = transport(stream_name, "c1")
    t.publish([payload(e) for e in evs])
    pending_during: list[int] = []
    rec = Recorder()

    def apply(batch: Sequence[Event]) -> list[EventError]:
        pending_during.append(t.pending())  # still pending while its effects are applied
        return rec(batch)

    c = StreamConsumer(t, apply, batch=10, block_ms=10)
    out = c.poll()
    assert out.entries == 10 and pending_during == [10]
    assert t.pending() == 0
    t.close()


def test_a_failed_apply_leaves_the_batch_pending_and_it_is_read_again(
    stream_name: str,
) -> None:
    evs = events(20)
    t = transport(stream_name, "c1")
    t.publish([payload(e) for e in evs])
    rec = Recorder()
    calls = {"n": 0}

    def flaky(batch: Sequence[Event]) -> list[EventError]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("database unreachable")
        return rec(batch)

    c = StreamConsumer(t, flaky, batch=8, block_ms=10)
    with pytest.raises(ConnectionError):
        c.poll()
    assert t.pending() == 8 and not rec.applied  # nothing acknowledged, nothing lost
    stop_after = iter(range(10))
    c.run(stop=lambda: next(stop_after, None) is None, retry_s=0.01)
    assert sorted(rec.applied) == sorted(e.event_id for e in evs)
    assert rec.seen[:8] == [e.event_id for e in evs[:8]]  # the failed batch first, in order
    assert t.pending() == 0
    t.close()


def test_poison_entries_are_dead_lettered_and_do_not_stop_the_stream(
    stream_name: str,
) -> None:
    good = events(12)
    t = transport(stream_name, "c1")
    client = t.redis
    t.publish([payload(e) for e in good[:6]])
    t.publish([b"{not json", b"[1, 2]"])
    client.xadd(stream_name, {"other": b"x"})  # no event field
    bad_event = {"event_id": "bad-1", "time": at().isoformat(), "type": "message", "text": "hi"}
    t.publish([json.dumps(bad_event).encode()])
    t.publish([payload(e) for e in good[6:]])
    rec = Recorder(refuse={good[8].event_id})
    c = StreamConsumer(t, rec, batch=5, block_ms=10)
    total = c.run(until_idle=True)
    assert total.entries == len(good) + 4
    assert total.poison == 5 and total.applied == len(good) - 1
    assert set(rec.applied) == {e.event_id for e in good} - {good[8].event_id}
    assert t.pending() == 0
    dead = client.xrange(f"{stream_name}:dead")
    assert len(dead) == 5
    ids = [json.loads(f[b"errors"]) and f[b"source_id"].decode() for _, f in dead]
    assert len(set(ids)) == 5
    by_payload = {f[b"event"]: json.loads(f[b"errors"]) for _, f in dead}
    assert by_payload[b"{not json"][0]["type"] == "json_invalid"
    assert any(e["loc"].endswith("text") for e in by_payload[json.dumps(bad_event).encode()])
    assert [e for e in total.errors if e[1] == "bad-1"]
    t.close()


def test_decode_names_why_an_entry_is_poison() -> None:
    assert decode(Delivery("1-0", None))[0]["type"] == "missing"  # type: ignore[index]
    assert decode(Delivery("1-0", b"\xff\xfe"))[0]["type"] == "json_invalid"  # type: ignore[index]
    ok = decode(Delivery("1-0", payload(account("x", "adult"))))
    assert not isinstance(ok, tuple) and ok.type == "account"


def test_a_dead_consumers_pending_entries_are_claimed_by_another(stream_name: str) -> None:
    evs = events(40)
    dead = transport(stream_name, "dead")
    dead.publish([payload(e) for e in evs])
    taken = dead.read(15, 10)  # read, never acknowledged: the consumer died
    assert len(taken) == 15 and dead.pending() == 15
    rec = Recorder()
    live = StreamConsumer(
        transport(stream_name, "live"), rec, batch=10, block_ms=10, claim_idle_ms=100
    )
    live.poll()  # the dead consumer's entries are not stale yet: new ones are read
    assert len(rec.applied) == 10
    time.sleep(0.15)
    while live.poll().entries:
        pass
    live.run(until_idle=True)
    assert sorted(rec.applied) == sorted(e.event_id for e in evs)
    assert rec.duplicates == 0 and dead.pending() == 0
    dead.close()
    live.transport.close()


def test_a_consumer_restarted_under_its_name_reads_its_own_pending_first(
    stream_name: str,
) -> None:
    evs = events(30)
    before = transport(stream_name, "c1")
    before.publish([payload(e) for e in evs])
    before.read(10, 10)
    before.close()
    rec = Recorder()
    again = StreamConsumer(transport(stream_name, "c1"), rec, batch=10, block_ms=10)
    again.claim_every_s = 3600  # no claim: its own backlog comes from read()
    again._next_claim = time.monotonic() + 3600
    again.run(until_idle=True)
    assert rec.seen == [e.event_id for e in evs]  # its backlog first, then the rest, in order
    again.transport.close()


def test_one_consumer_applies_each_accounts_events_in_stream_order(stream_name: str) -> None:
    evs = events(300, accounts=7)
    t = transport(stream_name, "c1")
    t.publish([payload(e) for e in evs])
    rec = Recorder()
    StreamConsumer(t, rec, batch=64, block_ms=10).run(until_idle=True)

    def per_account(ids: Sequence[str]) -> dict[str, list[str]]:
        by_id = {e.event_id: e for e in evs}
        out: dict[str, list[str]] = {}
        for i in ids:
            e = by_id[i]
            acc = getattr(e, "account", None) or getattr(e, "actor")  # noqa: B009
            out.setdefault(acc, []).append(i)
        return out

    assert per_account(rec.seen) == per_account([e.event_id for e in evs])
    t.close()


def test_an_entry_its_consumers_keep_dying_on_is_dead_lettered(stream_name: str) -> None:
    evs = events(6)
    first = transport(stream_name, "c0")
    first.publish([payload(e) for e in evs])
    assert len(first.read(2, 10)) == 2  # c0 dies holding the first two entries
    # Each next consumer claims them and dies too, until they exceed the delivery limit.
    for n in range(1, 4):
        time.sleep(0.06)
        dying = transport(stream_name, f"c{n}")
        taken = dying.claim_stale(50, 10)
        assert [d.attempts for d in taken] == [n + 1, n + 1]
        dying.close()
    time.sleep(0.06)
    rec = Recorder()
    live = StreamConsumer(
        transport(stream_name, "live"), rec, batch=10, block_ms=10, claim_idle_ms=50
    )
    live.max_attempts = 4
    total = live.run(until_idle=True)
    assert total.poison == 2 and {e[2][0]["type"] for e in total.errors} == {"too_many_deliveries"}
    assert set(rec.applied) == {e.event_id for e in evs[2:]}
    assert len(first.redis.xrange(f"{stream_name}:dead")) == 2
    assert first.pending() == 0
    first.close()
    live.transport.close()
