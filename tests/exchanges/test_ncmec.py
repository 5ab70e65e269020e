"""The NCMEC Hash Sharing exchange against a fake NCMEC API on a loopback port.

Every hash here is synthetic random hex; no content of any kind is involved.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

import pytest
from pydantic import ValidationError

from bastion.config import Settings
from bastion.crypto import MasterKey
from bastion.db import Store
from bastion.exchanges import (
    ExchangeContext,
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
from bastion.exchanges.ncmec import ENVIRONMENTS, NcmecConfig, NcmecExchange
from bastion.exchanges.store import ExchangeStore
from bastion.signals.base import SignalType
from tests.exchanges.fake_ncmec import MEMBER_ID, PASSWORD, REASONS, USER, FakeNcmec, rand_hex
from tests.fixtures.clock import Clock

T0 = datetime(2024, 1, 1, tzinfo=UTC)
NOW = datetime(2024, 2, 1, tzinfo=UTC)
DAY = 86400


@pytest.fixture
def fake() -> Iterator[FakeNcmec]:
    server = FakeNcmec().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


def make(
    fake: FakeNcmec,
    clock: Clock,
    *,
    password: str = PASSWORD,
    timeout: float = 5.0,
    **config: Any,
) -> NcmecExchange:
    cfg = {"url": fake.url, "start": "2023-12-31T00:00:00Z", **config}
    return NcmecExchange(
        NcmecConfig.model_validate(cfg),
        {"username": USER, "password": password},
        ExchangeContext(timeout=timeout),
        clock=clock,
    )


def run(ex: NcmecExchange, checkpoint: dict | None = None) -> list[Page]:
    with ex:
        return list(ex.fetch(checkpoint))


def items(pages: list[Page], kind: type) -> list:
    return [i for p in pages for i in p.items if isinstance(i, kind)]


def seed(fake: FakeNcmec, n: int, *, start: datetime = T0, step: float = 3600) -> list:
    return [
        fake.add(start + timedelta(seconds=step * i), media="image" if i % 3 else "video")
        for i in range(n)
    ]


# -- registration and configuration ---------------------------------------------------------------


def test_registered_as_ncmec() -> None:
    assert exchange_type("ncmec") is NcmecExchange
    assert NcmecExchange.feedback == {Verdict.POSITIVE, Verdict.NEGATIVE}


def test_environment_maps_to_documented_url() -> None:
    assert NcmecConfig(environment="industry").base_url == "https://report.cybertip.org/hashsharing"
    assert NcmecConfig(environment="test-industry").base_url == ENVIRONMENTS["test-industry"]
    assert NcmecConfig(environment="ngo").base_labels == ("csam",)
    assert NcmecConfig(environment="industry-exploitative").base_labels == ("exploitative",)


@pytest.mark.parametrize(
    "config, message",
    [
        ({}, "exactly one of environment or url"),
        ({"environment": "industry", "url": "https://x.example"}, "exactly one"),
        ({"url": "http://ncmec.example/hashsharing"}, "https"),
        ({"environment": "moon"}, "environment"),
        ({"environment": "industry", "colour": "red"}, "colour"),
        ({"environment": "industry", "negative_reasons": {"*": "nope"}}, "GUID"),
        ({"environment": "industry", "labels": ["a;b"]}, "may not contain"),
        ({"environment": "industry", "signal_types": ["sha1"]}, "signal_types"),
        ({"environment": "industry", "classification_prefix": "a;"}, "classification_prefix"),
    ],
)
def test_config_rejects(config: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        NcmecConfig.model_validate(config)


def test_credentials_are_not_printed() -> None:
    creds = NcmecExchange.Credentials.model_validate({"username": USER, "password": PASSWORD})
    assert PASSWORD not in repr(creds) and PASSWORD not in str(creds)


# -- status ---------------------------------------------------------------------------------------


def test_status_names_the_member(fake: FakeNcmec, clock: Clock) -> None:
    with make(fake, clock) as ex:
        status = ex.status()
    assert (status.member_id, status.username) == (MEMBER_ID, USER)


# -- full backfill --------------------------------------------------------------------------------


def test_backfill_across_windows_and_pages(fake: FakeNcmec, clock: Clock) -> None:
    records = seed(fake, 30, step=6 * 3600)  # 7.5 days of entries, 4 per day
    fake.records[records[0].key].fingerprints["netclean"] = rand_hex(64)
    pages = run(make(fake, clock, window_seconds=3 * DAY, page_size=4))

    upserts = items(pages, Upsert)
    assert sorted(u.key for u in upserts) == sorted(r.key for r in records)
    assert len(upserts) == len(records)  # nothing delivered twice
    by_key = {u.key: u for u in upserts}
    for rec in records:
        entries = by_key[rec.key].entries
        want = {SignalType.MD5: rec.fingerprints["md5"]}
        if rec.media == "image":
            want[SignalType.PDQ] = rec.fingerprints["pdq"]
        assert {e.signal_type: e.value for e in entries} == want
        for e in entries:
            assert e.source == "NCMEC"
            assert e.list_name == "127.0.0.1"
            assert e.added_at == rec.timestamp
            assert e.labels == ["csam", "ncmec:A1"]
            assert e.external_id == rec.key
            assert e.metadata["ncmec_id"] == rec.id
            assert e.metadata["member_id"] == rec.member_id
            assert e.metadata["media"] == rec.media
            assert e.metadata["fingerprint"] == e.signal_type.value.upper()

    # Several windows, several pages each; from/to always whole windows.
    queries = fake.entries_requests()
    windows = {(q["from"][0], q["to"][0]) for q in queries}
    assert len(windows) >= 3
    assert any("start" in q for q in queries)  # paged with NCMEC's next URLs
    # Skipped fingerprint types are counted, not stored.
    final = pages[-1].checkpoint
    assert final["skipped"]["sha1"] == 30 and final["skipped"]["pdna"] == 30
    assert final["skipped"]["netclean"] == 1
    assert final["from"] == "2024-01-31T23:59:55Z"  # now minus settle time
    assert "next" not in final and "to" not in final
    assert pages[-1].progress is not None and pages[-1].progress[0] == pages[-1].progress[1]


def test_checkpoint_advances_only_when_a_window_is_fully_paged(
    fake: FakeNcmec, clock: Clock
) -> None:
    seed(fake, 12, step=600)  # all within one window
    pages = run(make(fake, clock, window_seconds=2 * DAY, page_size=5))
    first_window = [p for p in pages if p.items]
    assert len(first_window) == 3  # 5 + 5 + 2
    for page in first_window[:-1]:
        assert page.checkpoint["from"] == "2023-12-31T00:00:00Z"
        assert page.checkpoint["to"] == "2024-01-02T00:00:00Z"
        assert page.checkpoint["next"].startswith("/v2/entries?")
    assert first_window[-1].checkpoint["from"] == "2024-01-02T00:00:00Z"
    assert "next" not in first_window[-1].checkpoint
    froms = [p.checkpoint["from"] for p in pages]
    assert froms == sorted(froms)


def test_resume_mid_window_uses_the_stored_paging_url(fake: FakeNcmec, clock: Clock) -> None:
    records = seed(fake, 12, step=600)
    ex = make(fake, clock, window_seconds=2 * DAY, page_size=5)
    with ex:
        it = ex.fetch(None)
        first = next(it)
    assert "next" in first.checkpoint
    fake.requests.clear()
    rest = run(make(fake, clock, window_seconds=2 * DAY, page_size=5), first.checkpoint)
    resumed = fake.entries_requests()[0]
    assert resumed["start"] == ["6"]  # continued where the first page ended
    keys = [u.key for u in items([first], Upsert) + items(rest, Upsert)]
    assert sorted(keys) == sorted(r.key for r in records)


def test_a_stale_paging_url_restarts_its_window(fake: FakeNcmec, clock: Clock) -> None:
    records = seed(fake, 12, step=600)
    with make(fake, clock, window_seconds=2 * DAY, page_size=5) as ex:
        first = next(ex.fetch(None))
    clock.now += timedelta(hours=13)  # older than paging_url_max_age (12 h)
    fake.requests.clear()
    rest = run(make(fake, clock, window_seconds=2 * DAY, page_size=5), first.checkpoint)
    assert "start" not in fake.entries_requests()[0]
    assert fake.entries_requests()[0]["from"] == ["2023-12-31T00:00:00Z"]
    assert sorted({u.key for u in items(rest, Upsert)}) == sorted(r.key for r in records)


def test_a_refused_stored_paging_url_restarts_its_window(fake: FakeNcmec, clock: Clock) -> None:
    records = seed(fake, 12, step=600)
    with make(fake, clock, window_seconds=2 * DAY, page_size=5) as ex:
        first = next(ex.fetch(None))
    fake.fault("404", when=lambda q: "start" in q)
    rest = run(make(fake, clock, window_seconds=2 * DAY, page_size=5), first.checkpoint)
    assert sorted({u.key for u in items(rest, Upsert)}) == sorted(r.key for r in records)


def test_windows_shrink_when_they_hold_too_many_entries(fake: FakeNcmec, clock: Clock) -> None:
    records = seed(fake, 60, step=1800)  # 30 hours of entries
    pages = run(make(fake, clock, max_window_entries=10, page_size=4))
    keys = [u.key for u in items(pages, Upsert)]
    assert sorted(set(keys)) == sorted(r.key for r in records)
    windows = [(q["from"][0], q["to"][0]) for q in fake.entries_requests() if "start" not in q]
    first_from, first_to = windows[0]
    assert first_to == "2024-01-31T23:59:55Z"  # the first probe covers everything...
    assert any(w[1] < first_to and w[0] == first_from for w in windows[1:])  # ...then shrinks
    assert len(keys) == len(records)  # probes that were shrunk yielded nothing
    # Every window that was paged through (NCMEC's paging URL names its size) held at most
    # the limit.
    paged = [int(q["max"][0]) for q in fake.entries_requests() if "start" in q]
    assert paged and max(paged) <= 10


def test_a_crowded_second_is_paged_through(fake: FakeNcmec, clock: Clock) -> None:
    burst = T0 + timedelta(hours=5)
    records = [fake.add(burst) for _ in range(9)]
    pages = run(make(fake, clock, max_window_entries=2, page_size=2))
    assert sorted(u.key for u in items(pages, Upsert)) == sorted(r.key for r in records)
    one_second = [q for q in fake.entries_requests() if q["to"][0] == "2024-01-01T05:00:00Z"]
    assert any("start" in q for q in one_second)


# -- incremental sync and deletions ---------------------------------------------------------------


def test_incremental_sync_brings_only_changes(fake: FakeNcmec, clock: Clock) -> None:
    records = seed(fake, 10)
    pages = run(make(fake, clock, window_seconds=5 * DAY))
    checkpoint = pages[-1].checkpoint
    assert len(items(pages, Upsert)) == 10

    # Nothing changed: nothing to deliver (but the checkpoint moves with the clock).
    clock.now += timedelta(hours=1)
    again = run(make(fake, clock, window_seconds=5 * DAY), checkpoint)
    assert items(again, Upsert) == [] and items(again, Removal) == []
    checkpoint = again[-1].checkpoint

    later = clock.now + timedelta(minutes=10)
    new = fake.add(later)
    fake.update(records[1].key, later, classification="B2")
    fake.delete(records[2].key, later)
    clock.now += timedelta(hours=1)
    delta = run(make(fake, clock, window_seconds=5 * DAY), checkpoint)
    upserts = {u.key: u for u in items(delta, Upsert)}
    assert set(upserts) == {new.key, records[1].key}
    assert all(e.labels == ["csam", "ncmec:B2"] for e in upserts[records[1].key].entries)
    removals = items(delta, Removal)
    assert [r.key for r in removals] == [records[2].key]
    assert "NCMEC" in removals[0].reason


def test_only_members_filters_entries(fake: FakeNcmec, clock: Clock) -> None:
    mine = fake.add(T0, member_id=5)
    fake.add(T0, member_id=6)
    pages = run(make(fake, clock, only_members=[5]))
    assert [u.key for u in items(pages, Upsert)] == [mine.key]
    assert pages[-1].checkpoint["skipped"]["other_members"] == 1


def test_labels_and_signal_types_follow_config(fake: FakeNcmec, clock: Clock) -> None:
    rec = fake.add(T0, classification="A2")
    pages = run(
        make(
            fake,
            clock,
            signal_types=["pdq"],
            labels=["csam", "ncmec"],
            classification_labels={"A2": ["severity:2"]},
            list_name="NCMEC industry",
        )
    )
    (upsert,) = items(pages, Upsert)
    (entry,) = upsert.entries
    assert entry.signal_type is SignalType.PDQ and entry.value == rec.fingerprints["pdq"]
    assert entry.labels == ["csam", "ncmec", "ncmec:A2", "severity:2"]
    assert entry.list_name == "NCMEC industry"
    assert pages[-1].checkpoint["skipped"]["md5"] == 1


def test_linked_fingerprints_are_skipped(fake: FakeNcmec, clock: Clock) -> None:
    md5 = rand_hex(32)
    fake.add(
        T0,
        media="video",
        fingerprints={"md5": md5, "tmk-pdqf": "href:/v2/entries/1/fingerprints/TMK_PDQF"},
    )
    pages = run(make(fake, clock))
    (upsert,) = items(pages, Upsert)
    assert [e.value for e in upsert.entries] == [md5]
    assert pages[-1].checkpoint["skipped"]["tmk-pdqf"] == 1


# -- malformed input ------------------------------------------------------------------------------


def test_malformed_entries_are_poisoned_and_the_rest_kept(fake: FakeNcmec, clock: Clock) -> None:
    good = seed(fake, 4)
    bad_md5 = fake.add(T0, fingerprints={"md5": "abc123", "pdq": rand_hex(64)})
    fake.add_raw(T0, "<image><timestamp>2024-01-01T01:00:00Z</timestamp><id>x1</id></image>")
    fake.add_raw(T0, '<image><member id="9">M</member><fingerprints/></image>')
    fake.add_raw(
        T0,
        '<image><member id="9">M</member><id>x2</id><timestamp>yesterday</timestamp>'
        f"<fingerprints><md5>{rand_hex(32)}</md5></fingerprints></image>",
    )
    fake.add_raw(T0, '<audio><member id="9">M</member><id>x3</id></audio>')
    fake.add_raw(
        T0,
        '<image><member id="9">M</member><id>x4</id><classification>'
        + "C" * 80
        + f"</classification><fingerprints><md5>{rand_hex(32)}</md5></fingerprints></image>",
    )
    pages = run(make(fake, clock))
    assert sorted(u.key for u in items(pages, Upsert)) == sorted(r.key for r in good)
    poisoned = items(pages, Poisoned)
    assert len(poisoned) == 6
    errors = " | ".join(p.error for p in poisoned)
    assert "md5 value must be 32 hexadecimal" in errors
    assert "no valid <member" in errors
    assert "invalid <id>" in errors
    assert "timestamp" in errors
    assert "unknown entry element <audio>" in errors
    assert "longer than 64" in errors
    assert {p.key for p in poisoned} >= {bad_md5.key, "9-x2", "9-x4"}
    assert all(p.raw for p in poisoned)


@pytest.mark.parametrize("mode", ["badxml", "doctype", "doctype16", "deep", "wrongroot", "badnext"])
def test_malformed_first_page_narrows_the_window(fake: FakeNcmec, clock: Clock, mode: str) -> None:
    seed(fake, 3)
    fake.fault(mode)
    ex = make(fake, clock, window_seconds=4 * DAY, page_size=1 if mode == "badnext" else None)
    with pytest.raises(PoisonedPage) as info:
        run(ex)
    skip_to = info.value.skip_to
    assert skip_to == {"from": "2023-12-31T00:00:00Z", "window": 4 * DAY // 16}
    assert "NCMEC entries" in str(info.value)


def test_malformed_page_of_a_minimal_window_skips_to_the_next(
    fake: FakeNcmec, clock: Clock
) -> None:
    seed(fake, 3)
    fake.fault("badxml")
    ex = make(fake, clock, window_seconds=3600, min_window_seconds=3600)
    with pytest.raises(PoisonedPage) as info:
        run(ex)
    assert info.value.skip_to is not None
    assert info.value.skip_to["from"] == "2023-12-31T01:00:00Z"  # the next window
    assert info.value.raw.startswith("<?xml")


def test_malformed_page_mid_window_skips_one_page(fake: FakeNcmec, clock: Clock) -> None:
    records = seed(fake, 9, step=600)
    fake.fault("badxml", when=lambda q: q.get("start") == ["4"])
    ex = make(fake, clock, window_seconds=2 * DAY, page_size=3)
    got: list[Page] = []
    with pytest.raises(PoisonedPage) as info, ex:
        got.extend(ex.fetch(None))
    skip_to = info.value.skip_to
    assert skip_to is not None and "start=7" in skip_to["next"]
    assert skip_to["from"] == "2023-12-31T00:00:00Z" and skip_to["to"] == "2024-01-02T00:00:00Z"
    rest = run(make(fake, clock, window_seconds=2 * DAY, page_size=3), skip_to)
    keys = {u.key for u in items(got + rest, Upsert)}
    assert len(keys) == 6  # one page of three lost, the rest delivered
    assert keys < {r.key for r in records}


@pytest.mark.parametrize("mode", ["doctype", "doctype16"])
def test_doctype_is_refused_not_expanded(fake: FakeNcmec, clock: Clock, mode: str) -> None:
    """UTF-16 hides ``<!DOCTYPE`` from a byte search; defusedxml refuses it in any encoding."""
    fake.fault(mode)
    with pytest.raises(PoisonedPage, match="DTD"):
        run(make(fake, clock))


def test_deeply_nested_page_is_a_poisoned_page(fake: FakeNcmec, clock: Clock) -> None:
    """An entry nested 100,000 deep used to overflow the stack while rendering its excerpt."""
    fake.fault("deep")
    with pytest.raises(PoisonedPage, match="deeper than 32 levels") as info:
        run(make(fake, clock))
    assert info.value.skip_to is not None and info.value.raw


@pytest.mark.parametrize("mode", ["stucknext", "backnext"])
def test_paging_url_that_does_not_advance_is_poison(
    fake: FakeNcmec, clock: Clock, mode: str
) -> None:
    """A next URL equal to the one just fetched, or to one already followed in this window,
    would page forever."""
    seed(fake, 9, step=600)
    for _ in range(10):
        fake.fault(mode, when=lambda q: q.get("start") == ["7"])
    with (
        make(fake, clock, window_seconds=2 * DAY, page_size=3) as ex,
        pytest.raises(PoisonedPage, match="does not advance") as info,
    ):
        for _ in islice(ex.fetch(None), 20):
            pass
    assert info.value.skip_to is not None


# -- HTTP errors ----------------------------------------------------------------------------------


def test_server_error_is_transient_and_retry_works(fake: FakeNcmec, clock: Clock) -> None:
    rec = fake.add(T0)
    fake.fault("500")
    with pytest.raises(TransientError, match="HTTP 500"):
        run(make(fake, clock))
    pages = run(make(fake, clock))
    assert [u.key for u in items(pages, Upsert)] == [rec.key]


def test_rate_limit_carries_retry_after(fake: FakeNcmec, clock: Clock) -> None:
    fake.fault("429")
    with pytest.raises(TransientError) as info:
        run(make(fake, clock))
    assert info.value.retry_after == 7


def test_timeout_is_transient(fake: FakeNcmec, clock: Clock) -> None:
    fake.timeout_seconds = 1.5
    fake.fault("timeout")
    with pytest.raises(TransientError, match="timed out"):
        run(make(fake, clock, timeout=0.3))


def test_unreachable_server_is_transient(clock: Clock) -> None:
    ex = NcmecExchange(
        NcmecConfig(url="http://127.0.0.1:9/hashsharing"),
        {"username": USER, "password": PASSWORD},
        ExchangeContext(timeout=2),
        clock=clock,
    )
    with pytest.raises(TransientError, match="cannot reach"):
        run(ex)


@pytest.mark.parametrize("how", ["wrong-password", "forbidden"])
def test_auth_failure_is_permanent_and_secret_free(fake: FakeNcmec, clock: Clock, how: str) -> None:
    password = "hunter2-wrong" if how == "wrong-password" else PASSWORD
    if how == "forbidden":
        fake.fault("403")
    with pytest.raises(PermanentError) as info:
        run(make(fake, clock, password=password))
    text = str(info.value) + repr(info.value)
    assert ("HTTP 401" if how == "wrong-password" else "HTTP 403") in text
    for secret in (USER, PASSWORD, "hunter2-wrong"):
        assert secret not in text


def test_missing_credentials_are_permanent(fake: FakeNcmec, clock: Clock) -> None:
    ex = NcmecExchange(NcmecConfig(url=fake.url), None, ExchangeContext(), clock=clock)
    with pytest.raises(PermanentError, match="credentials"):
        run(ex)


def test_bad_checkpoint_is_permanent(fake: FakeNcmec, clock: Clock) -> None:
    with pytest.raises(PermanentError, match="not an NCMEC checkpoint"):
        run(make(fake, clock), {"from": "soon"})


# -- feedback -------------------------------------------------------------------------------------


def _feedback_item(upsert: Upsert, st: SignalType, verdict: Verdict, reason: str = "") -> Any:
    entry = next(e for e in upsert.entries if e.signal_type is st)
    return FeedbackItem(
        key=upsert.key,
        verdict=verdict,
        signal_type=st.value,
        value=entry.value,
        reason=reason,
        metadata=entry.metadata,
    )


@pytest.fixture
def synced(fake: FakeNcmec, clock: Clock) -> tuple[Upsert, Any]:
    rec = fake.add(T0, member_id=31)
    (upsert,) = items(run(make(fake, clock)), Upsert)
    return upsert, rec


def test_positive_feedback_is_an_affirmative_vote(
    fake: FakeNcmec, clock: Clock, synced: tuple[Upsert, Any]
) -> None:
    upsert, rec = synced
    with make(fake, clock) as ex:
        ex.send_feedback(_feedback_item(upsert, SignalType.PDQ, Verdict.POSITIVE))
    (call,) = fake.feedback
    assert (call.member, call.entry_id, call.fp_type, call.vote) == (
        "31",
        rec.id,
        "PDQ",
        "affirmative",
    )
    assert "xml" in call.content_type
    method, path, _ = fake.requests[-1]
    assert (method, path) == ("PUT", f"/hashsharing/v2/entries/31/{rec.id}/PDQ/feedback")


def test_negative_feedback_uses_the_configured_reason(
    fake: FakeNcmec, clock: Clock, synced: tuple[Upsert, Any]
) -> None:
    upsert, _ = synced
    hash_collision = REASONS["PDQ"][1][0]
    with make(fake, clock, negative_reasons={"pdq:collision": hash_collision}) as ex:
        ex.send_feedback(_feedback_item(upsert, SignalType.PDQ, Verdict.NEGATIVE, "collision"))
    (call,) = fake.feedback
    assert (call.vote, call.reasons) == ("negative", [hash_collision])


def test_negative_feedback_takes_the_only_reason_offered(
    fake: FakeNcmec, clock: Clock, synced: tuple[Upsert, Any]
) -> None:
    upsert, _ = synced
    with make(fake, clock) as ex:
        ex.send_feedback(_feedback_item(upsert, SignalType.MD5, Verdict.NEGATIVE))
    (call,) = fake.feedback
    assert (call.fp_type, call.reasons) == ("MD5", [REASONS["MD5"][0][0]])
    assert any(p.endswith("/v2/feedback/MD5/reasons") for _, p, _ in fake.requests)


def test_negative_feedback_needs_a_reason_when_several_exist(
    fake: FakeNcmec, clock: Clock, synced: tuple[Upsert, Any]
) -> None:
    upsert, _ = synced
    with pytest.raises(PermanentError, match="negative_reasons") as info, make(fake, clock) as ex:
        ex.send_feedback(_feedback_item(upsert, SignalType.PDQ, Verdict.NEGATIVE))
    assert REASONS["PDQ"][1][0] in str(info.value)  # lists what NCMEC offers
    assert fake.feedback == []


def test_feedback_on_an_unknown_entry_is_permanent(fake: FakeNcmec, clock: Clock) -> None:
    item = FeedbackItem("31-nosuch", Verdict.POSITIVE, "md5", rand_hex(32))
    with pytest.raises(PermanentError, match="HTTP 404"), make(fake, clock) as ex:
        ex.send_feedback(item)


def test_feedback_on_unsupported_signals(fake: FakeNcmec, clock: Clock) -> None:
    item = FeedbackItem("31-abc", Verdict.POSITIVE, "url", "https://example.org/")
    with pytest.raises(FeedbackUnsupported), make(fake, clock) as ex:
        ex.send_feedback(item)
    bad_key = FeedbackItem("no member", Verdict.POSITIVE, "md5", rand_hex(32))
    with pytest.raises(PermanentError, match="member id"), make(fake, clock) as ex:
        ex.send_feedback(bad_key)


def test_feedback_server_error_is_transient(
    fake: FakeNcmec, clock: Clock, synced: tuple[Upsert, Any]
) -> None:
    upsert, _ = synced
    ex = make(fake, clock)
    fake.stop()
    with pytest.raises(TransientError, match="cannot reach"), ex:
        ex.send_feedback(_feedback_item(upsert, SignalType.MD5, Verdict.POSITIVE))


# -- whole runs through the exchange engine -------------------------------------------------------


@pytest.fixture
def xs(store: Store) -> ExchangeStore:
    return ExchangeStore(store, MasterKey.generate(), Settings())


def _opened(xs: ExchangeStore, name: str, clock: Clock) -> NcmecExchange:
    """The stored exchange (config, unsealed credentials, context) on the test's clock."""
    opened = xs.open(name)
    assert isinstance(opened, NcmecExchange)
    return NcmecExchange(opened.config, opened.credentials, opened.context, clock=clock)


