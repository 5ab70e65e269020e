"""End to end on loopback: an operator runs `bastion serve` with the parameters of issue 12,
finding 4 (t = 2, no synthetic vouchers, 1 MiB derivatives, year-long epochs); a messaging app
downloads the table and the root the server publishes, and refuses the table by name. An app
pinned to an earlier root refuses the server's next table. SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bastion.actions.worker import BuildLoop
from bastion.banks.model import NewEntry
from bastion.client import PData, RootPinError, UnsafeParamsError
from bastion.config import Settings
from bastion.crypto import MasterKey
from bastion.db import Store
from bastion.psi.store import VoucherStore
from bastion.signals.base import SignalType
from tests.fixtures.servers import Server
from tests.fixtures.stores import postgres_schema_url
from tests.psi.helpers import random_hashes


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bastion.db'}"
        return
    with postgres_schema_url("t_bounds") as url:
        yield url


def test_a_malicious_servers_parameters_and_a_replaced_table_are_refused(
    db_url: str, tmp_path: Path
) -> None:
    with Store.open(db_url) as store:
        store.create_bank("known")
        store.add_entries("known", [NewEntry(SignalType.PDQ, h) for h in random_hashes(20, 9)])
        _, admin_token = store.create_api_key(f"admin-{uuid.uuid4().hex[:6]}", {"admin"})
        _, app_token = store.create_api_key(f"app-{uuid.uuid4().hex[:6]}", {"vouchers"})
    admin = {"Authorization": f"Bearer {admin_token}"}
    platform = {"Authorization": f"Bearer {app_token}"}
    secret = base64.b64encode(os.urandom(32)).decode()

    def publish(http: httpx.Client) -> tuple[bytes, str]:
        """Ask for a table, run the worker's build step, download what an app downloads."""
        assert http.post("/v1/pdata", headers=admin).status_code == 202
        with Store.open(db_url) as store:
            vouchers = VoucherStore(store, MasterKey.from_base64(secret), Settings())
            job = BuildLoop(vouchers, worker_id="e2e").run_once()
        assert job is not None and job.state == "done"
        root = http.get("/v1/pdata/root", headers=platform).json()["root"]
        assert root == job.root
        return http.get("/v1/pdata", headers=platform).content, root

    server = Server(
        db_url,
        tmp_path,
        "--no-worker",
        env={
            "BASTION_SECRET_KEY": secret,
            "BASTION_VOUCHER_THRESHOLD": "2",
            "BASTION_VOUCHER_SYNTHETIC_RATE": "0",
            "BASTION_VOUCHER_AD_BYTES": str(1 << 20),
            "BASTION_VOUCHER_EPOCH_DAYS": "365",
        },
    )
    try:
        with httpx.Client(base_url=server.base, timeout=30) as http:
            blob, root = publish(http)
            with pytest.raises(UnsafeParamsError) as refused:
                PData.from_bytes(blob, expected_root=root)  # under its genuine root
            names = [v.split()[0] for v in refused.value.violations]
            assert names == ["threshold", "synthetic_ppm", "epoch_seconds", "ad_bytes"]
    finally:
        server.stop()

    # The same operator, honest parameters this time: the app pins the first table's root,
    # and the server's next table (same parameters) is refused.
    server = Server(db_url, tmp_path, "--no-worker", env={"BASTION_SECRET_KEY": secret})
    try:
        with httpx.Client(base_url=server.base, timeout=30) as http:
            blob, pinned = publish(http)
            assert PData.from_bytes(blob, expected_root=pinned).params.threshold == 10
            blob, root = publish(http)
            assert root != pinned
            with pytest.raises(RootPinError, match="does not match the expected root"):
                PData.from_bytes(blob, expected_root=pinned)
    finally:
        server.stop()
