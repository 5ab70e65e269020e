"""Bank test fixtures: ``db`` and ``store`` (every store test on a temporary SQLite file and on real
PostgreSQL) come from tests/fixtures/stores.py; a bank maker on top."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bastion.db import Store


@pytest.fixture
def make_bank(store: Store) -> Callable[..., str]:
    def make(name: str = "test-bank", **kwargs: object) -> str:
        return store.create_bank(name, **kwargs).name  # type: ignore[arg-type]

    return make
