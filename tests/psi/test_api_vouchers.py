"""HTTP: /v1/pdata, /v1/vouchers and /v1/franking on the real app and store (SQLite, PostgreSQL).

Hostile input gets a precise 4xx problem document, never a 500."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bastion.actions.worker import BuildLoop
from bastion.banks.model import NewEntry
from bastion.client import Account, Client, PData, Voucher, frank
from bastion.db import Store
from bastion.server import create_app
from bastion.signals.base import SignalType
from bastion.worker import voucher_loop, worker_runtime

from .conftest import voucher_settings
from .helpers import LAB_BOUNDS, random_hashes, seeded

BANK = random_hashes(30, seed=400)
OUTSIDE = random_hashes(30, seed=401)


@pytest.fixture(autouse=True)
def _private_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def _key(store: Store, name: str, *scopes: str) -> dict[str, str]:
    _, token = store.create_api_key(name, set(scopes))
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def app(db_store: Store, tmp_path: Path) -> Iterator[tuple[TestClient, Store]]:
    db_store.create_bank("known")
    db_store.add_entries("known", [NewEntry(SignalType.PDQ, h) for h in BANK])
    settings = voucher_settings(
        tmp_path, voucher_rate_per_hour=12, voucher_max_batch=8, max_json_bytes=400_000
    )
    with TestClient(create_app(settings, store=db_store)) as client:
        yield client, db_store


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _problem(r, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    return r.json()


def _publish(http: TestClient, admin: dict[str, str], **body: object) -> dict:
    """Ask for a table (202 and a job), run the worker's build step, return the finished job."""
    r = http.post("/v1/pdata", headers=admin, json=body or None)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["state"] == "pending" and r.headers["location"] == f"/v1/pdata/builds/{job['id']}"
    ran = BuildLoop(http.app.state.runtime.vouchers, worker_id="test-worker").run_once()
    assert ran is not None and ran.id == job["id"]
    done = http.get(r.headers["location"], headers=admin).json()
    assert done["state"] == "done" and done["progress"] == 1.0, done
    return done


def _work(http: TestClient) -> int:
    """The worker's voucher step, wired as ``bastion worker`` wires it (its own runtime over the
    same database): the API only queues vouchers."""
    rt = http.app.state.runtime
    loop = voucher_loop(worker_runtime(rt.settings, rt.store), "test-worker")
    assert loop is not None
    return loop.drain()


def _item(voucher: Voucher, account: str | None = None) -> dict[str, str]:
    """A voucher as the platform forwards it: beside the sender it authenticated."""
    return {"account": account or voucher.account, "voucher": _b64(voucher.data)}


def _results(r) -> list[dict]:
    assert r.status_code == 202, r.text
    return r.json()["results"]


def _device(http: TestClient, headers: dict[str, str], account: str, seed: int) -> Client:
    r = http.get("/v1/pdata", headers=headers)
    assert r.status_code == 200
    root = r.headers["Bastion-PData-Root"]
    pdata = PData.from_bytes(r.content, expected_root=root, bounds=LAB_BOUNDS)
    return Client(pdata, account, Account(bytes([seed]) * 32), random_bytes=seeded(seed))


def test_scopes_and_publishing(app) -> None:
    http, store = app
    admin = _key(store, "admin", "admin")
    platform = _key(store, "platform", "vouchers")
    matcher = _key(store, "matcher", "match")
    assert http.get("/v1/pdata").status_code == 401
    _problem(http.get("/v1/pdata", headers=matcher), 403)
    _problem(http.post("/v1/vouchers", headers=matcher, json={"vouchers": ["AA=="]}), 403)
    assert "no pdata" in _problem(http.get("/v1/pdata", headers=platform), 404)["detail"]
    _problem(http.post("/v1/pdata", headers=platform), 403)  # building needs admin
    _problem(http.get("/v1/pdata/builds", headers=platform), 403)
    built = _publish(http, admin)
    info = http.get("/v1/pdata/root", headers=platform).json()
    assert info["root"] == built["root"]
    assert info["stats"]["entries"] == 30 and info["params"]["threshold"] == 3
    fetched = http.get("/v1/pdata", headers=platform)
    assert fetched.headers["etag"] == f'"{built["root"]}"'
    assert PData.from_bytes(fetched.content, expected_root=built["root"], bounds=LAB_BOUNDS).n_slots
    cached = http.get("/v1/pdata", headers={**platform, "If-None-Match": f'"{built["root"]}"'})
    assert cached.status_code == 304 and cached.content == b""
    _problem(http.post("/v1/pdata", headers=admin, json={"banks": ["missing"]}), 404)
    _problem(http.post("/v1/pdata", headers=admin, json={"nope": 1}), 422)
    _problem(http.get("/v1/pdata/builds/999999", headers=admin), 404)


