"""POST /v1/events, GET /v1/accounts/{id}/risk and /timeline, erasure and legal holds over HTTP
(SQLite and PostgreSQL): per-event results, idempotence, out-of-order batches, stored risk equal
to a from-scratch recomputation, scopes, audited timeline reads and problem details for bad
batches. Events are metadata and flags only."""

from __future__ import annotations

import random
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bastion.contact.model import MAX_BATCH, event_to_json
from bastion.contact.risk import recompute
from bastion.contact.simulate import simulate
from bastion.contact.store import ContactStore
from bastion.db import Store
from tests.api.conftest import bearer
from tests.contact.helpers import account, at, ev, message

URL = "/v1/events"


@pytest.fixture
def events_key(api_store: Store) -> dict[str, str]:
    return bearer(api_store, "platform", "events")


@pytest.fixture
def reader(api_store: Store) -> dict[str, str]:
    return bearer(api_store, "trust-safety", "risk")


def _groomer() -> list[dict[str, Any]]:
    events = [account("g", "adult", country="GB")]
    for i in range(6):
        events.append(account(f"k{i}", "13-15", country="GB"))
        events.append(message("g", f"k{i}", at(minutes=20 * i)))
    events.append(ev("flag", at(minutes=3), account="g", target="k0", kind="offplatform_handle"))
    events.append(ev("message", at(hours=30), actor="x", target="y", conversation="c"))
    return [event_to_json(e) for e in events]


def test_post_events_results_and_idempotence(
    client: TestClient, events_key: dict[str, str], reader: dict[str, str]
) -> None:
    batch = _groomer()
    r = client.post(URL, json={"events": batch}, headers=events_key)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert (doc["accepted"], doc["duplicates"], doc["refused"]) == (len(batch), 0, 0)
    assert [x["status"] for x in doc["results"]] == ["ok"] * len(batch)
    risk = client.get("/v1/accounts/g/risk", headers=reader).json()
    # re-sent: nothing changes
    again = client.post(URL, json={"events": batch}, headers=events_key).json()
    assert (again["accepted"], again["duplicates"]) == (0, len(batch))
    assert client.get("/v1/accounts/g/risk", headers=reader).json() == risk


def test_bad_events_are_refused_one_by_one_and_text_never_accepted(
    client: TestClient, events_key: dict[str, str], api_store: Store
) -> None:
    good = event_to_json(message("a", "b", at()))
    text = {**event_to_json(message("a", "b", at(1))), "text": "add me on another app"}
    body_field = {**event_to_json(message("a", "b", at(2))), "body": "hi"}
    bad_type = {"event_id": "e1", "time": at().isoformat(), "type": "chat"}
    r = client.post(URL, json={"events": [text, good, body_field, bad_type, 7]}, headers=events_key)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert [x["status"] for x in doc["results"]] == ["error", "ok", "error", "error", "error"]
    assert doc["results"][0]["event_id"] == text["event_id"]
    assert "text" in doc["results"][0]["error"]
    assert doc["results"][0]["errors"][0]["type"] == "extra_forbidden"
    assert (doc["accepted"], doc["refused"]) == (1, 4)
    stored = ContactStore(api_store).stored_events()
    assert [e.event_id for e in stored] == [good["event_id"]]


def test_bad_batches_get_problem_details(client: TestClient, events_key: dict[str, str]) -> None:
    too_many = [event_to_json(message("a", "b", at(i))) for i in range(MAX_BATCH + 1)]
    r = client.post(URL, json={"events": too_many}, headers=events_key)
    assert r.status_code == 413
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "1000" in r.json()["detail"]
    bodies: list[Any] = [{"events": []}, {"events": "nope"}, {}, [], {"events": [], "extra": 1}]
    for body in bodies:
        r = client.post(URL, json=body, headers=events_key)
        assert r.status_code == 422, body
        assert r.headers["content-type"].startswith("application/problem+json")
    r = client.post(
        URL, content=b"{not json", headers={**events_key, "content-type": "application/json"}
    )
    assert r.status_code == 400
    exactly = [event_to_json(message("a", "b", at(i))) for i in range(MAX_BATCH)]
    r = client.post(URL, json={"events": exactly}, headers=events_key)
    assert r.status_code == 200 and r.json()["accepted"] == MAX_BATCH


def test_out_of_order_batches_equal_from_scratch(
    client: TestClient, events_key: dict[str, str], reader: dict[str, str], api_store: Store
) -> None:
    events, _ = simulate(100, 2, seed=4)
    raw = [event_to_json(e) for e in events]
    random.Random(2).shuffle(raw)
    for start in range(0, len(raw), 700):
        r = client.post(URL, json={"events": raw[start : start + 700]}, headers=events_key)
        assert r.status_code == 200 and r.json()["refused"] == 0
    scratch = recompute(events, ContactStore(api_store).settings)
    flagged = sorted(a for a, res in scratch.items() if res.score > 0)
    assert flagged
    for name in flagged[:10] + sorted(scratch)[:5]:
        got = client.get(f"/v1/accounts/{name}/risk", headers=reader).json()
        want = scratch[name]
        assert (got["score"], got["band"]) == (want.score, want.band), name
        assert [(c["detector"], c["points"], c["evidence"]) for c in got["contributions"]] == [
            (c.detector, c.points, dict(c.evidence)) for c in want.contributions
        ]


