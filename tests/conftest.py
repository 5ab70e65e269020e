"""Shared fixtures: the benign reference media live in ../shared/testdata beside the checkout."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
TESTDATA = (REPO.parent / "shared" / "testdata").resolve()


@pytest.fixture(scope="session")
def testdata() -> Path:
    if not TESTDATA.is_dir():
        raise RuntimeError(f"benign test media not found at {TESTDATA}")
    return TESTDATA


PG_URL = os.environ.get(
    "BASTION_TEST_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"
)


@contextmanager
def postgres_schema_url(prefix: str) -> Iterator[str]:
    """A fresh PostgreSQL schema, dropped afterwards, and a database URL whose connections use
    it (libpq ``options``), for code that opens the database from a URL as a user would."""
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        engine.dispose()
