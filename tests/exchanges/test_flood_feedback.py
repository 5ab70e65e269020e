"""A flood dispute goes back upstream (issue 16): an exchange's entry that floods past its
bank's expected rate is quarantined, and disputing it through the API disables it and queues a
negative finding for the exchange in the same transaction. SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bastion.banks.model import utcnow
from bastion.config import Settings
from bastion.db import Store
from bastion.exchanges.base import Upsert
from bastion.exchanges.store import ExchangeStore
from bastion.server import create_app
from tests.exchanges.scripted import SCRIPTS, Script, Step, entry
from tests.fixtures.clock import Clock


@pytest.fixture(autouse=True)
def _private_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def test_disputing_a_flooding_exchange_entry_sends_a_negative_finding(
    store: Store, testdata: Path
) -> None:
    photo = (testdata / "images" / "bridge-mods" / "aaa-orig.jpg").read_bytes()
    digest = hashlib.md5(photo).hexdigest()
    SCRIPTS["flood-e2e"] = Script(
        steps=[Step(items=[Upsert("hs-1", (entry(digest, labels=["csam"]),))])]
    )
    _, token = store.create_api_key("admin", {"admin"})
    headers = {"Authorization": f"Bearer {token}"}
    settings = Settings(index_poll_seconds=0.2, rate_limit_per_minute=0)
    with TestClient(create_app(settings, store=store)) as client:
        rt = client.app.state.runtime  # type: ignore[attr-defined]
        xs = ExchangeStore(store, rt.master_key, rt.settings, clock=Clock(utcnow() + timedelta(1)))
        xs.add("hashlist", "scripted", config={"script": "flood-e2e"}, labels=["csam"])
        assert xs.sync("hashlist").added == 1
        r = client.patch("/v1/banks/hashlist", headers=headers, json={"expected_rate": 1})
        assert r.status_code == 200, r.text
        rt.index.refresh()
        decisions = []
        for n in range(3):
            r = client.post(
                "/v1/scan",
                headers=headers,
                files={"file": ("upload.jpg", photo)},
                data={"context": json.dumps({"uploader_id": f"u-{n}"})},
            )
            assert r.status_code == 200, r.text
            decisions.append(r.json()["verdict"]["decision"])
        assert decisions == ["block", "review", "review"]
        (held,) = client.get("/v1/quarantine", headers=headers).json()
        assert xs.feedback("hashlist") == []
        r = client.post(f"/v1/quarantine/{held['entry']}/dispute", headers=headers, json={})
        assert r.status_code == 200, r.text
        queued = xs.feedback("hashlist")
        assert [(f.key, f.verdict, f.reason, f.case_id) for f in queued] == [
            ("hs-1", "negative", "disputed:flood", None)
        ]
        assert store.get_entry(held["entry"]).enabled is False
