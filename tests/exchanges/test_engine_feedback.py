"""Feedback from review to an exchange, end to end through the real app on SQLite and
PostgreSQL: entries synced by an exchange match an upload, the case is decided through
``pipeline.decide``, the finding is queued in the decision's transaction and the worker's pass
sends it upstream, retrying a transient failure. The matched files are the benign reference
images of ``tests/data``; the exchange is the scripted test exchange."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path
from typing import ClassVar

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from bastion import pipeline
from bastion.banks.model import utcnow
from bastion.config import Settings
from bastion.db import Store
from bastion.exchanges.base import TransientError, Upsert, Verdict, register
from bastion.exchanges.engine import ExchangeLoop
from bastion.exchanges.store import ExchangeStore
from bastion.review import Decision, Viewer
from bastion.server import create_app
from tests.exchanges.scripted import SCRIPTS, Script, ScriptedExchange, Step, entry
from tests.fixtures.clock import Clock

PHOTOS = ["bridge-mods/aaa-orig.jpg", "misc-images/wee.jpg"]


@register
class MuteExchange(ScriptedExchange):
    """A partner that takes no feedback."""

    kind = "scripted-mute"
    feedback: ClassVar[frozenset[Verdict]] = frozenset()


@pytest.fixture(autouse=True)
def _private_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The app's key and policy go to a temporary ./bastion-data, never the checkout's."""
    monkeypatch.chdir(tmp_path)


