"""StopNCII exchange against a fake StopNCII server on loopback (tests/exchanges/fake_stopncii.py).

Every hash here is random hex: no real StopNCII data.
"""

from __future__ import annotations

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
from bastion.exchanges.stopncii import StopNCIIConfig, StopNCIICredentials, StopNCIIExchange
from bastion.signals.base import SignalType
from tests.exchanges.fake_stopncii import (
    FEEDBACK_KEY,
    FETCH_KEY,
    SUBSCRIPTION_KEY,
    FakeStopNCII,
    random_md5,
    random_pdq,
)

SECRETS = (SUBSCRIPTION_KEY, FETCH_KEY, FEEDBACK_KEY)


@pytest.fixture
def fake() -> Iterator[FakeStopNCII]:
    with FakeStopNCII() as server:
        yield server


def make(fake: FakeStopNCII, *, feedback_key: bool = True, **config: Any) -> StopNCIIExchange:
    cfg = StopNCIIConfig(base_url=fake.base_url, overlap_seconds=0, **config)
    creds = StopNCIICredentials(
        subscription_key=SUBSCRIPTION_KEY,
        fetch_function_key=FETCH_KEY,
        feedback_function_key=FEEDBACK_KEY if feedback_key else None,
    )
    ex = StopNCIIExchange(cfg, creds)
    ex.clock = lambda: fake.clock  # the fake's clock is the only clock: passes are exact
    return ex


def items(pages: list[Page]) -> list[Any]:
    return [item for page in pages for item in page.items]


def upserted(pages: list[Page]) -> list[str]:
    return [i.key for i in items(pages) if isinstance(i, Upsert)]


def test_registered() -> None:
    assert exchange_type("stopncii") is StopNCIIExchange
    assert StopNCIIExchange.feedback == frozenset({Verdict.POSITIVE, Verdict.NEGATIVE})


def test_backfill_across_pages_with_provenance(fake: FakeStopNCII) -> None:
    values = [fake.add() for _ in range(5)]
    fake.tick(5)
    with make(fake, page_size=2) as ex:
        pages = list(ex.fetch(None))
    assert len(pages) == 3
    assert upserted(pages) == values  # oldest first
    assert [p.checkpoint["page_token"] is not None for p in pages] == [True, True, False]
    assert pages[-1].checkpoint["start"] == fake.clock  # the pass's start, overlap 0
    assert pages[-1].progress == (5, 5)
    first = pages[0].items[0]
    assert isinstance(first, Upsert)
    (entry,) = first.entries
    record = fake.records[values[0]]
    assert entry.signal_type is SignalType.PDQ
    assert entry.value == values[0]
    assert entry.source == "StopNCII"
    assert entry.list_name == "stopncii"
    assert entry.labels == ["ncii", "stopncii"]
    assert entry.added_at == datetime.fromtimestamp(record["lastModtimestamp"], UTC)
    assert entry.metadata["hash_status"] == "Active"
    assert entry.metadata["signal_type"] == "ImagePDQ"
    # Both keys went as headers, never in the URL.
    method, path, headers = fake.requests[0]
    assert method == "GET" and "startTimestamp=10" in path and "pageSize=2" in path
    assert headers["ocp-apim-subscription-key"] == SUBSCRIPTION_KEY
    assert headers["x-functions-key"] == FETCH_KEY
    assert not any(secret in p for _, p, _ in fake.requests for secret in SECRETS)


def test_resume_mid_pass_from_checkpoint(fake: FakeStopNCII) -> None:
    values = [fake.add() for _ in range(5)]
    fake.tick(5)
    with make(fake, page_size=2) as ex:
        first = next(iter(ex.fetch(None)))
    assert [i.key for i in first.items] == values[:2]
    # A new process resumes from the stored checkpoint: the page token, not a new pass.
    with make(fake, page_size=2) as ex:
        rest = list(ex.fetch(first.checkpoint))
    assert upserted(rest) == values[2:]
    assert "nextPageToken=" in fake.requests[-2][1]


def test_next_pass_gets_only_changes_and_withdrawals(fake: FakeStopNCII) -> None:
    old = [fake.add() for _ in range(3)]
    fake.tick(5)
    with make(fake) as ex:
        done = list(ex.fetch(None))[-1].checkpoint
        fake.tick(5)
        new = fake.add()
        fake.set_status(old[1], "Withdrawn")
        pages = list(ex.fetch(done))
    got = items(pages)
    assert [type(i) for i in got] == [Upsert, Removal]
    assert got[0].key == new
    assert got[1] == Removal(old[1], "StopNCII hash withdrawn")


