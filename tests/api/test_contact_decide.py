"""POST /v1/contact/decide and GET /v1/contact/prompts: the F1/F2 decision over HTTP, its
scope, problem details for bad input, the policy's contact settings and stored risk bands."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from bastion.api.contact import risk_bands
from bastion.contact.decide import (
    ACTIONS,
    PROMPT_IDS,
    AccountFacts,
    ContactSettings,
    Relationship,
    decide,
)
from bastion.contact.rows import ContactRiskRow, ContactStateRow
from bastion.db import Store
from bastion.policy import default_policy_text
from bastion.runtime import Runtime
from bastion.vocab import AGE_BANDS
from tests.api.conftest import bearer

URL = "/v1/contact/decide"


@pytest.fixture
def key(api_store: Store) -> dict[str, str]:
    return bearer(api_store, "platform", "contact")


def body(
    actor_band: str = "adult",
    target_band: str = "13-15",
    action: str = "message",
    **extra: Any,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "actor": {"account": "a-1", "age_band": actor_band},
        "target": {"account": "c-1", "age_band": target_band},
        "action": action,
    }
    out.update(extra)
    return out


def rt(client: TestClient) -> Runtime:
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    return runtime


def test_the_answer_is_decide_for_every_band_pair_and_action(
    client: TestClient, key: dict[str, str]
) -> None:
    for actor in AGE_BANDS:
        for target in AGE_BANDS:
            for action in ACTIONS:
                for connected in (False, True):
                    r = client.post(
                        URL,
                        json=body(actor, target, action, relationship={"connected": connected}),
                        headers=key,
                    )
                    assert r.status_code == 200, r.text
                    want = decide(
                        AccountFacts("a-1", actor),
                        AccountFacts("c-1", target),
                        Relationship(connected=connected),
                        "low",
                        action,
                    )
                    assert r.json() == want.model_dump(mode="json"), (actor, target, action)


def test_shape_of_a_request_to_a_child(client: TestClient, key: dict[str, str]) -> None:
    r = client.post(URL, json=body(action="connection_request"), headers=key)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {
        "allow": True,
        "requires_confirmation": True,
        "route_to": "requests",
        "prompts": [{"id": "request_unknown", "audience": "target"}],
        "reasons": ["f1.child_confirms_non_connection", "no_mutual_connections"],
    }


def test_facts_from_the_body_relaxed_defaults_and_platform_risk(
    client: TestClient, key: dict[str, str]
) -> None:
    peer = body("13-15", "16-17", "message")
    peer["target"]["relaxed"] = ["message_from_non_connections"]
    assert client.post(URL, json=peer, headers=key).json()["reasons"] == ["f1.relaxed_by_child"]
    risky = body(action="message")
    risky["actor"]["risk_band"] = "high"
    out = client.post(URL, json=risky, headers=key).json()
    assert (out["allow"], out["route_to"]) == (False, "spam")
    blocked = client.post(URL, json=body(relationship={"blocked": True}), headers=key).json()
    assert blocked["reasons"] == ["blocked"]


def test_scope(client: TestClient, api_store: Store, admin: dict[str, str]) -> None:
    assert client.post(URL, json=body()).status_code == 401
    other = bearer(api_store, "matcher", "match")
    r = client.post(URL, json=body(), headers=other)
    assert r.status_code == 403
    assert "contact" in r.json()["detail"]
    assert client.post(URL, json=body(), headers=admin).status_code == 200
    assert client.get("/v1/contact/prompts", headers=other).status_code == 403


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        (body(action="wave"), "action"),
        (body(actor_band="teen"), "actor.age_band"),
        ({**body(), "text": "add me on another app"}, "text"),
        ({"actor": {"account": "a-1"}, "action": "message"}, "target"),
        (body(relationship={"mutual_connections": -1}), "relationship.mutual_connections"),
        (body(relationship={"connected": "maybe"}), "relationship.connected"),
        ({**body(), "actor": {"account": ""}}, "actor.account"),
        ({**body(), "actor": {"account": "a-1", "relaxed": ["everything"]}}, "actor.relaxed"),
        ({**body(), "actor": {"account": "a-1", "risk_band": "severe"}}, "actor.risk_band"),
        ([], "body"),
    ],
)
def test_bad_input_is_a_422_problem(
    client: TestClient, key: dict[str, str], payload: Any, where: str
) -> None:
    r = client.post(URL, json=payload, headers=key)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert where in r.json()["detail"] or any(
        where in ".".join(str(p) for p in e["loc"]) for e in r.json()["errors"]
    )


def test_malformed_json_is_a_400_problem(client: TestClient, key: dict[str, str]) -> None:
    r = client.post(URL, content=b"{not json", headers={**key, "content-type": "application/json"})
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("application/problem+json")


def test_the_api_honours_a_changed_policy_setting(client: TestClient, key: dict[str, str]) -> None:
    unknown = body(actor_band="adult", target_band="unknown", action="message")
    assert client.post(URL, json=unknown, headers=key).json()["route_to"] == "requests"
    medium = body(action="connection_request")
    medium["actor"]["risk_band"] = "medium"
    assert client.post(URL, json=medium, headers=key).json()["route_to"] == "requests"
    text = (
        default_policy_text()
        .replace("    unknown_age_as_child: true\n", "    unknown_age_as_child: false\n")
        .replace("    spam_band: high\n", "    spam_band: medium\n")
    )
    rt(client).policy.save(text, "test")
    assert rt(client).policy.current().contact.decide == ContactSettings(
        unknown_age_as_child=False, spam_band="medium"
    )
    out = client.post(URL, json=unknown, headers=key).json()
    assert (out["allow"], out["route_to"], out["requires_confirmation"]) == (True, "inbox", False)
    assert client.post(URL, json=medium, headers=key).json()["route_to"] == "spam"


def _store_band(store: Store, account: str, band: str, seq: int) -> None:
    from datetime import UTC, datetime

    with store.engine.begin() as conn:
        conn.execute(sa.delete(ContactRiskRow).where(ContactRiskRow.account == account))
        conn.execute(
            sa.insert(ContactRiskRow).values(
                account=account,
                score=80 if band == "high" else 10,
                band=band,
                contributions=[],
                updated_at=datetime.now(UTC),
            )
        )
        updated = conn.execute(  # the migration made the one state row
            sa.update(ContactStateRow).where(ContactStateRow.id == 1).values(applied_seq=seq)
        ).rowcount
        assert updated == 1


def test_the_stored_risk_band_routes_requests_to_spam(
    client: TestClient, key: dict[str, str], api_store: Store
) -> None:
    bands = risk_bands(rt(client))
    request = body(action="connection_request")
    assert client.post(URL, json=request, headers=key).json()["route_to"] == "requests"
    _store_band(api_store, "a-1", "high", 1)
    bands.expire()  # the next call reloads (normally at most once a second)
    out = client.post(URL, json=request, headers=key).json()
    assert out["route_to"] == "spam"
    assert out["prompts"] == [{"id": "high_risk_request", "audience": "target"}]
    assert len(bands) == 1
    _store_band(api_store, "a-1", "low", 2)
    bands.expire()
    assert client.post(URL, json=request, headers=key).json()["route_to"] == "requests"
    assert len(bands) == 0


def test_bands_are_not_reread_within_the_interval(
    client: TestClient, key: dict[str, str], api_store: Store
) -> None:
    client.post(URL, json=body(), headers=key)
    bands = risk_bands(rt(client))
    bands.interval = 3600.0
    _store_band(api_store, "a-1", "high", 5)
    request = body(action="connection_request")
    # Cached: no read per call, so the new band shows only after the interval.
    assert client.post(URL, json=request, headers=key).json()["route_to"] == "requests"


def test_a_decision_writes_nothing(
    client: TestClient, key: dict[str, str], api_store: Store
) -> None:
    assert client.post(URL, json=body(), headers=key).status_code == 200  # the key's first use
    before = api_store.current_revision()
    with api_store.engine.connect() as conn:
        audits = conn.execute(sa.text("SELECT COUNT(*) FROM audit_log")).scalar_one()
    for _ in range(5):
        assert client.post(URL, json=body(), headers=key).status_code == 200
    assert api_store.current_revision() == before
    with api_store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM audit_log")).scalar_one() == audits


def test_prompt_catalogue(client: TestClient, key: dict[str, str]) -> None:
    r = client.get("/v1/contact/prompts", headers=key)
    assert r.status_code == 200
    doc = r.json()
    assert doc["language"] == "en"
    ids = [p["id"] for p in doc["prompts"]]
    assert set(ids) == set(PROMPT_IDS)
    assert all(p["text"].strip() and p["audience"] in ("actor", "target") for p in doc["prompts"])


def test_openapi_documents_the_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/v1/contact/decide" in paths and "/v1/contact/prompts" in paths
    assert "ContactDecisionOut" in str(paths["/v1/contact/decide"]["post"]["responses"]["200"])


def test_risk_from_ingested_events_reaches_the_decision(
    client: TestClient, key: dict[str, str], api_store: Store
) -> None:
    """End to end with the event store: an adult account days old messages eight stranger
    children in an hour and none answers; once its stored band is high, its request to another
    child goes to spam and its message button towards children is hidden."""
    from datetime import timedelta

    from bastion.contact.model import event_to_json
    from bastion.contact.store import ContactStore
    from tests.contact.helpers import T0, account, at, message

    events = [account("groomer", "adult", created_at=(T0 - timedelta(days=2)).isoformat())]
    for i in range(8):
        events += [account(f"kid{i}", "13-15"), message("groomer", f"kid{i}", at(minutes=5 * i))]
    events.append(account("late", "adult", time=at(hours=8)))  # moves the stream's time on
    contacts = ContactStore(api_store, rt(client).policy.current().contact.risk)
    contacts.ingest([event_to_json(e) for e in events])
    stored = contacts.risk("groomer")
    assert stored is not None and stored.band == "high", stored
    risk_bands(rt(client)).expire()
    request = {
        "actor": {"account": "groomer", "age_band": "adult"},
        "target": {"account": "kid-new", "age_band": "13-15"},
        "action": "connection_request",
    }
    out = client.post(URL, json=request, headers=key).json()
    assert (out["route_to"], out["reasons"]) == ("spam", ["risk.high_actor_request_to_spam"])
    out = client.post(URL, json={**request, "action": "message"}, headers=key).json()
    assert (out["allow"], out["route_to"]) == (False, "spam")
