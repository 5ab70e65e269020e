"""Account fixtures: the store-wide ``db`` fixture (SQLite file and real PostgreSQL), a clock the
tests move by hand, and a cheap argon2id hasher so hundreds of logins stay fast."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from bastion.accounts.model import PasswordHasher
from bastion.accounts.store import AccountStore
from bastion.db import Store
from tests.fixtures.clock import Clock
from tests.fixtures.stores import Database

PASSWORD = "correct horse battery"
START = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)


class CountingHasher(PasswordHasher):
    """Cheap parameters, and a count of real argon2 verifications (dummy ones included)."""

    def __init__(self, **params: int) -> None:
        super().__init__(**({"time_cost": 1, "memory_cost": 8, "parallelism": 1} | params))
        self.verifications = 0
        self._lock = threading.Lock()

    def _check(self, stored: str, password: str) -> bool:
        with self._lock:
            self.verifications += 1
        return super()._check(stored, password)


@pytest.fixture
def clock() -> Clock:
    """The shared clock, started at START."""
    return Clock(START)


@pytest.fixture
def hasher() -> CountingHasher:
    return CountingHasher()


@pytest.fixture
def accounts(store: Store, clock: Clock, hasher: CountingHasher) -> AccountStore:
    return AccountStore(store, hasher=hasher, now=clock)


__all__ = ["PASSWORD", "START", "CountingHasher", "Database"]
