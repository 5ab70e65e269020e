"""ThreatExchange exchange against a fake Graph API on loopback
(tests/exchanges/fake_threatexchange.py). Indicators are random hex or example.org URLs."""

from __future__ import annotations

import json
import logging
import secrets
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import pytest
from pydantic import ValidationError

from bastion.config import Settings
from bastion.crypto import MasterKey
from bastion.db import Store
from bastion.exchanges import (
    FeedbackItem,
    FeedbackUnsupported,
    Page,
    PermanentError,
    Poisoned,
    PoisonedPage,
    Removal,
    TransientError,
    Upsert,
    Verdict,
    exchange_type,
)
from bastion.exchanges.threatexchange import (
    ThreatExchangeConfig,
    ThreatExchangeCredentials,
    ThreatExchangeExchange,
    redact,
)
from bastion.signals.base import SignalType
from tests.exchanges.fake_threatexchange import (
    APP_ID,
    GROUP,
    TOKEN,
    FakeThreatExchange,
    graph_error,
)

SECRET = TOKEN.partition("|")[2]


@pytest.fixture
def fake() -> Iterator[FakeThreatExchange]:
    with FakeThreatExchange() as server:
        yield server


def make(fake: FakeThreatExchange, token: str = TOKEN, **config: Any) -> ThreatExchangeExchange:
    config.setdefault("privacy_group", GROUP)
    config.setdefault("settle_seconds", 0)
    cfg = ThreatExchangeConfig(base_url=fake.origin, **config)
    ex = ThreatExchangeExchange(cfg, ThreatExchangeCredentials(access_token=token))
    ex.clock = lambda: fake.clock
    return ex


def items(pages: list[Page]) -> list[Any]:
    return [item for page in pages for item in page.items]


def keys(pages: list[Page], kind: type = Upsert) -> list[str]:
    return [i.key for i in items(pages) if isinstance(i, kind)]


def assert_no_secret(text: str) -> None:
    assert TOKEN not in text and SECRET not in text


def test_registered() -> None:
    assert exchange_type("threatexchange") is ThreatExchangeExchange


def test_backfill_across_pages_with_provenance(fake: FakeThreatExchange) -> None:
    ids = [fake.add() for _ in range(5)]
    fake.tick(5)
    with make(fake, page_size=2) as ex:
        pages = list(ex.fetch(None))
    assert len(pages) == 3
    assert keys(pages) == ids
    assert ["next" in p.checkpoint for p in pages] == [True, True, False]
    assert pages[-1].checkpoint["start_time"] == fake.clock - 1
    assert pages[-1].progress == (5, 5)
    for page in pages:  # checkpoints are stored in the database: never the token
        assert_no_secret(json.dumps(page.checkpoint))
    first = pages[0].items[0]
    (entry,) = first.entries
    record = fake.indicators[ids[0]]
    assert entry.signal_type is SignalType.PDQ
    assert entry.value == record["indicator"]
    assert entry.source == "ThreatExchange"
    assert entry.list_name == f"privacy-group:{GROUP}"
    assert entry.labels == ["threatexchange", "te:test_fixture"]
    assert entry.added_at == datetime.fromtimestamp(record["last_updated"], UTC)
    (descriptor,) = record["descriptors"]["data"]
    assert entry.metadata == {
        "indicator_id": ids[0],
        "type": "HASH_PDQ",
        "descriptors": [
            {"id": descriptor["id"], "owner": descriptor["owner"]["id"], "status": "MALICIOUS"}
        ],
    }
    _, path, _ = fake.requests[0]
    assert path.startswith(f"/v21.0/{GROUP}/threat_updates?")
    assert "start_time" not in path  # the first window is the whole history
    assert f"stop_time={fake.clock}" in path and "limit=2" in path
    assert "types=HASH_PDQ%2CHASH_MD5%2CHASH_SHA256%2CURI" in path


def test_resume_mid_window_from_checkpoint(fake: FakeThreatExchange) -> None:
    ids = [fake.add() for _ in range(5)]
    fake.tick(5)
    with make(fake, page_size=2) as ex:
        first = next(iter(ex.fetch(None)))
    assert [i.key for i in first.items] == ids[:2]
    with make(fake, page_size=2) as ex:  # a new process, from the stored checkpoint
        rest = list(ex.fetch(first.checkpoint))
    assert keys(rest) == ids[2:]
    assert "after=" in fake.requests[-2][1]
    assert f"access_token={TOKEN.replace('|', '%7C')}" in fake.requests[-2][1]


