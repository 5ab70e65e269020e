"""Per-key feed grants (issue 12, finding 7): a feed key reads, and sends feedback on, only the
feeds granted to it. Real app, real store, real API keys; SQLite and PostgreSQL."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bastion.config import Settings
from bastion.db import Store
from bastion.feeds.store import FeedNotFound, FeedStore
from bastion.server import create_app
from bastion.store import InvalidInput, KeyNotFound
from tests.feeds.conftest import exchanges, pdq_entries, subscribe
from tests.feeds.loopback import Publisher


@pytest.fixture(autouse=True)
def _private_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    settings = Settings(
        rate_limit_per_minute=0,
        index_poll_seconds=0.2,
        secret_key=base64.b64encode(b"g" * 32).decode(),
        feed_organisation="Org A",
    )
    with TestClient(create_app(settings, store=store)) as c:
        yield c


def _feeds(client: TestClient) -> FeedStore:
    return client.app.state.runtime.feeds  # type: ignore[attr-defined,no-any-return]


def _two_feeds(client: TestClient, store: Store) -> FeedStore:
    """Feeds ``for-x`` and ``for-y`` of two banks, one signed version each."""
    feeds = _feeds(client)
    for bank, feed in (("bank-x", "for-x"), ("bank-y", "for-y")):
        store.create_bank(bank)
        store.add_entries(bank, pdq_entries(3))
        feeds.create(feed, [bank])
        assert feeds.publish(feed) is not None
    return feeds


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _not_found(r: Any, name: str) -> None:
    """The answer for a feed that does not exist, word for word."""
    assert r.status_code == 404, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert (body["title"], body["detail"]) == ("Not found", f"no feed named {name!r}")


def _audit(store: Store, action: str) -> list[Any]:
    return [e for e in store.iter_audit() if e.action == action]


def test_a_key_granted_one_feed_cannot_read_or_dispute_another(
    client: TestClient, store: Store
) -> None:
    feeds = _two_feeds(client, store)
    key, token = store.create_api_key("partner-x", {"feed"})
    assert feeds.grant(key.name, ["for-x"], actor="cli:ops") == ["for-x"]
    x = _auth(token)
    y_key = str(store.list_entries("bank-y")[0].id)
    y_version = feeds.latest_version("for-y")
    assert y_version is not None

    # What the key may do: its own feed, records and feedback included.
    assert [f["name"] for f in client.get("/v1/feeds", headers=x).json()["feeds"]] == ["for-x"]
    assert len(client.get("/v1/feeds/for-x/entries", headers=x).json()["records"]) == 3
    x_key = str(store.list_entries("bank-x")[0].id)
    r = client.post("/v1/feeds/for-x/disputes", headers=x, json={"key": x_key})
    assert r.status_code == 202 and r.json()["created"] is True

    # The attack: the other feed's metadata, records, versions and dispute counts...
    for path in (
        "/v1/feeds/for-y",
        "/v1/feeds/for-y/entries",
        f"/v1/feeds/for-y/entries?upto={y_version.revision}",
        f"/v1/feeds/for-y/versions/{y_version.version}",
        f"/v1/feeds/for-y/disputes?upto={y_version.revision}",
    ):
        _not_found(client.get(path, headers=x), "for-y")
    # ... and disputes and confirmations of one of its real records.
    for kind in ("disputes", "confirmations"):
        r = client.post(f"/v1/feeds/for-y/{kind}", headers=x, json={"key": y_key})
        _not_found(r, "for-y")
    # Refused exactly as a feed that does not exist: the key learns nothing about for-y.
    _not_found(client.get("/v1/feeds/for-z/entries", headers=x), "for-z")

    # Nothing was recorded on for-y.
    assert feeds.feedback_rows("for-y") == []
    assert [e.target for e in _audit(store, "feed.dispute")] == [f"for-x/{x_key}"]
    assert _audit(store, "feed.confirm") == []
    # The publisher's own admin key still reads every feed.
    _, admin = store.create_api_key("root", {"admin"})
    listed = client.get("/v1/feeds", headers=_auth(admin)).json()["feeds"]
    assert [f["name"] for f in listed] == ["for-x", "for-y"]
    assert len(client.get("/v1/feeds/for-y/entries", headers=_auth(admin)).json()["records"]) == 3


def test_grants_and_revocations_take_effect_at_once_and_are_audited(
    client: TestClient, store: Store
) -> None:
    feeds = _two_feeds(client, store)
    _, token = store.create_api_key("partner", {"feed"})
    headers = _auth(token)
    # A feed key without grants (as every feed key is right after the upgrade) reads nothing.
    assert client.get("/v1/feeds", headers=headers).json() == {"feeds": []}
    _not_found(client.get("/v1/feeds/for-x/entries", headers=headers), "for-x")
    assert feeds.ungranted_keys() == ["partner"]

    assert feeds.grant("Partner", ["for-x", "FOR-Y"], actor="cli:ops", remote_addr="10.0.0.9") == [
        "for-x",
        "for-y",
    ]
    assert feeds.grant("partner", ["for-x"], actor="cli:ops") == []  # held already: no change
    assert feeds.ungranted_keys() == []
    assert client.get("/v1/feeds/for-y/entries", headers=headers).status_code == 200
    granted = _audit(store, "feed.grant")
    assert [(e.actor, e.target, e.detail["key"]) for e in granted] == [
        ("cli:ops", "for-x", "partner"),
        ("cli:ops", "for-y", "partner"),
    ]
    assert granted[0].remote_addr == "10.0.0.9"
    assert [(g.feed, g.key, g.granted_by) for g in feeds.grants(key="partner")] == [
        ("for-x", "partner", "cli:ops"),
        ("for-y", "partner", "cli:ops"),
    ]

    assert feeds.revoke_grant("partner", ["for-y", "for-y"], actor="console:ada") == ["for-y"]
    assert feeds.revoke_grant("partner", ["for-y"], actor="console:ada") == []
    _not_found(client.get("/v1/feeds/for-y/entries", headers=headers), "for-y")  # no cache
    assert client.get("/v1/feeds/for-x/entries", headers=headers).status_code == 200
    revoked = _audit(store, "feed.grant.revoke")
    assert [(e.actor, e.target, e.detail["key"]) for e in revoked] == [
        ("console:ada", "for-y", "partner")
    ]
    assert [g.feed for g in feeds.grants(feed="for-x")] == ["for-x"]
    assert feeds.grants(feed="for-y") == []


def test_grants_are_refused_where_they_make_no_sense(client: TestClient, store: Store) -> None:
    feeds = _two_feeds(client, store)
    store.create_api_key("matcher", {"match"})
    store.create_api_key("root", {"admin"})
    store.create_api_key("partner", {"feed"})
    with pytest.raises(InvalidInput, match="lacks the 'feed' scope"):
        feeds.grant("matcher", ["for-x"])
    with pytest.raises(InvalidInput, match="admin key reads every feed"):
        feeds.grant("root", ["for-x"])
    with pytest.raises(FeedNotFound, match="no feed named 'nope'"):
        feeds.grant("partner", ["for-x", "nope"])
    with pytest.raises(KeyNotFound):
        feeds.grant("nobody", ["for-x"])
    with pytest.raises(KeyNotFound):
        feeds.grant("bad name!", ["for-x"])
    with pytest.raises(InvalidInput, match="at least one feed"):
        feeds.grant("partner", [])
    assert feeds.grants() == []  # the refused call with one good feed granted nothing
    store.revoke_api_key("partner")
    with pytest.raises(InvalidInput, match="revoked"):
        feeds.grant("partner", ["for-x"])
    assert _audit(store, "feed.grant") == []


def test_a_removed_feed_takes_its_grants_along(client: TestClient, store: Store) -> None:
    feeds = _two_feeds(client, store)
    _, token = store.create_api_key("partner", {"feed"})
    feeds.grant("partner", ["for-x", "for-y"])
    feeds.remove("for-y")
    assert [g.feed for g in feeds.grants(key="partner")] == ["for-x"]
    # A new feed of the same name is not shared with whoever read the old one.
    feeds.create("for-y", ["bank-y"])
    feeds.publish("for-y")
    _not_found(client.get("/v1/feeds/for-y/entries", headers=_auth(token)), "for-y")


def test_a_subscription_with_a_key_for_another_feed_gets_nothing(
    publisher: Publisher, sub: Store
) -> None:
    """Over HTTP, through the subscriber's exchange engine: the key the publisher issued for its
    feed ``other`` syncs nothing of ``shared`` until it is granted ``shared`` too."""
    publisher.store.add_entries("pub", pdq_entries(4))
    publisher.feeds.publish("shared")
    publisher.store.create_bank("other-bank")
    publisher.feeds.create("other", ["other-bank"], organisation="Org A")
    key, token = publisher.store.create_api_key("partner-other", {"feed"})
    publisher.feeds.grant(key.name, ["other"])
    xs = exchanges(sub)
    config = publisher.config()
    xs.add("from-a", "bastion", config=config, credentials={"api_key": token})
    result = xs.sync("from-a")
    assert result.error and "granted the feed to our key" in result.error
    assert sub.list_entries("from-a") == []
    publisher.feeds.grant(key.name, ["shared"])
    xs.update("from-a", enabled=True)  # clears the error: due now
    assert xs.sync("from-a").error is None
    assert len(sub.list_entries("from-a")) == 4
    # The fixture's own key (granted "shared") is unaffected throughout.
    subscribe(xs, publisher, name="from-a-2")
    assert xs.sync("from-a-2").error is None
