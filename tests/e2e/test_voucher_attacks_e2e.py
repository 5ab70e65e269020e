"""The E2EE attacks of issue 12 on loopback, against `bastion serve` and the worker it runs (which
builds the table and opens queued vouchers on its own, asynchronously): framing (vouchers sealed
in alice's name by mallory), blinding (random-hash vouchers decoding in bob's name) and batch
blocking (carol's quota). None of them achieves what it did before. SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import func, select

from bastion.actions.rows import OutboxRow
from bastion.banks.model import NewEntry
from bastion.client import Account, Client, PData, Voucher
from bastion.crypto import MasterKey
from bastion.db import Store
from bastion.review import Viewer
from bastion.review.store import ReviewStore
from bastion.signals.base import SignalType
from bastion.vault.rows import EvidenceRow
from tests.fixtures.servers import Server
from tests.fixtures.stores import postgres_schema_url
from tests.psi.forgery import OUTSIDE_PROJECTION, flip, forced_voucher, real_vouchers
from tests.psi.helpers import random_hashes

from .test_vouchers_e2e import build, drain

T = 5
BANK = random_hashes(40, seed=950)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bastion.db'}"
        return
    with postgres_schema_url("t_vattack") as url:
        yield url


def test_framing_blinding_and_batch_blocking_fail_end_to_end(db_url: str, tmp_path: Path) -> None:
    with Store.open(db_url) as store:
        store.create_bank(
            "known", description="demo data: random hashes", labels=["csam"], source="test"
        )
        store.add_entries("known", [NewEntry(SignalType.PDQ, h) for h in BANK])
        _, admin_token = store.create_api_key(f"admin-{uuid.uuid4().hex[:6]}", {"admin"})
        _, app_token = store.create_api_key(f"app-{uuid.uuid4().hex[:6]}", {"vouchers"})
    admin = {"Authorization": f"Bearer {admin_token}"}
    platform = {"Authorization": f"Bearer {app_token}"}
    secret = base64.b64encode(os.urandom(32)).decode()
    server = Server(
        db_url,
        tmp_path,
        env={
            "BASTION_SECRET_KEY": secret,
            "BASTION_VOUCHER_THRESHOLD": str(T),
            "BASTION_VOUCHER_SYNTHETIC_RATE": "0.01",
            "BASTION_VOUCHER_MAX_SYNTHETIC": "16",
            "BASTION_VOUCHER_RATE_PER_HOUR": "20",
            "BASTION_VOUCHER_QUEUE_POLL_SECONDS": "0.05",
        },
    )
    try:
        http = httpx.Client(base_url=server.base, timeout=30)
        root = build(http, admin)
        pdata = PData.from_bytes(
            http.get("/v1/pdata", headers=platform).content, expected_root=root
        )

        def device(account: str, whose: str) -> Client:
            return Client(pdata, account, Account(hashlib.sha256(whose.encode()).digest()))

        def post(*items: tuple[str, Voucher]) -> dict[str, Any]:
            body = {
                "vouchers": [
                    {"account": a, "voucher": base64.b64encode(v.data).decode()} for a, v in items
                ]
            }
            r = http.post("/v1/vouchers", headers=platform, json=body)
            assert r.status_code == 202, r.text
            for account in {a for a, _ in items}:
                drain(http, admin, account)
            return r.json()

        def account(name: str) -> dict[str, Any]:
            return http.get(f"/v1/vouchers/accounts/{name}", headers=admin).json()

        def openings(name: str) -> set[str]:
            r = http.get("/v1/vouchers/openings", headers=admin, params={"account": name})
            return {o["item_id"] for o in r.json()}

        # Framing: mallory's device seals 12 listed-hash variants in alice's name; the platform
        # states mallory as the sender. Each is refused, and alice has nothing at all.
        forger = device("alice", "mallory")
        framing = [
            forger.voucher_for_hash(flip(BANK[0], [bit]), f"frame-{k}")
            for k, bit in enumerate(OUTSIDE_PROJECTION[5:17])
        ]
        answer = post(*[("mallory", v) for v in framing])
        assert answer["accepted"] == 0 and answer["refused"] == 12
        assert {r["error"] for r in answer["results"]} == {"account_mismatch"}
        assert account("alice")["epochs"] == [] and openings("alice") == set()

        # Blinding: 12 random-hash vouchers forced to open, sealed with mallory's secret in
        # bob's name, sent as bob (the strongest case: a platform that lets them through).
        # They decode, carry no listed picture, and are discarded; bob's matches still open.
        bob = device("bob", "bob")
        genuine = real_vouchers(bob, BANK[10:], T, "bob")
        mine = list(genuine.values())
        post(*[("bob", v) for v in mine[:2]])
        rng = np.random.default_rng(9)
        blinder = device("bob", "mallory")
        blinding = [forced_voucher(blinder, rng.bytes(32), f"noise-{k}") for k in range(12)]
        assert {r["error"] for r in post(*[("mallory", v) for v in blinding])["results"]} == {
            "account_mismatch"
        }
        assert post(*[("bob", v) for v in blinding])["accepted"] == 12
        (epoch,) = account("bob")["epochs"]
        assert epoch["state"] == "collecting" and epoch["discarded"] == 12
        post(*[("bob", v) for v in mine[2:]])
        assert openings("bob") == set(genuine)
        (epoch,) = account("bob")["epochs"]
        assert epoch["state"] == "opened" and epoch["verified"] == T

        # Batch blocking: carol fills her hourly quota; a batch with her voucher between
        # dave's and erin's refuses hers alone.
        carol, dave, erin = (device(n, n) for n in ("carol", "dave", "erin"))
        innocent = random_hashes(21, seed=951)
        assert (
            post(*[("carol", carol.voucher_for_hash(h, "c")) for h in innocent[:20]])["accepted"]
            == 20
        )
        answer = post(
            ("dave", *real_vouchers(dave, BANK[20:], 1).values()),
            ("carol", carol.voucher_for_hash(innocent[20], "c-21")),
            ("erin", *real_vouchers(erin, BANK[25:], 1).values()),
        )
        assert [r["status"] for r in answer["results"]] == [202, 429, 202]
        assert answer["results"][1]["retry_after"] >= 1
        assert [e["shares"] for e in account("dave")["epochs"]] == [1]
        assert [e["shares"] for e in account("erin")["epochs"]] == [1]
        assert [(h["accepted"], h["rejected"]) for h in account("carol")["hours"]] == [(20, 1)]
    finally:
        server.stop()
    with Store.open(db_url) as store:
        viewer = Viewer("e2e-admin", "admin")
        review = ReviewStore(store, MasterKey.from_base64(secret))
        (summary,) = review.list_cases(viewer)  # bob's, and no case against alice
        case = review.get_case(viewer, summary.id)
        with store.engine.connect() as conn:
            outbox = conn.execute(select(func.count()).select_from(OutboxRow.__table__))
            evidence = conn.execute(select(func.count()).select_from(EvidenceRow.__table__))
            queued_actions, preserved = outbox.scalar_one(), evidence.scalar_one()
        actions = {e.action for e in store.iter_audit()}
    assert case.uploader_id == "bob" and {i.content_id for i in case.items} == set(genuine)
    assert {i.verdict for i in case.items} == {"review"}  # a CSAM bank, still review only
    assert queued_actions == 0 and preserved == 0  # no webhook, nothing preserved
    assert {"voucher.account_mismatch", "voucher.discarded", "voucher.rate_limited"} <= actions