def test_next_window_gets_changes_and_deletions(fake: FakeThreatExchange) -> None:
    old = [fake.add() for _ in range(3)]
    fake.tick(5)
    with make(fake) as ex:
        done = list(ex.fetch(None))[-1].checkpoint
        fake.tick(5)
        new = fake.add()
        fake.delete(old[0])
        fake.tick()
        pages = list(ex.fetch(done))
    got = items(pages)
    assert [type(i) for i in got] == [Upsert, Removal]
    assert got[0].key == new
    assert got[1].key == old[0]
    assert f"start_time={done['start_time']}" in fake.requests[-1][1]


def test_settle_window_and_empty_window(fake: FakeThreatExchange) -> None:
    fake.add()
    with make(fake, settle_seconds=30) as ex:
        pages = list(ex.fetch(None))
        # The indicator was updated within the settle time: it waits for the next window.
        assert items(pages) == []
        assert pages[-1].checkpoint["start_time"] == fake.clock - 31
        # Nothing settled since: no request at all.
        before = len(fake.requests)
        assert list(ex.fetch({"start_time": fake.clock - 30})) == []
        assert len(fake.requests) == before


def test_types_mapped_and_unsupported_types_counted(fake: FakeThreatExchange) -> None:
    md5 = fake.add(secrets.token_hex(16), type="HASH_MD5")
    sha = fake.add(secrets.token_hex(32), type="HASH_SHA256")
    uri = fake.add("https://example.org/benign/path", type="URI")
    fake.add(secrets.token_hex(16), type="HASH_VIDEO_MD5")
    fake.add(secrets.token_hex(20), type="HASH_TMK")
    fake.add(secrets.token_hex(20), type="HASH_TMK")
    fake.tick()
    types = ("HASH_MD5", "HASH_SHA256", "URI", "HASH_VIDEO_MD5", "HASH_TMK")
    with make(fake, types=types) as ex:
        pages = list(ex.fetch(None))
    got = {i.key: i.entries[0] for i in items(pages)}
    assert list(got) == [md5, sha, uri]
    assert got[md5].signal_type is SignalType.MD5
    assert got[sha].signal_type is SignalType.SHA256
    assert got[uri].signal_type is SignalType.URL
    assert got[uri].value == "example.org/benign/path"  # Bastion's canonical URL form
    assert pages[-1].checkpoint["skipped"] == {"HASH_VIDEO_MD5": 1, "HASH_TMK": 2}


def test_invisible_and_non_malicious_indicators(fake: FakeThreatExchange) -> None:
    invisible = fake.add()
    del fake.indicators[invisible]["descriptors"]
    benign = fake.add(status="NON_MALICIOUS", descriptors=2)
    mixed = fake.add(descriptors=2)
    fake.indicators[mixed]["descriptors"]["data"][0]["status"] = "NON_MALICIOUS"
    fake.tick()
    with make(fake) as ex:
        got = {i.key: i for i in items(list(ex.fetch(None)))}
    assert got[invisible] == Removal(invisible, "no ThreatExchange descriptor is visible any more")
    assert isinstance(got[benign], Removal) and "NON_MALICIOUS" in got[benign].reason
    assert isinstance(got[mixed], Upsert)
    with make(fake, drop_non_malicious=False) as ex:
        got = {i.key: i for i in items(list(ex.fetch(None)))}
    assert isinstance(got[benign], Upsert)


