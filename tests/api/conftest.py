"""API fixtures: the real app over a real store (SQLite file, or a fresh PostgreSQL schema)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bastion.config import Settings
from bastion.server import create_app
from bastion.store import Store
from tests.conftest import BACKENDS, open_store


@pytest.fixture(autouse=True)
def _private_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Apps on PostgreSQL keep their master key and policy in ./bastion-data: make that a
    temporary directory, never the checkout's."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(params=BACKENDS)
def api_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with open_store(request.param, tmp_path) as store:
        yield store


@pytest.fixture
def settings() -> Settings:
    return Settings(index_poll_seconds=0.2, rate_limit_per_minute=0, max_upload_bytes=5 * 2**20)


@pytest.fixture
def client(api_store: Store, settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, store=api_store)) as c:
        yield c


def bearer(store: Store, name: str, *scopes: str) -> dict[str, str]:
    _, token = store.create_api_key(name, set(scopes))
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def admin(api_store: Store) -> dict[str, str]:
    return bearer(api_store, "admin", "admin")
