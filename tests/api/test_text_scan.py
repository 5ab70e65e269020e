"""Keyword signals through the API (issue 16): keyword entries added and imported like any
other, /v1/scan with text and its context, /v1/lookup with text signals, the default policy's
review, allow banks by overlap, and the text never stored (the scan keeps matches, spans and a
SHA-256). Real app, real store (SQLite and PostgreSQL). Non-explicit terms only."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fastapi.testclient import TestClient

from bastion.db import Store
from tests.api.conftest import bearer

QUERY = {
    "and": [{"or": ["don't tell", "do not tell"]}, {"or": ["parents", "mum", "dad"]}],
    "not": ["surprise party"],
}


def _setup(client: TestClient, admin: dict[str, str]) -> None:
    r = client.post("/v1/banks", headers=admin, json={"name": "grooming", "labels": ["grooming"]})
    assert r.status_code == 201, r.text
    entries = [
        {"signal_type": "text", "value": "add me on another app", "external_id": "t-1"},
        {"signal_type": "text", "value": json.dumps(QUERY), "external_id": "q-1"},
        {
            "signal_type": "text",
            "value": "secret game",
            "labels": ["grooming"],
            "metadata": {"language": "en"},
        },
    ]
    r = client.post("/v1/banks/grooming/entries", headers=admin, json={"entries": entries})
    assert r.status_code == 200 and r.json()["added"] == 3, r.text


def _scan(client: TestClient, headers: dict[str, str], text: str, **body: Any) -> Any:
    r = client.post("/v1/scan", headers=headers, json={"text": text, **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_text_scan_matches_records_no_text_and_goes_to_review(
    client: TestClient, admin: dict[str, str], api_store: Store
) -> None:
    _setup(client, admin)
    text = "hey!! 4dd m3 on An0ther app, and don't tell your parents"
    out = _scan(
        client,
        admin,
        text,
        kind="comment",
        context={"content_id": "c-1", "uploader_id": "u-1", "source": "comments"},
    )
    assert (out["kind"], out["format"]) == ("text", "comment")
    digest = hashlib.sha256(text.encode()).hexdigest()
    assert out["signals"] == [{"type": "text", "value": digest, "quality": None}]
    by_id = {m["external_id"]: m for m in out["matches"]}
    assert set(by_id) == {"t-1", "q-1"}
    first = by_id["t-1"]
    (span,) = first["spans"]
    assert text[span[0] : span[1]] == "4dd m3 on An0ther app"
    assert first["normalisations"] == ["case", "leetspeak"]
    assert first["band"] == "exact" and first["signal_type"] == "text"
    assert [text[a:b] for a, b in by_id["q-1"]["spans"]] == ["don't tell", "parents"]
    verdict = out["verdict"]
    assert (verdict["decision"], verdict["rule"], verdict["priority"]) == (
        "review",
        "keyword",
        "normal",
    )
    # The record keeps matches, spans and the text's SHA-256, never the text.
    record = api_store.get_scan(out["scan_id"])
    assert record.content_kind == "text"
    assert record.signals == [{"type": "text", "value": digest, "length": len(text)}]
    assert {tuple(m["spans"][0]) for m in record.matches} >= {(span[0], span[1])}
    stored = json.dumps([record.signals, record.matches, record.context])
    assert "another" not in stored.lower() and "parents" not in stored
    # No automatic action for a keyword match: review only.
    rt = client.app.state.runtime  # type: ignore[attr-defined]
    assert rt.outbox.list(case_id=verdict["case_id"]) == []


def test_negative_terms_and_ordinary_text_are_allowed_and_not_recorded(
    client: TestClient, admin: dict[str, str]
) -> None:
    _setup(client, admin)
    party = _scan(client, admin, "don't tell mum about the surprise party!")
    assert party["matches"] == [] and party["scan_id"] is None
    assert party["verdict"]["decision"] == "allow"
    plain = _scan(client, admin, "see you at the game tonight", kind="message")
    assert plain["matches"] == [] and plain["scan_id"] is None


def test_an_allow_bank_suppresses_only_overlapping_keyword_matches(
    client: TestClient, admin: dict[str, str]
) -> None:
    _setup(client, admin)
    r = client.post("/v1/banks", headers=admin, json={"name": "benign", "kind": "allow"})
    assert r.status_code == 201, r.text
    entry = {"signal_type": "text", "value": "secret game show"}
    r = client.post("/v1/banks/benign/entries", headers=admin, json={"entries": [entry]})
    assert r.status_code == 200, r.text
    assert _scan(client, admin, "watching the secret game show tonight")["matches"] == []
    both = _scan(client, admin, "the secret game show. then our own secret game")
    assert [(m["bank"], m["spans"]) for m in both["matches"]] == [("grooming", [[35, 46]])]


def test_text_lookup_answers_under_the_sha256(
    client: TestClient, admin: dict[str, str], api_store: Store
) -> None:
    _setup(client, admin)
    matcher = bearer(api_store, "platform", "match")
    text = "want to play a s.e.c.r.e.t g@me?"
    r = client.post(
        "/v1/lookup",
        headers=matcher,
        json={"signals": [{"type": "text", "value": text}, {"type": "text", "value": ""}]},
    )
    assert r.status_code == 200, r.text
    good, bad = r.json()["results"]
    assert good["value"] == hashlib.sha256(text.encode()).hexdigest()
    (m,) = good["matches"]
    assert (m["bank"], m["band"], m["normalisations"]) == (
        "grooming",
        "exact",
        ["case", "leetspeak", "separators"],
    ) or m["normalisations"] == ["leetspeak", "separators"]
    assert [text[a:b] for a, b in m["spans"]] == ["s.e.c.r.e.t g@me"]
    assert bad["error"] and bad["value"] == "" and bad["matches"] == []


def test_bad_text_bodies_and_entries_are_clear_4xx(
    client: TestClient, admin: dict[str, str]
) -> None:
    _setup(client, admin)
    r = client.post("/v1/scan", headers=admin, json={"text": ""})
    assert r.status_code == 422
    r = client.post("/v1/scan", headers=admin, json={"text": "x", "kind": "novel"})
    assert r.status_code == 422 and "kind" in r.json()["detail"]
    r = client.post("/v1/scan", headers=admin, json={"text": "x", "url": "https://example.com/"})
    assert r.status_code == 422
    r = client.post("/v1/scan", headers=admin, json={"text": "y" * 200_001})
    assert r.status_code == 422
    r = client.post(
        "/v1/scan",
        headers={**admin, "content-type": "application/json"},
        content=b'{"text": "x' + b"y" * (1024 * 1024) + b'"}',
    )
    assert r.status_code == 413
    bad = [
        {"signal_type": "text", "value": "!"},
        {"signal_type": "text", "value": '{"and": [{"or": ["regex-/x/"]}]}'},
        {"signal_type": "text", "value": "delete this chat", "metadata": {"language": "?"}},
        {"signal_type": "text", "value": "delete this chat"},
    ]
    r = client.post("/v1/banks/grooming/entries", headers=admin, json={"entries": bad})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["added"], body["rejected"]) == (1, 3)
    assert "regular-expression" in " ".join(body["errors"])


def test_a_flooding_keyword_entry_is_quarantined_and_keys_without_export_see_bands(
    client: TestClient, admin: dict[str, str], api_store: Store
) -> None:
    r = client.post("/v1/banks", headers=admin, json={"name": "busy", "expected_rate": 2})
    assert r.status_code == 201, r.text
    entry = {"signal_type": "text", "value": "see you after school"}
    r = client.post("/v1/banks/busy/entries", headers=admin, json={"entries": [entry]})
    assert r.status_code == 200, r.text
    platform = bearer(api_store, "platform-text", "match")
    outs = [
        _scan(client, platform, "ok s33 you after sch00l", context={"content_id": f"c-{i}"})
        for i in range(4)
    ]
    flags = [o["matches"][0]["quarantined"] for o in outs]
    assert flags == [None, None, True, True]
    assert all(o["verdict"]["decision"] == "review" for o in outs)
    assert "quarantined for flooding" in outs[-1]["verdict"]["reason"]
    first = outs[0]["matches"][0]
    assert (first["band"], first["distance"], first["bank_version"]) == ("exact", 0, 2)
    assert first["normalisations"] == ["leetspeak"]
    rt = client.app.state.runtime  # type: ignore[attr-defined]
    assert all(rt.outbox.list(case_id=o["verdict"]["case_id"]) == [] for o in outs)
