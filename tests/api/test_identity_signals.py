"""Identity signals end to end (issue 16): sharing groups and their sealed keys, identifiers added
to a bank as keyed hashes, `/v1/scan` with `identifiers` reporting matches that policy sends to
review only, and hashes that match only under the group's key. Real app, real store (SQLite and
PostgreSQL), the default policy; no identifier is ever stored, audited or logged."""

from __future__ import annotations

import base64
import json
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import text

from bastion.db import Store
from tests.api.conftest import bearer

LISTED = [
    {"type": "email", "value": "Lead.Person+x@GoogleMail.com"},
    {"type": "username", "value": "@SecretGameHost", "platform": "Discord"},
    {"type": "phone", "value": "020 7946 0018", "region": "GB"},
    {"type": "ip", "value": "192.0.2.7"},
]
PLAINTEXT = ["leadperson", "lead.person", "secretgamehost", "7946", "192.0.2.7"]


def _scan(client: TestClient, headers: dict[str, str], ids: list[dict[str, Any]]) -> Any:
    body = {"identifiers": ids, "context": {"uploader_id": "acct-9", "source": "signup"}}
    r = client.post("/v1/scan", headers=headers, json=body)
    assert r.status_code == 200, r.text
    return r.json()


def _setup(client: TestClient, admin: dict[str, str]) -> None:
    r = client.post("/v1/identity/groups", headers=admin, json={"name": "lantern"})
    assert r.status_code == 201, r.text
    r = client.post("/v1/banks", headers=admin, json={"name": "shared-ids", "labels": ["csam"]})
    assert r.status_code == 201, r.text
    r = client.post(
        "/v1/banks/shared-ids/identifiers",
        headers=admin,
        json={
            "group": "lantern",
            "identifiers": [*LISTED, {"type": "phone", "value": "12"}],
            "labels": ["sextortion"],
        },
    )
    assert r.status_code == 200, r.text
    assert (r.json()["added"], r.json()["rejected"]) == (4, 1)
    assert r.json()["errors"] == [
        "identifiers[4]: phone is not a phone number (a national number needs its region, e.g. GB)"
    ]


def _everything_stored(store: Store) -> str:
    """Every table's rows as text: what a database dump would reveal."""
    out = []
    with store.engine.connect() as conn:
        for table in ("bank_entries", "scans", "audit_log", "case_items", "identity_groups"):
            out += [repr(tuple(r)) for r in conn.execute(text(f"SELECT * FROM {table}"))]
    return "\n".join(out).lower()


def test_listed_identifiers_match_go_to_review_and_are_never_stored(
    client: TestClient, admin: dict[str, str], api_store: Store
) -> None:
    _setup(client, admin)
    match_key = bearer(api_store, "platform", "match")
    # Written differently from the list, as a platform would see them.
    seen = [
        {"type": "email", "value": "leadperson@gmail.com"},
        {"type": "username", "value": "secretgamehost", "platform": "discord"},
        {"type": "phone", "value": "+442079460018"},
        {"type": "ip", "value": "::ffff:192.0.2.7"},
        {"type": "email", "value": "someone.else@example.com"},
    ]
    got = _scan(client, match_key, seen)
    assert sorted(m["signal_type"] for m in got["matches"]) == ["email", "ip", "phone", "username"]
    assert all(m["bank"] == "shared-ids" and m["bank_version"] for m in got["matches"])
    verdict = got["verdict"]
    assert (verdict["decision"], verdict["rule"]) == ("review", "identity-lead")
    assert got["kind"] == "account"
    rt = client.app.state.runtime  # type: ignore[attr-defined]
    assert rt.outbox.list(case_id=verdict["case_id"]) == []  # leads, not proof: no action
    record = api_store.get_scan(got["scan_id"])
    assert {s["group"] for s in record.signals} == {"lantern"}
    assert all(len(s["value"]) == 64 for s in record.signals)
    stored = _everything_stored(api_store)
    for word in PLAINTEXT:
        assert word not in stored, word
    # The group key is sealed at rest: its bytes are not in the row.
    exported = client.post("/v1/identity/groups/lantern/export-key", headers=admin).json()
    raw = base64.b64decode(exported["key"])
    with api_store.engine.connect() as conn:
        sealed = conn.execute(text("SELECT sealed_key FROM identity_groups")).scalar_one()
    assert raw not in bytes(sealed)
    actions = [e.action for e in api_store.iter_audit(limit=10_000)]
    assert "identity.group.create" in actions and "identity.group.key.export" in actions


