"""API fixtures: the real app over a real store (SQLite file, or a fresh PostgreSQL schema)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bastion.config import Settings
from bastion.db import Store
from bastion.server import create_app


@pytest.fixture(autouse=True)
def _private_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Apps on PostgreSQL keep their master key and policy in ./bastion-data: make that a
    temporary directory, never the checkout's."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def api_store(store: Store) -> Store:
    """The shared ``store`` fixture (SQLite and PostgreSQL, tests/fixtures/stores.py)."""
    return store


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
