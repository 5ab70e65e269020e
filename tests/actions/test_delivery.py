"""Delivery against a real local HTTP receiver: headers and signatures as documented, the exact
stored body every time, and what each kind of answer does to the row."""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import timedelta

import pytest

from bastion import __version__
from bastion.actions import Backoff, load_targets, verify_signature
from bastion.actions.outbox import Outbox
from bastion.actions.worker import OutboxWorker, WorkerConfig
from bastion.config import Settings
from bastion.db import Store
from tests.fixtures.clock import Clock

from .receiver import running

SECRET = "receiver-secret-0123456789"


def make_worker(outbox: Outbox, url: str, secret: str = SECRET, **settings: object) -> OutboxWorker:
    s = Settings(webhook_url=url, webhook_secret=secret, **settings)  # type: ignore[arg-type]
    targets = load_targets(s)
    return OutboxWorker(outbox, targets, WorkerConfig.from_settings(s, targets))


@pytest.fixture
def outbox(store: Store, clock: Clock) -> Outbox:
    return Outbox(store, max_attempts=5, backoff=Backoff(base=10, cap=60), clock=clock)


def enqueue(outbox: Outbox, key: str = "case-1:remove_content", action: str = "remove_content"):
    item_id = outbox.enqueue(
        action=action, payload={"content_id": "c-1"}, idempotency_key=key, case_id=1
    )
    assert item_id is not None
    return item_id


def test_a_delivery_carries_the_documented_headers_and_a_valid_signature(
    outbox: Outbox, store: Store
) -> None:
    item_id = enqueue(outbox)
    with running(SECRET) as rx:
        worker = make_worker(outbox, rx.url)
        assert worker.run_once() == 1
    (req,) = rx.requests
    stored = outbox.get(item_id)
    assert req.body == stored.body_bytes
    assert req.path == "/hook"
    h = req.headers
    assert h["content-type"] == "application/json"
    assert h["user-agent"] == f"Bastion/{__version__}"
    assert h["idempotency-key"] == "case-1:remove_content"
    assert h["bastion-action"] == "remove_content"
    assert req.signature_ok
    verify_signature(SECRET, h["bastion-signature"], req.body)
    assert json.loads(req.body)["id"] == "case-1:remove_content"
    assert stored.state == "delivered" and stored.last_status == 200
    assert stored.target == "default" and stored.attempts == 1
    delivered = [e for e in store.iter_audit() if e.action == "action.delivered"]
    assert len(delivered) == 1 and delivered[0].actor == "system"
    assert delivered[0].target == f"outbox:{item_id}"


def test_5xx_is_retried_after_backoff_with_the_same_bytes(outbox: Outbox, clock: Clock) -> None:
    item_id = enqueue(outbox)
    with running(SECRET, lambda key, nth: 503 if nth == 1 else None) as rx:
        worker = make_worker(outbox, rx.url)
        worker.run_once()
        row = outbox.get(item_id)
        assert row.state == "pending" and row.last_status == 503
        assert row.last_error and row.last_error.startswith("HTTP 503")
        assert worker.run_once() == 0  # backing off: nothing due
        clock.advance(10)
        assert worker.run_once() == 1
    assert outbox.get(item_id).state == "delivered"
    first, second = rx.requests
    assert first.body == second.body and first.signature_ok and second.signature_ok
    assert rx.received["case-1:remove_content"] == 2
    assert list(rx.applied) == ["case-1:remove_content"]


@pytest.mark.parametrize("status", [400, 403, 404, 410, 422])
def test_4xx_is_dead_at_once(outbox: Outbox, store: Store, status: int) -> None:
    item_id = enqueue(outbox)
    with running(SECRET, lambda key, nth: status) as rx:
        make_worker(outbox, rx.url).run_once()
    row = outbox.get(item_id)
    assert row.state == "dead" and row.attempts == 1 and row.last_status == status
    assert len(rx.requests) == 1
    assert [e.detail["status"] for e in store.iter_audit() if e.action == "action.dead"] == [status]


def test_a_receiver_refusing_the_signature_dead_letters(outbox: Outbox) -> None:
    item_id = enqueue(outbox)
    with running(SECRET) as rx:
        make_worker(outbox, rx.url, secret="the-wrong-secret-0123456789").run_once()
    row = outbox.get(item_id)
    assert not rx.requests[0].signature_ok
    assert row.state == "dead" and row.last_status == 401 and "bad signature" in row.last_error