def _scan(client: TestClient, headers: dict[str, str], data: bytes, **context: str) -> dict:
    r = client.post(
        "/v1/scan",
        headers=headers,
        files={"file": ("upload.jpg", data)},
        data={"context": json.dumps(context)},
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_decisions_on_exchange_matches_go_back_upstream(store: Store, testdata: Path) -> None:
    photos = [(testdata / "images" / p).read_bytes() for p in PHOTOS]
    digests = [hashlib.md5(p).hexdigest() for p in photos]
    script = Script(
        steps=[
            Step(
                items=[
                    Upsert(f"hs-{n}", (entry(d, labels=["csam"], metadata={"id": n}),))
                    for n, d in enumerate(digests, 1)
                ]
            )
        ]
    )
    SCRIPTS["feedback-e2e"] = script
    settings = Settings(index_poll_seconds=0.2, rate_limit_per_minute=0)
    _, token = store.create_api_key("admin", {"admin"})
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with TestClient(create_app(settings, store=store)) as client:
            rt = client.app.state.runtime  # type: ignore[attr-defined]
            clock = Clock(utcnow() + timedelta(seconds=1))
            xs = ExchangeStore(store, rt.master_key, rt.settings, clock=clock)
            xs.add("hashlist", "scripted", config={"script": "feedback-e2e"}, labels=["csam"])
            assert xs.sync("hashlist").added == 2
            rt.index.refresh()  # the live index takes the synced entries without a rebuild

            cases = []
            for n, photo in enumerate(photos, 1):
                verdict = _scan(client, headers, photo, uploader_id=f"u-{n}", content_id=f"c-{n}")
                assert verdict["verdict"]["decision"] == "block"
                assert verdict["matches"][0]["bank"] == "hashlist"
                cases.append(verdict["verdict"]["case_id"])
            ann = Viewer("ann", "admin")
            rt.review.claim(ann, cases[0])
            pipeline.decide(rt, ann, cases[0], Decision.not_abusive("benign photo, note: Pat"))
            rt.review.claim(ann, cases[1])
            pipeline.decide(rt, ann, cases[1], Decision.confirmed("B2"))

            queued = sorted(xs.feedback("hashlist"), key=lambda f: f.case_id or 0)
            assert [(f.key, f.verdict, f.reason, f.case_id, f.state) for f in queued] == [
                ("hs-1", "negative", "not_abusive", cases[0], "pending"),
                ("hs-2", "positive", "confirmed:B2", cases[1], "pending"),
            ]
            # Queued in the decision's transaction; a retried decision queues nothing twice.
            with store.engine.begin() as conn:
                again = xs.queue_feedback_in(
                    conn,
                    [("hashlist", queued[0].entry_id)],
                    Verdict.NEGATIVE,
                    case_id=cases[0],
                    reason="not_abusive",
                )
            assert again == 0

            script.feedback_errors = [TransientError("HTTP 503")]
            # The decisions queued their feedback at real time: move the test clock just past it
            # (a loaded machine can take longer than the clock's head start to get here).
            clock.now = utcnow() + timedelta(seconds=1)
            first = xs.send_due_feedback("w1")
            assert (first["sent"], first["retry"]) == (1, 1)
            states = {f.key: f for f in xs.feedback("hashlist")}
            retried = next(f for f in states.values() if f.state == "pending")
            assert retried.attempts == 1 and retried.last_error == "HTTP 503"
            assert retried.next_attempt_at > clock.now
            assert xs.send_due_feedback("w1")["sent"] == 0  # not due yet
            clock.now = retried.next_attempt_at
            assert xs.send_due_feedback("w1")["sent"] == 1
            assert {f.state for f in xs.feedback("hashlist")} == {"sent"}
            sent = sorted(script.sent, key=lambda i: i.key)
            assert [(i.key, i.verdict, i.reason, i.value, dict(i.metadata)) for i in sent] == [
                ("hs-1", Verdict.NEGATIVE, "not_abusive", digests[0], {"id": 1}),
                ("hs-2", Verdict.POSITIVE, "confirmed:B2", digests[1], {"id": 2}),
            ]
            # The reviewer's free text went nowhere near the partner or the queue.
            assert all("Pat" not in (i.reason + json.dumps(dict(i.metadata))) for i in sent)
            actions = [e.action for e in store.iter_audit(limit=10_000)]
            assert actions.count("exchange.feedback.queue") == 2
            assert actions.count("exchange.feedback.sent") == 2

            # An exchange set not to send feedback queues none.
            xs.update("hashlist", send_feedback=False)
            with store.engine.begin() as conn:
                assert (
                    xs.queue_feedback_in(
                        conn, [("hashlist", queued[0].entry_id)], Verdict.NEGATIVE, case_id=999
                    )
                    == 0
                )
    finally:
        SCRIPTS.pop("feedback-e2e", None)


def test_a_partner_without_feedback_is_marked_unsupported_and_the_loop_sends(
    store: Store, tmp_path: Path
) -> None:
    script = Script(steps=[Step(items=[Upsert("k1", (entry("a" * 32),))])])
    SCRIPTS["mute"] = SCRIPTS["loud"] = script
    try:
        settings = Settings(secret_key_file=str(tmp_path / "k"))
        xs = ExchangeStore(store, None, settings)
        xs.add("mute", "scripted-mute", config={"script": "mute"})
        xs.add("loud", "scripted", config={"script": "loud"})
        loop = ExchangeLoop(xs, worker_id="w")
        assert sorted(r.exchange for r in loop.run_once()) == ["loud", "mute"]
        with store.engine.connect() as conn:
            ids = [
                (bank, i)
                for bank, i in conn.execute(
                    sa.text(
                        "SELECT b.name, e.id FROM bank_entries e JOIN banks b ON b.id = e.bank_id"
                    )
                )
            ]
        with store.engine.begin() as conn:
            n = xs.queue_feedback_in(conn, ids, Verdict.POSITIVE, case_id=5, reason="confirmed")
        assert n == 2
        assert [f.state for f in xs.feedback("mute")] == ["unsupported"]
        loop._next = float("-inf")
        loop.run_once()
        assert loop.feedback["sent"] == 1
        assert [f.state for f in xs.feedback("loud")] == ["sent"]
        assert [f.state for f in xs.feedback("mute")] == ["unsupported"]
    finally:
        SCRIPTS.pop("mute", None)
        SCRIPTS.pop("loud", None)