def test_identity_hashes_match_only_under_the_groups_key(
    client: TestClient, admin: dict[str, str], api_store: Store
) -> None:
    _setup(client, admin)
    key = client.post("/v1/identity/groups/lantern/export-key", headers=admin).json()
    assert _scan(client, admin, LISTED[:1])["matches"]
    # Without the key, the list's hashes match nothing, even with another group's key.
    assert client.delete("/v1/identity/groups/lantern", headers=admin).status_code == 204
    r = client.post("/v1/identity/groups", headers=admin, json={"name": "other"})
    assert r.json()["key_id"] != key["key_id"]
    missed = _scan(client, admin, LISTED)
    assert missed["matches"] == [] and missed["verdict"]["decision"] == "allow"
    # A partner joining with the shared key matches again.
    joined = client.post(
        "/v1/identity/groups", headers=admin, json={"name": "lantern-b", "key": key["key"]}
    )
    assert joined.status_code == 201 and joined.json()["key_id"] == key["key_id"]
    assert len(_scan(client, admin, LISTED)["matches"]) == 4


def test_bad_requests_are_problems_and_need_the_right_scopes(
    client: TestClient, admin: dict[str, str], api_store: Store
) -> None:
    _setup(client, admin)
    curate = bearer(api_store, "curator", "curate")
    # Group keys are secrets: curate may list groups but not make or export them.
    assert client.get("/v1/identity/groups", headers=curate).status_code == 200
    assert client.post("/v1/identity/groups", headers=curate, json={"name": "x"}).status_code == 403
    r = client.post("/v1/identity/groups/lantern/export-key", headers=curate)
    assert r.status_code == 403
    bad = [
        {"identifiers": []},
        {"identifiers": [{"type": "md5", "value": "x"}]},
        {"identifiers": [{"type": "email", "value": "x" * 400}]},
        {"identifiers": [{"type": "email", "value": "no-at-sign"}]},
        {"identifiers": [{"type": "email", "value": "a@b.example"}], "extra": 1},
    ]
    for body in bad:
        r = client.post("/v1/scan", headers=admin, json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "no-at-sign" not in r.text
    # A lone surrogate (JSON's "\ud800"): refused as malformed JSON, never a 500.
    raw = '{"identifiers": [{"type": "email", "value": "a\\ud800@b.example"}]}'
    r = client.post("/v1/scan", headers={**admin, "Content-Type": "application/json"}, content=raw)
    assert r.status_code == 400 and r.json()["title"] == "Malformed JSON", r.text
    partial = _scan(
        client, admin, [{"type": "email", "value": "nope"}, LISTED[3]]
    )  # one bad, one good: a warning and a match
    assert len(partial["matches"]) == 1 and partial["warnings"][0].startswith("identifiers[0]")
    dup = client.post("/v1/identity/groups", headers=admin, json={"name": "lantern"})
    assert dup.status_code == 409
    short = client.post(
        "/v1/identity/groups",
        headers=admin,
        json={"name": "k", "key": base64.b64encode(b"short").decode()},
    )
    assert short.status_code == 422
    missing = client.post(
        "/v1/banks/shared-ids/identifiers",
        headers=admin,
        json={"group": "nope", "identifiers": LISTED[:1]},
    )
    assert missing.status_code == 404
    assert json.loads(missing.text)["status"] == 404