def test_a_requested_build_is_served_only_once_the_worker_built_it(app) -> None:
    http, store = app
    admin = _key(store, "admin", "admin")
    platform = _key(store, "platform", "vouchers")
    first = _publish(http, admin)
    r = http.post("/v1/pdata", headers=admin, json={"banks": ["known"]})
    assert r.status_code == 202
    job = r.json()
    # Until a worker builds it, the last completed table is what clients get.
    assert http.get(r.headers["location"], headers=admin).json()["state"] == "pending"
    assert http.get("/v1/pdata", headers=platform).headers["bastion-pdata-root"] == first["root"]
    assert http.get("/v1/pdata/root", headers=platform).json()["root"] == first["root"]
    BuildLoop(http.app.state.runtime.vouchers, worker_id="w").run_once()
    done = http.get(f"/v1/pdata/builds/{job['id']}", headers=admin).json()
    assert done["state"] == "done" and done["root"] != first["root"]
    served = http.get("/v1/pdata", headers=platform)
    assert served.headers["bastion-pdata-root"] == done["root"]
    served_pdata = PData.from_bytes(served.content, expected_root=done["root"], bounds=LAB_BOUNDS)
    assert served_pdata.label.endswith("known")
    listed = http.get("/v1/pdata/builds", headers=admin).json()
    assert [j["id"] for j in listed] == [job["id"], first["id"]]


def test_vouchers_open_an_account_only_at_the_threshold(app) -> None:
    http, store = app
    admin = _key(store, "admin", "admin")
    platform = _key(store, "platform", "vouchers")
    _publish(http, admin)
    alice = _device(http, platform, "alice", 1)
    answers = set()
    for i, h in enumerate([OUTSIDE[0], BANK[0], OUTSIDE[1], BANK[1]]):
        r = http.post(
            "/v1/vouchers",
            headers=platform,
            json={"vouchers": [_item(alice.voucher_for_hash(h, f"m{i}"))]},
        )
        answers.add((r.status_code, r.text))
        _work(http)
    assert len(answers) == 1  # matched or not, the platform hears the same
    ((status, text),) = answers
    assert status == 202 and json.loads(text)["results"] == [
        {"index": 0, "status": 202, "error": None, "detail": None, "retry_after": None}
    ]
    assert http.get("/v1/vouchers/openings", headers=admin).json() == []
    r = http.post(
        "/v1/vouchers",
        headers=platform,
        json={"vouchers": [_item(alice.voucher_for_hash(BANK[2], "m-last"))]},
    )
    assert (r.status_code, r.text) == (status, text)  # the t-th match too
    assert http.get("/v1/vouchers/openings", headers=admin).json() == []  # not yet processed
    assert _work(http) == 1
    openings = http.get("/v1/vouchers/openings", headers=admin).json()
    assert sorted(o["item_id"] for o in openings) == ["m-last", "m1", "m3"]
    assert all(o["account"] == "alice" and o["matches"][0]["bank"] == "known" for o in openings)
    _problem(http.get("/v1/vouchers/openings", headers=platform), 403)
    account = http.get("/v1/vouchers/accounts/alice", headers=admin).json()
    assert account["hours"][0]["accepted"] == 5
    assert account["epochs"][0]["state"] == "opened" and account["epochs"][0]["verified"] == 3
    actions = [e.action for e in store.iter_audit()]
    assert "voucher.open" in actions and "voucher.list_openings" in actions