@pytest.mark.parametrize("status", ["Withdrawn", "Deleted"])
def test_withdrawn_or_deleted_hash_is_removed(fake: FakeStopNCII, status: str) -> None:
    """python-threatexchange compares hashValue (not hashStatus) with Withdrawn/Deleted, so its
    StopNCII client keeps withdrawn hashes forever. Here the status decides."""
    kept = fake.add()
    gone = fake.add(status=status)
    fake.records[gone]["caseNumbers"] = {}  # only hashStatus can tell
    with make(fake) as ex:
        got = items(list(ex.fetch(None)))
    assert [i.key for i in got if isinstance(i, Upsert)] == [kept]
    assert [i for i in got if isinstance(i, Removal)] == [
        Removal(gone, f"StopNCII hash {status.lower()}")
    ]


def test_hash_whose_every_case_is_withdrawn_is_removed(fake: FakeStopNCII) -> None:
    all_withdrawn = fake.add(cases=2)
    fake.records[all_withdrawn]["caseNumbers"] = {"c1": "Withdrawn", "c2": "Deleted"}
    one_left = fake.add(cases=2)
    fake.records[one_left]["caseNumbers"] = {"c1": "Withdrawn", "c2": "Active"}
    with make(fake) as ex:
        got = {i.key: i for i in items(list(ex.fetch(None)))}
    assert isinstance(got[all_withdrawn], Removal)
    assert isinstance(got[one_left], Upsert)


def test_types_mapped_and_unsupported_types_counted(fake: FakeStopNCII) -> None:
    md5 = fake.add(signal_type="VideoMD5")
    fake.add(signal_type="VideoTMK", value="ab" * 20)
    fake.add(signal_type="VideoTMK", value="cd" * 20)
    fake.add(signal_type="Text", value="benign placeholder text")
    with make(fake) as ex:
        pages = list(ex.fetch(None))
    got = items(pages)
    assert [i.key for i in got] == [md5]
    assert got[0].entries[0].signal_type is SignalType.MD5
    assert pages[-1].checkpoint["skipped"] == {"VideoTMK": 2, "Text": 1}


def test_uppercase_hash_is_canonical_but_feedback_uses_upstream_spelling(
    fake: FakeStopNCII,
) -> None:
    upper = random_pdq().upper()
    fake.add(upper)
    with make(fake) as ex:
        (item,) = items(list(ex.fetch(None)))
        entry = item.entries[0]
        assert item.key == upper.lower() and entry.value == upper.lower()
        assert entry.metadata["hash_value"] == upper
        ex.send_feedback(
            FeedbackItem(item.key, Verdict.POSITIVE, "pdq", entry.value, metadata=entry.metadata)
        )
    assert fake.feedback[0]["hashValue"] == upper


def test_malformed_records_are_poisoned_rest_applied(fake: FakeStopNCII) -> None:
    good = fake.add()
    fake.extra_records = [
        "not an object",
        {"signalType": "ImagePDQ", "hashStatus": "Active"},  # no hashValue
        {"hashValue": "zz" * 32, "signalType": "ImagePDQ", "hashStatus": "Active"},
        {"hashValue": random_pdq(), "signalType": "ImagePDQ"},  # no status
        {"hashValue": random_pdq(), "signalType": "ImagePDQ", "hashStatus": "Frozen"},
        {
            "hashValue": random_pdq(),
            "signalType": "ImagePDQ",
            "hashStatus": "Active",
            "lastModtimestamp": "yesterday",
        },
    ]
    with make(fake) as ex:
        got = items(list(ex.fetch(None)))
    poisoned = [i for i in got if isinstance(i, Poisoned)]
    assert len(poisoned) == 6
    errors = [p.error for p in poisoned]
    assert errors[0] == "hash record is not an object"
    assert errors[1] == "hash record has no hashValue"
    assert errors[2].startswith("invalid ImagePDQ hashValue")
    assert errors[3] == "hash record has no hashStatus"
    assert errors[4] == "unknown hashStatus 'Frozen'"
    assert errors[5] == "lastModtimestamp is not a number"
    assert all(p.raw for p in poisoned)
    assert [i.key for i in got if isinstance(i, Upsert)] == [good]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "invalid JSON"),
        ([1, 2], "non-object"),
        ({"hashRecords": {"a": 1}, "hasMoreRecords": False}, "hashRecords is not a list"),
        ({"hashRecords": [], "hasMoreRecords": True}, "without a nextPageToken"),
    ],
)
def test_unreadable_page_is_poisoned_page(fake: FakeStopNCII, body: Any, message: str) -> None:
    fake.add()
    fake.fail_next("FetchHashes", 200, body)
    with make(fake) as ex, pytest.raises(PoisonedPage) as err:
        list(ex.fetch(None))
    assert message in str(err.value)
    assert err.value.skip_to is None  # the next token is inside the bad page: no sound skip
    assert err.value.raw


