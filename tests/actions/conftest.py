"""Outbox tests run on SQLite and real PostgreSQL, with the store tests' ``db`` fixture."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bastion.store import Store
from tests.store.conftest import Database, db

__all__ = ["Clock", "Database", "db"]


class Clock:
    """A settable clock for the outbox, so backoff and leases are walked, never waited for."""

    def __init__(self) -> None:
        self.now = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(db: Database) -> Store:
    return db.open()
