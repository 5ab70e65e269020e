"""Fixtures: a voucher store over a real database (SQLite file, or a fresh PostgreSQL schema)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.config import Settings
from bastion.store import Store
from tests.conftest import BACKENDS, open_store


@pytest.fixture(params=BACKENDS)
def db_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with open_store(request.param, tmp_path) as store:
        yield store


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
