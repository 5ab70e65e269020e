"""``/v1/feeds`` with the real app, real store and real API keys (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bastion.config import Settings
from bastion.db import Store
from bastion.feeds import BadSignature, VerifyKey, merkle_root, parse_record
from bastion.feeds.store import FeedStore
from bastion.server import create_app
from tests.feeds.conftest import pdq_entries


@pytest.fixture(autouse=True)
def _private_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    settings = Settings(
        rate_limit_per_minute=0,
        index_poll_seconds=0.2,
        secret_key=base64.b64encode(b"f" * 32).decode(),
        feed_organisation="Org A",
    )
    with TestClient(create_app(settings, store=store)) as c:
        yield c


def _key(store: Store, name: str, *scopes: str, feeds: tuple[str, ...] = ()) -> dict[str, str]:
    """A key's auth header; ``feeds``: the feeds granted to it (a feed key reads no others)."""
    key, token = store.create_api_key(name, set(scopes))
    if feeds:
        FeedStore(store, None).grant(key.name, feeds)
    return {"Authorization": f"Bearer {token}"}


def _publish(client: TestClient, store: Store) -> None:
    from bastion.api.feeds import _feeds

    feeds = _feeds(client.app.state.runtime)  # type: ignore[attr-defined]
    store.create_bank("pub")
    store.create_bank("private")
    store.add_entries("pub", pdq_entries(5, labels=["test"]))
    store.add_entries("private", pdq_entries(2))
    feeds.create("shared", ["pub"], description="demo feed")
    feeds.publish("shared")


