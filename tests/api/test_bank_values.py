"""Issue 12, finding 5: a `curate` key read every bank value without `export`.

The attack: iterate entry ids 1..n over `GET /v1/banks/{b}/entries/{id}` (and every other route
that hands back stored entries) with a curate-only key and collect the MD5, SHA-256 and PDQ
values. Now values need `export`, and each read of one names the key, bank and entries in the
audit log. Runs on SQLite and PostgreSQL (the `client` fixture).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from bastion.db import Store
from bastion.signals import hash_bytes
from tests.api.conftest import bearer

PROBLEM = "application/problem+json"
IMAGES = ("images/bridge-mods/aaa-orig.jpg", "images/reg-test-input/labelme-subset/q0122.jpg")


def _bank(client: TestClient, admin: dict[str, str], testdata: Path) -> dict[str, str]:
    """A bank holding the MD5, SHA-256 and PDQ of two benign images; returns value -> type."""
    assert client.post("/v1/banks", headers=admin, json={"name": "listed"}).status_code == 201
    values: dict[str, str] = {}
    for path in IMAGES:
        for sig in hash_bytes((testdata / path).read_bytes(), name=path).signals:
            values[sig.value] = str(sig.type)
    entries = [
        {"signal_type": t, "value": v, "labels": ["demo"], "external_id": f"x{i}"}
        for i, (v, t) in enumerate(values.items())
    ]
    r = client.post("/v1/banks/listed/entries", headers=admin, json={"entries": entries})
    assert r.json()["added"] == len(values) == 6, r.text
    assert set(values.values()) == {"md5", "sha256", "pdq"}
    return values


def _audit(store: Store, action: str) -> list[Any]:
    return [e for e in store.iter_audit() if e.action == action]


def _iterate_ids(client: TestClient, key: dict[str, str]) -> list[dict[str, Any]]:
    """What the reviewer did: walk entry ids until a run of misses."""
    found: list[dict[str, Any]] = []
    for entry_id in range(1, 20):
        r = client.get(f"/v1/banks/listed/entries/{entry_id}", headers=key)
        assert r.status_code in (200, 404), r.text
        if r.status_code == 200:
            found += r.json()
    return found


def test_curate_key_iterating_entry_ids_gets_no_values(
    client: TestClient, admin: dict[str, str], api_store: Store, testdata: Path
) -> None:
    values = _bank(client, admin, testdata)
    curator = bearer(api_store, "curator", "curate")
    before = len(list(api_store.iter_audit()))

    found = _iterate_ids(client, curator)
    # The metadata a curator works with is all there...
    assert len(found) == 6
    assert {e["signal_type"] for e in found} == {"md5", "sha256", "pdq"}
    assert all(e["labels"] == ["demo"] and e["bank"] == "listed" for e in found)
    # ...but not one stored value.
    assert [e["value"] for e in found] == [None] * 6
    # Nor through the other routes that hand entries back: by external id, by PATCH, by HMA.
    by_ext = client.get("/v1/banks/listed/entries/x0", headers=curator).json()
    assert [e["value"] for e in by_ext] == [None]
    patched = client.patch(
        f"/v1/banks/listed/entries/{found[0]['id']}", headers=curator, json={"enabled": True}
    )
    assert patched.status_code == 200 and patched.json()[0]["value"] is None
    assert client.get("/v1/banks/listed/entries", headers=curator).status_code == 403
    assert client.get("/v1/banks/listed/export", headers=curator).status_code == 403
    hma = client.get(
        f"/c/bank/LISTED/content/{found[0]['id']}?include_signals=true", headers=curator
    )
    assert hma.status_code == 403 and hma.headers["content-type"] == PROBLEM
    assert "export" in hma.json()["message"]
    plain = client.get(f"/c/bank/LISTED/content/{found[0]['id']}", headers=curator)
    assert plain.status_code == 200 and "signals" not in plain.json()

    seen = {str(v) for r in (found, by_ext, patched.json()) for e in r for v in e.values()}
    seen |= {hma.text, plain.text}
    assert not any(v in text for v in values for text in seen)
    # Nothing was read, so nothing was recorded as read.
    reads = [e for e in list(api_store.iter_audit())[before:] if e.action.endswith(".read")]
    assert reads == []


def test_export_key_reads_values_and_each_read_is_audited(
    client: TestClient, admin: dict[str, str], api_store: Store, testdata: Path
) -> None:
    values = _bank(client, admin, testdata)
    exporter = bearer(api_store, "exporter", "curate", "export")

    found = _iterate_ids(client, exporter)
    assert {e["value"]: e["signal_type"] for e in found} == values
    events = _audit(api_store, "bank.entry.read")
    assert len(events) == 6
    assert all(e.actor == "key:exporter" and e.target == "listed" for e in events)
    assert sorted(i for e in events for i in e.detail["ids"]) == sorted(e["id"] for e in found)
    assert all(e.remote_addr for e in events)

    # A PATCH answer carries the value too, so it is a read as well.
    first = found[0]["id"]
    r = client.patch(f"/v1/banks/listed/entries/{first}", headers=exporter, json={"enabled": True})
    assert r.json()[0]["value"] == found[0]["value"]
    assert _audit(api_store, "bank.entry.read")[-1].detail["ids"] == [first]

    # The paged listing names the entries it returned.
    page = client.get("/v1/banks/listed/entries?limit=4", headers=exporter).json()["entries"]
    (listing,) = _audit(api_store, "bank.entries.read")
    assert listing.actor == "key:exporter" and listing.target == "listed"
    assert listing.detail["ids"] == [e["id"] for e in page]

    # HMA: a content's signals need export as well, and name the entries shown.
    r = client.get(f"/c/bank/LISTED/content/{first}?include_signals=true", headers=exporter)
    assert r.status_code == 200 and list(r.json()["signals"].values()) == [found[0]["value"]]
    (hma,) = _audit(api_store, "hma.content.read")
    assert hma.actor == "key:exporter" and hma.detail["ids"] == [first]
    assert hma.detail["bank"] == "listed"

    # Metadata-only reads of a curate key stay unaudited reads of no value.
    curator = bearer(api_store, "curator", "curate")
    client.get(f"/v1/banks/listed/entries/{first}", headers=curator)
    assert len(_audit(api_store, "bank.entry.read")) == 7
