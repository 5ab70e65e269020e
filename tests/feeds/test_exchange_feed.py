"""The subscriber side (exchange kind ``bastion``) against real publishing Bastions served on
loopback, through the real exchange engine; SQLite and PostgreSQL. Hash values are synthetic."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest
from sqlalchemy import text

from bastion.banks.model import NewEntry
from bastion.db import Store
from bastion.exchanges.base import Verdict
from bastion.exchanges.bastion_feed import BastionFeedExchange
from bastion.feeds import SigningKey
from bastion.signals.base import SignalType
from bastion.store import InvalidInput
from tests.feeds.conftest import exchanges as _exchanges
from tests.feeds.conftest import pdq_entries
from tests.feeds.conftest import subscribe as _subscribe
from tests.feeds.loopback import Publisher, TamperProxy

Opener = Callable[[str], AbstractContextManager[Store]]


def test_subscriber_applies_verified_records_and_attests(publisher: Publisher, sub: Store) -> None:
    pdq = secrets.token_hex(32)
    publisher.store.add_entries(
        "pub",
        [
            NewEntry(SignalType.PDQ, pdq, labels=["test"], list_name="demo-list", source="Org Z"),
            NewEntry(SignalType.MD5, secrets.token_hex(16)),
            NewEntry(SignalType.URL, "https://example.com/demo/page", url_match="url"),
            *pdq_entries(4),
        ],
    )
    v1 = publisher.feeds.publish("shared")
    assert v1 is not None
    xs = _exchanges(sub)
    _subscribe(xs, publisher)
    result = xs.sync("from-a")
    assert result.error is None and result.added == 7 and result.pages >= 3
    held = {e.value: e for e in sub.list_entries("from-a")}
    first = held[pdq]
    assert first.labels == ["test"] and first.list_name == "demo-list" and first.source == "Org Z"
    assert first.external_id == str(publisher.store.find_entries("pub", value=pdq)[0].id)
    assert json.loads(first.metadata["feed"]["record"])["value"] == pdq
    assert first.metadata["disputes"] == 0
    others = [e for e in held.values() if e.value != pdq and e.signal_type is SignalType.PDQ]
    assert all(e.source == "Org A" and e.list_name == "pub" for e in others)
    (att,) = xs.attestations("from-a")
    assert att.agrees and att.version == 1 and att.root == att.computed == v1.root
    assert att.count == 7
    # Nothing new: nothing changes, no second attestation.
    again = xs.sync("from-a")
    assert again.error is None and again.added == again.updated == again.disabled == 0
    assert len(xs.attestations("from-a")) == 1
    # Withdrawals and additions of the next version.
    entries = publisher.store.list_entries("pub")
    publisher.store.disable_entry("pub", entries[0].id, "withdrawn")
    publisher.store.remove_entry("pub", entries[1].id)
    publisher.store.add_entries("pub", pdq_entries(1))
    v2 = publisher.feeds.publish("shared")
    assert v2 is not None and v2.count == 6
    result = xs.sync("from-a")
    # Withdrawn records are deleted here (the kind's on_delete is remove).
    assert result.error is None and (result.added, result.removed) == (1, 2)
    assert sub.find_entries("from-a", external_id=str(entries[1].id)) == []
    assert sub.find_entries("from-a", external_id=str(entries[0].id)) == []
    latest = xs.attestations("from-a")[0]
    assert latest.version == 2 and latest.agrees and latest.computed == v2.root


def test_disputes_go_to_the_publisher_and_counts_come_back(
    publisher: Publisher, sub: Store
) -> None:
    publisher.store.add_entries("pub", pdq_entries(3))
    publisher.feeds.publish("shared")
    xs = _exchanges(sub)
    _subscribe(xs, publisher)
    assert xs.sync("from-a").error is None
    one, two, _ = sub.list_entries("from-a")
    with sub.engine.begin() as conn:
        queued = xs.queue_feedback_in(
            conn, [("from-a", one.id)], Verdict.NEGATIVE, case_id=7, reason="not_abusive"
        )
        queued += xs.queue_feedback_in(
            conn, [("from-a", two.id)], Verdict.POSITIVE, case_id=8, reason="confirmed:A1"
        )
    assert queued == 2
    assert xs.send_due_feedback("test")["sent"] == 2
    rows = {r.kind: r for r in publisher.feeds.feedback_rows("shared")}
    assert rows["dispute"].key == one.external_id and rows["dispute"].reason == "not_abusive"
    assert rows["confirm"].key == two.external_id and rows["confirm"].reason == "confirmed:a1"
    assert rows["dispute"].subscriber.startswith("sub-")
    # The counts reach every subscriber with the next sync, without a new version.
    result = xs.sync("from-a")
    assert result.error is None and result.updated == 2
    (one_now,) = sub.find_entries("from-a", external_id=one.external_id)
    (two_now,) = sub.find_entries("from-a", external_id=two.external_id)
    assert one_now.metadata["disputes"] == 1 and two_now.metadata["confirmations"] == 1
    assert one_now.enabled  # a count is information, not a removal


def test_a_record_altered_in_transit_is_poisoned_and_the_root_disagrees(
    publisher: Publisher, sub: Store
) -> None:
    publisher.store.add_entries("pub", pdq_entries(5))
    v1 = publisher.feeds.publish("shared")
    assert v1 is not None
    proxy = TamperProxy(publisher.url)
    forged_value = "0" * 64
    victim: dict[str, str] = {}

    def tamper(path: str, doc: Any) -> Any:
        if "/entries" in path and doc.get("records") and not victim:
            rec = doc["records"][0]
            value = json.loads(rec["record"])["value"]
            victim["key"] = rec["key"]
            rec["record"] = rec["record"].replace(value, forged_value)  # the signature stays
        return doc

    proxy.tamper = tamper
    try:
        xs = _exchanges(sub)
        _subscribe(xs, publisher, url=proxy.url)
        result = xs.sync("from-a")
    finally:
        proxy.stop()
    assert result.error is None and result.poisoned == 1 and result.added == 4
    assert sub.find_entries("from-a", value=forged_value) == []
    assert sub.find_entries("from-a", external_id=victim["key"]) == []
    (err,) = xs.errors("from-a")
    assert err.key == victim["key"] and "does not verify" in err.error
    (att,) = xs.attestations("from-a")
    assert not att.agrees and att.root == v1.root and att.computed != v1.root
    assert "exchange.attestation.mismatch" in [e.action for e in sub.iter_audit()]


def test_a_forged_version_statement_stops_the_sync(publisher: Publisher, sub: Store) -> None:
    publisher.store.add_entries("pub", pdq_entries(2))
    publisher.feeds.publish("shared")
    proxy = TamperProxy(publisher.url)

    def tamper(path: str, doc: Any) -> Any:
        if path.rstrip("/").endswith("/feeds/shared") and doc.get("latest"):
            doc["latest"]["statement"] = doc["latest"]["statement"].replace(
                '"count":2', '"count":1'
            )
        return doc

    proxy.tamper = tamper
    try:
        xs = _exchanges(sub)
        _subscribe(xs, publisher, url=proxy.url)
        result = xs.sync("from-a")
    finally:
        proxy.stop()
    assert result.error and "pinned publisher key" in result.error
    assert sub.list_entries("from-a") == [] and xs.get("from-a").state == "error"


def test_wrong_pinned_key_and_bad_config(publisher: Publisher, sub: Store) -> None:
    publisher.store.add_entries("pub", pdq_entries(2))
    publisher.feeds.publish("shared")
    xs = _exchanges(sub)
    other = SigningKey.generate().public.text
    xs.add(
        "wrong-key",
        "bastion",
        config=publisher.config(publisher_key=other),
        credentials={"api_key": publisher.token},
    )
    result = xs.sync("wrong-key")
    assert result.error and "pinned publisher key" in result.error
    assert sub.list_entries("wrong-key") == []
    with pytest.raises(InvalidInput, match="publisher_key"):
        xs.add("bad", "bastion", config={**publisher.config(), "publisher_key": "x" * 44})
    with pytest.raises(InvalidInput, match="url"):
        xs.add("bad", "bastion", config={**publisher.config(), "url": "ftp://example.org"})
    xs.add(
        "bad-token",
        "bastion",
        config=publisher.config(),
        credentials={"api_key": "bst_" + "x" * 40},
    )
    result = xs.sync("bad-token")
    assert result.error and "refused our API key" in result.error


def test_a_secret_edit_at_the_publisher_shows_as_a_root_mismatch(
    publisher: Publisher, sub: Store
) -> None:
    publisher.store.add_entries("pub", pdq_entries(3))
    publisher.feeds.publish("shared")
    xs = _exchanges(sub)
    _subscribe(xs, publisher)
    assert xs.sync("from-a").error is None
    assert xs.attestations("from-a")[0].agrees
    # Someone with database access edits an entry without it showing as a change, and a new
    # version is signed over the edited list: subscribers never got that record.
    victim = publisher.store.list_entries("pub")[0]
    with publisher.store.engine.begin() as conn:
        conn.execute(
            text("UPDATE bank_entries SET list_name = 'secret' WHERE id = :i"), {"i": victim.id}
        )
    v2 = publisher.feeds.publish("shared", force=True)
    assert v2 is not None
    assert xs.sync("from-a").error is None
    latest = xs.attestations("from-a")[0]
    assert latest.version == 2 and not latest.agrees and latest.computed != v2.root


def test_vouching_needs_two_publishers(stores: Callable[[str], Store]) -> None:
    a, b = Publisher(stores("pub-a"), "Org A"), Publisher(stores("pub-b"), "Org B")
    try:
        both, only_a = secrets.token_hex(32), secrets.token_hex(32)
        a.store.add_entries("pub", [NewEntry(SignalType.PDQ, v) for v in (both, only_a)])
        b.store.add_entries("pub", [NewEntry(SignalType.PDQ, both)])
        a.feeds.publish("shared")
        b.feeds.publish("shared")
        sub = stores("sub")
        xs = _exchanges(sub)
        _subscribe(xs, a, "from-a", vouch_group="g", min_vouchers=2)
        _subscribe(xs, b, "from-b", vouch_group="g", min_vouchers=2)
        assert xs.sync("from-a").error is None
        (held,) = sub.find_entries("from-a", value=both)
        assert not held.enabled and "awaiting vouchers (1 of 2)" in held.disabled_reason
        assert xs.sync("from-b").error is None
        enabled = {e.value for e in sub.iter_entries(banks=["from-a", "from-b"])}
        assert enabled == {both}
        (lonely,) = sub.find_entries("from-a", value=only_a)
        assert not lonely.enabled and "awaiting vouchers" in lonely.disabled_reason
        # Held-back entries still count towards the root: the copy is complete.
        assert all(att.agrees for name in ("from-a", "from-b") for att in xs.attestations(name))
    finally:
        a.stop()
        b.stop()


def test_registered_kind() -> None:
    from bastion.exchanges import exchange_type

    assert exchange_type("bastion") is BastionFeedExchange


def test_a_feed_rolled_back_to_an_older_version_stops_the_sync(
    publisher: Publisher, sub: Store
) -> None:
    publisher.store.add_entries("pub", pdq_entries(2))
    publisher.feeds.publish("shared")
    publisher.feeds.publish("shared", force=True)
    xs = _exchanges(sub)
    _subscribe(xs, publisher)
    assert xs.sync("from-a").error is None
    # The feed is replaced by one that starts again at version 1: not silently accepted.
    publisher.feeds.remove("shared")
    publisher.feeds.create("shared", ["pub"], organisation="Org A")
    publisher.feeds.grant(publisher.key_name, ["shared"])  # the removal took the grant along
    publisher.feeds.publish("shared")
    result = xs.sync("from-a")
    assert result.error and "older than version 2" in result.error
    assert all(e.enabled for e in sub.list_entries("from-a"))  # what we hold stays
