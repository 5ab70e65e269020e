"""End to end on loopback: a simulated messaging app sends 100 items through bastion.client to
`bastion serve`; an account opens for review only once t of its items matched, and the opening
carries exactly the matched items (ids and derivatives). SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from bastion.actions.worker import BuildLoop
from bastion.banks.model import NewEntry
from bastion.client import Account, Client, PData, derivative, hash_image
from bastion.client.locality import bank_keys, probe_keys
from bastion.config import Settings
from bastion.crypto import MasterKey
from bastion.review import Viewer
from bastion.signals.base import SignalType
from bastion.store import Store
from bastion.store.review import ReviewStore
from bastion.store.vouchers import VoucherStore
from tests.conftest import postgres_schema_url
from tests.servers import Server

THRESHOLD = 6
BANK_PHOTOS = [
    "bridge-mods/aaa-orig.jpg",
    "misc-images/wee.jpg",
    "reg-test-input/labelme-subset/q0291.jpg",
    "reg-test-input/labelme-subset/q2821.jpg",
]
BRIDGE_EDITS = ["blur-a-lot.jpg", "sharpen-a-lot.jpg", "shrink-a-lot.jpg", "square-256x256.jpg"]
OTHER_PHOTOS = [
    "reg-test-input/exif-rotn/exif-rotn-3.jpg",
    "reg-test-input/labelme-subset/q0122.jpg",
    "reg-test-input/labelme-subset/q0746.jpg",
    "reg-test-input/labelme-subset/q1050.jpg",
    "reg-test-input/exif-rotn/exif-rotn-1.jpg",
    "reg-test-input/exif-rotn/exif-rotn-6.jpg",
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
    server = Server(
        db_url,
        tmp_path,
        "--no-worker",
        env={
            "BASTION_SECRET_KEY": secret,
            "BASTION_VOUCHER_THRESHOLD": str(THRESHOLD),
            "BASTION_VOUCHER_SYNTHETIC_RATE": "0.1",
            "BASTION_VOUCHER_MAX_SYNTHETIC": "32",
            "BASTION_VOUCHER_RATE_PER_HOUR": "1000",
        },
    )
    try:
        http = httpx.Client(base_url=server.base, timeout=30)
        built = http.post("/v1/pdata", headers=admin)
        assert built.status_code == 202, built.text
        assert http.get("/v1/pdata", headers=platform).status_code == 404  # not built yet
        # The worker's build step, run here (this server runs without a worker).
        with Store.open(db_url) as store:
            vouchers = VoucherStore(store, MasterKey.from_base64(secret), Settings())
            job = BuildLoop(vouchers, worker_id="e2e").run_once()
        assert job is not None and job.state == "done"
        assert http.get(built.headers["location"], headers=admin).json()["root"] == job.root
        root = http.get("/v1/pdata/root", headers=platform).json()["root"]
        assert root == job.root
        pdata = PData.from_bytes(
            http.get("/v1/pdata", headers=platform).content, expected_root=root
        )
        account = Account(hashlib.sha256(b"e2e account").digest())
        app = Client(pdata, "user-42", account)

        table = {k for h in bank_hashes for k in bank_keys(bytes.fromhex(h), pdata.params)}
        real_sent: dict[str, bytes] = {}  # item id -> derivative, for real matches sent so far
        real_hashes: set[str] = set()
        opened_at_count = None
        synthetic = 0
        for item_id, data in items:
            voucher = app.voucher_for_image(data, item_id)
            synthetic += voucher.synthetic
            hashed = hash_image(data)
            hits = table & set(probe_keys(hashed.hash, hashed.floats, pdata.params))
            near = min(_distance(hashed.hex, h) for h in bank_hashes) <= 31  # server re-check
            if hits and near and not voucher.synthetic:
                real_sent[item_id] = derivative(data, app.derivative_budget(item_id))
                real_hashes.add(hashed.hex)
            r = http.post(
                "/v1/vouchers",
                headers=platform,
                json={"vouchers": [base64.b64encode(voucher.data).decode()]},
            )
            assert r.status_code == 200 and r.json() == {"accepted": 1}, r.text
            opened = http.get("/v1/vouchers/openings", headers=admin).json()
            if len(real_hashes) < THRESHOLD:
                assert opened == [], (item_id, len(real_hashes))
            else:
                opened_at_count = opened_at_count or len(real_hashes)
                assert {o["item_id"] for o in opened} == set(real_sent)
                for o in opened:
                    assert o["account"] == "user-42" and o["media_type"] == "image/jpeg"
                    assert o["media_sha256"] == hashlib.sha256(real_sent[o["item_id"]]).hexdigest()
                    assert o["matches"] and o["matches"][0]["bank"] == "known-test-photos"
                    assert o["matches"][0]["distance"] <= 31
        assert opened_at_count == THRESHOLD  # it opened exactly when the t-th match arrived
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
    assert all(i.has_media and i.media_size == len(real_sent[i.content_id]) for i in case.items)
    assert all(i.matches[0]["bank"] == "known-test-photos" for i in case.items)
