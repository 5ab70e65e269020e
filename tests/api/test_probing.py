"""Issue 12, finding 6: a `match` key recovered exact bank hashes from distances.

The attack: a benign photo's PDQ is in a bank; the attacker holds a blurred copy (4 bits away),
looks it up, then looks up its 256 one-bit flips: every flip whose distance drops by one names
a bit where the listed hash differs, so two requests gave the listed hash. Now a key without
`export` sees distances as bands (a one-bit step inside a band changes nothing it sees), and
lookups probing near its matches are counted and refused with 429 past `probe_limit`, and
audited. The tests run the attack over HTTP against the default limits, on SQLite and
PostgreSQL (the `client` fixture); benign scanning of many distinct images is not flagged.

A review then bypassed both: the client-chosen threshold measured the distance, and copies with
many random bits flipped (far from each other, so never "near") told which bits differ. The
threshold is now the server's for such keys, and looks at one entry are counted however far
apart they are (tests from "the review's bypass" on); re-uploads of one picture are not.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from bastion.config import Settings
from bastion.db import Store
from bastion.index.matcher import DEFAULT_PDQ_THRESHOLD
from bastion.signals import hamming, hash_bytes
from tests.api.conftest import bearer

PROBLEM = "application/problem+json"
LISTED = "images/bridge-mods/aaa-orig.jpg"
BLURRED = "images/bridge-mods/blur-a-lot.jpg"
DEFAULTS = Settings()


def _pdq(testdata: Path, path: str) -> str:
    [pdq] = [
        s.value
        for s in hash_bytes((testdata / path).read_bytes(), name=path).signals
        if str(s.type) == "pdq"
    ]
    return pdq


def _flip(hexval: str, bit: int) -> str:
    return f"{int(hexval, 16) ^ (1 << bit):064x}"


def _listed(client: TestClient, admin: dict[str, str], testdata: Path) -> str:
    """A bank holding a benign photo's PDQ; returns the listed hash."""
    listed = _pdq(testdata, LISTED)
    client.post("/v1/banks", headers=admin, json={"name": "listed", "labels": ["demo"]})
    entries = [{"signal_type": "pdq", "value": listed}]
    assert (
        client.post("/v1/banks/listed/entries", headers=admin, json={"entries": entries}).json()[
            "added"
        ]
        == 1
    )
    return listed


def _lookup(client: TestClient, key: dict[str, str], hashes: list[str]) -> Any:
    return client.post(
        "/v1/lookup", headers=key, json={"signals": [{"type": "pdq", "value": h} for h in hashes]}
    )


def _recover(base: str, base_distance: int, answers: dict[int, int]) -> str:
    """The attacker's inference: a flip that brings the distance down names a differing bit."""
    value = int(base, 16)
    for bit, distance in answers.items():
        if distance < base_distance:
            value ^= 1 << bit
    return f"{value:064x}"


def _probing_events(store: Store) -> list[Any]:
    return [e for e in store.iter_audit() if e.action == "match.probing"]


def _wait(client: TestClient, seconds: float) -> None:
    """Let ``seconds`` pass for the probe detector (its clock is monotonic time)."""
    detector = client.app.state.runtime.probes
    clock = detector.clock
    detector.clock = lambda: clock() + seconds