#: A FetchHashes answer nested far deeper than any JSON decoder recurses (no content at all).
DEEP = b'{"hashRecords": [' + b"[" * 200_000 + b"]" * 200_000 + b'], "hasMoreRecords": false}'


def test_deeply_nested_json_is_a_poisoned_page(fake: FakeStopNCII) -> None:
    fake.fail_next("FetchHashes", 200, DEEP)
    with make(fake) as ex, pytest.raises(PoisonedPage, match="too deeply nested") as err:
        list(ex.fetch(None))
    assert err.value.raw and len(err.value.raw) <= 2000


@pytest.mark.parametrize("content_length", [True, False])
def test_oversized_page_is_a_poisoned_page(fake: FakeStopNCII, content_length: bool) -> None:
    """Read in a stream up to max_page_bytes, whether or not the server says how big it is."""
    for _ in range(20):  # ~6 KB of records
        fake.add()
    fake.no_content_length = not content_length
    with make(fake, max_page_bytes=1024) as ex, pytest.raises(PoisonedPage) as err:
        list(ex.fetch(None))
    assert "more than 1024 bytes (max_page_bytes)" in str(err.value)
    assert err.value.skip_to is None and 0 < len(err.value.raw) <= 1024
    with make(fake) as ex:  # the default (64 MiB) takes it
        assert len(upserted(list(ex.fetch(None)))) == 20


def test_page_token_that_does_not_advance_is_poison(fake: FakeStopNCII) -> None:
    """A server answering a token with the same token again would be paged forever."""
    for _ in range(5):
        fake.add()
    fake.stuck_tokens = True
    with make(fake, page_size=2) as ex, pytest.raises(PoisonedPage, match="does not advance"):
        for _ in islice(ex.fetch(None), 10):
            pass
    assert len(fake.requests) == 2  # the first page, then the page that gave the token back


