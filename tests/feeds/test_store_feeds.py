"""The publisher's store: signing key, feeds, versions with Merkle roots, records, feedback.
SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json

import pytest
from sqlalchemy import text

from bastion.crypto import MasterKey
from bastion.db import Store
from bastion.feeds import BadSignature, merkle_root, parse_record, parse_statement
from bastion.feeds.store import (
    FeedExists,
    FeedKeyUnavailable,
    FeedNotFound,
    FeedStore,
    RecordNotFound,
    format_cursor,
    parse_cursor,
)
from bastion.store import InvalidInput
from tests.feeds.conftest import pdq_entries


def _setup(store: Store, feeds: FeedStore, n: int = 5) -> None:
    store.create_bank("pub-a", source="Org A")
    store.create_bank("pub-b")
    store.create_bank("private")
    store.add_entries("pub-a", pdq_entries(n, list_name="list-1", labels=["test"]))
    store.add_entries("pub-b", pdq_entries(2))
    store.add_entries("private", pdq_entries(3))
    feeds.create("shared", ["pub-a", "pub-b"], organisation="Org A", description="test feed")


def _all_records(feeds: FeedStore, name: str, upto: int | None = None, limit: int = 2) -> list:
    out, cursor = [], 0
    while True:
        page = feeds.records(name, after=cursor, upto=upto, limit=limit)
        out += page.records
        if page.next is None:
            return out
        cursor = page.next


def _replay(records: list) -> dict[str, str]:
    """What a subscriber holds after applying records in order: key -> add record text."""
    held: dict[str, str] = {}
    for r in records:
        if r.op == "add":
            held[r.key] = r.record
        else:
            held.pop(r.key, None)
    return held


def test_signing_key_is_made_once_and_sealed(store: Store, master: MasterKey) -> None:
    first = FeedStore(store, master).public_key()
    assert FeedStore(store, master).public_key() == first  # the same key, from the database
    with store.engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM feed_signing_keys")).one()
    assert row.public_key == first.text and row.fingerprint == first.fingerprint
    assert FeedStore(store, master).signing_key().raw() not in bytes(row.sealed_private)
    with pytest.raises(FeedKeyUnavailable):
        FeedStore(store, None).public_key()
    with pytest.raises(FeedKeyUnavailable, match="does not open"):
        FeedStore(store, MasterKey.generate()).public_key()
    assert [e.action for e in store.iter_audit()].count("feed.key.create") == 1


def test_create_validates_and_audits(store: Store, feeds: FeedStore) -> None:
    store.create_bank("b1")
    with pytest.raises(InvalidInput, match="no bank named 'nope'"):
        feeds.create("f", ["b1", "nope"], organisation="Org")
    with pytest.raises(InvalidInput, match="organisation"):
        feeds.create("f", ["b1"])
    with pytest.raises(InvalidInput, match="at least one bank"):
        feeds.create("f", [], organisation="Org")
    with pytest.raises(InvalidInput, match="invalid feed name"):
        feeds.create("bad name!", ["b1"], organisation="Org")
    feed = feeds.create("F", ["B1", "b1"], organisation="Org")
    assert feed.name == "f" and feed.banks == ["b1"]
    with pytest.raises(FeedExists):
        feeds.create("f", ["b1"], organisation="Org")
    assert [f.name for f in feeds.list()] == ["f"]
    feeds.remove("f")
    with pytest.raises(FeedNotFound):
        feeds.get("f")
    actions = [e.action for e in store.iter_audit()]
    assert "feed.create" in actions and "feed.remove" in actions


def test_versions_sign_the_merkle_root_of_the_published_entries(
    store: Store, feeds: FeedStore
) -> None:
    _setup(store, feeds)
    v1 = feeds.publish("shared")
    assert v1 is not None and v1.version == 1 and v1.count == 7
    statement = parse_statement(v1.statement)
    assert (statement.root, statement.count, statement.revision) == (v1.root, 7, v1.revision)
    feeds.public_key().verify_statement(v1.statement.encode(), v1.signature)
    with pytest.raises(BadSignature):
        feeds.public_key().verify_statement(v1.statement.replace("7", "8").encode(), v1.signature)
    # What a subscriber replays up to the version's revision has exactly that root.
    held = _replay(_all_records(feeds, "shared", upto=v1.revision))
    assert len(held) == 7
    assert merkle_root(r.encode() for r in held.values()) == (v1.root, 7)
    assert feeds.publish("shared") is None  # nothing changed
    store.add_entries("private", pdq_entries(1))  # not a published bank
    assert feeds.publish("shared") is None
    victim = store.list_entries("pub-a")[0]
    store.disable_entry("pub-a", victim.id, "wrong")
    v2 = feeds.publish("shared")
    assert v2 is not None and v2.version == 2 and v2.count == 6 and v2.root != v1.root
    forced = feeds.publish("shared", force=True)
    assert forced is not None and forced.version == 3 and forced.root == v2.root
    assert [v.version for v in feeds.versions("shared")] == [3, 2, 1]
    assert feeds.version("shared", 1) == v1
    with pytest.raises(FeedNotFound):
        feeds.version("shared", 9)
    assert feeds.latest_version("shared") == forced
    made = feeds.publish_due()
    assert made == []


def test_records_page_and_serve_removals(store: Store, feeds: FeedStore) -> None:
    _setup(store, feeds)
    with pytest.raises(FeedNotFound, match="no version"):
        feeds.records("shared")
    v1 = feeds.publish("shared")
    assert v1 is not None
    page = feeds.records("shared", limit=3)
    assert len(page.records) == 3 and page.next is not None and page.complete
    everything = _all_records(feeds, "shared")
    assert {r.op for r in everything} == {"add"} and len(everything) == 7
    pub = feeds.public_key()
    for r in everything:
        pub.verify_record(r.record.encode(), r.sig)
        rec = parse_record(r.record)
        assert rec.feed == "shared" and rec.publisher == "Org A" and rec.key == r.key
    a_rec = json.loads(next(r.record for r in everything if '"list":"list-1"' in r.record))
    assert a_rec["source"] == "Org A" and a_rec["labels"] == ["test"]
    b_rec = json.loads(next(r.record for r in everything if '"list":"pub-b"' in r.record))
    assert b_rec["source"] == "Org A"  # no source on the entry: the publisher's name
    # Changes after the version: not served up to it, and the page says it is not complete.
    entries = store.list_entries("pub-a")
    store.disable_entry("pub-a", entries[0].id, "wrong")
    store.remove_entry("pub-a", entries[1].id)
    store.add_entries("pub-b", pdq_entries(1))
    stale = feeds.records("shared", after=v1.revision, upto=v1.revision)
    assert stale.records == [] and stale.next is None and not stale.complete
    v2 = feeds.publish("shared")
    assert v2 is not None
    news = _all_records(feeds, "shared", upto=v2.revision)
    held = _replay(news)
    assert len(held) == 6 and str(entries[0].id) not in held and str(entries[1].id) not in held
    assert merkle_root(r.encode() for r in held.values()) == (v2.root, 6)
    delta = _all_records(feeds, "shared")  # default upto: the latest version
    delta = [r for r in delta if r.revision > v1.revision]
    removals = {r.key: parse_record(r.record) for r in delta if r.op == "remove"}
    assert set(removals) == {str(entries[0].id), str(entries[1].id)}
    assert all(rec.revision > v1.revision for rec in removals.values())
    # A disabled bank's entries are withdrawn as a whole.
    store.set_bank_enabled("pub-b", False)
    v3 = feeds.publish("shared")
    assert v3 is not None and v3.count == 3
    with pytest.raises(InvalidInput):
        feeds.records("shared", limit=0)


def test_cursor_text() -> None:
    assert parse_cursor(None) == 0 and parse_cursor("12") == 12
    assert parse_cursor(format_cursor((5, 7))) == (5, 7)
    for bad in ("x", "1.x", "-1", str(2**63), "1.2.3"):
        with pytest.raises(InvalidInput):
            parse_cursor(bad)


def test_feedback_is_idempotent_per_subscriber_and_counted(store: Store, feeds: FeedStore) -> None:
    _setup(store, feeds)
    v1 = feeds.publish("shared")
    assert v1 is not None
    key = _all_records(feeds, "shared")[0].key
    assert feeds.add_feedback("shared", key, subscriber="sub-1", reason="not_abusive") == (True, 1)
    assert feeds.add_feedback("shared", key, subscriber="sub-1", reason="other") == (False, 1)
    assert feeds.add_feedback("shared", key, subscriber="sub-2") == (True, 2)
    assert feeds.add_feedback("shared", key, subscriber="sub-2", kind="confirm") == (True, 1)
    private = store.list_entries("private")[0].id
    for bad_key in ("999999", "abc", str(private), "0"):
        with pytest.raises(RecordNotFound):
            feeds.add_feedback("shared", bad_key, subscriber="sub-1")
    with pytest.raises(InvalidInput, match="short code"):
        feeds.add_feedback("shared", key, subscriber="sub-1", reason="Free text, with a name")
    with pytest.raises(FeedNotFound):
        feeds.add_feedback("nope", key, subscriber="sub-1")
    served = next(r for r in _all_records(feeds, "shared") if r.key == key)
    assert (served.disputes, served.confirmations) == (2, 1)
    changed, nxt = feeds.feedback_since("shared", after=0, upto=v1.revision)
    (item,) = changed
    assert (item.key, item.disputes, item.confirmations) == (key, 2, 1)
    assert item.record is not None and item.record.record == served.record
    feeds.public_key().verify_record(item.record.record.encode(), item.record.sig)
    assert feeds.feedback_since("shared", after=nxt) == ([], nxt)
    # An entry changed after ``upto`` comes without its record (the subscriber gets it later
    # from the entries, with the count then).
    store.disable_entry("pub-a", int(key), "withdrawn")
    feeds.add_feedback("shared", key, subscriber="sub-3")
    (later,), _ = feeds.feedback_since("shared", after=nxt, upto=v1.revision)
    assert later.disputes == 3 and later.record is None
    rows = feeds.feedback_rows("shared")
    assert [r.subscriber for r in rows][:1] == ["sub-3"] and len(rows) == 4
    assert [e.action for e in store.iter_audit()].count("feed.dispute") == 3


def test_the_worker_duty_signs_versions_only_when_banks_change(
    store: Store, master: MasterKey
) -> None:
    from bastion.config import Settings
    from bastion.feeds.versioner import FeedVersioner

    assert FeedVersioner.from_settings(store, Settings(), "w") is None  # no key file setting
    settings = Settings(secret_key=base64.b64encode(b"k" * 32).decode())
    duty = FeedVersioner.from_settings(store, settings, "w")
    assert duty is not None
    assert duty.run_once() == []  # no feeds: nothing, and no key made either
    store.create_bank("pub")
    store.add_entries("pub", pdq_entries(2))
    duty.feeds.create("shared", ["pub"], organisation="Org A")
    (v1,) = duty.run_once()
    assert v1.version == 1 and v1.count == 2
    assert duty.run_once() == []
    store.add_entries("pub", pdq_entries(1))
    (v2,) = duty.run_once()
    assert v2.version == 2 and v2.count == 3 and duty.made == 2
    assert [e.actor for e in store.iter_audit() if e.action == "feed.version"] == ["system:w"] * 2