def test_bit_flip_recovery_is_bucketed_refused_and_audited(
    client: TestClient, admin: dict[str, str], api_store: Store, testdata: Path
) -> None:
    listed = _listed(client, admin, testdata)
    blurred = _pdq(testdata, BLURRED)
    exact = hamming(blurred, listed)
    assert 1 <= exact <= 8  # the blurred copy is a near copy, a few bits off
    attacker = bearer(api_store, "attacker", "match")

    # Request 1: the blurred copy. Request 2: all 256 one-bit flips at once.
    [m] = _lookup(client, attacker, [blurred]).json()["results"][0]["matches"]
    base_distance = m["distance"]
    flips = [_flip(blurred, bit) for bit in range(256)]
    r = _lookup(client, attacker, flips)
    answers = {}
    if r.status_code == 200:
        answers = {i: res["matches"][0]["distance"] for i, res in enumerate(r.json()["results"])}
    assert _recover(blurred, base_distance, answers) != listed, "recovered the listed hash"

    # The first answer was a band, not the distance; the flips were refused, answering nothing.
    assert (m["band"], m["distance"]) == ("near", DEFAULTS.match_near_distance)
    assert m["distance"] != exact
    assert r.status_code == 429 and r.headers["content-type"] == PROBLEM
    assert 1 <= int(r.headers["retry-after"]) <= DEFAULTS.probe_window_seconds
    assert "probing" in r.json()["detail"] and listed not in r.text
    [event] = _probing_events(api_store)
    assert event.actor == "key:attacker" and event.target == "key:attacker"
    assert event.detail["probes"] == 256 and event.detail["route"] == "/v1/lookup"
    assert event.remote_addr
    # The key stays refused while it keeps probing...
    assert _lookup(client, attacker, flips[:1]).status_code == 429
    # ...but looking up other content goes on.
    other = _pdq(testdata, "images/reg-test-input/labelme-subset/q0122.jpg")
    assert _lookup(client, attacker, [other]).status_code == 200

    # A patient attacker with a fresh key, flips in small batches: answered up to the limit,
    # and every answer is the same band, so the inference recovers nothing.
    patient = bearer(api_store, "patient", "match")
    assert _lookup(client, patient, [blurred]).status_code == 200
    answers: dict[int, int] = {}
    refused_at = None
    for start in range(0, 256, 16):
        r = _lookup(client, patient, flips[start : start + 16])
        if r.status_code == 429:
            refused_at = start
            break
        assert r.status_code == 200, r.text
        for bit, result in enumerate(r.json()["results"], start):
            [m] = result["matches"]
            answers[bit] = m["distance"]
            assert m["band"] == "near"
    assert refused_at == DEFAULTS.probe_limit  # 64 probes answered, the next batch refused
    assert set(answers.values()) == {base_distance}
    assert _recover(blurred, base_distance, answers) != listed
    assert len(_probing_events(api_store)) == 2

    # The window passes: the key may look again (a rate limit, not a ban).
    _wait(client, DEFAULTS.probe_window_seconds + 1)
    assert _lookup(client, patient, flips[64:80]).status_code == 200

    # With exact distances (what `export` may see) the same two requests do give the hash:
    # the attack is real, and the export key is neither banded nor throttled.
    exporter = bearer(api_store, "exporter", "match", "export")
    [m] = _lookup(client, exporter, [blurred]).json()["results"][0]["matches"]
    assert (m["distance"], m["band"]) == (exact, "near")
    r = _lookup(client, exporter, flips)
    assert r.status_code == 200
    told = {bit: res["matches"][0]["distance"] for bit, res in enumerate(r.json()["results"])}
    assert _recover(blurred, exact, told) == listed
    assert len(_probing_events(api_store)) == 2