def test_server_errors_are_transient_with_retry_after(fake: FakeStopNCII) -> None:
    fake.add()
    fake.fail_next("FetchHashes", 500)
    fake.fail_next("FetchHashes", 429, {}, {"Retry-After": "7"})
    fake.fail_next("FetchHashes", 503, {}, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    with make(fake) as ex:
        with pytest.raises(TransientError) as err:
            list(ex.fetch(None))
        assert err.value.retry_after is None and "HTTP 500" in str(err.value)
        with pytest.raises(TransientError) as err:
            list(ex.fetch(None))
        assert err.value.retry_after == 7
        with pytest.raises(TransientError) as err:
            list(ex.fetch(None))
        assert err.value.retry_after == 0  # a date in the past: retry now
        assert len(upserted(list(ex.fetch(None)))) == 1  # and then it works


def test_bad_keys_are_permanent_and_never_quoted(fake: FakeStopNCII) -> None:
    cfg = StopNCIIConfig(base_url=fake.base_url)
    wrong = "wrong-" + "d4" * 10
    creds = StopNCIICredentials(subscription_key=wrong, fetch_function_key=FETCH_KEY)
    with StopNCIIExchange(cfg, creds) as ex, pytest.raises(PermanentError) as err:
        list(ex.fetch(None))
    assert "HTTP 401" in str(err.value)
    assert wrong not in str(err.value) and FETCH_KEY not in str(err.value)
    fake.fail_next("FetchHashes", 403)
    with make(fake) as ex, pytest.raises(PermanentError):
        list(ex.fetch(None))


def test_connection_refused_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = StopNCIIConfig(base_url=f"http://127.0.0.1:{port}/v1")
    creds = StopNCIICredentials(subscription_key=SUBSCRIPTION_KEY, fetch_function_key=FETCH_KEY)
    with StopNCIIExchange(cfg, creds) as ex, pytest.raises(TransientError) as err:
        list(ex.fetch(None))
    assert SUBSCRIPTION_KEY not in str(err.value)


def test_expired_page_token_restarts_the_pass(fake: FakeStopNCII) -> None:
    values = [fake.add() for _ in range(4)]
    with make(fake, page_size=2) as ex:
        first = next(iter(ex.fetch(None)))
        fake.expire_tokens()
        rest = list(ex.fetch(first.checkpoint))
    # The pass starts over from the same start time: repeats are idempotent upserts.
    assert upserted(rest) == values
    assert rest[-1].checkpoint["page_token"] is None


def test_old_checkpointed_token_is_not_used(fake: FakeStopNCII) -> None:
    values = [fake.add() for _ in range(4)]
    with make(fake, page_size=2) as ex:
        first = next(iter(ex.fetch(None)))
        fake.tick(7200)  # beyond token_max_age_seconds (3600)
        before = len(fake.requests)
        rest = list(ex.fetch(first.checkpoint))
    assert upserted(rest) == values
    assert "nextPageToken" not in fake.requests[before][1]


@pytest.mark.parametrize(
    ("verdict", "value"), [(Verdict.POSITIVE, "Blocked"), (Verdict.NEGATIVE, "NotBlocked")]
)
def test_feedback_body(fake: FakeStopNCII, verdict: Verdict, value: str) -> None:
    pdq = fake.add()
    with make(fake, feedback_tags=("bastion",)) as ex:
        ex.send_feedback(FeedbackItem(pdq, verdict, "pdq", pdq, reason="false_positive"))
        ex.send_feedback(FeedbackItem(pdq, verdict, "pdq", pdq, reason="free text from a person"))
    assert fake.feedback == [
        {"hashValue": pdq, "feedbackValue": value, "tags": ["bastion", "false_positive"]},
        {"hashValue": pdq, "feedbackValue": value, "tags": ["bastion"]},
    ]
    method, path, headers = fake.requests[-1]
    assert (method, path) == ("POST", "/v1/SubmitFeedback")
    assert headers["x-functions-key"] == FEEDBACK_KEY
    assert headers["ocp-apim-subscription-key"] == SUBSCRIPTION_KEY


def test_feedback_errors(fake: FakeStopNCII) -> None:
    md5 = random_md5()
    item = FeedbackItem(md5, Verdict.NEGATIVE, "md5", md5)
    with make(fake, feedback_key=False) as ex, pytest.raises(FeedbackUnsupported):
        ex.send_feedback(item)
    with make(fake) as ex:
        fake.fail_next("SubmitFeedback", 502)
        with pytest.raises(TransientError):
            ex.send_feedback(item)
        fake.fail_next("SubmitFeedback", 401)
        with pytest.raises(PermanentError) as err:
            ex.send_feedback(item)
        assert not any(secret in str(err.value) for secret in SECRETS)
        fake.fail_next("SubmitFeedback", 400, {"message": "bad"})
        with pytest.raises(PermanentError):
            ex.send_feedback(item)
        ex.send_feedback(item)
    assert fake.feedback == [{"hashValue": md5, "feedbackValue": "NotBlocked", "tags": []}]


def test_config_and_credentials_validation() -> None:
    with pytest.raises(ValidationError):
        StopNCIIConfig(unknown=1)
    with pytest.raises(ValidationError):
        StopNCIIConfig(base_url="ftp://example.org")
    with pytest.raises(ValidationError):
        StopNCIIConfig(max_page_bytes=100)


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://api.stopncii.org/v1", True),
        ("http://api.stopncii.org/v1", False),  # the keys would cross the network in clear
        ("http://10.0.0.8:8080/v1", False),
        ("http://127.0.0.1:8080/v1", True),
        ("http://localhost:8080/v1", True),
        ("http://[::1]:8080/v1", True),
    ],
)
def test_plain_http_only_on_loopback(url: str, ok: bool) -> None:
    if ok:
        assert StopNCIIConfig(base_url=url).base_url == url
    else:
        with pytest.raises(ValidationError, match="https"):
            StopNCIIConfig(base_url=url)
    with pytest.raises(ValidationError):
        StopNCIIConfig(feedback_tags=("has space",))
    with pytest.raises(ValidationError):
        StopNCIICredentials(subscription_key="x")  # no fetch key
    creds = StopNCIICredentials(subscription_key="s3cret-value", fetch_function_key="f")
    assert "s3cret" not in repr(creds) and "s3cret" not in str(creds)
    assert StopNCIIConfig(base_url="https://example.org/v1/").base_url == "https://example.org/v1"


