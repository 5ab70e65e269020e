"""/v1/exchanges over HTTP on SQLite and PostgreSQL with real API keys: the ``exchange`` scope
(admin implies it), list and status without credentials, poisoned records, sync requests that
only mark the exchange due (no sync in the web worker), enable/disable, and 4xx problem details
for unknown exchanges and bad input."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bastion.config import Settings
from bastion.db import Store
from bastion.server import create_app
from tests.api.conftest import bearer
from tests.exchanges.test_cli_exchange import KIND, TOKEN

PROBLEM = "application/problem+json"


@pytest.fixture(autouse=True)
def _private_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The app's key and policy go to a temporary ./bastion-data, never the checkout's."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    settings = Settings(index_poll_seconds=0.2, rate_limit_per_minute=0)
    with TestClient(create_app(settings, store=store)) as c:
        yield c


@pytest.fixture
def xs(client: TestClient):  # type: ignore[no-untyped-def]
    """The engine over the app's own store and master key, as the CLI and worker use it."""
    from bastion.exchanges.store import ExchangeStore

    rt = client.app.state.runtime  # type: ignore[attr-defined]
    xs = ExchangeStore(rt.store, rt.master_key, rt.settings)
    xs.add("edges", KIND, config={"poison": True}, credentials={"token": TOKEN}, labels=["demo"])
    return xs


@pytest.fixture
def key(store: Store) -> dict[str, str]:
    return bearer(store, "ops", "exchange")


def problem(r, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    doc = r.json()
    assert doc["status"] == status and doc["title"]
    return doc


def test_scope_is_required(client: TestClient, store: Store, xs) -> None:  # type: ignore[no-untyped-def]
    problem(client.get("/v1/exchanges"), 401)
    hash_only = bearer(store, "hasher", "hash")
    doc = problem(client.get("/v1/exchanges", headers=hash_only), 403)
    assert "exchange" in doc["detail"]
    problem(client.post("/v1/exchanges/edges/sync", headers=hash_only), 403)
    admin = bearer(store, "root", "admin")
    assert [x["name"] for x in client.get("/v1/exchanges", headers=admin).json()] == ["edges"]


def test_list_and_status_without_credentials(client: TestClient, key, xs) -> None:  # type: ignore[no-untyped-def]
    r = client.get("/v1/exchanges", headers=key)
    assert r.status_code == 200, r.text
    [row] = r.json()
    assert (row["name"], row["kind"], row["bank"]) == ("edges", KIND, "edges")
    assert row["has_credentials"] is True and row["config"]["poison"] is True
    assert TOKEN not in r.text and "credentials" not in {k for k in row if k != "has_credentials"}

    result = xs.sync("edges")
    assert result.error is None and result.poisoned == 1
    r = client.get("/v1/exchanges/edges", headers=key)
    assert r.status_code == 200, r.text
    st = r.json()
    assert TOKEN not in r.text
    assert st["checkpoint"] == {"page": 2} and st["state"] == "idle"
    assert st["totals"]["added"] == 6 and st["totals"]["poisoned"] == 1
    assert len(st["runs"]) == 1 and len(st["errors"]) == 1
    assert "hash is not hex" in str(st["errors"][0])

    r = client.get("/v1/exchanges/edges/errors", headers=key, params={"limit": 5})
    assert r.status_code == 200, r.text
    [err] = r.json()
    assert "hash is not hex" in str(err) and "rec-bad" in str(err)


def test_sync_request_only_marks_the_exchange_due(
    client: TestClient,
    store: Store,
    key,
    xs,  # type: ignore[no-untyped-def]
) -> None:
    before = datetime.now(UTC)
    r = client.post("/v1/exchanges/edges/sync", headers=key)
    assert r.status_code == 202, r.text
    due = datetime.fromisoformat(r.json()["next_sync_at"])
    if due.tzinfo is None:
        due = due.replace(tzinfo=UTC)
    assert due <= datetime.now(UTC) + timedelta(seconds=1)
    assert due >= before - timedelta(seconds=5)
    # No sync ran in the web worker: nothing fetched, nothing stored, no checkpoint.
    assert xs.get("edges").checkpoint is None and xs.runs("edges") == []
    assert list(store.iter_entries(banks=["edges"], enabled_only=False)) == []
    assert any(e.actor == "key:ops" and e.target == "edges" for e in store.iter_audit()), (
        "the request is audited with the key's name"
    )


def test_enable_disable_and_interval(client: TestClient, key, xs) -> None:  # type: ignore[no-untyped-def]
    r = client.patch("/v1/exchanges/edges", headers=key, json={"enabled": False})
    assert r.status_code == 200, r.text
    assert r.json()["enabled"] is False and xs.get("edges").enabled is False
    doc = problem(client.post("/v1/exchanges/edges/sync", headers=key), 409)
    assert "disabled" in doc["detail"]
    r = client.patch(
        "/v1/exchanges/edges", headers=key, json={"enabled": True, "interval_seconds": 120}
    )
    assert r.status_code == 200, r.text
    assert r.json()["enabled"] is True and r.json()["interval_seconds"] == 120
    assert xs.get("edges").interval_seconds == 120


def test_problems_for_unknown_exchanges_and_bad_input(
    client: TestClient,
    key,
    xs,  # type: ignore[no-untyped-def]
) -> None:
    for method, path in [
        ("GET", "/v1/exchanges/ghost"),
        ("GET", "/v1/exchanges/ghost/errors"),
        ("POST", "/v1/exchanges/ghost/sync"),
    ]:
        problem(client.request(method, path, headers=key), 404)
    problem(client.patch("/v1/exchanges/ghost", headers=key, json={"enabled": False}), 404)
    problem(client.get("/v1/exchanges/edges/errors", headers=key, params={"limit": 0}), 422)
    problem(client.patch("/v1/exchanges/edges", headers=key, json={"interval_seconds": 0}), 422)
    doc = problem(
        client.patch("/v1/exchanges/edges", headers=key, json={"credentials": {"token": "x"}}),
        422,
    )
    assert "credentials" in doc["detail"]
    problem(
        client.patch(
            "/v1/exchanges/edges",
            headers={**key, "content-type": "application/json"},
            content=b"{not json",
        ),
        400,
    )
    # nothing was changed by the refused requests
    info = xs.get("edges")
    assert info.enabled is True and info.interval_seconds == 600.0 and info.has_credentials