def test_malformed_records_are_poisoned_rest_applied(fake: FakeThreatExchange) -> None:
    good = fake.add()
    fake.tick()
    base = {"indicator": secrets.token_hex(32), "type": "HASH_PDQ", "last_updated": 1}
    desc = {"descriptors": {"data": [{"id": "77", "owner": {"id": "1"}}]}}
    fake.extra_records = [
        ["not", "an", "object"],
        {**base, **desc},  # no id
        {"id": "11", "indicator": "x", **desc},  # no type
        {"id": "12", **base, "should_delete": "yes", **desc},
        {"id": "13", "type": "HASH_PDQ", **desc},  # no indicator
        {"id": "14", **base, **desc, "indicator": "not-hex"},
        {"id": "15", **base, **desc, "last_updated": "last tuesday"},
        {"id": "16", **base, "descriptors": {"data": ["oops"]}},
    ]
    with make(fake) as ex:
        got = items(list(ex.fetch(None)))
    poisoned = [i for i in got if isinstance(i, Poisoned)]
    assert [p.error for p in poisoned[:4]] == [
        "threat update is not an object",
        "threat update has no numeric id",
        "threat update has no type",
        "should_delete is not a boolean",
    ]
    assert poisoned[4].error == "threat update has no indicator"
    assert poisoned[5].error.startswith("invalid HASH_PDQ indicator")
    assert poisoned[6].error == "last_updated is not a time"
    assert poisoned[7].error == "a descriptor is not an object"
    assert [p.key for p in poisoned[2:]] == ["11", "12", "13", "14", "15", "16"]
    assert [i.key for i in got if isinstance(i, Upsert)] == [good]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>oops", "invalid JSON"),
        ({"data": {"id": 1}}, "unexpected shape"),
        ({"data": [], "paging": {"next": 5}}, "paging.next is not a string"),
    ],
)
def test_unreadable_page_is_poisoned_page(
    fake: FakeThreatExchange, body: Any, message: str
) -> None:
    fake.fail_next("threat_updates", 200, body)
    with make(fake) as ex, pytest.raises(PoisonedPage) as err:
        list(ex.fetch(None))
    assert message in str(err.value)
    assert err.value.skip_to is None


def test_poisoned_page_raw_is_redacted(fake: FakeThreatExchange) -> None:
    fake.fail_next("threat_updates", 200, f"not json, echoing access_token={TOKEN}".encode())
    with make(fake) as ex, pytest.raises(PoisonedPage) as err:
        list(ex.fetch(None))
    assert err.value.raw and "<redacted>" in err.value.raw
    assert_no_secret(err.value.raw)


def test_next_link_to_another_host_is_refused(fake: FakeThreatExchange) -> None:
    for _ in range(3):
        fake.add()
    fake.tick()
    fake.next_origin = "http://127.0.0.2:9"
    with make(fake, page_size=1) as ex, pytest.raises(PoisonedPage) as err:
        list(ex.fetch(None))
    assert "outside the API" in str(err.value)
    assert len(fake.requests) == 1  # the token went nowhere else


def test_stored_next_url_outside_the_api_never_gets_the_token(fake: FakeThreatExchange) -> None:
    """An edited checkpoint (or base_url changed mid-window) must not send the token elsewhere:
    the stored next URL is dropped and the window is read again from its start."""
    ids = [fake.add() for _ in range(3)]
    fake.tick()
    with make(fake, page_size=1) as ex:
        first = next(iter(ex.fetch(None)))
    with FakeThreatExchange() as elsewhere:
        edited = dict(first.checkpoint)
        edited["next"] = first.checkpoint["next"].replace(fake.origin, elsewhere.origin)
        assert edited["next"].startswith(elsewhere.origin)
        with make(fake, page_size=1) as ex:
            rest = list(ex.fetch(edited))
        assert elsewhere.requests == []
    assert keys(rest) == ids  # the whole window again
    assert "after=" not in fake.requests[-len(rest)][1]
    assert "next" not in rest[-1].checkpoint


def test_next_link_that_does_not_advance_is_poison(fake: FakeThreatExchange) -> None:
    for _ in range(4):
        fake.add()
    fake.tick()
    fake.stuck_next = True
    with (
        make(fake, page_size=1) as ex,
        pytest.raises(PoisonedPage, match="does not advance") as err,
    ):
        for _ in islice(ex.fetch(None), 10):
            pass
    assert len(fake.requests) == 2  # the first page, then the page that pointed to itself
    assert err.value.raw and "after=" in err.value.raw  # the repeated URL, without the token
    assert_no_secret(err.value.raw)


#: A threat_updates answer nested far deeper than any JSON decoder recurses (no content at all).
DEEP = b'{"data": [' + b"[" * 200_000 + b"]" * 200_000 + b"]}"


