"""Outbox tests run on SQLite and real PostgreSQL with the shared ``db``, ``store`` and ``clock``
fixtures (tests/fixtures)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.fixtures.clock import Clock
from tests.fixtures.stores import Database

__all__ = ["Database"]


#: Where the outbox tests' clock starts (their expected documents carry this time).
START = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> Clock:
    """The shared clock, started at START."""
    return Clock(START)
