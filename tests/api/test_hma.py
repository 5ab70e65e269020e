"""The HMA-compatible surface, exercised the way HMA clients (ROOST Coop, OpenMediaMatch's own
tests) write their requests, over the real app and store with the benign reference media."""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bastion.api.hma import content_id_of
from bastion.banks.model import NewEntry
from bastion.config import Settings
from bastion.db import Store
from bastion.signals import VideoFrame, hamming, serialize_frames
from tests.api.conftest import bearer

PROBLEM = "application/problem+json"
BRIDGE = "images/bridge-mods/aaa-orig.jpg"
BRIDGE_EDIT = "images/bridge-mods/blur-a-lot.jpg"
OTHER = "images/reg-test-input/labelme-subset/q0122.jpg"  # unrelated
FLAT = "images/reg-test-input/labelme-subset/q0003.jpg"  # PDQ quality 3


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def media_server(testdata: Path) -> Iterator[str]:
    """The test media over HTTP on loopback, as HMA's tests serve their images."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(testdata)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def settings() -> Settings:
    # Loopback is allow-listed only so the tests can fetch from their own media server.
    return Settings(
        index_poll_seconds=0.2,
        rate_limit_per_minute=0,
        max_upload_bytes=5 * 2**20,
        fetch_allow_networks=("127.0.0.0/8",),
    )


def _reference_pdq(testdata: Path) -> dict[str, str]:
    rows = (testdata / "reference-pdq.csv").read_text().splitlines()
    return {r.split(",")[0]: r.split(",")[1] for r in rows[1:] if r.count(",") >= 2}


def _make_bank(client: TestClient, key: dict[str, str], name: str) -> None:
    r = client.post("/c/banks", headers=key, json={"name": name})
    assert r.status_code == 201, r.text


def _upload(client: TestClient, key: dict[str, str], path: str, testdata: Path, **kw: Any) -> Any:
    """POST a file the way Coop does: the form field is named after the content type."""
    field = "video" if path.endswith(".mp4") else "photo"
    files = {field: (Path(path).name, (testdata / path).read_bytes())}
    return client.post(kw.pop("url"), headers=key, files=files, **kw)


# ---------------------------------------------------------------------------------------------
# auth and status


def test_every_hma_route_needs_a_key(client: TestClient) -> None:
    routes = [
        ("get", "/h/hash?url=http://example.com/a.jpg"),
        ("post", "/h/hash"),
        ("get", "/m/raw_lookup?signal_type=pdq&signal=00"),
        ("get", "/m/lookup?signal_type=pdq&signal=00"),
        ("post", "/m/lookup"),
        ("post", "/m/compare"),
        ("get", "/m/index/status"),
        ("get", "/c/banks"),
        ("post", "/c/banks"),
        ("get", "/c/bank/TEST_BANK"),
        ("put", "/c/bank/TEST_BANK"),
        ("delete", "/c/bank/TEST_BANK"),
        ("post", "/c/bank/TEST_BANK/content"),
        ("post", "/c/bank/TEST_BANK/signal"),
        ("get", "/c/bank/TEST_BANK/content/1"),
        ("put", "/c/bank/TEST_BANK/content/1"),
        ("delete", "/c/bank/TEST_BANK/content/1"),
        ("get", "/status"),
        ("get", "/status/live"),
    ]
    for method, path in routes:
        r = client.request(method.upper(), path)
        assert r.status_code == 401, (method, path, r.text)
        assert r.headers["content-type"] == PROBLEM, path
        assert r.json()["status"] == 401
    r = client.get("/c/banks", headers={"Authorization": "Bearer bst_nope_nope"})
    assert r.status_code == 401


def test_scopes_apply_to_hma_routes(client: TestClient, api_store: Store) -> None:
    hasher = bearer(api_store, "hasher", "hash")
    matcher = bearer(api_store, "matcher", "match")
    assert client.get("/c/banks", headers=hasher).status_code == 403
    assert client.post("/c/banks", headers=matcher, json={"name": "X"}).status_code == 403
    assert client.get("/m/index/status", headers=hasher).status_code == 403
    assert client.get("/m/index/status", headers=matcher).status_code == 200
    # /status takes any valid key, whatever its scopes.
    assert client.get("/status", headers=hasher).status_code == 200


def test_status_answers_as_hma_does(client: TestClient, admin: dict[str, str]) -> None:
    r = client.get("/status", headers=admin)
    assert r.status_code == 200
    assert r.text == "I-AM-ALIVE"
    r = client.get("/status/live", headers=admin)
    assert (r.status_code, r.text) == (200, "I-AM-ALIVE")


# ---------------------------------------------------------------------------------------------
# banks


def test_bank_lifecycle(client: TestClient, admin: dict[str, str], api_store: Store) -> None:
    assert client.get("/c/banks", headers=admin).json() == []
    for bad in ("01_TEST_BANK", "my_test_bank", "WITH SPACE", ""):
        r = client.post("/c/banks", headers=admin, json={"name": bad})
        assert r.status_code == 400, bad
        assert r.headers["content-type"] == PROBLEM
        assert "UPPER_WITH_UNDERSCORE" in r.json()["message"]

    r = client.post("/c/banks", headers=admin, json={"name": "MY_TEST_BANK_01"})
    assert r.status_code == 201
    assert r.json() == {"name": "MY_TEST_BANK_01", "matching_enabled_ratio": 1.0}
    # Stored under Bastion's lowercase name; shown upper-cased.
    assert api_store.get_bank("my_test_bank_01").enabled
    assert client.get("/c/banks", headers=admin).json() == [r.json()]

    dup = client.post("/c/banks", headers=admin, json={"name": "MY_TEST_BANK_01"})
    assert dup.status_code == 403 and dup.json()["message"] == "Bank already exists"

    # Coop sends enabled_ratio as text.
    r = client.post("/c/banks", headers=admin, json={"name": "COOP_ORG1_B", "enabled_ratio": "0"})
    assert r.status_code == 201 and r.json()["matching_enabled_ratio"] == 0.0
    assert not api_store.get_bank("coop_org1_b").enabled

    got = client.get("/c/bank/MY_TEST_BANK_01", headers=admin)
    assert got.status_code == 200 and got.json()["name"] == "MY_TEST_BANK_01"
    missing = client.get("/c/bank/NOPE", headers=admin)
    assert missing.status_code == 404 and missing.headers["content-type"] == PROBLEM
    assert "NOPE" in missing.json()["message"]


def test_bank_update_and_delete(
    client: TestClient, admin: dict[str, str], api_store: Store
) -> None:
    _make_bank(client, admin, "MY_TEST_BANK")
    _make_bank(client, admin, "OTHER_BANK")
    assert (
        client.put("/c/bank/MY_TEST_BANK", headers=admin, json={"name": "1_bad"}).status_code == 400
    )
    taken = client.put("/c/bank/MY_TEST_BANK", headers=admin, json={"name": "OTHER_BANK"})
    assert taken.status_code == 403

    r = client.put("/c/bank/MY_TEST_BANK", headers=admin, json={"name": "MY_TEST_BANK_RENAMED"})
    assert r.status_code == 200 and r.json()["name"] == "MY_TEST_BANK_RENAMED"
    r = client.put("/c/bank/MY_TEST_BANK_RENAMED", headers=admin, json={"enabled": False})
    assert r.json()["matching_enabled_ratio"] == 0.0
    assert not api_store.get_bank("my_test_bank_renamed").enabled
    r = client.put("/c/bank/MY_TEST_BANK_RENAMED", headers=admin, json={"enabled_ratio": 1})
    assert r.json()["matching_enabled_ratio"] == 1.0

    # A sampling ratio cannot be honoured, so it is refused rather than rounded.
    half = client.put("/c/bank/MY_TEST_BANK_RENAMED", headers=admin, json={"enabled_ratio": 0.5})
    assert half.status_code == 400 and "0.5" in half.json()["detail"]
    assert api_store.get_bank("my_test_bank_renamed").enabled
    assert client.put("/c/bank/NOPE", headers=admin, json={"enabled": True}).status_code == 404

    assert client.delete("/c/bank/MY_TEST_BANK_RENAMED", headers=admin).json() == {
        "message": "Done"
    }
    names = [b["name"] for b in client.get("/c/banks", headers=admin).json()]
    assert names == ["OTHER_BANK"]
    # As in HMA, deleting a bank that is not there succeeds.
    assert client.delete("/c/bank/MY_TEST_BANK_RENAMED", headers=admin).status_code == 200

    actions = [e.action for e in api_store.iter_audit()]
    for action in ("hma.bank.create", "hma.bank.update", "hma.bank.delete"):
        assert action in actions
    assert actions.count("hma.bank.delete") == 1


# ---------------------------------------------------------------------------------------------
# hashing


def test_hash_upload(client: TestClient, admin: dict[str, str], testdata: Path) -> None:
    data = (testdata / BRIDGE).read_bytes()
    r = _upload(client, admin, BRIDGE, testdata, url="/h/hash")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"pdq", "video_md5", "video_sha256"}
    assert body["video_md5"] == hashlib.md5(data).hexdigest()
    assert body["video_sha256"] == hashlib.sha256(data).hexdigest()
    assert hamming(body["pdq"], _reference_pdq(testdata)[BRIDGE]) <= 10

    only = _upload(client, admin, BRIDGE, testdata, url="/h/hash", params={"types": "pdq"})
    assert only.json() == {"pdq": body["pdq"]}

    # Too flat to hash meaningfully: HMA answers an empty PDQ.
    assert _upload(client, admin, FLAT, testdata, url="/h/hash").json()["pdq"] == ""


def test_hash_upload_errors(client: TestClient, admin: dict[str, str], testdata: Path) -> None:
    img = (testdata / BRIDGE).read_bytes()
    r = client.post("/h/hash", headers=admin, files={"image": ("a.jpg", img)})
    assert r.status_code == 400 and "content_type" in r.json()["message"]
    two = client.post(
        "/h/hash", headers=admin, files=[("photo", ("a.jpg", img)), ("photo", ("b.jpg", img))]
    )
    assert two.status_code == 400 and "one file" in two.json()["message"]
    assert client.post("/h/hash", headers=admin, data={"x": "1"}).status_code == 400
    junk = client.post("/h/hash", headers=admin, files={"photo": ("a.jpg", b"not an image")})
    assert junk.status_code == 400 and "not an image" in junk.json()["detail"]
    big = client.post("/h/hash", headers=admin, files={"photo": ("a.jpg", b"\0" * (5 * 2**20 + 1))})
    assert big.status_code == 413
    bad_type = _upload(client, admin, BRIDGE, testdata, url="/h/hash", params={"types": "tmk"})
    assert bad_type.status_code == 400 and "tmk" in bad_type.json()["message"]


def test_hash_url(
    client: TestClient, admin: dict[str, str], testdata: Path, media_server: str
) -> None:
    r = client.get("/h/hash", headers=admin, params={"url": f"{media_server}/{BRIDGE}"})
    assert r.status_code == 200, r.text
    assert r.json()["video_md5"] == hashlib.md5((testdata / BRIDGE).read_bytes()).hexdigest()
    missing = client.get("/h/hash", headers=admin, params={"url": f"{media_server}/nope.jpg"})
    assert missing.status_code == 502 and missing.headers["content-type"] == PROBLEM
    # Link-local (cloud metadata) addresses stay blocked whatever the allow-list says.
    meta = client.get("/h/hash", headers=admin, params={"url": "http://169.254.169.254/x.jpg"})
    assert meta.status_code == 400 and meta.json()["code"] == "blocked-address"


# ---------------------------------------------------------------------------------------------
# content and matching


def test_add_content_by_upload_and_match(
    client: TestClient, admin: dict[str, str], testdata: Path, api_store: Store
) -> None:
    _make_bank(client, admin, "TEST_BANK")
    _make_bank(client, admin, "OTHER_BANK")
    added = client.post(
        "/c/bank/TEST_BANK/content",
        headers=admin,
        files={"photo": ("aaa-orig.jpg", (testdata / BRIDGE).read_bytes())},
        data={"content_id": "post-42", "metadata": json.dumps({"json": {"case": 7}})},
    )
    assert added.status_code == 200, added.text
    cid = added.json()["id"]
    signals = added.json()["signals"]
    assert list(signals) == ["pdq", "video_md5", "video_sha256"]

    # One content = three Bastion entries: the head's id is the content id, the others point to it.
    entries = list(api_store.iter_entries(banks=["test_bank"]))
    assert len(entries) == 3
    assert {content_id_of(e.id, e.external_id) for e in entries} == {cid}
    assert min(e.id for e in entries) == cid

    edit_pdq = _upload(client, admin, BRIDGE_EDIT, testdata, url="/h/hash").json()["pdq"]
    raw = client.get(
        "/m/raw_lookup", headers=admin, params={"signal_type": "pdq", "signal": edit_pdq}
    )
    assert raw.json() == {"matches": [cid]}
    dist = client.get(
        "/m/raw_lookup",
        headers=admin,
        params={"signal_type": "pdq", "signal": edit_pdq, "include_distance": "true"},
    ).json()["matches"]
    assert dist == [{"bank_content_id": cid, "distance": str(hamming(edit_pdq, signals["pdq"]))}]
    assert dist[0]["distance"] != "0"
    only_other = client.get(
        "/m/raw_lookup",
        headers=admin,
        params={"signal_type": "pdq", "signal": edit_pdq, "banks": "OTHER_BANK"},
    )
    assert only_other.json() == {"matches": []}

    # Coop's lookup: signal and signal_type, answer keyed by bank.
    looked = client.get(
        "/m/lookup",
        headers=admin,
        params={"signal_type": "video_md5", "signal": signals["video_md5"]},
    )
    assert looked.json() == {"TEST_BANK": [{"bank_content_id": cid, "distance": "-"}]}

    # Uploaded file: every signal type, each keyed by bank.
    post = _upload(client, admin, BRIDGE_EDIT, testdata, url="/m/lookup")
    assert post.status_code == 200, post.text
    assert post.json()["pdq"]["TEST_BANK"][0]["bank_content_id"] == cid
    assert post.json()["video_md5"] == {}  # a different file
    unrelated = _upload(client, admin, OTHER, testdata, url="/m/lookup").json()
    assert unrelated == {"pdq": {}, "video_md5": {}, "video_sha256": {}}

    got = client.get(
        f"/c/bank/TEST_BANK/content/{cid}", headers=admin, params={"include_signals": "true"}
    ).json()
    assert got["id"] == cid and got["disable_until_ts"] == 1
    assert got["bank"] == {"name": "TEST_BANK", "matching_enabled_ratio": 1.0}
    assert got["signals"] == signals
    assert got["metadata"] == {"json": {"case": 7}, "content_id": "post-42"}
    plain = client.get(
        f"/c/bank/TEST_BANK/content/{cid}", headers=admin, params={"include_metadata": "false"}
    ).json()
    assert "signals" not in plain and "metadata" not in plain
    assert client.get(f"/c/bank/OTHER_BANK/content/{cid}", headers=admin).status_code == 404
    assert client.get("/c/bank/NOPE/content/1", headers=admin).status_code == 404

    # The same image again is the same content, not a second copy.
    again = _upload(client, admin, BRIDGE, testdata, url="/c/bank/TEST_BANK/content")
    assert again.json()["id"] == cid
    assert len(list(api_store.iter_entries(banks=["test_bank"]))) == 3
    assert "hma.content.add" in [e.action for e in api_store.iter_audit()]


def test_add_content_by_url_with_metadata(
    client: TestClient, admin: dict[str, str], media_server: str
) -> None:
    _make_bank(client, admin, "TEST_BANK")
    url = f"/c/bank/TEST_BANK/content?url={media_server}/{BRIDGE}&content_type=photo"
    bad = client.post(url, headers=admin, json={"metadata": {"invalid_metadata": 5}})
    assert bad.status_code == 400 and "invalid_metadata" in bad.json()["message"]
    metadata = {
        "content_id": "ext-id-123",
        "content_uri": "https://example.com/item/123",
        "json": {"source": "test", "nested": {"key": "value"}},
    }
    r = client.post(url, headers=admin, json={"metadata": metadata, "note": "Reported by user X"})
    assert r.status_code == 200, r.text
    got = client.get(f"/c/bank/TEST_BANK/content/{r.json()['id']}", headers=admin).json()
    assert got["metadata"] == metadata
    assert got["note"] == "Reported by user X"

    long_note = client.post(url, headers=admin, json={"note": "x" * 256})
    assert long_note.status_code == 400
    neither = client.post("/c/bank/TEST_BANK/content", headers=admin)
    assert neither.status_code == 400 and "Neither" in neither.json()["message"]
    flat = client.post(
        f"/c/bank/TEST_BANK/content?url={media_server}/{FLAT}&types=pdq", headers=admin
    )
    assert flat.status_code == 400 and flat.json()["message"] == "No signals given"
    nobank = client.post(f"/c/bank/NOPE/content?url={media_server}/{BRIDGE}", headers=admin)
    assert nobank.status_code == 404


def test_lookup_by_url(
    client: TestClient, admin: dict[str, str], testdata: Path, media_server: str
) -> None:
    _make_bank(client, admin, "TEST_BANK")
    cid = _upload(client, admin, BRIDGE, testdata, url="/c/bank/TEST_BANK/content").json()["id"]
    url = f"{media_server}/{BRIDGE_EDIT}"
    r = client.get("/m/lookup", headers=admin, params={"url": url})
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"pdq", "video_md5", "video_sha256"}
    assert r.json()["pdq"]["TEST_BANK"][0]["bank_content_id"] == cid
    elided = client.get("/m/lookup", headers=admin, params={"url": url, "signal_type": "pdq"})
    assert elided.json() == r.json()["pdq"]
    assert client.get("/m/lookup", headers=admin, params={"signal": "ab"}).status_code == 400


def test_add_signals_directly(client: TestClient, admin: dict[str, str], api_store: Store) -> None:
    _make_bank(client, admin, "TEST_BANK")
    pdq = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"
    md5 = "d35c785545392755e7e4" + "0" * 12
    r = client.post(
        "/c/bank/TEST_BANK/signal",
        headers=admin,
        json={"video_md5": md5.upper(), "pdq": pdq, "note": "from a partner"},
    )
    assert r.status_code == 200, r.text
    cid = r.json()["id"]
    assert r.json()["signals"] == {"pdq": pdq, "video_md5": md5}
    raw = client.get("/m/raw_lookup", headers=admin, params={"signal_type": "md5", "signal": md5})
    assert raw.json() == {"matches": [cid]}
    assert client.get(f"/c/bank/TEST_BANK/content/{cid}", headers=admin).json()["note"] == (
        "from a partner"
    )

    bad = client.post("/c/bank/TEST_BANK/signal", headers=admin, json={"pdq": "abc"})
    assert bad.status_code == 400 and bad.json()["message"].startswith("Invalid pdq signal")
    unknown = client.post("/c/bank/TEST_BANK/signal", headers=admin, json={"tmk": "abc"})
    assert unknown.status_code == 400 and "tmk" in unknown.json()["message"]
    assert client.post("/c/bank/TEST_BANK/signal", headers=admin, json={}).status_code == 400
    assert len(list(api_store.iter_entries(banks=["test_bank"]))) == 2


def test_entries_added_outside_hma_are_content(
    client: TestClient, admin: dict[str, str], api_store: Store
) -> None:
    api_store.create_bank("ncmec-list")
    md5 = "0123456789abcdef0123456789abcdef"
    api_store.add_entries("ncmec-list", [NewEntry(signal_type="md5", value=md5, external_id="N1")])
    entry = api_store.find_entries("ncmec-list", external_id="N1")[0]
    client.app.state.runtime.index.refresh()  # written behind the API's back: catch up now
    r = client.get("/m/lookup", headers=admin, params={"signal_type": "video_md5", "signal": md5})
    assert r.json() == {"NCMEC-LIST": [{"bank_content_id": entry.id, "distance": "-"}]}
    got = client.get(f"/c/bank/NCMEC-LIST/content/{entry.id}", headers=admin)
    assert got.status_code == 200 and got.json()["bank"]["name"] == "NCMEC-LIST"


def test_disable_enable_and_delete_content(
    client: TestClient, admin: dict[str, str], testdata: Path, api_store: Store
) -> None:
    _make_bank(client, admin, "TEST_BANK")
    added = _upload(client, admin, BRIDGE, testdata, url="/c/bank/TEST_BANK/content").json()
    cid, pdq = added["id"], added["signals"]["pdq"]
    path = f"/c/bank/TEST_BANK/content/{cid}"

    def matches() -> list[int]:
        params = {"signal_type": "pdq", "signal": pdq}
        return client.get("/m/raw_lookup", headers=admin, params=params).json()["matches"]

    assert matches() == [cid]
    off = client.put(path, headers=admin, json={"disable_until_ts": 0})
    assert off.status_code == 200, off.text
    assert off.json()["disable_until_ts"] == 0 and off.json()["id"] == cid
    assert matches() == []
    assert not any(
        e.enabled for e in api_store.iter_entries(banks=["test_bank"], enabled_only=False)
    )
    assert client.get(path, headers=admin).json()["disable_until_ts"] == 0

    future = client.put(path, headers=admin, json={"disable_until_ts": 4_000_000_000})
    assert future.status_code == 400 and "future" in future.json()["message"]
    assert client.put(path, headers=admin, json={"disable_until_ts": -1}).status_code == 400
    assert client.put(path, headers=admin, json={"note": "new"}).status_code == 501

    on = client.put(path, headers=admin, json={"disable_until_ts": "1"})
    assert on.json()["disable_until_ts"] == 1
    assert matches() == [cid]
    assert client.put("/c/bank/TEST_BANK/content/999999", headers=admin, json={}).status_code == 404

    assert client.delete(path, headers=admin).json() == {"deleted": 1}
    assert matches() == []
    assert list(api_store.iter_entries(banks=["test_bank"], enabled_only=False)) == []
    assert client.delete(path, headers=admin).json() == {"deleted": 0}
    assert client.get(path, headers=admin).status_code == 404
    actions = [e.action for e in api_store.iter_audit()]
    for action in ("hma.content.disable", "hma.content.enable", "hma.content.delete"):
        assert action in actions


def test_lookup_skips_disabled_banks(
    client: TestClient, admin: dict[str, str], testdata: Path
) -> None:
    _make_bank(client, admin, "TEST_BANK")
    pdq = _upload(client, admin, BRIDGE, testdata, url="/c/bank/TEST_BANK/content").json()[
        "signals"
    ]["pdq"]
    params = {"signal_type": "pdq", "signal": pdq}
    assert list(client.get("/m/lookup", headers=admin, params=params).json()) == ["TEST_BANK"]
    client.put("/c/bank/TEST_BANK", headers=admin, json={"enabled": False})
    assert client.get("/m/lookup", headers=admin, params=params).json() == {}


def test_invalid_lookups(client: TestClient, admin: dict[str, str]) -> None:
    r = client.get("/m/raw_lookup", headers=admin, params={"signal_type": "pdq", "signal": "xyz"})
    assert r.status_code == 400 and r.json()["message"].startswith("invalid signal")
    r = client.get("/m/raw_lookup", headers=admin, params={"signal_type": "tmk", "signal": "0"})
    assert r.status_code == 400 and "No such SignalType 'tmk'" in r.json()["message"]
    r = client.get("/m/index/status", headers=admin, params={"signal_type": "nope"})
    assert r.status_code == 400


def test_compare(client: TestClient, admin: dict[str, str], testdata: Path) -> None:
    ref = _reference_pdq(testdata)
    a, b, far = ref[BRIDGE], ref[BRIDGE_EDIT], ref[OTHER]
    md5 = "0123456789abcdef0123456789abcdef"
    r = client.post(
        "/m/compare", headers=admin, json={"pdq": [a, b], "video_md5": [md5, md5.upper()]}
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"pdq": [True, {"distance": hamming(a, b)}], "video_md5": [True, {}]}
    r = client.post("/m/compare", headers=admin, json={"pdq": [a, far]})
    assert r.json()["pdq"] == [False, {"distance": hamming(a, far)}]
    assert client.post("/m/compare", headers=admin, json={"pdq": [a]}).status_code == 400
    assert client.post("/m/compare", headers=admin, json={"pdq": a}).status_code == 400
    assert client.post("/m/compare", headers=admin, json={"pdq": [a, "zz"]}).status_code == 400


def test_index_status(client: TestClient, admin: dict[str, str], testdata: Path) -> None:
    _make_bank(client, admin, "TEST_BANK")
    _upload(client, admin, BRIDGE, testdata, url="/c/bank/TEST_BANK/content")
    _upload(client, admin, OTHER, testdata, url="/c/bank/TEST_BANK/content")
    r = client.get("/m/index/status", headers=admin)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"pdq", "vpdq", "video_md5", "video_sha256", "url"}
    assert body["pdq"]["size"] == 2 and body["video_md5"]["size"] == 2
    assert body["vpdq"]["size"] == 0 and body["url"]["size"] == 0
    assert body["pdq"]["present"] is True and body["pdq"]["built_to"] > 1_600_000_000
    one = client.get("/m/index/status", headers=admin, params={"signal_type": "pdq"}).json()
    assert list(one) == ["pdq"]


@pytest.mark.parametrize("api_store", ["sqlite"], indirect=True)
def test_video_content_and_lookup(
    client: TestClient, admin: dict[str, str], testdata: Path
) -> None:
    _make_bank(client, admin, "VIDEOS")
    added = _upload(
        client,
        admin,
        "videos/pattern-sd-with-small-logo-bar.mp4",
        testdata,
        url="/c/bank/VIDEOS/content",
    )
    assert added.status_code == 200, added.text
    assert set(added.json()["signals"]) == {"vpdq", "video_md5", "video_sha256"}
    cid = added.json()["id"]

    # tests/data/SOURCES.md: every frame of the grey clip matches a frame of the logo clip.
    grey = _upload(client, admin, "videos/pattern-sd-grey-bar.mp4", testdata, url="/m/lookup")
    rows = grey.json()["vpdq"]["VIDEOS"]
    assert [row["bank_content_id"] for row in rows] == [cid]
    found = re.fullmatch(r"(\d+)%\[(\d+)%\]", rows[0]["distance"])
    assert found and int(found.group(1)) == 100
    door = _upload(client, admin, "videos/doorknob-hd-no-bar.mp4", testdata, url="/m/lookup")
    assert door.json()["vpdq"] == {}


def test_vpdq_compare_and_url_signals(client: TestClient, admin: dict[str, str]) -> None:
    rng = random.Random(7)
    frames = [VideoFrame(f"{rng.getrandbits(256):064x}", 100, float(i)) for i in range(5)]
    other = [*frames[:4], VideoFrame(f"{rng.getrandbits(256):064x}", 100, 4.0)]
    a, b = serialize_frames(frames), serialize_frames(other)
    r = client.post("/m/compare", headers=admin, json={"vpdq": [a, b]})
    assert r.status_code == 200, r.text
    assert r.json() == {
        "vpdq": [True, {"query_match_percent": 80.0, "compared_match_percent": 80.0}]
    }
    few = serialize_frames(frames[:1])
    r = client.post("/m/compare", headers=admin, json={"vpdq": [a, few]})
    assert r.json()["vpdq"][0] is False

    _make_bank(client, admin, "URLS")
    added = client.post(
        "/c/bank/URLS/signal", headers=admin, json={"url": "https://Example.com/a/b?x=1"}
    )
    assert added.status_code == 200, added.text
    cid = added.json()["id"]
    params = {"signal_type": "url", "signal": "https://example.com/a/b?x=1"}
    assert client.get("/m/raw_lookup", headers=admin, params=params).json() == {"matches": [cid]}
    params["signal"] = "https://example.com/a/c"
    assert client.get("/m/raw_lookup", headers=admin, params=params).json() == {"matches": []}