# -- whole runs through the engine (ExchangeStore.sync) on SQLite and PostgreSQL -----------------


def test_sync_through_engine_withdrawal_disables_and_feedback_goes_back(
    fake: FakeStopNCII, store: Store
) -> None:
    from bastion.exchanges.store import ExchangeStore

    xs = ExchangeStore(store, MasterKey.generate(), Settings())
    xs.add(
        "sncii",
        "stopncii",
        config={"base_url": fake.base_url, "overlap_seconds": 0, "page_size": 2},
        credentials={
            "subscription_key": SUBSCRIPTION_KEY,
            "fetch_function_key": FETCH_KEY,
            "feedback_function_key": FEEDBACK_KEY,
        },
        labels=["ncii"],
    )

    def sync() -> Any:
        ex = xs.open("sncii")
        ex.clock = lambda: fake.clock  # type: ignore[attr-defined]
        with ex:
            return xs.sync("sncii", exchange=ex)

    values = [fake.add() for _ in range(3)] + [fake.add(signal_type="VideoMD5")]
    fake.extra_records = [
        {"hashValue": "not-hex", "signalType": "ImagePDQ", "hashStatus": "Active"}
    ]
    fake.tick(5)
    result = sync()
    assert result.error is None and result.complete
    assert (result.pages, result.added, result.poisoned) == (2, 4, 1)
    entries = {e.external_id: e for e in store.list_entries("sncii")}
    assert set(entries) == set(values)
    assert all(
        e.enabled and e.source == "StopNCII" and "ncii" in e.labels for e in entries.values()
    )
    assert len(xs.errors("sncii")) == 1

    # A withdrawal upstream disables the entry here (the default on_delete), with the reason.
    fake.extra_records = []
    fake.tick(5)
    fake.set_status(values[0], "Withdrawn")
    result = sync()
    assert result.error is None and result.disabled == 1
    gone = next(e for e in store.list_entries("sncii") if e.external_id == values[0])
    assert not gone.enabled and gone.disabled_reason == "upstream: StopNCII hash withdrawn"
    assert xs.get("sncii").checkpoint["page_token"] is None

    # A reviewer's "not abusive" on a match goes back as NotBlocked.
    kept = next(e for e in store.list_entries("sncii") if e.external_id == values[1])
    with store.engine.begin() as conn:
        queued = xs.queue_feedback_in(
            conn, [("sncii", kept.id)], Verdict.NEGATIVE, case_id=7, reason="false_positive"
        )
    assert queued  # (the count itself is the engine's business)
    assert xs.send_due_feedback("test")["sent"] == 1
    assert fake.feedback == [
        {"hashValue": values[1], "feedbackValue": "NotBlocked", "tags": ["false_positive"]}
    ]


def test_deeply_nested_page_through_the_engine_is_a_poisoned_page(
    fake: FakeStopNCII, store: Store
) -> None:
    """Not an unexpected (transient) error: each attempt is recorded as a poisoned page and
    counted; with no sound place to skip to, the exchange stalls for a person to look."""
    from bastion.exchanges.store import ExchangeStore

    xs = ExchangeStore(store, MasterKey.generate(), Settings(exchange_poison_attempts=3))
    xs.add(
        "sncii",
        "stopncii",
        config={"base_url": fake.base_url},
        credentials={"subscription_key": SUBSCRIPTION_KEY, "fetch_function_key": FETCH_KEY},
    )
    fake.add()
    for _ in range(3):
        fake.fail_next("FetchHashes", 200, DEEP)
    for attempt, state in ((1, "error"), (2, "error"), (3, "stalled")):
        result = xs.sync("sncii")
        info = xs.get("sncii")
        assert result.error and "too deeply nested" in result.error
        assert (info.state, info.poison_attempts) == (state, attempt)
    errors = xs.errors("sncii")
    assert [e.kind for e in errors] == ["poisoned_page"] * 3
    assert store.list_entries("sncii") == []