def _problem(r, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    return r.json()


def test_auth_scopes_and_problems(client: TestClient, store: Store) -> None:
    _publish(client, store)
    assert _problem(client.get("/v1/feeds"), 401)
    hasher = _key(store, "hasher", "hash")
    assert _problem(client.get("/v1/feeds", headers=hasher), 403)["detail"].endswith("scope")
    sub = _key(store, "sub-1", "feed", feeds=("shared",))
    admin = _key(store, "root", "admin")
    for headers in (sub, admin):
        (feed,) = client.get("/v1/feeds", headers=headers).json()["feeds"]
        assert feed == {
            "name": "shared",
            "description": "demo feed",
            "publisher": "Org A",
            "latest_version": 1,
        }
    assert _problem(client.get("/v1/feeds/nope", headers=sub), 404)
    assert _problem(client.get("/v1/feeds/nope/entries", headers=sub), 404)
    assert _problem(client.get("/v1/feeds/shared/entries?after=x.y", headers=sub), 422)
    assert _problem(client.get("/v1/feeds/shared/entries?limit=0", headers=sub), 422)
    assert _problem(client.get("/v1/feeds/shared/entries?upto=-1", headers=sub), 422)
    assert _problem(client.get("/v1/feeds/shared/versions/7", headers=sub), 404)
    assert _problem(client.get("/v1/feeds/shared/versions/0", headers=sub), 422)
    assert _problem(client.get("/v1/feeds/" + "x" * 65, headers=sub), 422)
    as_json = {**sub, "Content-Type": "application/json"}
    post = client.post("/v1/feeds/shared/disputes", headers=as_json, content=b"{nope")
    assert _problem(post, 400)
    post = client.post("/v1/feeds/shared/disputes", headers=sub, json={"key": "1", "x": 1})
    assert _problem(post, 422)
    # Without a key, a bad body is still a 401.
    no_key = {"Content-Type": "application/json"}
    assert _problem(client.post("/v1/feeds/shared/disputes", headers=no_key, content=b"{x"), 401)


def test_metadata_records_and_tampering(client: TestClient, store: Store) -> None:
    _publish(client, store)
    sub = _key(store, "sub-1", "feed", feeds=("shared",))
    meta = client.get("/v1/feeds/shared", headers=sub).json()
    pinned = VerifyKey.from_text(meta["public_key"])
    assert meta["fingerprint"] == pinned.fingerprint and meta["publisher"] == "Org A"
    latest = meta["latest"]
    pinned.verify_statement(latest["statement"].encode(), latest["signature"])
    assert json.loads(latest["statement"])["root"] == latest["root"]
    assert client.get("/v1/feeds/shared/versions/1", headers=sub).json() == latest
    records, cursor = [], ""
    while True:
        page = client.get(
            "/v1/feeds/shared/entries", headers=sub, params={"after": cursor, "limit": 2}
        ).json()
        records += page["records"]
        assert page["upto"] == latest["revision"] and page["complete"]
        if page["next"] is None:
            break
        cursor = page["next"]
    assert len(records) == 5
    for r in records:
        pinned.verify_record(r["record"].encode(), r["sig"])
        assert parse_record(r["record"]).key == r["key"] and r["disputes"] == 0
    assert merkle_root(r["record"].encode() for r in records) == (latest["root"], 5)
    # What a client does with a record altered in transit: the signature no longer verifies.
    victim = records[0]
    value = json.loads(victim["record"])["value"]
    forged = victim["record"].replace(value, "0" * 64)
    with pytest.raises(BadSignature):
        pinned.verify_record(forged.encode(), victim["sig"])
    with pytest.raises(BadSignature):  # a signature moved onto another record
        pinned.verify_record(records[1]["record"].encode(), victim["sig"])
    # Removals: a disabled entry comes back as a signed remove record once published.
    entry = store.list_entries("pub")[0]
    store.disable_entry("pub", entry.id, "withdrawn")
    from bastion.api.feeds import _feeds

    v2 = _feeds(client.app.state.runtime).publish("shared")  # type: ignore[attr-defined]
    assert v2 is not None
    page = client.get(
        "/v1/feeds/shared/entries", headers=sub, params={"after": str(latest["revision"])}
    ).json()
    (removal,) = page["records"]
    assert removal["op"] == "remove" and removal["key"] == str(entry.id)
    pinned.verify_record(removal["record"].encode(), removal["sig"])


def test_disputes_travel_back_and_are_counted(client: TestClient, store: Store) -> None:
    _publish(client, store)
    sub1 = _key(store, "sub-1", "feed", feeds=("shared",))
    sub2 = _key(store, "sub-2", "feed", feeds=("shared",))
    key = client.get("/v1/feeds/shared/entries", headers=sub1).json()["records"][0]["key"]
    body = {"key": key, "reason": "not_abusive"}
    r = client.post("/v1/feeds/shared/disputes", headers=sub1, json=body)
    assert r.status_code == 202 and r.json() == {"key": key, "created": True, "count": 1}
    again = client.post("/v1/feeds/shared/disputes", headers=sub1, json=body)
    assert again.status_code == 202 and again.json()["created"] is False
    assert client.post("/v1/feeds/shared/disputes", headers=sub2, json=body).json()["count"] == 2
    r = client.post("/v1/feeds/shared/confirmations", headers=sub2, json={"key": key})
    assert r.status_code == 202 and r.json()["count"] == 1
    assert _problem(
        client.post("/v1/feeds/shared/disputes", headers=sub1, json={"key": "99999"}), 404
    )
    # Past a BIGINT: no such record, not a database overflow (was 500 / 503).
    for huge in ("9223372036854775808", "9999999999999999999"):
        r = client.post("/v1/feeds/shared/disputes", headers=sub1, json={"key": huge})
        assert _problem(r, 404)
        r = client.post("/v1/feeds/shared/confirmations", headers=sub1, json={"key": huge})
        assert _problem(r, 404)
    private = store.list_entries("private")[0].id
    assert _problem(
        client.post("/v1/feeds/shared/disputes", headers=sub1, json={"key": str(private)}), 404
    )
    bad = {"key": key, "reason": "Looks fine to me"}
    assert _problem(client.post("/v1/feeds/shared/disputes", headers=sub1, json=bad), 422)
    assert _problem(client.post("/v1/feeds/nope/disputes", headers=sub1, json=body), 404)
    # Every subscriber sees the count beside the record, and in the changes since a cursor.
    records = client.get("/v1/feeds/shared/entries", headers=sub2).json()["records"]
    counted = next(r for r in records if r["key"] == key)
    assert (counted["disputes"], counted["confirmations"]) == (2, 1)
    upto = client.get("/v1/feeds/shared", headers=sub2).json()["latest"]["revision"]
    page = client.get("/v1/feeds/shared/disputes", headers=sub2, params={"upto": upto}).json()
    (item,) = page["items"]
    assert item["key"] == key and item["disputes"] == 2 and item["record"]["key"] == key
    after = client.get("/v1/feeds/shared/disputes", headers=sub2, params={"after": page["next"]})
    assert after.json() == {"items": [], "next": page["next"]}
    assert _problem(client.get("/v1/feeds/shared/disputes?after=-1", headers=sub2), 422)
    disputes = [e for e in store.iter_audit() if e.action == "feed.dispute"]
    assert [e.actor for e in disputes] == ["key:sub-1", "key:sub-2"]
