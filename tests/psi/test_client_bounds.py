"""A malicious or compromised server publishes unsafe parameters under a valid root; the client
refuses them. Over HTTP against the real app and store (SQLite, PostgreSQL): the operator sets
the parameters, the worker builds and publishes the table, a device fetches it and the root the
server publishes, exactly as an app does, and refuses it by name."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bastion.actions.worker import BuildLoop
from bastion.banks.model import NewEntry
from bastion.client import (
    DEFAULT_BOUNDS,
    Account,
    Client,
    PData,
    RootPinError,
    UnsafeParamsError,
)
from bastion.client.voucher import voucher_bytes
from bastion.config import Settings
from bastion.db import Store
from bastion.psi.records import params_from_settings
from bastion.server import create_app
from bastion.signals.base import SignalType

from .conftest import voucher_settings
from .helpers import random_hashes, seeded

BANK = random_hashes(30, seed=500)
#: What an honest operator runs: the defaults, which a client accepts.
SAFE = {
    "voucher_threshold": 10,
    "voucher_synthetic_rate": 0.05,
    "voucher_max_synthetic": 32,
    "voucher_ad_bytes": 8192,
}

Server = Callable[..., tuple[TestClient, dict[str, str], dict[str, str]]]


@pytest.fixture
def server(db_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """Start the app with some ``voucher_*`` settings; returns (http, admin, platform)."""
    monkeypatch.chdir(tmp_path)
    db_store.create_bank("known")
    db_store.add_entries("known", [NewEntry(SignalType.PDQ, h) for h in BANK])
    _, admin = db_store.create_api_key("admin", {"admin"})
    _, platform = db_store.create_api_key("platform", {"vouchers"})
    clients: list[TestClient] = []

    def start(**settings: object) -> tuple[TestClient, dict[str, str], dict[str, str]]:
        http = TestClient(create_app(voucher_settings(tmp_path, **settings), store=db_store))
        clients.append(http.__enter__())
        return (
            http,
            {"Authorization": f"Bearer {admin}"},
            {"Authorization": f"Bearer {platform}"},
        )

    yield start
    for http in clients:
        http.__exit__(None, None, None)


def _publish(http: TestClient, admin: dict[str, str]) -> str:
    """The operator asks for a table and the worker builds it; returns the published root."""
    r = http.post("/v1/pdata", headers=admin)
    assert r.status_code == 202, r.text
    job = BuildLoop(http.app.state.runtime.vouchers, worker_id="test-worker").run_once()
    assert job is not None and job.state == "done", job
    return job.root


def _fetch(http: TestClient, platform: dict[str, str]) -> tuple[bytes, str]:
    """What an app downloads: the table and the root the server publishes for it."""
    table = http.get("/v1/pdata", headers=platform)
    assert table.status_code == 200, table.text
    root = http.get("/v1/pdata/root", headers=platform).json()["root"]
    assert table.headers["Bastion-PData-Root"] == root
    return table.content, root


# Each attack of issue 12, finding 4, as operator settings on top of the honest ones.
ATTACKS = {
    "threshold-2": ("threshold", {"voucher_threshold": 2}),
    "synthetic-rate-0": ("synthetic_ppm", {"voucher_synthetic_rate": 0.0}),
    "derivative-1MiB": ("ad_bytes", {"voucher_ad_bytes": 1 << 20}),
    "epoch-a-year": ("epoch_seconds", {"voucher_epoch_days": 365}),
    "synthetic-cap-2": ("dhf_dim", {"voucher_max_synthetic": 2}),
    "flat-images-probe": ("min_quality", {"voucher_min_quality": 0}),
    "short-keys": ("probe_bits", {"voucher_key_bits": 40}),
}


@pytest.mark.parametrize(("name", "attack"), ATTACKS.values(), ids=ATTACKS.keys())
def test_a_malicious_servers_published_table_is_refused(
    server: Server, name: str, attack: dict[str, object]
) -> None:
    http, admin, platform = server(**{**SAFE, **attack})
    published = _publish(http, admin)
    blob, root = _fetch(http, platform)
    assert root == published  # the root is genuine: the pin alone would accept this table
    with pytest.raises(UnsafeParamsError) as refused:
        PData.from_bytes(blob, expected_root=root)
    assert [v.split()[0] for v in refused.value.violations] == [name]


def test_the_honest_operators_table_is_accepted(server: Server) -> None:
    assert DEFAULT_BOUNDS.violations(params_from_settings(Settings())) == []  # the defaults
    http, admin, platform = server(**SAFE)
    _publish(http, admin)
    blob, root = _fetch(http, platform)
    pdata = PData.from_bytes(blob, expected_root=root)
    assert pdata.root_pin == "verified" and pdata.params == params_from_settings(
        voucher_settings(Path("."), **SAFE)
    )
    device = Client(pdata, "alice", Account(bytes(32)), random_bytes=seeded(3))
    voucher = device.voucher_for_hash(BANK[0], "item-0")
    assert len(voucher.data) == voucher_bytes(pdata.params, "alice")


def test_a_table_other_than_the_pinned_one_is_refused(server: Server) -> None:
    http, admin, platform = server(**SAFE)
    pinned = _publish(http, admin)  # the root the app shipped with
    assert PData.from_bytes(_fetch(http, platform)[0], expected_root=pinned).root == pinned
    # Later the server publishes another table, with the same, safe, parameters (say, one
    # with an entry added for one target): a device pinned to the old root refuses it.
    replaced = _publish(http, admin)
    blob, root = _fetch(http, platform)
    assert root == replaced != pinned
    with pytest.raises(RootPinError, match="does not match the expected root"):
        PData.from_bytes(blob, expected_root=pinned)
    with pytest.raises(RootPinError, match="expected_root is required"):
        PData.from_bytes(blob, expected_root=None)
