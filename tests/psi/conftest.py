"""Fixtures: a voucher store over a real database (SQLite file, or a fresh PostgreSQL schema)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from bastion.config import Settings
from bastion.db import Store


@pytest.fixture
def db_store(store: Store) -> Store:
    """The shared ``store`` fixture (SQLite and PostgreSQL, tests/fixtures/stores.py)."""
    return store


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