def test_risk_shape_and_unknown_account(
    client: TestClient, events_key: dict[str, str], reader: dict[str, str]
) -> None:
    client.post(URL, json={"events": _groomer()}, headers=events_key)
    r = client.get("/v1/accounts/g/risk", headers=reader)
    assert r.status_code == 200
    doc = r.json()
    assert doc["account"] == "g" and doc["band"] in ("medium", "high") and doc["score"] >= 30
    by_name = {c["detector"]: c for c in doc["contributions"]}
    assert by_name["fanout"]["fired"] and by_name["fanout"]["evidence"]["stranger_minors"] == 6
    assert by_name["fast_escalation"]["fired"]
    assert all(isinstance(c["explanation"], str) for c in doc["contributions"])
    r = client.get("/v1/accounts/nobody/risk", headers=reader)
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem")


def test_scopes(
    client: TestClient,
    api_store: Store,
    events_key: dict[str, str],
    reader: dict[str, str],
    admin: dict[str, str],
) -> None:
    batch = {"events": _groomer()[:2]}
    other = bearer(api_store, "matcher", "match", "contact")
    assert client.post(URL, json=batch).status_code == 401
    assert client.post(URL, json=batch, headers=other).status_code == 403
    assert client.post(URL, json=batch, headers=reader).status_code == 403
    assert client.post(URL, json=batch, headers=admin).status_code == 200
    for path in ("/v1/accounts/g/risk", "/v1/accounts/g/timeline"):
        assert client.get(path, headers=events_key).status_code == 403
        assert client.get(path, headers=other).status_code == 403
        assert client.get(path, headers=reader).status_code == 200
        assert client.get(path, headers=admin).status_code == 200
    for key in (events_key, reader, other):
        assert client.delete("/v1/accounts/g/events", headers=key).status_code == 403
        r = client.put("/v1/accounts/g/hold", json={"reason": "x"}, headers=key)
        assert r.status_code == 403


def test_timeline_is_audited_and_paged(
    client: TestClient, api_store: Store, events_key: dict[str, str], reader: dict[str, str]
) -> None:
    client.post(URL, json={"events": _groomer()}, headers=events_key)
    head = api_store.audit_head()[0]
    r = client.get("/v1/accounts/g/timeline", params={"limit": 5}, headers=reader)
    assert r.status_code == 200
    first = r.json()
    assert len(first["events"]) == 5 and first["next"] is not None
    r = client.get(
        "/v1/accounts/g/timeline", params={"limit": 5, "before": first["next"]}, headers=reader
    )
    second = r.json()
    assert len(second["events"]) == 3 and second["next"] is None  # 8 events name g
    seen = [e["event"]["event_id"] for e in first["events"] + second["events"]]
    assert len(set(seen)) == 8
    assert all("text" not in e["event"] for e in first["events"])
    reads = [a for a in api_store.iter_audit(since_id=head) if a.action == "contact.timeline"]
    assert [(a.actor, a.target) for a in reads] == [("key:trust-safety", "account:g")] * 2
    # a cursor that names no event of this account
    for params in ({"before": "nope"}, {"before": "t-other"}):
        r = client.get("/v1/accounts/g/timeline", params=params, headers=reader)
        assert r.status_code == 404, params
    assert (
        client.get("/v1/accounts/g/timeline", params={"limit": 0}, headers=reader).status_code
        == 422
    )


def test_erasure_and_holds(
    client: TestClient,
    api_store: Store,
    events_key: dict[str, str],
    reader: dict[str, str],
    admin: dict[str, str],
) -> None:
    batch = _groomer()
    client.post(URL, json={"events": batch}, headers=events_key)
    r = client.put("/v1/accounts/k2/hold", json={"reason": "police request 12"}, headers=admin)
    assert r.status_code == 200 and r.json()["held_by"] == "key:admin"
    r = client.put("/v1/accounts/k2/hold", json={"reason": "again"}, headers=admin)
    assert r.status_code == 409
    r = client.delete("/v1/accounts/k2/events", headers=admin)
    assert r.status_code == 409 and r.json()["title"] == "Under legal hold"
    r = client.delete("/v1/accounts/g/events", headers=admin)
    assert r.status_code == 200
    assert r.json() == {"account": "g", "deleted": 7, "kept": 1}  # g->k2 kept for the hold
    cs = ContactStore(api_store)
    naming_g = [
        e.event_id
        for e in cs.stored_events()
        if "g" in (getattr(e, "actor", None), getattr(e, "account", None))
    ]
    assert naming_g == [next(e["event_id"] for e in batch if e.get("target") == "k2")]
    scratch = recompute(cs.stored_events(), cs.settings)
    assert {a: (v[0], v[1]) for a, v in cs.all_risk().items()} == {
        a: (res.score, res.band) for a, res in scratch.items()
    }
    assert client.get("/v1/accounts/g/risk", headers=reader).json()["score"] == scratch["g"].score
    r = client.delete("/v1/accounts/k2/hold", params={"reason": "closed"}, headers=admin)
    assert r.status_code == 204
    assert (
        client.delete("/v1/accounts/k2/hold", params={"reason": "x"}, headers=admin).status_code
        == 409
    )
    assert client.delete("/v1/accounts/g/events", headers=admin).json()["deleted"] == 1
    actions = [a.action for a in api_store.iter_audit(since_id=0)]
    for action in ("contact.hold", "contact.erase", "contact.release"):
        assert action in actions
