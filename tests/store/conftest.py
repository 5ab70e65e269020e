"""Store fixtures: every store test runs on a temporary SQLite file and on real PostgreSQL.

PostgreSQL isolation is a fresh schema per test, dropped afterwards. An unreachable server makes
the PostgreSQL tests fail (never skip): the scaled deployment must stay tested.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from bastion.store import Store
from tests.conftest import PG_URL


@dataclass
class Database:
    kind: str
    url: str
    schema: str | None
    opened: list[Store] = field(default_factory=list)

    def open(self) -> Store:
        store = Store.open(self.url, schema=self.schema)
        self.opened.append(store)
        return store


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        database = Database("sqlite", f"sqlite:///{tmp_path / 'bastion.db'}", None)
    else:
        database = Database("postgres", PG_URL, f"t_{uuid.uuid4().hex[:16]}")
    try:
        yield database
    finally:
        for store in database.opened:
            store.close()
        if database.schema is not None:
            engine = create_engine(PG_URL)
            try:
                with engine.begin() as conn:
                    conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{database.schema}" CASCADE')
            finally:
                engine.dispose()


@pytest.fixture
def store(db: Database) -> Store:
    return db.open()


@pytest.fixture
def make_bank(store: Store) -> Callable[..., str]:
    def make(name: str = "test-bank", **kwargs: object) -> str:
        return store.create_bank(name, **kwargs).name  # type: ignore[arg-type]

    return make
