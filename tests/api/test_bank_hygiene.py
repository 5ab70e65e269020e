"""Bank hygiene end to end through /v1/scan (issue 16): per-bank thresholds, allow banks, flood
quarantine (the webhook outbox shows no automatic action for a quarantined entry) and the bank's
version on every match. Real app, real store (SQLite and PostgreSQL), the default policy."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bastion.db import Store
from bastion.signals import pdq_from_bytes

PHOTO = "bridge-mods/aaa-orig.jpg"


@pytest.fixture
def photo(testdata: Path) -> bytes:
    return (testdata / "images" / PHOTO).read_bytes()


def _flip(hexval: str, bits: int) -> str:
    """``hexval`` with its first ``bits`` bits flipped: a hash exactly ``bits`` away."""
    value = int(hexval, 16) ^ (((1 << bits) - 1) << (256 - bits))
    return f"{value:064x}"


def _pdq(photo: bytes) -> str:
    return pdq_from_bytes(photo)[0]


def _scan(client: TestClient, headers: dict[str, str], data: bytes, **context: str) -> Any:
    r = client.post(
        "/v1/scan",
        headers=headers,
        files={"file": ("upload.jpg", data)},
        data={"context": json.dumps(context)},
    )
    assert r.status_code == 200, r.text
    return r.json()


def _bank(client: TestClient, admin: dict[str, str], **body: Any) -> Any:
    r = client.post("/v1/banks", headers=admin, json=body)
    assert r.status_code == 201, r.text
    return r.json()


def _add(client: TestClient, admin: dict[str, str], bank: str, *entries: dict[str, Any]) -> None:
    r = client.post(f"/v1/banks/{bank}/entries", headers=admin, json={"entries": list(entries)})
    assert r.status_code == 200 and r.json()["added"] == len(entries), r.text


def _audited(store: Store, action: str) -> list[Any]:
    return [e for e in store.iter_audit(limit=10_000) if e.action == action]


def test_a_bank_threshold_replaces_the_scans_and_is_set_through_the_api_and_audited(
    client: TestClient, admin: dict[str, str], api_store: Store, photo: bytes
) -> None:
    near = _flip(_pdq(photo), 20)  # 20 bits away: a match at the default threshold (31)
    _bank(client, admin, name="ncii-shared", labels=["ncii"])
    _bank(client, admin, name="csam-list", labels=["csam"])
    _add(client, admin, "ncii-shared", {"signal_type": "pdq", "value": near})
    _add(client, admin, "csam-list", {"signal_type": "pdq", "value": near})
    first = _scan(client, admin, photo, content_id="c-1")
    assert sorted(m["bank"] for m in first["matches"]) == ["csam-list", "ncii-shared"]

    r = client.patch("/v1/banks/ncii-shared", headers=admin, json={"thresholds": {"pdq": 16}})
    assert r.status_code == 200, r.text
    assert r.json()["thresholds"] == {"pdq": 16}
    (event,) = _audited(api_store, "bank.update")
    assert event.target == "ncii-shared" and event.detail["thresholds"] == {"pdq": 16}

    second = _scan(client, admin, photo, content_id="c-2")
    assert [m["bank"] for m in second["matches"]] == ["csam-list"]
    # A wider bank threshold than the scan's: matched up to it, for that bank alone.
    far = _flip(_pdq(photo), 40)
    _bank(client, admin, name="curated", thresholds={"pdq": 45})
    _add(client, admin, "curated", {"signal_type": "pdq", "value": far})
    _add(client, admin, "csam-list", {"signal_type": "pdq", "value": _flip(_pdq(photo), 41)})
    third = _scan(client, admin, photo, content_id="c-3")
    got = sorted((m["bank"], m["distance"]) for m in third["matches"])
    assert got == [("csam-list", 20), ("curated", 40)]


@pytest.mark.parametrize(
    "bad",
    [{"pdq": 65}, {"md5": 3}, {"pdq": -1}, {"pdq": "8"}, {"pdq": 1.5}],
)
def test_a_bad_threshold_is_a_422_and_changes_nothing(
    client: TestClient, admin: dict[str, str], bad: dict[str, Any]
) -> None:
    _bank(client, admin, name="b1")
    r = client.patch("/v1/banks/b1", headers=admin, json={"thresholds": bad})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert client.get("/v1/banks/b1", headers=admin).json()["thresholds"] == {}


def test_an_allow_bank_suppresses_other_banks_matches_of_the_same_content(
    client: TestClient, admin: dict[str, str], api_store: Store, photo: bytes
) -> None:
    pdq = _pdq(photo)
    _bank(client, admin, name="listed", labels=["csam"])
    _add(client, admin, "listed", {"signal_type": "pdq", "value": _flip(pdq, 10)})
    blocked = _scan(client, admin, photo, content_id="c-1", uploader_id="u-1")
    assert blocked["verdict"]["decision"] == "block"

    # A known benign picture that collides with the listed hash: its own PDQ in an allow bank.
    allow = _bank(client, admin, name="benign", kind="allow")
    assert allow["kind"] == "allow"
    _add(client, admin, "benign", {"signal_type": "pdq", "value": pdq})
    cleared = _scan(client, admin, photo, content_id="c-2", uploader_id="u-2")
    assert cleared["matches"] == []
    assert cleared["verdict"]["decision"] == "allow" and cleared["verdict"]["case_id"] is None

    # A PDQ allow entry does not clear a byte-identical listed file; an exact one clears all.
    _add(client, admin, "listed", {"signal_type": "md5", "value": hashlib.md5(photo).hexdigest()})
    exact = _scan(client, admin, photo, content_id="c-3", uploader_id="u-3")
    assert [m["signal_type"] for m in exact["matches"]] == ["md5"]
    assert exact["verdict"]["rule"] == "csam-exact"
    sha = hashlib.sha256(photo).hexdigest()
    _add(client, admin, "benign", {"signal_type": "sha256", "value": sha})
    assert _scan(client, admin, photo, content_id="c-4", uploader_id="u-4")["matches"] == []


def test_a_flooding_entry_is_quarantined_and_its_matches_act_on_nothing(
    client: TestClient, admin: dict[str, str], api_store: Store, photo: bytes
) -> None:
    rate = 3
    _bank(client, admin, name="shared", labels=["csam"], expected_rate=rate)
    _add(client, admin, "shared", {"signal_type": "pdq", "value": _flip(_pdq(photo), 4)})
    rt = client.app.state.runtime  # type: ignore[attr-defined]
    results = [
        _scan(client, admin, photo, content_id=f"c-{i}", uploader_id=f"u-{i}") for i in range(7)
    ]
    decisions = [r["verdict"]["decision"] for r in results]
    assert decisions == ["block"] * rate + ["review"] * (7 - rate)
    for r in results[:rate]:
        assert {o.action for o in rt.outbox.list(case_id=r["verdict"]["case_id"])} == {
            "remove_content",
            "preserve",
        }
        assert r["matches"][0]["quarantined"] is None
    for r in results[rate:]:
        # Review at the rule's priority, and nothing in the webhook outbox for the case.
        assert r["verdict"]["priority"] == "critical"
        assert "quarantined for flooding" in r["verdict"]["reason"]
        assert rt.outbox.list(case_id=r["verdict"]["case_id"]) == []
        assert r["matches"][0]["quarantined"] is True
        assert api_store.get_scan(r["scan_id"]).matches[0]["quarantined"] is True
    (event,) = _audited(api_store, "bank.entry.quarantine")
    assert event.actor == "system" and event.detail["expected_rate"] == rate

    held = client.get("/v1/quarantine", headers=admin).json()
    assert [(q["bank"], q["state"], q["matches"]) for q in held] == [
        ("shared", "quarantined", rate + 1)
    ]
    entry = held[0]["entry"]
    r = client.post(f"/v1/quarantine/{entry}/dispute", headers=admin, json={"reason": "collides"})
    assert r.status_code == 200 and r.json()["state"] == "disputed", r.text
    assert api_store.get_entry(entry).enabled is False
    assert _audited(api_store, "bank.entry.dispute")[0].target == f"shared/{entry}"
    after = _scan(client, admin, photo, content_id="c-after", uploader_id="u-after")
    assert after["matches"] == [] and after["verdict"]["decision"] == "allow"
    # A quarantine ends once: a second dispute is refused, and so is an unknown entry.
    assert client.post(f"/v1/quarantine/{entry}/dispute", headers=admin, json={}).status_code == 422
    assert client.post("/v1/quarantine/999999/release", headers=admin, json={}).status_code == 404
    assert client.get("/v1/quarantine?state=all", headers=admin).json()[0]["state"] == "disputed"


def test_a_released_entry_acts_again_and_counts_from_zero(
    client: TestClient, admin: dict[str, str], api_store: Store, photo: bytes
) -> None:
    _bank(client, admin, name="shared", labels=["csam"], expected_rate=1)
    _add(client, admin, "shared", {"signal_type": "pdq", "value": _pdq(photo)})
    got = [_scan(client, admin, photo, uploader_id=f"u-{i}")["verdict"] for i in range(2)]
    assert [v["decision"] for v in got] == ["block", "review"]
    (held,) = client.get("/v1/quarantine", headers=admin).json()
    r = client.post(f"/v1/quarantine/{held['entry']}/release", headers=admin, json={})
    assert r.status_code == 200 and r.json()["state"] == "released"
    again = [_scan(client, admin, photo, uploader_id=f"v-{i}")["verdict"] for i in range(2)]
    assert [v["decision"] for v in again] == ["block", "review"]


def test_every_match_records_its_banks_version(
    client: TestClient, admin: dict[str, str], api_store: Store, photo: bytes
) -> None:
    _bank(client, admin, name="versioned", labels=["ncii"])
    _add(client, admin, "versioned", {"signal_type": "pdq", "value": _pdq(photo)})
    version = client.get("/v1/banks/versioned", headers=admin).json()["version"]
    first = _scan(client, admin, photo, content_id="c-1")
    assert first["matches"][0]["bank_version"] == version
    assert api_store.get_scan(first["scan_id"]).matches[0]["bank_version"] == version
    md5 = hashlib.md5(b"something else").hexdigest()
    _add(client, admin, "versioned", {"signal_type": "md5", "value": md5})
    second = _scan(client, admin, photo, content_id="c-2")
    assert second["matches"][0]["bank_version"] == version + 1


def test_lookup_applies_a_banks_tighter_threshold_and_allow_entries_per_signal(
    client: TestClient, admin: dict[str, str], photo: bytes
) -> None:
    pdq = _pdq(photo)
    near = _flip(pdq, 20)
    _bank(client, admin, name="ncii-shared", thresholds={"pdq": 16})
    _bank(client, admin, name="csam-list")
    _add(client, admin, "ncii-shared", {"signal_type": "pdq", "value": near})
    _add(client, admin, "csam-list", {"signal_type": "pdq", "value": near})
    other = _flip(pdq, 100)
    _add(client, admin, "csam-list", {"signal_type": "pdq", "value": other})

    def lookup(*values: str) -> list[list[str]]:
        body = {"signals": [{"type": "pdq", "value": v} for v in values]}
        r = client.post("/v1/lookup", headers=admin, json=body)
        assert r.status_code == 200, r.text
        return [[m["bank"] for m in res["matches"]] for res in r.json()["results"]]

    assert lookup(pdq, other) == [["csam-list"], ["csam-list"]]
    # An allow entry for the first hash clears that signal's matches, not the other signal's.
    _bank(client, admin, name="benign", kind="allow")
    _add(client, admin, "benign", {"signal_type": "pdq", "value": pdq})
    assert lookup(pdq, other) == [[], ["csam-list"]]


def test_the_hma_surface_applies_bank_thresholds_and_allow_banks(
    client: TestClient, admin: dict[str, str], photo: bytes
) -> None:
    pdq = _pdq(photo)
    _bank(client, admin, name="ncii-shared", thresholds={"pdq": 16})
    _bank(client, admin, name="csam-list")
    _add(client, admin, "ncii-shared", {"signal_type": "pdq", "value": _flip(pdq, 20)})
    _add(client, admin, "csam-list", {"signal_type": "pdq", "value": _flip(pdq, 21)})

    def raw_lookup() -> Any:
        params = {"signal_type": "pdq", "signal": pdq, "include_distance": "true"}
        r = client.get("/m/raw_lookup", headers=admin, params=params)
        assert r.status_code == 200, r.text
        return [m["distance"] for m in r.json()["matches"]]

    assert raw_lookup() == ["21"]  # the NCII bank's entry at 20 is past its own 16
    _bank(client, admin, name="benign", kind="allow")
    _add(client, admin, "benign", {"signal_type": "pdq", "value": pdq})
    assert raw_lookup() == []
