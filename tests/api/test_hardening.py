"""Limits and failure modes found in review: thresholds and match caps, body limits (also when
chunked), store failures as 503, the export scope on bulk reads, partial imports, key caching,
and the forwarded client address."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError
from starlette.requests import Request

from bastion.api.app import body_limit
from bastion.api.hma import MAX_COMPARE_FRAMES
from bastion.api.v1 import MAX_MATCHES
from bastion.banks.errors import ImportAborted
from bastion.banks.model import ImportReport, NewEntry
from bastion.config import Settings
from bastion.db import Store
from bastion.http_auth import KeyCache, Principal, client_address
from bastion.signals import VideoFrame, serialize_frames
from bastion.store import InvalidInput, StoreUnavailable
from tests.api.conftest import bearer

PROBLEM = "application/problem+json"
BRIDGE = "images/bridge-mods/aaa-orig.jpg"


@pytest.fixture
def settings() -> Settings:
    return Settings(
        index_poll_seconds=0.2,
        rate_limit_per_minute=0,
        max_upload_bytes=1 * 2**20,
        max_import_bytes=50_000,
        max_json_bytes=100_000,
    )


def _chunks(total: int, size: int = 8192) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        sent += n
        yield b"x" * n


def _flip(hexval: str, bit: int) -> str:
    return f"{int(hexval, 16) ^ (1 << bit):064x}"


def _near_bank(client: TestClient, admin: dict[str, str], n: int) -> str:
    """A bank of ``n`` PDQ hashes each one bit from a random base; returns the base."""
    base = f"{random.Random(7).getrandbits(256):064x}"
    assert client.post("/v1/banks", headers=admin, json={"name": "near"}).status_code == 201
    entries = [{"signal_type": "pdq", "value": _flip(base, i)} for i in range(n)]
    r = client.post("/v1/banks/near/entries", headers=admin, json={"entries": entries})
    assert r.status_code == 200 and r.json()["added"] == n
    return base


def _audit(store: Store, action: str) -> list[Any]:
    return [e for e in store.iter_audit() if e.action == action]


# -- 1. thresholds and match caps ---------------------------------------------------------------
def test_threshold_is_capped_at_64(client: TestClient, admin: dict[str, str]) -> None:
    sig = [{"type": "pdq", "value": "0" * 64}]
    r = client.post("/v1/lookup", headers=admin, json={"signals": sig, "threshold": 65})
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
    assert (
        client.post("/v1/lookup", headers=admin, json={"signals": sig, "threshold": 64}).status_code
        == 200
    )
    r = client.post(
        "/v1/scan", headers=admin, files={"file": ("a.txt", b"hi")}, data={"threshold": "256"}
    )
    assert r.status_code == 422 and "threshold" in r.json()["detail"]
    r = client.post("/v1/scan", headers=admin, json={"url": "http://x.invalid/", "threshold": 65})
    assert r.status_code == 422


@pytest.mark.parametrize("threshold", [31, 40])  # the event-loop path and the thread-pool path
def test_lookup_caps_matches_per_signal(
    client: TestClient, admin: dict[str, str], threshold: int
) -> None:
    base = _near_bank(client, admin, MAX_MATCHES + 30)
    r = client.post(
        "/v1/lookup",
        headers=admin,
        json={
            "signals": [{"type": "pdq", "value": base}, {"type": "md5", "value": "0" * 32}],
            "threshold": threshold,
        },
    )
    assert r.status_code == 200
    first, second = r.json()["results"]
    assert len(first["matches"]) == MAX_MATCHES and first["truncated"] is True
    distances = [m["distance"] for m in first["matches"]]
    assert distances == sorted(distances)
    assert second["matches"] == [] and not second.get("truncated")


def test_big_lookup_batch_runs_and_answers(client: TestClient, admin: dict[str, str]) -> None:
    base = _near_bank(client, admin, 3)
    sigs = [{"type": "pdq", "value": base}] + [{"type": "md5", "value": "1" * 32}] * 40
    r = client.post("/v1/lookup", headers=admin, json={"signals": sigs})
    results = r.json()["results"]
    assert len(results) == 41 and len(results[0]["matches"]) == 3


# -- 2. a scan that cannot be recorded -----------------------------------------------------------
def test_scan_record_failure_is_503(
    client: TestClient, admin: dict[str, str], api_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = b"exact bytes to match"
    client.post("/v1/banks", headers=admin, json={"name": "exact"})
    entry = {"signal_type": "md5", "value": hashlib.md5(data).hexdigest()}
    client.post("/v1/banks/exact/entries", headers=admin, json={"entries": [entry]})

    def broken(**_: Any) -> int:
        raise InvalidInput("matches: document is over the 16 MB limit")

    monkeypatch.setattr(api_store, "record_scan", broken)
    r = client.post("/v1/scan", headers=admin, files={"file": ("a.bin", data)})
    assert r.status_code == 503 and r.headers["content-type"] == PROBLEM


# -- 3. body limits -----------------------------------------------------------------------------
def test_body_limit_per_route(settings: Settings) -> None:
    upload = settings.max_upload_bytes + 64 * 1024
    assert body_limit(settings, "POST", "/v1/scan") == upload
    assert body_limit(settings, "POST", "/h/hash") == upload
    assert body_limit(settings, "POST", "/m/lookup") == upload
    assert body_limit(settings, "POST", "/c/bank/X/content") == upload
    assert body_limit(settings, "POST", "/v1/banks/b/import") == settings.max_import_bytes
    assert body_limit(settings, "POST", "/v1/lookup") == settings.max_json_bytes
    assert body_limit(settings, "POST", "/c/bank/X/signal") == settings.max_json_bytes
    assert body_limit(settings, "GET", "/m/lookup") == settings.max_json_bytes


def test_content_length_over_limit_is_413_before_reading(client: TestClient) -> None:
    r = client.post(
        "/v1/lookup", content=b"x" * 100_001, headers={"content-type": "application/json"}
    )
    assert r.status_code == 413 and r.headers["content-type"] == PROBLEM
    assert "100000" in r.json()["detail"]


@pytest.mark.parametrize(
    ("path", "ctype", "total"),
    [
        ("/v1/lookup", "application/json", 100_001),
        ("/c/bank/X/signal", "application/json", 100_001),
        ("/v1/scan", "multipart/form-data; boundary=b", 2**20 + 64 * 1024 + 1),
        ("/h/hash", "multipart/form-data; boundary=b", 2**20 + 64 * 1024 + 1),
        ("/m/lookup", "multipart/form-data; boundary=b", 2**20 + 64 * 1024 + 1),
        ("/v1/banks/imp/import", "text/plain", 50_001),
    ],
)
def test_chunked_body_over_limit_is_413(
    client: TestClient, admin: dict[str, str], path: str, ctype: str, total: int
) -> None:
    client.post("/v1/banks", headers=admin, json={"name": "imp"})
    client.post("/c/banks", headers=admin, json={"name": "X"})
    headers = {**admin, "content-type": ctype}
    r = client.post(path, headers=headers, content=_chunks(total))
    assert r.status_code == 413, r.text
    assert r.headers["content-type"] == PROBLEM


def test_chunked_body_under_limit_still_works(client: TestClient, admin: dict[str, str]) -> None:
    client.post("/v1/banks", headers=admin, json={"name": "imp"})
    lines = "".join(f"md5 {i:032x}\n" for i in range(100)).encode()
    r = client.post(
        "/v1/banks/imp/import?format=pytx",
        headers={**admin, "content-type": "text/plain"},
        content=iter([lines[:1000], lines[1000:]]),
    )
    assert r.status_code == 200 and r.json()["added"] == 100
    body = json.dumps({"signals": [{"type": "md5", "value": "0" * 32}]}).encode()
    r = client.post(
        "/v1/lookup",
        headers={**admin, "content-type": "application/json"},
        content=iter([body[:10], body[10:]]),
    )
    assert r.status_code == 200 and len(r.json()["results"][0]["matches"]) == 1


# -- 4. /m/compare frame cap --------------------------------------------------------------------
def test_compare_caps_vpdq_frames(client: TestClient, admin: dict[str, str]) -> None:
    frame = VideoFrame(pdq="a" * 64, quality=100, timestamp=0.0)
    small = serialize_frames([frame] * 3)
    big = serialize_frames([frame] * (MAX_COMPARE_FRAMES + 1))
    r = client.post("/m/compare", headers=admin, json={"vpdq": [small, small]})
    assert r.status_code == 200 and r.json()["vpdq"][0] is True
    r = client.post("/m/compare", headers=admin, json={"vpdq": [small, big]})
    assert r.status_code == 413 and str(MAX_COMPARE_FRAMES) in r.json()["detail"]


# -- 5. bulk reads need `export` and are audited --------------------------------------------------
def test_entry_listing_needs_export_and_is_audited(
    client: TestClient, admin: dict[str, str], api_store: Store
) -> None:
    client.post("/v1/banks", headers=admin, json={"name": "b"})
    entries = [{"signal_type": "md5", "value": f"{i:032x}"} for i in range(3)]
    client.post("/v1/banks/b/entries", headers=admin, json={"entries": entries})
    curator = bearer(api_store, "curator", "curate")
    assert client.get("/v1/banks/b/entries", headers=curator).status_code == 403
    assert client.get(f"/v1/banks/b/entries/{1:032x}", headers=curator).status_code == 200
    exporter = bearer(api_store, "exporter", "export")
    r = client.get("/v1/banks/b/entries?limit=2", headers=exporter)
    assert r.status_code == 200 and len(r.json()["entries"]) == 2
    (event,) = _audit(api_store, "bank.entries.read")
    assert event.actor == "key:exporter" and event.target == "b"
    ids = [e["id"] for e in r.json()["entries"]]
    assert event.detail["first"] == ids[0] and event.detail["last"] == ids[-1]
    assert event.detail["after"] == 0 and event.detail["limit"] == 2


def test_hma_content_read_with_signals_is_audited(
    client: TestClient, admin: dict[str, str], api_store: Store
) -> None:
    client.post("/c/banks", headers=admin, json={"name": "HB"})
    value = f"{random.Random(3).getrandbits(256):064x}"
    cid = client.post("/c/bank/HB/signal", headers=admin, json={"pdq": value}).json()["id"]
    curator = bearer(api_store, "curator", "curate")
    assert client.get(f"/c/bank/HB/content/{cid}", headers=curator).status_code == 200
    assert _audit(api_store, "hma.content.read") == []
    # Stored values need `export` as well (issue 12, finding 5).
    r = client.get(f"/c/bank/HB/content/{cid}?include_signals=true", headers=curator)
    assert r.status_code == 403 and value not in r.text
    assert _audit(api_store, "hma.content.read") == []
    reader = bearer(api_store, "reader", "curate", "export")
    r = client.get(f"/c/bank/HB/content/{cid}?include_signals=true", headers=reader)
    assert r.json()["signals"] == {"pdq": value}
    (event,) = _audit(api_store, "hma.content.read")
    assert event.actor == "key:reader" and event.target == f"bank:hb/content:{cid}"
    assert event.detail["ids"] == [cid]


# -- 6. partial import --------------------------------------------------------------------------
def test_aborted_import_reports_audits_and_refreshes(
    client: TestClient, admin: dict[str, str], api_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    client.post("/v1/banks", headers=admin, json={"name": "imp"})
    value = "c" * 32

    def partial(bank: str, path: str, fmt: Any) -> ImportReport:
        api_store.add_entries(bank, [NewEntry(signal_type="md5", value=value)])  # type: ignore[arg-type]
        raise ImportAborted("database connection lost", ImportReport(added=1, batches=1))

    monkeypatch.setattr(api_store, "import_file", partial)
    rt = client.app.state.runtime
    refreshed = []
    real_refresh = rt.index.refresh
    monkeypatch.setattr(rt.index, "refresh", lambda: refreshed.append(1) or real_refresh())
    r = client.post(
        "/v1/banks/imp/import", headers={**admin, "content-type": "text/plain"}, content=b"x\n"
    )
    assert r.status_code == 200
    assert r.json()["added"] == 1 and "connection lost" in r.json()["aborted"]
    (event,) = _audit(api_store, "bank.import")
    assert event.detail["added"] == 1 and "connection lost" in event.detail["aborted"]
    assert refreshed
    found = client.post(
        "/v1/lookup", headers=admin, json={"signals": [{"type": "md5", "value": value}]}
    )
    assert len(found.json()["results"][0]["matches"]) == 1


# -- 7. HMA /m/lookup records matching scans ------------------------------------------------------
def test_hma_upload_lookup_records_scan(
    client: TestClient, admin: dict[str, str], api_store: Store, testdata: Path
) -> None:
    image = (testdata / BRIDGE).read_bytes()
    client.post("/c/banks", headers=admin, json={"name": "HB"})
    hashes = client.post("/h/hash", headers=admin, files={"photo": ("b.jpg", image)}).json()
    client.post("/c/bank/HB/signal", headers=admin, json={"pdq": hashes["pdq"]})
    assert api_store.iter_scans() == []
    r = client.post("/m/lookup", headers=admin, files={"photo": ("b.jpg", image)})
    assert r.status_code == 200 and r.json()["pdq"]["HB"]
    (scan,) = api_store.iter_scans()
    assert scan.actor == "key:admin" and scan.verdict == "review"
    assert scan.content_kind == "image" and scan.context == {}
    assert any(m["bank"] == "HB" and m["signal_type"] == "pdq" for m in scan.matches)
    assert {"type": "pdq", "value": hashes["pdq"]} in scan.signals


# -- 8. store failures -------------------------------------------------------------------------
def _down(*_: Any, **__: Any) -> Any:
    raise OperationalError("SELECT secret_table", {}, Exception("host db.internal refused"))


def test_database_errors_are_503_without_internals(
    client: TestClient, admin: dict[str, str], api_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api_store, "list_banks", _down)
    r = client.get("/v1/banks", headers=admin)
    assert r.status_code == 503 and r.headers["content-type"] == PROBLEM
    assert r.json()["title"] == "Store unavailable"
    assert "secret" not in r.text and "internal" not in r.text


def test_hma_bank_errors_are_not_404_or_done(
    client: TestClient, admin: dict[str, str], api_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert client.delete("/c/bank/NOPE", headers=admin).json() == {"message": "Done"}
    assert client.get("/c/bank/NOPE", headers=admin).status_code == 404

    def unavailable(*_: Any, **__: Any) -> Any:
        raise StoreUnavailable("cannot reach postgresql://db.internal")

    monkeypatch.setattr(api_store, "get_bank", unavailable)
    r = client.get("/c/bank/ANY", headers=admin)
    assert r.status_code == 503 and "db.internal" not in r.text
    monkeypatch.setattr(api_store, "delete_bank", _down)
    r = client.delete("/c/bank/ANY", headers=admin)
    assert r.status_code == 503 and "Done" not in r.text


# -- 9. key cache -------------------------------------------------------------------------------
def test_key_cache_is_lru_and_forgets_failures_fast() -> None:
    good = Principal("good", frozenset({"match"}))
    cache = KeyCache(max_items=3, failure_ttl=0.0)
    calls: list[str] = []

    def verify(token: str) -> Principal | None:
        calls.append(token)
        return good if token == "good" else None

    assert cache.get("good", verify) == good
    for i in range(10):  # random tokens, touching the good key between them
        assert cache.get(f"junk{i}", verify) is None
        assert cache.get("good", verify) == good
    assert calls.count("good") == 1 and len(cache) == 3
    assert cache.get("junk9", verify) is None and calls.count("junk9") == 2  # failure expired


def test_key_miss_is_verified_off_the_event_loop(
    client: TestClient, admin: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = client.app.state.runtime
    on_loop: list[bool] = []
    real = rt.verify_key

    def verify(token: str) -> Principal | None:
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:
            on_loop.append(False)
        return real(token)

    monkeypatch.setattr(rt, "verify_key", verify)
    rt.keys._items.clear()
    assert client.get("/v1/banks", headers=admin).status_code == 200
    assert client.get("/v1/banks", headers=admin).status_code == 200  # cached: no second call
    assert on_loop == [False]


# -- 10. forwarded address ----------------------------------------------------------------------
def _request(peer: str, *forwarded: str) -> Request:
    headers = [(b"x-forwarded-for", f.encode()) for f in forwarded]
    return Request({"type": "http", "headers": headers, "client": (peer, 1234)})


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("10.0.0.1", ["6.6.6.6, 1.2.3.4"], "1.2.3.4"),  # the client spoofed 6.6.6.6
        ("10.0.0.1", ["6.6.6.6, 1.2.3.4, 10.0.0.7"], "1.2.3.4"),  # two trusted hops
        ("10.0.0.1", ["6.6.6.6", "1.2.3.4"], "1.2.3.4"),  # repeated headers
        ("10.0.0.1", ["10.0.0.5"], "10.0.0.5"),  # all trusted: the leftmost
        ("10.0.0.1", [], "10.0.0.1"),
        ("8.8.8.8", ["1.2.3.4"], "8.8.8.8"),  # untrusted peer: header ignored
    ],
)
def test_client_address_walks_forwarded_from_the_right(
    peer: str, forwarded: list[str], expected: str
) -> None:
    settings = Settings(trusted_proxies=("10.0.0.0/8",))
    assert client_address(_request(peer, *forwarded), settings) == expected