def test_deeply_nested_json_is_a_poisoned_page(fake: FakeThreatExchange) -> None:
    fake.fail_next("threat_updates", 200, DEEP)
    with make(fake) as ex, pytest.raises(PoisonedPage, match="too deeply nested") as err:
        list(ex.fetch(None))
    assert err.value.raw and len(err.value.raw) <= 2000
    # The same body on an error answer is only an unreadable error message.
    fake.fail_next("threat_updates", 500, DEEP)
    with make(fake) as ex, pytest.raises(TransientError, match="HTTP 500"):
        list(ex.fetch(None))


@pytest.mark.parametrize("content_length", [True, False])
def test_oversized_page_is_a_poisoned_page(fake: FakeThreatExchange, content_length: bool) -> None:
    """Read in a stream up to max_page_bytes, whether or not the server says how big it is."""
    for _ in range(20):  # ~8 KB of indicators
        fake.add()
    fake.tick()
    fake.no_content_length = not content_length
    with make(fake, max_page_bytes=1024) as ex, pytest.raises(PoisonedPage) as err:
        list(ex.fetch(None))
    assert "more than 1024 bytes (max_page_bytes)" in str(err.value)
    assert err.value.skip_to is None and 0 < len(err.value.raw) <= 1024
    with make(fake) as ex:  # the default (64 MiB) takes it
        assert len(keys(list(ex.fetch(None)))) == 20


def test_error_mapping_and_redaction(fake: FakeThreatExchange) -> None:
    echo = graph_error(f"failed at /threat_updates?access_token={TOKEN}&x=1 for {TOKEN}", 1)
    fake.fail_next("threat_updates", 500, echo)
    fake.fail_next("threat_updates", 429, {}, {"Retry-After": "12"})
    fake.fail_next("threat_updates", 400, graph_error("Application request limit reached", 4))
    fake.fail_next("threat_updates", 403, {})
    with make(fake) as ex:
        with pytest.raises(TransientError) as err:
            list(ex.fetch(None))
        assert "HTTP 500" in str(err.value) and "not enabled" in str(err.value)
        assert_no_secret(str(err.value))
        with pytest.raises(TransientError) as err:
            list(ex.fetch(None))
        assert err.value.retry_after == 12
        with pytest.raises(TransientError) as err:
            list(ex.fetch(None))
        assert "error 4" in str(err.value)
        with pytest.raises(PermanentError):
            list(ex.fetch(None))
    wrong = f"{APP_ID}|{'x' * 32}"
    with make(fake, token=wrong) as ex, pytest.raises(PermanentError) as err:
        list(ex.fetch(None))
    assert "error 190" in str(err.value) and wrong not in str(err.value)
    with make(fake, privacy_group="42") as ex, pytest.raises(PermanentError) as err:
        list(ex.fetch(None))
    assert "error 100" in str(err.value)


def test_connection_refused_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = ThreatExchangeConfig(privacy_group=GROUP, base_url=f"http://127.0.0.1:{port}")
    with (
        ThreatExchangeExchange(cfg, ThreatExchangeCredentials(access_token=TOKEN)) as ex,
        pytest.raises(TransientError) as err,
    ):
        list(ex.fetch(None))
    assert_no_secret(str(err.value))


def test_request_logs_carry_no_token(
    fake: FakeThreatExchange, caplog: pytest.LogCaptureFixture
) -> None:
    fake.add()
    fake.add()
    fake.tick()
    # Name httpx's logger too: another test (the worker CLI) may have quietened it.
    with (
        caplog.at_level(logging.DEBUG),
        caplog.at_level(logging.DEBUG, logger="httpx"),
        make(fake, page_size=1) as ex,
    ):
        list(ex.fetch(None))
    messages = [r.getMessage() for r in caplog.records]
    assert any("threat_updates" in m for m in messages)  # httpx did log the requests
    for message in messages:
        assert_no_secret(message)


def test_redact() -> None:
    text = f"a {TOKEN} b access_token=abc%7Cdef&c=1 {TOKEN.replace('|', '%7C')}"
    out = redact(text, TOKEN)
    assert_no_secret(out)
    assert "abc" not in out and "c=1" in out