def test_hma_lookups_keep_their_shape_and_are_banded_and_refused(
    client: TestClient, admin: dict[str, str], api_store: Store, testdata: Path
) -> None:
    """The same attack over HMA's /m/raw_lookup and /m/lookup, one flip a request."""
    listed = _listed(client, admin, testdata)
    blurred = _pdq(testdata, BLURRED)
    exact = hamming(blurred, listed)
    attacker = bearer(api_store, "hma-attacker", "match")
    [entry] = api_store.find_entries("listed", value=listed)

    # The attack, one flip a request: a flip whose distance drops names a differing bit.
    params = {"signal_type": "pdq", "signal": blurred, "include_distance": "true"}
    base = int(
        client.get("/m/raw_lookup", headers=attacker, params=params).json()["matches"][0][
            "distance"
        ]
    )
    told: dict[int, int] = {}
    for bit in range(256):
        flipped = {**params, "signal": _flip(blurred, bit)}
        r = client.get("/m/raw_lookup", headers=attacker, params=flipped)
        if r.status_code != 200:
            break
        told[bit] = int(r.json()["matches"][0]["distance"])
    assert _recover(blurred, base, told) != listed, "recovered the listed hash"
    assert len(told) == DEFAULTS.probe_limit and r.status_code == 429
    assert set(told.values()) == {base}

    # The shapes are HMA's; the distance is the band's number for this key, exact for admin.
    _wait(client, DEFAULTS.probe_window_seconds + 1)
    attacker = bearer(api_store, "hma-attacker-2", "match")
    r = client.get("/m/raw_lookup", headers=attacker, params=params)
    near = str(DEFAULTS.match_near_distance)
    assert r.json() == {"matches": [{"bank_content_id": entry.id, "distance": near}]}
    r = client.get("/m/lookup", headers=attacker, params={"signal_type": "pdq", "signal": blurred})
    assert r.json() == {"LISTED": [{"bank_content_id": entry.id, "distance": near}]}
    r = client.get("/m/raw_lookup", headers=admin, params=params)
    assert r.json()["matches"][0]["distance"] == str(exact)

    seen: set[str] = set()
    statuses = []
    for bit in range(DEFAULTS.probe_limit + 1):
        route = "/m/raw_lookup" if bit % 2 else "/m/lookup"
        flipped = {"signal_type": "pdq", "signal": _flip(blurred, bit), "include_distance": "true"}
        r = client.get(route, headers=attacker, params=flipped)
        statuses.append(r.status_code)
        if r.status_code == 200:
            rows = r.json()["matches"] if route == "/m/raw_lookup" else r.json()["LISTED"]
            seen |= {row["distance"] for row in rows}
    assert statuses == [200] * DEFAULTS.probe_limit + [429]
    assert seen == {near}
    assert r.headers["content-type"] == PROBLEM and int(r.headers["retry-after"]) >= 1
    assert "probing" in r.json()["message"]  # HMA clients print `message`
    first, second = _probing_events(api_store)
    assert first.actor == "key:hma-attacker" and first.detail["route"] == "/m/raw_lookup"
    assert second.actor == "key:hma-attacker-2" and second.detail["route"] == "/m/lookup"


def test_content_routes_show_bands_but_record_exact_distances(
    client: TestClient, admin: dict[str, str], api_store: Store, testdata: Path
) -> None:
    """/v1/scan and HMA's upload lookup: the answer is banded (the verdict's reason too), while
    the recorded scan keeps the exact distance for policy and review."""
    listed = _listed(client, admin, testdata)
    exact = hamming(_pdq(testdata, BLURRED), listed)
    scanner = bearer(api_store, "scanner", "match")
    photo = (testdata / BLURRED).read_bytes()

    body = client.post("/v1/scan", headers=scanner, files={"file": ("b.jpg", photo)}).json()
    [m] = body["matches"]
    assert (m["band"], m["distance"]) == ("near", DEFAULTS.match_near_distance)
    assert "distance near" in body["verdict"]["reason"]
    assert f"distance {exact}" not in body["verdict"]["reason"]
    assert api_store.get_scan(body["scan_id"]).matches[0]["distance"] == exact

    admin_body = client.post("/v1/scan", headers=admin, files={"file": ("b.jpg", photo)}).json()
    assert admin_body["matches"][0]["distance"] == exact
    assert f"distance {exact}" in admin_body["verdict"]["reason"]

    r = client.post("/m/lookup", headers=scanner, files={"photo": ("b.jpg", photo)})
    [row] = r.json()["pdq"]["LISTED"]
    assert row["distance"] == str(DEFAULTS.match_near_distance)
    [recorded] = api_store.iter_scans(limit=1)
    assert recorded.matches[0]["distance"] == str(exact)


