"""The stream intake end to end: events from the real Redis at 127.0.0.1:6379 into the real store
(SQLite and PostgreSQL) through ``bastion events consume`` and the store's ingest, including a
consumer killed with SIGKILL in the middle of a batch, and the ``bastion simulate contacts``
command. Each test uses its own stream, deleted afterwards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from typer.testing import CliRunner

from bastion.cli import app
from bastion.contact.model import Event, event_to_json
from bastion.contact.risk import recompute
from bastion.contact.simulate import simulate
from bastion.contact.store import ContactStore
from bastion.contact.stream import RedisStream, StreamConsumer, ingest_apply
from tests.fixtures.stores import Database

REDIS_URL = os.environ.get("BASTION_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def stream_name() -> Iterator[str]:
    name = f"test:bastion:events:{uuid.uuid4().hex[:12]}"
    yield name
    client: Any = redis.Redis.from_url(REDIS_URL)
    client.delete(name, f"{name}:dead")
    client.close()


def payloads(events: list[Event]) -> list[bytes]:
    return [json.dumps(event_to_json(e)).encode() for e in events]


def stored(database: Database) -> list[tuple[int, str, str]]:
    """(seq, event_id, account) of every stored event, in commit order."""
    store = database.open()
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT seq, event_id, account FROM contact_events ORDER BY seq")
        ).all()
    return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]


def assert_risk_matches_a_recomputation(database: Database) -> None:
    contact = ContactStore(database.open())
    expected = recompute(contact.stored_events())
    got = contact.all_risk()
    assert {a: (r.score, r.band) for a, r in expected.items()} == {
        a: (score, band) for a, (score, band, _) in got.items()
    }


def test_simulate_contacts_writes_events_and_labels(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "ev.jsonl"
    labels = tmp_path / "lab.jsonl"
    args = ["simulate", "contacts", "--users", "100", "--days", "2", "--seed", "5"]
    first = runner.invoke(app, [*args, "--out", str(out), "--labels", str(labels)])
    assert first.exit_code == 0, first.output
    lines = out.read_text().splitlines()
    assert (
        first.stdout.strip() == f"events={len(lines)} labels={len(labels.read_text().splitlines())}"
    )
    events = [json.loads(line) for line in lines]
    assert all("text" not in e and "body" not in e for e in events)
    assert {e["type"] for e in events} >= {"account", "message", "connection_request", "flag"}
    label_rows = [json.loads(line) for line in labels.read_text().splitlines()]
    assert any(row["planted"] for row in label_rows)
    assert any(row["lookalike"] for row in label_rows)
    again = tmp_path / "again.jsonl"
    second = runner.invoke(app, [*args, "--out", str(again)])
    assert second.exit_code == 0, second.output
    assert again.read_bytes() == out.read_bytes()  # same seed, same events
    assert (tmp_path / "again.labels.jsonl").exists()  # default labels path beside the events


def test_consume_applies_the_stream_once_in_order_past_poison(
    db: Database, stream_name: str, tmp_path: Path
) -> None:
    events, _ = simulate(100, 2, seed=11)
    events = events[:1500]
    file = tmp_path / "ev.jsonl"
    lines = payloads(events)
    lines.insert(300, b"{broken")
    lines.insert(700, json.dumps({"event_id": "x1", "type": "message", "text": "hi"}).encode())
    file.write_bytes(b"\n".join(lines) + b"\n")
    runner = CliRunner()
    pub = runner.invoke(
        app, ["events", "publish", "--redis", REDIS_URL, "--stream", stream_name, str(file)]
    )
    assert pub.exit_code == 0 and pub.stdout.strip() == str(len(lines))
    args = ["events", "consume", "--redis", REDIS_URL, "--stream", stream_name]
    args += ["--group", "g", "--consumer", "c1", "--db", db.schema_url, "--batch", "200"]
    res = runner.invoke(app, [*args, "--until-idle", "--block-ms", "50"])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip().splitlines()[-1] == (
        f"entries={len(lines)} applied={len(events)} poison=2 claimed=0"
    )
    rows = stored(db)
    assert [r[1] for r in rows] == [e.event_id for e in events]  # stream order, exactly once
    client: Any = redis.Redis.from_url(REDIS_URL)
    dead = client.xrange(f"{stream_name}:dead")
    assert [f[b"event"] for _, f in dead] == [b"{broken", lines[700]]
    assert client.xpending(stream_name, "g")["pending"] == 0
    client.close()
    # Consuming the same stream again under a new group changes nothing: ingest is idempotent.
    again = runner.invoke(app, [*args[:6], "--group", "g2", *args[8:], "--until-idle"])
    assert again.exit_code == 0, again.output
    assert stored(db) == rows
    assert_risk_matches_a_recomputation(db)


def _consumer_proc(db: Database, stream: str, name: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "bastion.cli", "events", "consume", "--redis", REDIS_URL),
            *("--stream", stream, "--group", "g", "--consumer", name, "--db", db.schema_url),
            *extra,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _count(db: Database) -> int:
    store = db.open()
    with store.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM contact_events")).scalar_one())


@pytest.mark.slow
def test_a_consumer_killed_mid_batch_loses_and_duplicates_nothing(
    db: Database, stream_name: str
) -> None:
    events, _ = simulate(150, 5, seed=23)
    client: Any = redis.Redis.from_url(REDIS_URL)
    RedisStream(REDIS_URL, stream_name, "g", "setup").close()  # the group, before any entry
    victim = _consumer_proc(db, stream_name, "victim", "--batch", "100", "--block-ms", "50")
    try:
        pipe = client.pipeline(transaction=False)
        for p in payloads(events):
            pipe.xadd(stream_name, {"event": p})
        pipe.execute()
        # Kill it while it holds a batch read and not yet acknowledged, after it committed some:
        # freeze it (SIGSTOP), look, and kill it (SIGKILL) if so, else let it go on and look again.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert victim.poll() is None, victim.communicate()
            victim.send_signal(signal.SIGSTOP)
            held = {c["name"]: c["pending"] for c in client.xinfo_consumers(stream_name, "g")}
            if held.get(b"victim", 0) > 0 and _count(db) > 0:
                victim.send_signal(signal.SIGKILL)
                break
            victim.send_signal(signal.SIGCONT)
            time.sleep(0.01)
        else:
            pytest.fail("the consumer never held a batch")
        victim.wait(10)
        assert victim.returncode == -signal.SIGKILL
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    held = {c["name"]: c["pending"] for c in client.xinfo_consumers(stream_name, "g")}
    assert held[b"victim"] > 0  # it died holding entries nobody acknowledged
    committed = _count(db)
    assert 0 < committed < len(events)

    # Two consumers finish the stream: one in a process, one here; the dead one's entries are
    # claimed by one of them once idle for 300 ms.
    other = _consumer_proc(
        db, stream_name, "other", "--batch", "100", "--block-ms", "50", "--claim-idle-ms", "300"
    )
    try:
        deadline = time.monotonic() + 60
        while not any(c["name"] == b"other" for c in client.xinfo_consumers(stream_name, "g")):
            assert time.monotonic() < deadline and other.poll() is None, other.communicate()
            time.sleep(0.02)  # it reads once started (its SIGTERM handler is in place by then)
        contact = ContactStore(db.open())
        here = StreamConsumer(
            RedisStream(REDIS_URL, stream_name, "g", "here"),
            ingest_apply(contact.ingest),
            batch=100,
            block_ms=50,
            claim_idle_ms=300,
            claim_every_s=0.1,
        )
        deadline = time.monotonic() + 120
        claimed = 0
        while time.monotonic() < deadline:
            claimed += here.poll().claimed
            info = client.xinfo_groups(stream_name)[0]
            if info["pending"] == 0 and info["lag"] == 0:
                break
        else:
            pytest.fail("the stream was not drained")
        here.transport.close()
        other.send_signal(signal.SIGTERM)
        out, errs = other.communicate(timeout=30)
        assert other.returncode == 0, errs
        totals = dict(kv.split("=") for kv in out.split())
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()
    assert claimed + int(totals["claimed"]) >= held[b"victim"]
    rows = stored(db)
    ids = [r[1] for r in rows]
    assert len(ids) == len(set(ids)) == len(events)  # nothing lost, nothing twice
    assert set(ids) == {e.event_id for e in events}
    assert {c["name"]: c["pending"] for c in client.xinfo_consumers(stream_name, "g")}[
        b"victim"
    ] == 0
    client.close()
    assert_risk_matches_a_recomputation(db)


def test_an_unreachable_redis_is_a_usage_error(tmp_path: Path) -> None:
    runner = CliRunner()
    down = "redis://127.0.0.1:1/0"
    consume = runner.invoke(
        app,
        [
            *("events", "consume", "--redis", down, "--stream", "s", "--group", "g"),
            *("--db", f"sqlite:///{tmp_path / 'b.db'}", "--until-idle"),
        ],
    )
    assert consume.exit_code == 2 and "cannot reach Redis" in consume.output
    file = tmp_path / "ev.jsonl"
    file.write_text("{}\n")
    publish = runner.invoke(app, ["events", "publish", "--redis", down, "--stream", "s", str(file)])
    assert publish.exit_code == 2 and "cannot publish to Redis" in publish.output