def _entry_feedback(fake: FakeThreatExchange, ident: str, verdict: Verdict) -> FeedbackItem:
    with make(fake) as ex:
        (item,) = [i for i in items(list(ex.fetch(None))) if i.key == ident]
    entry = item.entries[0]
    return FeedbackItem(ident, verdict, "pdq", entry.value, metadata=entry.metadata)


@pytest.mark.parametrize(
    ("verdict", "reactions"),
    [(Verdict.POSITIVE, ["HELPFUL", "SAW_THIS_TOO"]), (Verdict.NEGATIVE, ["NON_MALICIOUS"])],
)
def test_feedback_reacts_to_other_apps_descriptors(
    fake: FakeThreatExchange, verdict: Verdict, reactions: list[str]
) -> None:
    ident = fake.add(descriptors=2)
    own = fake.add()
    fake.indicators[ident]["descriptors"]["data"][1]["owner"]["id"] = APP_ID
    other_id = fake.indicators[ident]["descriptors"]["data"][0]["id"]
    fake.descriptors[fake.indicators[ident]["descriptors"]["data"][1]["id"]] = (ident, APP_ID)
    fake.indicators[own]["descriptors"]["data"][0]["owner"]["id"] = APP_ID
    fake.tick()
    item = _entry_feedback(fake, ident, verdict)
    with make(fake) as ex:
        ex.send_feedback(item)
        with pytest.raises(FeedbackUnsupported):
            ex.send_feedback(_entry_feedback(fake, own, verdict))
    assert fake.reactions == [(other_id, reactions)]
    method, path, body = fake.requests[-2]
    assert (method, path) == ("POST", f"/v21.0/{other_id}")
    assert "access_token" not in path and "access_token=" in body  # token in the body


def test_feedback_errors(fake: FakeThreatExchange) -> None:
    ident = fake.add()
    fake.tick()
    item = _entry_feedback(fake, ident, Verdict.NEGATIVE)
    with make(fake, negative_reactions=()) as ex, pytest.raises(FeedbackUnsupported):
        ex.send_feedback(item)
    with make(fake) as ex:
        with pytest.raises(FeedbackUnsupported):
            ex.send_feedback(FeedbackItem(ident, Verdict.NEGATIVE, "pdq", "00" * 32))
        fake.fail_next("reaction", 503, {}, {"Retry-After": "3"})
        with pytest.raises(TransientError) as err:
            ex.send_feedback(item)
        assert err.value.retry_after == 3
        fake.fail_next("reaction", 200, {"success": False})
        with pytest.raises(PermanentError):
            ex.send_feedback(item)
    with make(fake, token=f"{APP_ID}|{'y' * 32}") as ex, pytest.raises(PermanentError) as err:
        ex.send_feedback(item)
    assert "y" * 32 not in str(err.value)
    assert fake.reactions == []


def test_config_and_credentials_validation() -> None:
    assert ThreatExchangeConfig(privacy_group=123).privacy_group == "123"
    for bad in (
        {"privacy_group": "abc"},
        {"privacy_group": GROUP, "extra": 1},
        {"privacy_group": GROUP, "api_version": "21"},
        {"privacy_group": GROUP, "positive_reactions": ("LIKE",)},
        {"privacy_group": GROUP, "types": ()},
        {"privacy_group": GROUP, "base_url": "file:///etc"},
        {"privacy_group": GROUP, "max_page_bytes": 100},
    ):
        with pytest.raises(ValidationError):
            ThreatExchangeConfig(**bad)
    with pytest.raises(ValidationError):
        ThreatExchangeCredentials(access_token="has space|secret")
    creds = ThreatExchangeCredentials(access_token=TOKEN)
    assert creds.app_id == APP_ID
    assert_no_secret(repr(creds))
    assert_no_secret(str(creds))


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://graph.facebook.com", True),
        ("http://graph.facebook.com", False),  # the token would cross the network in clear
        ("http://10.0.0.8:8080", False),
        ("http://127.0.0.1:8080", True),
        ("http://localhost:8080", True),
        ("http://[::1]:8080", True),
    ],
)
def test_plain_http_only_on_loopback(url: str, ok: bool) -> None:
    if ok:
        assert ThreatExchangeConfig(privacy_group=GROUP, base_url=url).base_url == url
    else:
        with pytest.raises(ValidationError, match="https"):
            ThreatExchangeConfig(privacy_group=GROUP, base_url=url)