def _synthetic_photos(n: int) -> list[bytes]:
    """Benign synthetic images: smooth random colour fields (8x8 noise scaled up)."""
    rng = np.random.default_rng(12)
    out = []
    for _ in range(n):
        small = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        buf = io.BytesIO()
        small.resize((128, 128), Image.Resampling.BICUBIC).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def test_scanning_many_distinct_images_is_not_flagged(
    client: TestClient, admin: dict[str, str], api_store: Store, testdata: Path
) -> None:
    """A platform's ordinary traffic: many distinct photos, some of them banked, looked up in
    one batch and again later (repeats are not probes). Nothing is refused or audited."""
    photos = [p.read_bytes() for p in sorted((testdata / "images").rglob("*")) if p.is_file()]
    photos += _synthetic_photos(200)
    hashes: list[str] = []
    for data in photos:
        pdq = [
            s for s in hash_bytes(data).signals if str(s.type) == "pdq" and (s.quality or 0) >= 50
        ]
        # Distinct images only (none would match another): the set also holds edits of one photo.
        if pdq and all(hamming(pdq[0].value, h) > DEFAULT_PDQ_THRESHOLD for h in hashes):
            hashes.append(pdq[0].value)
    assert len(hashes) >= 200
    banked = hashes[::10]
    client.post("/v1/banks", headers=admin, json={"name": "ordinary"})
    entries = [{"signal_type": "pdq", "value": h} for h in banked]
    client.post("/v1/banks/ordinary/entries", headers=admin, json={"entries": entries})
    platform = bearer(api_store, "platform", "match")

    for _ in range(3):
        r = _lookup(client, platform, hashes)
        assert r.status_code == 200, r.text
        matched = [res["value"] for res in r.json()["results"] if res["matches"]]
        assert matched == banked
        assert {m["band"] for res in r.json()["results"] for m in res["matches"]} == {"exact"}
    for h in hashes[:20]:  # one at a time too
        assert _lookup(client, platform, [h]).status_code == 200
    assert _probing_events(api_store) == []


# -- the review's bypass: a client-chosen threshold, and far-apart masks ------------------------
def _lookup_at(client: TestClient, key: dict[str, str], hashes: list[str], threshold: int) -> Any:
    signals = [{"type": "pdq", "value": h} for h in hashes]
    return client.post("/v1/lookup", headers=key, json={"threshold": threshold, "signals": signals})


def _masks(base: str, seed: int, n: int, k: int) -> tuple[list[list[int]], list[str]]:
    """``n`` copies of ``base``, each with a random set of ``k`` bits flipped."""
    rng = random.Random(seed)
    masks = [rng.sample(range(256), k) for _ in range(n)]
    return masks, [_flip_all(base, m) for m in masks]


def _flip_all(hexval: str, bits: list[int]) -> str:
    value = int(hexval, 16)
    for bit in bits:
        value ^= 1 << bit
    return f"{value:064x}"


def _intersect(base: str, masks: list[list[int]], hits: list[bool]) -> str:
    """The review's inference: a bit every one of whose covering masks matched differs."""
    differing = [
        bit
        for bit in range(256)
        if (covering := [h for m, h in zip(masks, hits, strict=False) if bit in m])
        and all(covering)
    ]
    return _flip_all(base, differing)


