"""Subscriber and publisher hardening found in review: withdrawals that cannot be suppressed,
attestations for every version, equivocation, cursors that do not advance, shared values
across banks, hostile JSON, and the https rule. Real publishers on loopback (and hostile ones
in front of them); SQLite and PostgreSQL. Hash values are synthetic."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import text

from bastion.banks.model import NewEntry
from bastion.db import Store
from bastion.exchanges.bastion_feed import (
    INCOMPLETE,
    UNVERIFIED,
    BastionFeedConfig,
    BastionFeedExchange,
)
from bastion.exchanges.store import ExchangeStore
from bastion.feeds import SigningKey
from bastion.signals.base import SignalType
from bastion.store import InvalidInput
from tests.feeds.conftest import exchanges, pdq_entries, subscribe
from tests.feeds.loopback import Publisher, TamperProxy


@pytest.fixture
def proxy(publisher: Publisher) -> Iterator[TamperProxy]:
    p = TamperProxy(publisher.url)
    yield p
    p.stop()


def _query(path: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(path).query, keep_blank_values=True).items()}


def _served(records: list[Any]) -> list[dict[str, Any]]:
    return [
        {"key": r.key, "op": r.op, "record": r.record, "sig": r.sig, "disputes": 0} for r in records
    ]


# -- F1: a locally disabled record that the publisher withdraws ---------------------------------


def test_a_locally_disabled_record_withdrawn_upstream_is_removed_and_roots_agree(
    publisher: Publisher, sub: Store
) -> None:
    value = secrets.token_hex(32)
    publisher.store.add_entries("pub", [NewEntry(SignalType.PDQ, value), *pdq_entries(1)])
    publisher.feeds.publish("shared")
    xs = exchanges(sub)
    subscribe(xs, publisher)
    assert xs.sync("from-a").error is None
    (held,) = sub.find_entries("from-a", value=value)
    sub.disable_entry("from-a", held.id, "not abusive (case 7)")  # a reviewer's decision
    (theirs,) = publisher.store.find_entries("pub", value=value)
    publisher.store.remove_entry("pub", theirs.id)
    v2 = publisher.feeds.publish("shared")
    assert v2 is not None and v2.count == 1
    result = xs.sync("from-a")
    assert result.error is None and result.removed == 1
    assert sub.find_entries("from-a", value=value) == []
    latest = xs.attestations("from-a")[0]
    assert latest.version == 2 and latest.agrees and latest.computed == v2.root


# -- F2: suppressed withdrawals, unverified versions, revisions, https -------------------------


def test_a_replayed_add_record_is_rejected_and_the_unverified_version_is_recorded(
    publisher: Publisher, sub: Store, proxy: TamperProxy
) -> None:
    value = secrets.token_hex(32)
    publisher.store.add_entries("pub", [NewEntry(SignalType.PDQ, value), *pdq_entries(2)])
    publisher.feeds.publish("shared")
    captured: dict[str, Any] = {}

    def capture(path: str, doc: Any) -> Any:
        if "/entries" in path:
            captured.update({r["key"]: r for r in doc["records"]})
        return doc

    proxy.tamper = capture
    xs = exchanges(sub)
    subscribe(xs, publisher, url=proxy.url)
    assert xs.sync("from-a").error is None
    (theirs,) = publisher.store.find_entries("pub", value=value)
    publisher.store.disable_entry("pub", theirs.id, "withdrawn: false positive")
    v2 = publisher.feeds.publish("shared")
    assert v2 is not None

    def replay(path: str, doc: Any) -> Any:
        # The man in the middle puts the old add record where the removal was, and hides
        # that the stream is complete, so no attestation would have been made.
        if "/entries" in path:
            doc["records"] = [
                captured[r["key"]] if r["key"] == str(theirs.id) else r for r in doc["records"]
            ]
            doc["complete"] = False
        return doc

    proxy.tamper = replay
    result = xs.sync("from-a")
    assert result.error is None and result.poisoned == 1
    (err,) = xs.errors("from-a")
    assert err.key == str(theirs.id) and "replayed" in err.error
    latest = xs.attestations("from-a")[0]
    assert latest.version == 2 and not latest.agrees
    assert latest.detail["stream"] == INCOMPLETE and latest.computed.startswith(UNVERIFIED)
    assert latest.root == v2.root


def test_an_incomplete_stream_is_still_attested(publisher: Publisher, sub: Store) -> None:
    publisher.store.add_entries("pub", pdq_entries(3))
    v1 = publisher.feeds.publish("shared")
    assert v1 is not None
    # A change after the version, not yet in a version: the subscriber cannot get version 1's
    # exact list, and says so.
    victim = publisher.store.list_entries("pub")[0]
    publisher.store.disable_entry("pub", victim.id, "withdrawn")
    xs = exchanges(sub)
    subscribe(xs, publisher)
    assert xs.sync("from-a").error is None
    (att,) = xs.attestations("from-a")
    assert att.version == 1 and att.detail["stream"] == INCOMPLETE and not att.agrees
    assert att.computed == UNVERIFIED + att.computed.removeprefix(UNVERIFIED)
    assert att.computed != UNVERIFIED + v1.root
    # Once the next version is signed and received completely, it is verified.
    v2 = publisher.feeds.publish("shared")
    assert v2 is not None and xs.sync("from-a").error is None
    latest = xs.attestations("from-a")[0]
    assert latest.version == 2 and latest.agrees and latest.detail["stream"] == "complete"


def test_records_from_after_the_version_are_rejected(
    publisher: Publisher, sub: Store, proxy: TamperProxy
) -> None:
    publisher.store.add_entries("pub", pdq_entries(2))
    v1 = publisher.feeds.publish("shared")
    assert v1 is not None
    publisher.store.add_entries("pub", pdq_entries(1))  # not in any version yet
    future = publisher.feeds.records("shared", after=v1.revision, upto=10**9).records
    assert len(future) == 1 and future[0].revision > v1.revision

    def smuggle(path: str, doc: Any) -> Any:
        if "/entries" in path and doc.get("next") is None:
            doc["records"] += _served(future)
        return doc

    proxy.tamper = smuggle
    xs = exchanges(sub)
    subscribe(xs, publisher, url=proxy.url)
    result = xs.sync("from-a")
    assert result.error is None and result.poisoned == 1 and result.added == 2
    assert sub.find_entries("from-a", external_id=future[0].key) == []
    assert "outside" in xs.errors("from-a")[0].error


def test_plain_http_only_for_loopback() -> None:
    key = SigningKey.generate().public.text
    base = {"feed": "shared", "publisher_key": key}
    for url in ("http://127.0.0.1:8000", "http://localhost:1", "http://[::1]:9", "https://x.org"):
        assert BastionFeedConfig.model_validate({**base, "url": url}).url == url
    for url in ("http://bastion.example.org", "http://10.0.0.1", "http://127.0.0.1.nip.io"):
        with pytest.raises(ValueError, match="https"):
            BastionFeedConfig.model_validate({**base, "url": url})


# -- F7: a version signed twice ----------------------------------------------------------------


def test_a_version_re_signed_with_other_contents_stops_the_sync(
    publisher: Publisher, sub: Store
) -> None:
    publisher.store.add_entries("pub", pdq_entries(2))
    publisher.feeds.publish("shared")
    xs = exchanges(sub)
    subscribe(xs, publisher)
    assert xs.sync("from-a").error is None
    with publisher.store.engine.begin() as conn:
        conn.execute(text("DELETE FROM feed_versions"))
    publisher.store.add_entries("pub", pdq_entries(1))
    again = publisher.feeds.publish("shared")
    assert again is not None and again.version == 1
    result = xs.sync("from-a")
    assert result.error and "signed version 1 twice" in result.error
    assert len(sub.list_entries("from-a")) == 2  # nothing of it applied


# -- F8: cursors that do not advance -----------------------------------------------------------


def test_an_entries_cursor_that_does_not_advance_is_a_poisoned_page(
    publisher: Publisher, sub: Store, proxy: TamperProxy
) -> None:
    publisher.store.add_entries("pub", pdq_entries(7))  # three pages of three
    publisher.feeds.publish("shared")

    def stuck(path: str, doc: Any) -> Any:
        if "/entries" in path and doc.get("next"):
            doc["next"] = _query(path).get("after", "") or doc["next"].split(".")[0] + ".0"
        return doc

    proxy.tamper = stuck
    xs = exchanges(sub)
    subscribe(xs, publisher, url=proxy.url)
    result = xs.sync("from-a")
    assert result.error and "does not advance" in result.error
    assert xs.get("from-a").state == "error"


def test_a_disputes_cursor_that_does_not_advance_is_a_poisoned_page(
    publisher: Publisher, sub: Store, proxy: TamperProxy
) -> None:
    publisher.store.add_entries("pub", pdq_entries(4))
    publisher.feeds.publish("shared")
    for e in publisher.store.list_entries("pub"):
        publisher.feeds.add_feedback("shared", str(e.id), subscriber="someone")

    def stuck(path: str, doc: Any) -> Any:
        if "/disputes" in path:
            doc["next"] = int(_query(path).get("after") or 0)
        return doc

    proxy.tamper = stuck
    xs = exchanges(sub)
    subscribe(xs, publisher, url=proxy.url)
    result = xs.sync("from-a")
    assert result.error and "does not advance" in result.error
    assert len(sub.list_entries("from-a")) == 4  # the entries before it were applied


# -- issue 12, finding 13: the dispute refresh's revision window --------------------------------


def test_a_replayed_dispute_page_neither_restores_a_withdrawn_record_nor_rolls_one_back(
    publisher: Publisher, sub: Store, proxy: TamperProxy
) -> None:
    """A man in the middle keeps an old page of the dispute refresh and serves it again after
    the publisher withdrew one of its records and changed another. Before the fix the refresh
    checked revisions against 0 only: the withdrawn record came back as an enabled entry and
    the changed one went back to its old record."""
    publisher.store.add_entries("pub", pdq_entries(3))
    publisher.feeds.publish("shared")
    gone, changed, _ = (str(e.id) for e in publisher.store.list_entries("pub"))
    xs = exchanges(sub)
    subscribe(xs, publisher, url=proxy.url)
    assert xs.sync("from-a").error is None
    for key in (gone, changed):
        publisher.feeds.add_feedback("shared", key, subscriber="someone", kind="confirm")
    captured: list[Any] = []

    def capture(path: str, doc: Any) -> Any:
        if "/disputes" in path and doc["items"]:
            captured.extend(doc["items"])
        return doc

    proxy.tamper = capture
    result = xs.sync("from-a")
    assert result.error is None and result.updated == 2  # the counts came, as they should
    assert {i["key"] for i in captured} == {gone, changed}
    assert all(i["record"] is not None for i in captured)

    publisher.store.remove_entry("pub", int(gone))  # withdrawn
    publisher.store.disable_entry("pub", int(changed), "recheck")  # changed: a new revision
    publisher.store.enable_entry("pub", int(changed))
    v2 = publisher.feeds.publish("shared")
    assert v2 is not None
    proxy.tamper = None
    result = xs.sync("from-a")
    assert result.error is None and result.removed == 1
    assert sub.find_entries("from-a", external_id=gone) == []
    (held,) = sub.find_entries("from-a", external_id=changed)
    new_record = held.metadata["feed"]["record"]
    old_records = {i["key"]: json.loads(i["record"]["record"]) for i in captured}
    assert json.loads(new_record)["revision"] > old_records[changed]["revision"]
    assert xs.attestations("from-a")[0].agrees

    def replay(path: str, doc: Any) -> Any:
        if "/disputes" in path:
            after = int(_query(path).get("after") or 0)
            doc["items"], doc["next"] = captured, after + 1  # an old page, moved forward
        return doc

    proxy.tamper = replay
    result = xs.sync("from-a")
    assert result.error is None and result.poisoned == 2
    assert result.added == result.updated == 0
    # Nothing came back, nothing went back.
    assert sub.find_entries("from-a", external_id=gone) == []
    (now,) = sub.find_entries("from-a", external_id=changed)
    assert now.metadata["feed"]["record"] == new_record and now.enabled
    errors = {e.key: e.error for e in xs.errors("from-a")}
    assert "refresh never adds one" in errors[gone]
    assert "replayed" in errors[changed]
    assert xs.attestations("from-a")[0].agrees


def test_the_withdrawn_reasons_match_the_engines() -> None:
    from bastion.exchanges import bastion_feed
    from bastion.exchanges import model as engine

    assert bastion_feed._WITHDRAWN_LOCAL == engine.WITHDRAWN_LOCAL
    assert bastion_feed._UPSTREAM == engine.UPSTREAM and bastion_feed._AWAITING == engine.AWAITING


# -- F9: values shared between banks of one feed -----------------------------------------------


@pytest.mark.slow  # over ~5 s: `make test` runs it, `make test-fast` does not
def test_values_shared_between_banks_are_published_once_and_roots_agree(
    publisher: Publisher, sub: Store
) -> None:
    ps = publisher.store
    ps.create_bank("pub2")
    publisher.feeds.remove("shared")
    publisher.feeds.create("shared", ["pub", "pub2"], organisation="Org A")
    publisher.feeds.grant(publisher.key_name, ["shared"])  # the removal took the grant along
    shared = secrets.token_hex(32)
    ps.add_entries("pub", [NewEntry(SignalType.PDQ, shared), *pdq_entries(2)])
    ps.add_entries("pub2", [NewEntry(SignalType.PDQ, shared), *pdq_entries(1)])
    first, second = sorted(
        e.id for e in ps.iter_entries(banks=["pub", "pub2"]) if e.value == shared
    )
    xs = exchanges(sub)
    subscribe(xs, publisher)

    def step(expect_key: int | None) -> None:
        version = publisher.feeds.publish("shared", force=True)
        assert version is not None
        assert xs.sync("from-a").error is None
        att = xs.attestations("from-a")[0]
        assert att.version == version.version and att.agrees, att
        held = sub.find_entries("from-a", value=shared)
        assert [e.external_id for e in held] == ([] if expect_key is None else [str(expect_key)])

    step(first)  # one record for the value: the lowest id
    assert publisher.feeds.latest_version("shared").count == 4  # type: ignore[union-attr]
    ps.disable_entry("pub", first, "withdrawn")
    step(second)  # the other bank's entry takes over
    ps.enable_entry("pub", first)
    step(first)  # and gives it back
    ps.remove_entry("pub", first)
    step(second)  # a tombstone hands over too
    ps.remove_entry("pub2", second)
    step(None)


# -- hostile JSON and sizes --------------------------------------------------------------------


class _Hostile:
    """A fake publisher that answers every request with ``body``."""

    def __init__(self, body: bytes) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize(
    ("body", "config", "message"),
    [
        (b"[" * 200_000 + b"]" * 200_000, {}, "not JSON"),
        (
            b'{"latest": null, "pad": "' + b"x" * 20_000 + b'"}',
            {"max_response_bytes": 8192},
            "exceeds",
        ),
    ],
)
def test_hostile_answers_are_poisoned_pages(
    sub: Store, body: bytes, config: dict[str, Any], message: str
) -> None:
    fake = _Hostile(body)
    try:
        xs = exchanges(sub)
        cfg = {"url": fake.url, "feed": "f", "publisher_key": SigningKey.generate().public.text}
        xs.add("hostile", "bastion", config={**cfg, **config}, credentials={"api_key": "k" * 10})
        result = xs.sync("hostile")
    finally:
        fake.stop()
    assert result.error and message in result.error
    assert any(message in e.error for e in xs.errors("hostile"))


# -- what the Merkle check compares ------------------------------------------------------------


def test_a_local_edit_of_labels_shows_as_a_mismatch(publisher: Publisher, sub: Store) -> None:
    publisher.store.add_entries("pub", pdq_entries(2, labels=["test"]))
    publisher.feeds.publish("shared")
    xs = exchanges(sub)
    subscribe(xs, publisher)
    assert xs.sync("from-a").error is None and xs.attestations("from-a")[0].agrees
    victim = sub.list_entries("from-a")[0]
    with sub.engine.begin() as conn:
        conn.execute(
            text("UPDATE bank_entries SET labels = :l WHERE id = :i"),
            {"l": json.dumps(["test", "other"]), "i": victim.id},
        )
    publisher.feeds.publish("shared", force=True)
    assert xs.sync("from-a").error is None
    latest = xs.attestations("from-a")[0]
    assert latest.version == 2 and not latest.agrees
    assert latest.computed == f"entry {victim.id} differs from its signed record"


# -- F10: vouch identity -----------------------------------------------------------------------


def test_vouch_identity_is_the_pinned_key_fingerprint(
    publisher: Publisher, stores: Callable[[str], Store]
) -> None:
    key = SigningKey.generate().public
    cfg = {"url": "https://a.example", "feed": "f", "publisher_key": key.text}
    assert BastionFeedExchange.vouch_identity(cfg) == key.fingerprint
    same = {**cfg, "url": "https://mirror.example", "publisher_key": key.raw.hex()}
    assert BastionFeedExchange.vouch_identity(BastionFeedConfig.model_validate(same)) == (
        key.fingerprint
    )
    assert BastionFeedExchange.vouch_identity({"publisher_key": "nope"}) is None
    xs: ExchangeStore = exchanges(stores("sub2"))
    subscribe(xs, publisher)
    assert xs.open("from-a").vouch_identity(xs.open("from-a").cfg) == (
        publisher.feeds.public_key().fingerprint
    )
    with pytest.raises(InvalidInput):
        xs.add("bad", "bastion", config={**cfg, "url": "http://example.org"})