# -- whole runs through the engine (ExchangeStore.sync) on SQLite and PostgreSQL -----------------


def test_sync_through_engine_deletion_and_reaction(fake: FakeThreatExchange, store: Store) -> None:
    from bastion.exchanges.store import ExchangeStore

    xs = ExchangeStore(store, MasterKey.generate(), Settings())
    xs.add(
        "te",
        "threatexchange",
        config={
            "privacy_group": GROUP,
            "base_url": fake.origin,
            "settle_seconds": 0,
            "page_size": 2,
            "labels": ["threatexchange", "demo"],
        },
        credentials={"access_token": TOKEN},
        on_delete="remove",
    )

    def sync() -> Any:
        ex = xs.open("te")
        ex.clock = lambda: fake.clock  # type: ignore[attr-defined]
        with ex:
            return xs.sync("te", exchange=ex)

    ids = [fake.add() for _ in range(3)]
    fake.extra_records = [{"id": "5", "type": "HASH_PDQ", "indicator": "zz", "descriptors": []}]
    fake.tick(5)
    result = sync()
    assert result.error is None and result.complete
    assert (result.pages, result.added) == (2, 3)
    entries = {e.external_id: e for e in store.list_entries("te")}
    assert set(entries) == set(ids)
    assert entries[ids[0]].list_name == f"privacy-group:{GROUP}"
    assert "te:test_fixture" in entries[ids[0]].labels
    # The malformed record had no descriptors: a removal of a key we never held, not an error.
    assert result.poisoned == 0
    info = xs.get("te")
    assert "next" not in info.checkpoint
    assert_no_secret(json.dumps(info.checkpoint))

    # Deleted upstream: removed here (on_delete=remove).
    fake.extra_records = [{"id": "6", "type": "HASH_PDQ", "indicator": "zz", **_DESC}]
    fake.tick(5)
    fake.delete(ids[0])
    fake.tick()
    result = sync()
    assert result.error is None and result.removed == 1 and result.poisoned == 1
    assert {e.external_id for e in store.list_entries("te")} == set(ids[1:])
    (error,) = xs.errors("te")
    assert "invalid HASH_PDQ indicator" in error.error
    assert_no_secret(json.dumps(xs.get("te").checkpoint))

    # "Confirmed" on a match goes back as reactions on the other app's descriptor.
    kept = next(e for e in store.list_entries("te") if e.external_id == ids[1])
    with store.engine.begin() as conn:
        assert xs.queue_feedback_in(conn, [("te", kept.id)], Verdict.POSITIVE, case_id=3)
    assert xs.send_due_feedback("test")["sent"] == 1
    (descriptor,) = fake.indicators[ids[1]]["descriptors"]["data"]
    assert fake.reactions == [(descriptor["id"], ["HELPFUL", "SAW_THIS_TOO"])]


_DESC = {"descriptors": {"data": [{"id": "77", "owner": {"id": "1"}, "status": "MALICIOUS"}]}}


def test_deeply_nested_page_through_the_engine_is_a_poisoned_page(
    fake: FakeThreatExchange, store: Store
) -> None:
    """Not an unexpected (transient) error: each attempt is recorded as a poisoned page and
    counted; with no sound place to skip to, the exchange stalls for a person to look."""
    from bastion.exchanges.store import ExchangeStore

    xs = ExchangeStore(store, MasterKey.generate(), Settings(exchange_poison_attempts=3))
    xs.add(
        "te",
        "threatexchange",
        config={"privacy_group": GROUP, "base_url": fake.origin, "settle_seconds": 0},
        credentials={"access_token": TOKEN},
    )
    fake.add()
    for _ in range(3):
        fake.fail_next("threat_updates", 200, DEEP)
    for attempt, state in ((1, "error"), (2, "error"), (3, "stalled")):
        result = xs.sync("te")
        info = xs.get("te")
        assert result.error and "too deeply nested" in result.error
        assert (info.state, info.poison_attempts) == (state, attempt)
    errors = xs.errors("te")
    assert [e.kind for e in errors] == ["poisoned_page"] * 3
    assert store.list_entries("te") == []