def test_threshold_walk_and_far_apart_masks_recover_nothing_on_lookup(
    client: TestClient, admin: dict[str, str], api_store: Store, testdata: Path
) -> None:
    """The review's attack on /v1/lookup: the blurred copy at thresholds 0, 1, 2, ... for its
    exact distance d, then 600 copies with 24 random bits flipped at threshold d + 23 (a copy
    matches iff its flips hit a differing bit; the copies are ~40 bits apart, so none is near
    another). Now the threshold is the server's, and the masks are distinct looks at one entry:
    the request is refused and audited, and the key stays refused."""
    listed = _listed(client, admin, testdata)
    blurred = _pdq(testdata, BLURRED)
    exact = hamming(blurred, listed)
    [entry] = api_store.find_entries("listed", value=listed)
    attacker = bearer(api_store, "masker", "match")

    # 1. Every threshold gets the same answer, at the server's threshold, which is said.
    bodies = []
    for t in range(0, 65):
        r = _lookup_at(client, attacker, [blurred], t)
        assert r.status_code == 200, r.text
        bodies.append(r.json())
    answers = [b["results"][0]["matches"] for b in bodies]
    measured = next(t for t, a in enumerate(answers) if a)  # the review's inference
    assert measured != exact, "measured the exact distance"
    assert measured == 0 and all(a == answers[0] for a in answers)
    assert [(m["band"], m["entry"]) for m in answers[0]] == [("near", entry.id)]
    assert {b["threshold"] for b in bodies} == {DEFAULTS.match_threshold}

    # 2. The masks (given the true distance the walk no longer tells): refused whole.
    masks, queries = _masks(blurred, 1, 600, 24)
    assert min(hamming(a, b) for a in queries[:50] for b in queries[:50] if a != b) > 16
    r = _lookup_at(client, attacker, queries, exact + 23)
    hits = [bool(x["matches"]) for x in r.json()["results"]] if r.status_code == 200 else []
    assert _intersect(blurred, masks, hits) != listed, "recovered the listed hash"
    assert r.status_code == 429 and r.headers["content-type"] == PROBLEM
    retry = int(r.headers["retry-after"])
    assert 1 <= retry <= DEFAULTS.probe_entry_window_seconds
    assert "probing" in r.json()["detail"] and listed not in r.text
    [event] = _probing_events(api_store)
    assert event.actor == "key:masker" and event.detail["route"] == "/v1/lookup"
    assert event.detail["reason"] == "entry" and event.detail["entry"] == entry.id
    assert event.detail["limit"] == DEFAULTS.probe_entry_limit
    # The key is refused whatever it looks up next (a refusal that depended on the query would
    # itself say whether the query came near the entry), and the episode is audited once.
    other = _pdq(testdata, "images/reg-test-input/labelme-subset/q0122.jpg")
    assert _lookup(client, attacker, [other]).status_code == 429
    assert _lookup(client, attacker, [blurred]).status_code == 429
    assert len(_probing_events(api_store)) == 1
    # Other keys are not affected.
    assert _lookup(client, bearer(api_store, "bystander", "match"), [blurred]).status_code == 200

    # 3. The same attack is real: a key with `export` (threshold honoured) recovers the hash.
    exporter = bearer(api_store, "mask-exporter", "match", "export")
    d = next(
        t
        for t in range(65)
        if _lookup_at(client, exporter, [blurred], t).json()["results"][0]["matches"]
    )
    assert d == exact
    r = _lookup_at(client, exporter, queries, d + 23)
    assert r.status_code == 200
    assert _intersect(blurred, masks, [bool(x["matches"]) for x in r.json()["results"]]) == listed
    assert len(_probing_events(api_store)) == 1


def test_masks_at_the_pinned_threshold_get_a_bounded_budget_on_hma(
    client: TestClient, admin: dict[str, str], api_store: Store, testdata: Path
) -> None:
    """The review's attack on HMA's /m/raw_lookup (threshold 31): 300 lookups of copies with
    29 random bits flipped (distance d + 29 - 2c, within 31 iff a flip hits a differing bit).
    Each copy is a distinct look at the entry: the first `probe_entry_limit` are answered, the
    rest refused; the answers recover nothing."""
    listed = _listed(client, admin, testdata)
    blurred = _pdq(testdata, BLURRED)
    d = hamming(blurred, listed)
    k = DEFAULT_PDQ_THRESHOLD + 1 - d + 1
    masks, queries = _masks(blurred, 2, 300, k)
    [entry] = api_store.find_entries("listed", value=listed)

    def attack(key: dict[str, str]) -> tuple[list[bool], list[Any]]:
        hits, refused = [], []
        for q in queries:
            r = client.get("/m/raw_lookup", headers=key, params={"signal_type": "pdq", "signal": q})
            if r.status_code == 200:
                hits.append(bool(r.json()["matches"]))
            else:
                refused.append(r)
        return hits, refused

    hits, refused = attack(bearer(api_store, "hma-masker", "match"))
    assert _intersect(blurred, masks[: len(hits)], hits) != listed, "recovered the listed hash"
    assert len(hits) == DEFAULTS.probe_entry_limit and len(refused) == len(queries) - len(hits)
    r = refused[0]
    assert r.status_code == 429 and r.headers["content-type"] == PROBLEM
    assert int(r.headers["retry-after"]) >= 1 and "probing" in r.json()["message"]
    [event] = _probing_events(api_store)
    assert event.actor == "key:hma-masker" and event.detail["route"] == "/m/raw_lookup"
    assert event.detail["entry"] == entry.id

    # With `export` (admin) the 300 answers do give the hash: the budget is what stops it.
    hits, refused = attack(admin)
    assert not refused and _intersect(blurred, masks, hits) == listed