def test_hostile_input_gets_precise_4xx_never_500(app) -> None:
    http, store = app
    admin = _key(store, "admin", "admin")
    platform = _key(store, "platform", "vouchers")
    _publish(http, admin)
    alice = _device(http, platform, "alice", 2)
    good = alice.voucher_for_hash(BANK[0], "m").data
    header = 3 + 32 + 4 + 1 + 5 + 1

    def post(body, **kw):
        return http.post("/v1/vouchers", headers=platform, json=body, **kw)

    def refused(*blobs: bytes | str) -> list[dict]:
        """Post ``blobs`` for alice; the result of each (a str is sent as it is)."""
        items = [
            {"account": "alice", "voucher": b if isinstance(b, str) else _b64(b)} for b in blobs
        ]
        return _results(post({"vouchers": items}))

    # Each voucher is judged alone: a bad one is refused with its index, the good one queued.
    ok, bad = refused(good, "***")
    assert ok["status"] == 202 and bad["status"] == 422 and bad["index"] == 1
    assert "not base64" in bad["detail"]
    bad_point = good[:header] + b"\xff" * 32 + good[header + 32 :]
    ok, bad = refused(good, bad_point)
    assert ok["status"] == 202 and (bad["index"], bad["status"], bad["error"]) == (
        1,
        422,
        "invalid",
    )
    assert (
        bad["detail"].startswith("voucher 1: ")
        and "not a valid ristretto255 point" in bad["detail"]
    )
    assert "expected" in refused(good[:-1])[0]["detail"]
    assert "magic" in refused(b"\x00" * 40)[0]["detail"]
    other_table = bytearray(good)
    other_table[5] ^= 1
    assert "unknown or retired" in refused(bytes(other_table))[0]["detail"]
    assert (
        "at most 8"
        in _problem(post({"vouchers": [_item(alice.voucher_for_hash(BANK[0], "m"))] * 9}), 422)[
            "detail"
        ]
    )
    _problem(post({"vouchers": []}), 422)
    _problem(post({"vouchers": [{"account": "alice", "voucher": _b64(good)}], "extra": 1}), 422)
    # The version-1 body (bare vouchers, no stated sender) is refused whole.
    _problem(post({"vouchers": [_b64(good)]}), 422)
    _problem(post({"vouchers": [{"voucher": _b64(good)}]}), 422)
    _problem(
        http.post(
            "/v1/vouchers",
            headers={**platform, "Content-Type": "application/json"},
            content=b"{not json",
        ),
        400,
    )
    _problem(post({"vouchers": [{"account": "alice", "voucher": "A" * 450_000}]}), 413)
    for size in (0, 1, 50, 400, 3000, len(good)):
        (r,) = refused(os.urandom(size))
        assert r["status"] == 422, (size, r)
    # Of all that, only the two good vouchers were queued and counted; nothing bad was.
    hours = http.get("/v1/vouchers/accounts/alice", headers=admin).json()["hours"]
    assert [(h["accepted"], h["rejected"]) for h in hours] == [(2, 0)]


def test_rate_limit_is_429_with_retry_after_and_counted(app) -> None:
    http, store = app
    admin = _key(store, "admin", "admin")
    platform = _key(store, "platform", "vouchers")
    _publish(http, admin)
    bob = _device(http, platform, "bob", 3)
    batch = [_item(bob.voucher_for_hash(h, "m")) for h in OUTSIDE[:8]]
    assert [
        r["status"]
        for r in _results(http.post("/v1/vouchers", headers=platform, json={"vouchers": batch}))
    ] == [202] * 8
    r = http.post("/v1/vouchers", headers=platform, json={"vouchers": batch[:5]})
    results = _results(r)
    # 12 an hour: four more of bob's fit, the fifth is refused alone, with when to retry.
    assert [x["status"] for x in results] == [202, 202, 202, 202, 429]
    assert results[4]["retry_after"] >= 1 and "'bob'" in results[4]["detail"]
    assert results[4]["error"] == "rate_limited" and r.json()["accepted"] == 4
    hours = http.get("/v1/vouchers/accounts/bob", headers=admin).json()["hours"]
    assert [(h["accepted"], h["rejected"]) for h in hours] == [(12, 1)]


def test_franking_tags_and_reports(app) -> None:
    http, store = app
    platform = _key(store, "platform", "vouchers")
    franked = frank(b"a message", seeded(4))
    r = http.post(
        "/v1/franking/tags",
        headers=platform,
        json={"commitment": franked.commitment.hex(), "sender": "u1", "recipient": "u2"},
    )
    assert r.status_code == 200, r.text
    tag = r.json()
    report = {
        "message": _b64(b"a message"),
        "franking_key": franked.franking_key.hex(),
        "commitment": franked.commitment.hex(),
        "tag": tag["tag"],
        "sender": "u1",
        "recipient": "u2",
        "timestamp": tag["timestamp"],
        "reporter": "u2",
        "context": {"conversation_id": "c-9"},
    }
    ok = http.post("/v1/franking/reports", headers=platform, json=report)
    assert ok.status_code == 201, ok.text
    assert ok.json()["verified"] is True and ok.json()["sender"] == "u1"
    for change, why in [
        ({"message": _b64(b"a massage")}, "commitment"),
        ({"timestamp": tag["timestamp"] + 1}, "tag does not verify"),
        ({"recipient": "u3", "reporter": "u3"}, "tag does not verify"),
        ({"tag": "00" * 32}, "tag does not verify"),
        ({"franking_key": "11" * 32}, "commitment"),
        ({"reporter": "u9"}, "recipient"),
    ]:
        doc = _problem(
            http.post("/v1/franking/reports", headers=platform, json={**report, **change}), 422
        )
        assert doc["title"] == "Report does not verify" and why in doc["detail"]
    _problem(http.post("/v1/franking/reports", headers=platform, json={**report, "tag": "zz"}), 422)
    _problem(
        http.post(
            "/v1/franking/tags",
            headers=platform,
            json={"commitment": "ab", "sender": "u1", "recipient": "u2"},
        ),
        422,
    )
