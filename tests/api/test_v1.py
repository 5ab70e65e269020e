"""API v1 through HTTP (FastAPI's TestClient over the real app and store)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bastion.db import Store
from tests.api.conftest import bearer

PROBLEM = "application/problem+json"


def _flip(hexval: str, bits: int, rng: random.Random) -> str:
    v = int(hexval, 16)
    for b in rng.sample(range(256), bits):
        v ^= 1 << b
    return f"{v:064x}"


def _bridge_bank(client: TestClient, admin: dict[str, str], testdata: Path) -> None:
    r = client.post(
        "/v1/banks", headers=admin, json={"name": "bridge", "labels": ["demo"], "is_demo": True}
    )
    assert r.status_code == 201, r.text
    hashed = client.post(
        "/v1/scan",
        headers=admin,
        files={"file": ("a.jpg", (testdata / "images/bridge-mods/aaa-orig.jpg").read_bytes())},
    ).json()
    entries = [
        {"signal_type": s["type"], "value": s["value"], "external_id": "bridge-1"}
        for s in hashed["signals"]
    ]
    added = client.post("/v1/banks/bridge/entries", headers=admin, json={"entries": entries})
    assert added.json()["added"] == 3, added.text


def test_every_route_needs_a_key(client: TestClient) -> None:
    for method, path in [
        ("post", "/v1/scan"),
        ("post", "/v1/lookup"),
        ("get", "/v1/banks"),
        ("get", "/v1/banks/x/export"),
        ("get", "/metrics"),
    ]:
        r = getattr(client, method)(path)
        assert r.status_code == 401, path
        assert r.headers["content-type"] == PROBLEM
        assert r.json()["status"] == 401
    r = client.get("/v1/banks", headers={"Authorization": "Bearer bst_nope_nope"})
    assert r.status_code == 401 and "unknown" in r.json()["detail"]


def test_scopes_are_enforced(client: TestClient, api_store: Store) -> None:
    matcher = bearer(api_store, "matcher", "match")
    assert (
        client.post(
            "/v1/lookup", headers=matcher, json={"signals": [{"type": "md5", "value": "0" * 32}]}
        ).status_code
        == 200
    )
    r = client.post("/v1/banks", headers=matcher, json={"name": "x"})
    assert r.status_code == 403 and "curate" in r.json()["detail"]
    curator = bearer(api_store, "curator", "curate")
    assert client.post("/v1/banks", headers=curator, json={"name": "x"}).status_code == 201
    assert client.get("/v1/banks/x/export", headers=curator).status_code == 403
    exporter = bearer(api_store, "exporter", "export")
    assert client.get("/v1/banks/x/export", headers=exporter).status_code == 200
    api_store.revoke_api_key("curator")
    client.app.state.runtime.keys._items.clear()  # the verified-key cache holds for 10 s
    assert client.get("/v1/banks", headers=curator).status_code == 401


def test_scan_upload_matches_and_is_recorded(
    client: TestClient, admin: dict[str, str], testdata: Path, api_store: Store
) -> None:
    _bridge_bank(client, admin, testdata)
    photo = (testdata / "images/bridge-mods/blur-a-lot.jpg").read_bytes()
    ctx = {"content_id": "c-1", "uploader_id": "u-9", "age_band": "adult"}
    r = client.post(
        "/v1/scan",
        headers=admin,
        files={"file": ("x.jpg", photo)},
        data={"context": json.dumps(ctx)},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["kind"] == "image" and body["verdict"]["decision"] == "review"
    [m] = body["matches"]
    assert m["bank"] == "bridge" and m["signal_type"] == "pdq" and m["distance"] <= 31
    record = api_store.get_scan(body["scan_id"])
    assert record.context == ctx and record.matches[0]["entry"] == m["entry"]

    other = (testdata / "images/reg-test-input/labelme-subset/q0122.jpg").read_bytes()
    clean = client.post("/v1/scan", headers=admin, files={"file": ("y.jpg", other)}).json()
    assert clean["matches"] == [] and clean["scan_id"] is None
    assert clean["verdict"]["decision"] == "allow"

    rotated = (testdata / "images/reg-test-input/dih/bridge-2-rotate-90.jpg").read_bytes()
    plain = client.post("/v1/scan", headers=admin, files={"file": ("r.jpg", rotated)}).json()
    dih = client.post(
        "/v1/scan", headers=admin, files={"file": ("r.jpg", rotated)}, data={"dihedral": "true"}
    ).json()
    assert plain["matches"] == [] and dih["matches"][0]["variant"] not in (None, "original")


def test_scan_rejects_bad_uploads_with_problems(client: TestClient, admin: dict[str, str]) -> None:
    cases = [
        ({"files": {"file": ("e.jpg", b"")}}, 422),
        ({"files": {"file": ("t.jpg", b"\xff\xd8\xff\xe0" + b"\x00" * 50)}}, 422),
        ({"files": {"notfile": ("t.jpg", b"abc")}}, 422),
        ({"files": {"file": ("big.bin", b"\x00" * (5 * 2**20 + 10))}}, 413),
        ({"content": b"raw bytes", "headers": {"content-type": "image/jpeg"}}, 415),
        ({"json": {"url": "http://127.0.0.1/x.jpg"}}, 400),
        ({"json": {"nope": 1}}, 422),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400),
        ({"files": {"file": ("a.jpg", b"x")}, "data": {"context": "[]"}}, 422),
        ({"files": {"file": ("a.jpg", b"x")}, "data": {"threshold": "999"}}, 422),
    ]
    for kwargs, status in cases:
        headers = {**admin, **kwargs.pop("headers", {})}
        r = client.post("/v1/scan", headers=headers, **kwargs)
        assert r.status_code == status, (kwargs, r.status_code, r.text)
        assert r.headers["content-type"] == PROBLEM
        assert r.json()["detail"]


def test_lookup_batch_with_per_item_errors(client: TestClient, admin: dict[str, str]) -> None:
    rng = random.Random(3)
    hashes = [f"{rng.getrandbits(256):064x}" for _ in range(50)]
    client.post("/v1/banks", headers=admin, json={"name": "syn"})
    client.post(
        "/v1/banks/syn/entries",
        headers=admin,
        json={"entries": [{"signal_type": "pdq", "value": h} for h in hashes]},
    )
    signals = [{"type": "pdq", "value": _flip(h, 7, rng)} for h in hashes[:10]]
    signals += [{"type": "pdq", "value": "zz"}, {"type": "nope", "value": "x"}]
    signals += [{"type": "PDQ", "value": hashes[20].upper()}]
    r = client.post("/v1/lookup", headers=admin, json={"signals": signals})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 13
    assert all(res["matches"][0]["distance"] == 7 for res in results[:10])
    assert all(res["matches"][0]["band"] == "near" for res in results[:10])
    assert results[10]["error"] and results[11]["error"].startswith("unknown signal type")
    assert results[12]["matches"][0]["distance"] == 0
    assert results[12]["matches"][0]["band"] == "exact"
    # A key without `export` gets the band and its number, never the exact distance.
    matcher = bearer(client.app.state.runtime.store, "matcher", "match")
    banded = client.post("/v1/lookup", headers=matcher, json={"signals": signals}).json()
    shown = [(m["band"], m["distance"]) for res in banded["results"] for m in res["matches"]]
    assert shown == [("near", 15)] * 10 + [("exact", 0)]
    too_many = client.post(
        "/v1/lookup", headers=admin, json={"signals": [{"type": "md5", "value": "0" * 32}] * 1001}
    )
    assert too_many.status_code == 422 and too_many.headers["content-type"] == PROBLEM


def test_bank_crud_entries_and_immediate_effect(
    client: TestClient, admin: dict[str, str], testdata: Path, api_store: Store
) -> None:
    _bridge_bank(client, admin, testdata)
    assert client.post("/v1/banks", headers=admin, json={"name": "bridge"}).status_code == 409
    assert client.post("/v1/banks", headers=admin, json={"name": "Bad Name"}).status_code == 422
    banks = client.get("/v1/banks", headers=admin).json()
    assert [(b["name"], b["entries"], b["is_demo"]) for b in banks] == [("bridge", 3, True)]
    got = client.get("/v1/banks/bridge", headers=admin).json()
    assert got["entries"] == 3
    patched = client.patch("/v1/banks/bridge", headers=admin, json={"description": "demo"})
    assert patched.json()["description"] == "demo"
    page = client.get("/v1/banks/bridge/entries?limit=2", headers=admin).json()
    assert len(page["entries"]) == 2 and page["next_after"] == page["entries"][-1]["id"]
    rest = client.get(f"/v1/banks/bridge/entries?after={page['next_after']}", headers=admin)
    assert len(rest.json()["entries"]) == 1 and rest.json()["next_after"] is None

    photo = (testdata / "images/bridge-mods/sharpen-a-lot.jpg").read_bytes()

    def matched() -> list[str]:
        r = client.post("/v1/scan", headers=admin, files={"file": ("s.jpg", photo)})
        return [m["signal_type"] for m in r.json()["matches"]]

    assert matched() == ["pdq"]
    pdq = next(e for e in page["entries"] + rest.json()["entries"] if e["signal_type"] == "pdq")
    r = client.patch(
        f"/v1/banks/bridge/entries/{pdq['id']}",
        headers=admin,
        json={"enabled": False, "reason": "test"},
    )
    assert r.status_code == 200 and r.json()[0]["enabled"] is False
    assert matched() == []  # the next lookup, no rebuild, no wait
    client.patch(f"/v1/banks/bridge/entries/{pdq['id']}", headers=admin, json={"enabled": True})
    assert matched() == ["pdq"]
    assert client.delete(f"/v1/banks/bridge/entries/{pdq['id']}", headers=admin).status_code == 204
    assert matched() == []
    assert client.get("/v1/banks/bridge/entries/999999", headers=admin).status_code == 404
    assert client.delete("/v1/banks/bridge", headers=admin).status_code == 204
    assert client.get("/v1/banks/bridge", headers=admin).status_code == 404
    actions = [e.action for e in api_store.iter_audit()]
    for action in (
        "bank.create",
        "bank.entries.add",
        "bank.update",
        "bank.entry.disable",
        "bank.entry.enable",
        "bank.entry.delete",
        "bank.delete",
    ):
        assert action in actions, action
    event = next(e for e in api_store.iter_audit() if e.action == "bank.entry.disable")
    assert event.actor == "key:admin" and event.remote_addr


def test_streamed_import_and_export(client: TestClient, admin: dict[str, str]) -> None:
    rng = random.Random(5)
    hashes = [f"{rng.getrandbits(256):064x}" for _ in range(5000)]
    body = "".join(f"pdq {h}\n" for h in hashes) + "pdq broken\n"
    client.post("/v1/banks", headers=admin, json={"name": "big"})
    r = client.post(
        "/v1/banks/big/import", headers={**admin, "content-type": "text/plain"}, content=body
    )
    assert r.status_code == 200, r.text
    assert r.json()["added"] == 5000 and r.json()["rejected"] == 1
    assert "line 5001" in r.json()["errors"][0]
    hit = client.post(
        "/v1/lookup", headers=admin, json={"signals": [{"type": "pdq", "value": hashes[4999]}]}
    )
    assert hit.json()["results"][0]["matches"]
    out = client.get("/v1/banks/big/export?format=pytx", headers=admin)
    assert out.status_code == 200
    assert sorted(line.split()[1] for line in out.text.splitlines()) == sorted(hashes)
    assert client.get("/v1/banks/big/export?format=nope", headers=admin).status_code == 422
    assert client.post("/v1/banks/big/import", headers=admin, content=b"").status_code == 422


def test_health_ready_metrics(client: TestClient, admin: dict[str, str]) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["index_loaded"] is True
    client.post("/v1/lookup", headers=admin, json={"signals": [{"type": "md5", "value": "0" * 32}]})
    text = client.get("/metrics", headers=admin).text
    assert 'bastion_http_requests_total{method="POST",route="/v1/lookup",status="200"}' in text
    assert "bastion_http_request_duration_seconds_bucket" in text
    assert "bastion_index_entries" in text and "bastion_index_age_seconds" in text


def test_openapi_documents_the_api(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in ("/v1/scan", "/v1/lookup", "/v1/banks", "/v1/banks/{name}/import"):
        assert path in spec["paths"], path
    scan_body = spec["paths"]["/v1/scan"]["post"]["requestBody"]["content"]
    assert set(scan_body) == {"multipart/form-data", "application/json"}
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize("per_minute", [30])
def test_rate_limit_per_key(api_store: Store, per_minute: int) -> None:
    from bastion.config import Settings
    from bastion.server import create_app

    app = create_app(Settings(rate_limit_per_minute=per_minute), store=api_store)
    with TestClient(app) as c:
        key = bearer(api_store, "limited", "match")
        statuses = [
            c.post(
                "/v1/lookup", headers=key, json={"signals": [{"type": "md5", "value": "0" * 32}]}
            ).status_code
            for _ in range(10)
        ]
        assert statuses[:3] == [200, 200, 200] and statuses[-1] == 429
        r = c.post(
            "/v1/lookup", headers=key, json={"signals": [{"type": "md5", "value": "0" * 32}]}
        )
        assert r.headers["content-type"] == PROBLEM and int(r.headers["retry-after"]) >= 1
