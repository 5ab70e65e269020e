"""Fixtures: a voucher store over a real database (SQLite file, or a fresh PostgreSQL schema)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from bastion.config import Settings
from bastion.store import Store
from tests.conftest import PG_URL


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        store = Store.open(f"sqlite:///{tmp_path / 'bastion.db'}")
        yield store
        store.close()
        return
    schema = f"t_{uuid.uuid4().hex[:16]}"
    store = Store.open(PG_URL, schema=schema)
    try:
        yield store
    finally:
        store.close()
        engine = create_engine(PG_URL)
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        engine.dispose()


def voucher_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "secret_key": base64.b64encode(bytes(range(32))).decode(),
        "policy_file": str(tmp_path / "policy.yaml"),
        "index_poll_seconds": 0.2,
        "rate_limit_per_minute": 0,
        "voucher_threshold": 3,
        "voucher_synthetic_rate": 0.0,
        "voucher_max_synthetic": 8,
        "voucher_ad_bytes": 2048,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]