def _sync(xs: ExchangeStore, name: str, clock: Clock) -> Any:
    with _opened(xs, name, clock) as ex:
        result = xs.sync(name, exchange=ex)
    assert result.error is None, result.error
    return result


def test_sync_into_a_bank_end_to_end(xs: ExchangeStore, fake: FakeNcmec, clock: Clock) -> None:
    records = seed(fake, 14, step=5400)
    fake.add_raw(T0, '<image><member id="9">M</member><fingerprints/></image>')  # no <id>
    xs.add(
        "ncmec-test",
        "ncmec",
        config={
            "url": fake.url,
            "start": "2023-12-31T00:00:00Z",
            "max_window_entries": 6,
            "page_size": 3,
            "list_name": "NCMEC test list",
        },
        credentials={"username": USER, "password": PASSWORD},
        labels=["csam"],
    )
    info = xs.get("ncmec-test")
    assert info.has_credentials and PASSWORD not in repr(info)

    first = _sync(xs, "ncmec-test", clock)
    signals = sum(2 if r.media == "image" else 1 for r in records)
    assert (first.added, first.poisoned) == (signals, 1)
    assert first.complete
    entries = xs.store.list_entries("ncmec-test", limit=1000)
    assert len(entries) == signals
    by_key: dict[str, list] = {}
    for e in entries:
        by_key.setdefault(e.external_id or "", []).append(e)
    assert set(by_key) == {r.key for r in records}
    for rec in records:
        for e in by_key[rec.key]:
            assert e.enabled and e.source == "NCMEC" and e.list_name == "NCMEC test list"
            assert e.labels == ["csam", "ncmec:A1"] and e.added_at == rec.timestamp
            assert e.metadata["ncmec_id"] == rec.id
            assert e.value == rec.fingerprints[e.signal_type.value]
    errors = xs.errors("ncmec-test")  # the entry without an id is recorded, not stored
    assert len(errors) == 1 and "invalid <id>" in errors[0].error

    # A second sync, nothing changed upstream: nothing repeated.
    clock.now += timedelta(hours=1)
    fake.requests.clear()
    second = _sync(xs, "ncmec-test", clock)
    assert (second.added, second.updated, second.removed, second.disabled) == (0, 0, 0, 0)
    assert all(q["from"][0] >= "2024-01-31T23:59:55Z" for q in fake.entries_requests())

    # NCMEC deletes one entry and reclassifies another: disabled, relabelled in place.
    later = clock.now + timedelta(minutes=5)
    gone, changed = records[3], records[4]
    fake.delete(gone.key, later)
    fake.update(changed.key, later, classification="B1")
    clock.now += timedelta(hours=1)
    third = _sync(xs, "ncmec-test", clock)
    assert third.added == 0 and third.disabled == len(by_key[gone.key])
    after = {e.id: e for e in xs.store.list_entries("ncmec-test", limit=1000)}
    for e in by_key[gone.key]:
        assert not after[e.id].enabled
        assert after[e.id].disabled_reason.startswith("upstream:")
    for e in by_key[changed.key]:
        assert after[e.id].enabled and after[e.id].labels == ["csam", "ncmec:B1"]
    assert sum(1 for e in after.values() if e.enabled) == signals - len(by_key[gone.key])

    # A reviewer's "not abusive" goes back to NCMEC as a negative vote.
    md5_entry = next(e for e in by_key[records[0].key] if e.signal_type is SignalType.MD5)
    with xs.store.write() as (conn, _rev):
        queued = xs.queue_feedback_in(
            conn, [("ncmec-test", md5_entry.id)], Verdict.NEGATIVE, case_id=1
        )
    assert queued == 1
    assert xs.send_due_feedback("test")["sent"] == 1
    (call,) = fake.feedback
    assert (call.member, call.entry_id, call.fp_type) == ("42", records[0].id, "MD5")
    assert (call.vote, call.reasons) == ("negative", [REASONS["MD5"][0][0]])