def test_reuploads_of_a_known_image_and_distinct_images_are_not_flagged(
    client: TestClient, admin: dict[str, str], api_store: Store, testdata: Path
) -> None:
    """A platform's traffic: the same known photo uploaded again and again (re-encoded,
    resized, and every edit in the test set), among distinct photos, in a batch and one at a
    time, on /v1/lookup and HMA's raw lookup. All answered, the copies matched, nothing
    refused or audited: the copies are a few pictures' worth of distinct looks at the entry
    (re-encodes are within `probe_same_radius` of each other)."""
    listed = _listed(client, admin, testdata)
    photo = Image.open(testdata / LISTED).convert("RGB")
    copies = []
    for quality, scale in ((95, 1.0), (80, 1.0), (60, 1.0), (85, 0.9), (85, 0.75), (70, 0.5)):
        buf = io.BytesIO()
        size = (int(photo.width * scale), int(photo.height * scale))
        photo.resize(size).save(buf, format="JPEG", quality=quality)
        copies.append(_hash_of(buf.getvalue()))
    edits = sorted((testdata / "images/bridge-mods").glob("*.jpg"))
    copies += [_hash_of(p.read_bytes()) for p in edits]
    copies = [h for h in copies if hamming(h, listed) <= DEFAULT_PDQ_THRESHOLD]
    assert len(copies) >= 15
    others = [p.read_bytes() for p in sorted((testdata / "images").rglob("*.jpg"))]
    others = [p for p in others + _synthetic_photos(30) if _quality_pdq(p)]
    distinct = [_quality_pdq(p) for p in others]
    distinct = [h for h in distinct if hamming(h, listed) > 2 * DEFAULT_PDQ_THRESHOLD]
    assert len(distinct) >= 30
    platform = bearer(api_store, "uploads", "match")

    r = _lookup(client, platform, distinct + copies)
    assert r.status_code == 200, r.text
    matched = {res["value"] for res in r.json()["results"] if res["matches"]}
    assert matched == set(copies)
    for h in copies:
        assert [m["band"] for m in _lookup(client, platform, [h]).json()["results"][0]["matches"]]
        r = client.get(
            "/m/raw_lookup", headers=platform, params={"signal_type": "pdq", "signal": h}
        )
        assert r.status_code == 200 and r.json()["matches"]
    assert _probing_events(api_store) == []
    pair = client.app.state.runtime.watch._pairs[("uploads", _entry_id(api_store, listed))]
    assert len(pair.looks) < DEFAULTS.probe_entry_limit


def _entry_id(store: Store, value: str) -> int:
    [entry] = store.find_entries("listed", value=value)
    return entry.id


def _quality_pdq(data: bytes) -> str:
    """The PDQ of an image good enough to be matched ("" if none)."""
    pdq = [s for s in hash_bytes(data).signals if str(s.type) == "pdq" and (s.quality or 0) >= 50]
    return pdq[0].value if pdq else ""


def _hash_of(data: bytes) -> str:
    [pdq] = [s.value for s in hash_bytes(data).signals if str(s.type) == "pdq"]
    return pdq


@pytest.mark.parametrize(
    "settings",
    [Settings(index_poll_seconds=0.2, rate_limit_per_minute=0, probe_match_limit=3)],
)
def test_matched_answers_per_key_are_capped(
    client: TestClient, admin: dict[str, str], api_store: Store, testdata: Path
) -> None:
    """Many entries probed side by side are bounded too: past `probe_match_limit` matched
    answers in the window, the key's lookups are refused (judged before each request)."""
    listed = _listed(client, admin, testdata)
    key = bearer(api_store, "many", "match")
    assert _lookup(client, key, [listed, listed]).status_code == 200  # 2 matched answers
    assert _lookup(client, key, [listed]).status_code == 200  # 3: answered, now at the cap
    r = _lookup(client, key, [_pdq(testdata, "images/reg-test-input/labelme-subset/q0122.jpg")])
    assert r.status_code == 429 and "matched answers" in r.json()["detail"]
    [event] = _probing_events(api_store)
    assert event.detail["reason"] == "matched" and event.detail["limit"] == 3
    assert _lookup(client, admin, [listed]).status_code == 200  # `export` is not capped
