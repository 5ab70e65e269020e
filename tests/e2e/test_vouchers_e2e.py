"""End to end on loopback: a simulated messaging app sends 100 items through bastion.client to
`bastion serve` and the worker it runs; an account opens for review only once its matched items
cover t distinct listed pictures, and the opening carries exactly the matched items (ids, and
derivatives the server re-encoded). The platform's answer to every voucher is the same. SQLite
and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from bastion.banks.model import NewEntry
from bastion.client import Account, Client, PData, derivative, hash_image
from bastion.client.locality import bank_keys, probe_keys
from bastion.crypto import MasterKey
from bastion.db import Store
from bastion.psi.media import reencode_derivative
from bastion.review import Viewer
from bastion.review.store import ReviewStore
from bastion.signals.base import SignalType
from tests.fixtures.servers import Server
from tests.fixtures.stores import postgres_schema_url

THRESHOLD = 6
#: Seven distinct listed pictures: the account opens once it matched six of them.
BANK_PHOTOS = [
    "bridge-mods/aaa-orig.jpg",
    "misc-images/wee.jpg",
    "reg-test-input/labelme-subset/q0291.jpg",
    "reg-test-input/labelme-subset/q2821.jpg",
    "reg-test-input/labelme-subset/q0746.jpg",
    "reg-test-input/labelme-subset/q1050.jpg",
    "reg-test-input/exif-rotn/exif-rotn-1.jpg",
]
BRIDGE_EDITS = ["blur-a-lot.jpg", "sharpen-a-lot.jpg", "shrink-a-lot.jpg", "square-256x256.jpg"]
OTHER_PHOTOS = [
    "misc-images/small.jpg",
    "reg-test-input/labelme-subset/q0003.jpg",
    "reg-test-input/labelme-subset/q0122.jpg",
    "reg-test-input/exif-rotn/exif-rotn-3.jpg",
    "reg-test-input/exif-rotn/exif-rotn-6.jpg",
    "reg-test-input/exif-rotn/exif-rotn-8.jpg",
]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bastion.db'}"
        return
    with postgres_schema_url("t_vouch") as url:
        yield url


def _jpeg(img: Image.Image, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _edits(photo: bytes) -> list[bytes]:
    """Everyday edits: re-encoding, resizing, a slight crop, brightness, blur."""
    img = Image.open(io.BytesIO(photo)).convert("RGB")
    w, h = img.size
    return [
        _jpeg(img, 40),
        _jpeg(img.resize((w // 2, h // 2))),
        _jpeg(img.crop((w // 50, h // 50, w - w // 50, h - h // 50))),
        _jpeg(ImageEnhance.Brightness(img).enhance(1.2)),
        _jpeg(img.filter(ImageFilter.GaussianBlur(1))),
    ]


def _innocent(n: int, seed: int) -> list[bytes]:
    """Benign synthetic pictures: smooth random colour fields with a few shapes."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        yy, xx = np.mgrid[0:240, 0:320] / 60.0
        field = np.zeros((240, 320, 3))
        for c in range(3):
            for _ in range(3):
                fx, fy, ph = rng.uniform(0.2, 2.0), rng.uniform(0.2, 2.0), rng.uniform(0, 6.3)
                field[:, :, c] += np.sin(fx * xx + fy * yy + ph)
        img = ((field - field.min()) / np.ptp(field) * 255).astype(np.uint8)
        out.append(_jpeg(Image.fromarray(img), 80))
    return out