def test_deeply_nested_page_is_recorded_then_skipped_by_the_engine(
    xs: ExchangeStore, fake: FakeNcmec, clock: Clock
) -> None:
    """Through the engine: each attempt is a recorded poisoned page (not an unexpected error);
    after ``exchange_poison_attempts`` (3) the engine moves to ``skip_to`` and syncs on."""
    records = seed(fake, 6)
    xs.add(
        "ncmec-deep",
        "ncmec",
        config={"url": fake.url, "start": "2023-12-31T00:00:00Z"},
        credentials={"username": USER, "password": PASSWORD},
    )
    for _ in range(3):
        fake.fault("deep")
    for attempt in (1, 2):
        with _opened(xs, "ncmec-deep", clock) as ex:
            result = xs.sync("ncmec-deep", exchange=ex)
        info = xs.get("ncmec-deep")
        assert result.error and "deeper than 32 levels" in result.error
        assert info.state == "error" and info.poison_attempts == attempt
    with _opened(xs, "ncmec-deep", clock) as ex:
        result = xs.sync("ncmec-deep", exchange=ex)
    assert result.error is None and result.skipped_pages == 1 and result.complete
    info = xs.get("ncmec-deep")
    assert info.state == "idle" and info.poison_attempts == 0
    stored = {e.external_id for e in xs.store.list_entries("ncmec-deep", limit=1000)}
    assert stored == {r.key for r in records}  # the skip narrowed the window: nothing lost
    errors = xs.errors("ncmec-deep")
    assert [e.kind for e in errors] == ["poisoned_page"] * 3
    assert all("deeper than 32 levels" in e.error for e in errors)