@pytest.mark.parametrize("status", [408, 409, 425, 429, 500, 502])
def test_retryable_answers_are_retried(outbox: Outbox, status: int) -> None:
    item_id = enqueue(outbox)
    with running(SECRET, lambda key, nth: status) as rx:
        make_worker(outbox, rx.url).run_once()
    row = outbox.get(item_id)
    assert row.state == "pending" and row.last_status == status and row.attempts == 1


def test_a_timeout_is_retried(outbox: Outbox) -> None:
    item_id = enqueue(outbox)
    with running(SECRET, lambda key, nth: ("stall", 2.0)) as rx:
        make_worker(outbox, rx.url, webhook_timeout=0.3).run_once()
    row = outbox.get(item_id)
    assert row.state == "pending" and row.last_error == "timed out after 0.3 s"
    assert row.last_status is None


def test_connection_refused_is_retried(outbox: Outbox) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    item_id = enqueue(outbox)
    make_worker(outbox, f"http://127.0.0.1:{port}/hook").run_once()
    row = outbox.get(item_id)
    assert row.state == "pending" and row.last_error.startswith("ConnectError")


def test_redirects_are_not_followed(outbox: Outbox) -> None:
    item_id = enqueue(outbox)
    with running(SECRET, lambda key, nth: 307) as rx:
        make_worker(outbox, rx.url).run_once()
    row = outbox.get(item_id)
    assert len(rx.requests) == 1
    assert row.state == "pending" and "not followed" in row.last_error


def test_actions_without_a_target_wait_and_others_go(outbox: Outbox) -> None:
    waiting = enqueue(outbox, "k-custom", "escalate_to_ops")
    going = enqueue(outbox, "k-preserve", "preserve")
    with running(SECRET) as rx:
        s = Settings(webhooks={"preserve": {"url": rx.url, "secret": SECRET}})
        targets = load_targets(s)
        OutboxWorker(outbox, targets, WorkerConfig.from_settings(s, targets)).run_once()
    assert list(rx.applied) == ["k-preserve"]
    assert outbox.get(going).state == "delivered"
    row = outbox.get(waiting)
    assert row.state == "pending" and row.attempts == 0
    assert row.last_error == "no webhook target configured for escalate_to_ops"


def wait_until(predicate, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_the_running_worker_delivers_everything_and_stops_gracefully(store: Store) -> None:
    outbox = Outbox(store)  # real clock
    keys = [f"k{i}" for i in range(12)]
    for key in keys:
        outbox.enqueue(action="restrict_account", payload={"account": key}, idempotency_key=key)
    with running(SECRET, lambda key, nth: ("stall", 1.0) if key == "k11" else None) as rx:
        worker = make_worker(outbox, rx.url, outbox_poll_seconds=0.05, outbox_concurrency=3)
        thread = threading.Thread(target=worker.run)
        thread.start()
        try:
            rx.stalled.wait(20)
            worker.stop()  # while k11 is in flight: it must still finish
            thread.join(30)
        finally:
            worker.stop()
            thread.join(30)
        assert not thread.is_alive()
    assert rx.received["k11"] == 1
    assert outbox.list(state="delivering") == []
    assert {i.idempotency_key for i in outbox.list(state="delivered")} >= {"k11"}
    # Later rows the stopped worker never claimed are still pending, nothing lost.
    assert outbox.stats().counts["pending"] + outbox.stats().counts["delivered"] == 12


def test_the_running_worker_picks_up_rows_added_later(store: Store) -> None:
    outbox = Outbox(store)
    with running(SECRET) as rx:
        worker = make_worker(outbox, rx.url, outbox_poll_seconds=0.05)
        thread = threading.Thread(target=worker.run)
        thread.start()
        try:
            for i in range(5):
                outbox.enqueue(action="preserve", payload={"i": i}, idempotency_key=f"late-{i}")
            wait_until(lambda: outbox.stats().counts["delivered"] == 5)
        finally:
            worker.stop()
            thread.join(30)
    assert sorted(rx.applied) == [f"late-{i}" for i in range(5)]
    assert worker.counts.delivered == 5 and worker.counts.lost == 0
    assert worker.config.lease == timedelta(seconds=40)