def _distance(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def drain(http: httpx.Client, admin: dict[str, str], account: str) -> None:
    """Wait until the server's worker has processed every voucher queued for ``account``."""
    deadline = time.monotonic() + 60
    while http.get(f"/v1/vouchers/accounts/{account}", headers=admin).json()["queued"]:
        assert time.monotonic() < deadline, "the worker did not process the queued vouchers"
        time.sleep(0.05)


def build(http: httpx.Client, admin: dict[str, str]) -> str:
    """Ask for a table; the server's worker builds it. Its root once done."""
    r = http.post("/v1/pdata", headers=admin)
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 90
    while (job := http.get(r.headers["location"], headers=admin).json())["state"] != "done":
        assert job["state"] in ("pending", "building"), job
        assert time.monotonic() < deadline, "the worker did not build the table"
        time.sleep(0.2)
    return str(job["root"])


def test_messaging_app_opens_only_after_t_matches(
    db_url: str, tmp_path: Path, testdata: Path
) -> None:
    images = testdata / "images"
    bank_hashes = [hash_image((images / p).read_bytes()).hex for p in BANK_PHOTOS]
    with Store.open(db_url) as store:
        store.create_bank("known-test-photos")
        store.add_entries("known-test-photos", [NewEntry(SignalType.PDQ, h) for h in bank_hashes])
        _, admin_token = store.create_api_key(f"admin-{uuid.uuid4().hex[:6]}", {"admin"})
        _, app_token = store.create_api_key(f"app-{uuid.uuid4().hex[:6]}", {"vouchers"})
    admin = {"Authorization": f"Bearer {admin_token}"}
    platform = {"Authorization": f"Bearer {app_token}"}

    # The items: edits of bank photos among innocent pictures and unrelated photos; 100 in all.
    matching = [
        (f"edit-bridge-{n}", (images / "bridge-mods" / n).read_bytes()) for n in BRIDGE_EDITS
    ]
    for p in BANK_PHOTOS[1:]:
        for k, data in enumerate(_edits((images / p).read_bytes())):
            matching.append((f"edit-{Path(p).stem}-{k}", data))
    others = [(f"photo-{Path(p).stem}", (images / p).read_bytes()) for p in OTHER_PHOTOS]
    others += [(f"innocent-{i}", d) for i, d in enumerate(_innocent(100 - len(matching) - 6, 7))]
    items = matching + others
    assert len(items) == 100
    random.Random(3).shuffle(items)

    secret = base64.b64encode(os.urandom(32)).decode()
    server = Server(  # with its worker: it builds the table and processes queued vouchers
        db_url,
        tmp_path,
        env={
            "BASTION_SECRET_KEY": secret,
            "BASTION_VOUCHER_THRESHOLD": str(THRESHOLD),
            "BASTION_VOUCHER_SYNTHETIC_RATE": "0.1",
            "BASTION_VOUCHER_MAX_SYNTHETIC": "32",
            "BASTION_VOUCHER_RATE_PER_HOUR": "1000",
            "BASTION_VOUCHER_QUEUE_POLL_SECONDS": "0.05",
        },
    )
    try:
        http = httpx.Client(base_url=server.base, timeout=30)
        assert http.get("/v1/pdata", headers=platform).status_code == 404  # not built yet
        root = build(http, admin)
        assert http.get("/v1/pdata/root", headers=platform).json()["root"] == root
        pdata = PData.from_bytes(
            http.get("/v1/pdata", headers=platform).content, expected_root=root
        )
        account = Account(hashlib.sha256(b"e2e account").digest())
        app = Client(pdata, "user-42", account)

        table = {k for h in bank_hashes for k in bank_keys(bytes.fromhex(h), pdata.params)}
        real_sent: dict[str, bytes] = {}  # item id -> derivative, for real matches sent so far
        real_hashes: set[str] = set()
        pictures: set[int] = set()  # the listed pictures those matches cover
        answers: set[tuple[int, bytes]] = set()
        opened_at = None
        synthetic = 0
        for item_id, data in items:
            voucher = app.voucher_for_image(data, item_id)
            synthetic += voucher.synthetic
            hashed = hash_image(data)
            hits = table & set(probe_keys(hashed.hash, hashed.floats, pdata.params))
            distances = [_distance(hashed.hex, h) for h in bank_hashes]
            near = min(distances) <= 31  # the server's re-check
            if hits and near and not voucher.synthetic:
                real_sent[item_id] = derivative(data, app.derivative_budget(item_id))
                real_hashes.add(hashed.hex)
                pictures.add(distances.index(min(distances)))
            r = http.post(
                "/v1/vouchers",
                headers=platform,
                json={
                    "vouchers": [
                        {"account": "user-42", "voucher": base64.b64encode(voucher.data).decode()}
                    ]
                },
            )
            answers.add((r.status_code, r.content))
            drain(http, admin, "user-42")
            opened = http.get("/v1/vouchers/openings", headers=admin).json()
            if len(pictures) < THRESHOLD:
                assert opened == [], (item_id, len(real_hashes), len(pictures))
            else:
                opened_at = opened_at or (len(pictures), len(real_hashes))
                assert {o["item_id"] for o in opened} == set(real_sent)
                for o in opened:
                    assert o["account"] == "user-42" and o["media_type"] == "image/jpeg"
                    made = reencode_derivative(real_sent[o["item_id"]])  # by the server
                    assert o["media_sha256"] == hashlib.sha256(made).hexdigest()
                    assert o["matches"] and o["matches"][0]["bank"] == "known-test-photos"
                    assert o["matches"][0]["distance"] <= 31
        # Matched or not, opening or not, the platform heard the same answer every time.
        assert len(answers) == 1 and next(iter(answers))[0] == 202
        # It opened exactly when the matches first covered t distinct pictures, although by
        # then more than t items (edits of the same pictures) had matched.
        assert opened_at is not None and opened_at[0] == THRESHOLD and opened_at[1] > THRESHOLD
        assert len(real_sent) >= THRESHOLD + 2 and synthetic >= 3
        assert not any(i.startswith(("innocent", "photo")) for i in real_sent)
        state = http.get("/v1/vouchers/accounts/user-42", headers=admin).json()
        (epoch,) = state["epochs"]
        assert epoch["state"] == "opened" and epoch["verified"] == len(real_hashes)
        assert epoch["synthetic"] >= 1 and state["hours"][0]["accepted"] == 100
    finally:
        server.stop()
    with Store.open(db_url) as store:
        opens = [e for e in store.iter_audit() if e.action == "voucher.open"]
        # The opening went to human review: one case for the account, holding exactly the
        # opened items with their derivatives as (sealed) media.
        review = ReviewStore(store, MasterKey.from_base64(secret))
        admin_viewer = Viewer("e2e-admin", "admin")
        (summary,) = review.list_cases(admin_viewer)
        case = review.get_case(admin_viewer, summary.id)
    assert opens[0].detail["threshold_crossed"] is True
    assert sum(e.detail["threshold_crossed"] for e in opens) == 1
    assert case.uploader_id == "user-42"
    assert {i.content_id for i in case.items} == set(real_sent)
    assert {i.source for i in case.items} == {"e2ee-voucher"}
    assert all(
        i.has_media
        and i.media_type == "image/jpeg"
        and i.media_size == len(reencode_derivative(real_sent[i.content_id]))
        for i in case.items
    )
    # Review only: the opening queued no action and preserved nothing before a person looked.
    assert all(i.verdict == "review" and i.actions == () for i in case.items)
    assert all(i.matches[0]["bank"] == "known-test-photos" for i in case.items)
