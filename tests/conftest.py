"""Shared fixtures: the benign reference media live in tests/data (see tests/data/SOURCES.md)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from bastion.store import Store

REPO = Path(__file__).resolve().parents[1]
TESTDATA = REPO / "tests" / "data"


@pytest.fixture(scope="session")
def testdata() -> Path:
    return TESTDATA


@pytest.fixture(scope="session", autouse=True)
def audit_key_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The run's audit keyring, in a temporary directory: stores opened without settings find it
    through BASTION_AUDIT_KEY_FILE, as do the CLI and servers started for a module, so a log one
    of them keyed is checked with the same keys by the others. Tests of key handling point the
    variable at their own file."""
    path = tmp_path_factory.mktemp("audit-keys") / "audit.key"
    old = os.environ.get("BASTION_AUDIT_KEY_FILE")
    os.environ["BASTION_AUDIT_KEY_FILE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("BASTION_AUDIT_KEY_FILE", None)
    else:
        os.environ["BASTION_AUDIT_KEY_FILE"] = old


@pytest.fixture(scope="session", autouse=True)
def _run_key_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Key files of the whole run (servers started for a module included) go to a temporary
    directory, never the machine's /etc/bastion or ~/.config/bastion (bastion.config.key_dir)."""
    old = os.environ.get("BASTION_KEY_DIR")
    os.environ["BASTION_KEY_DIR"] = str(tmp_path_factory.mktemp("run-keys"))
    yield
    if old is None:
        os.environ.pop("BASTION_KEY_DIR", None)
    else:
        os.environ["BASTION_KEY_DIR"] = old


@pytest.fixture(autouse=True)
def key_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own key directory (BASTION_KEY_DIR), so a key one test made is never found
    by another."""
    path = tmp_path_factory.mktemp("keys")
    monkeypatch.setenv("BASTION_KEY_DIR", str(path))
    return path


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


#: Parameters of a storage-backed fixture: every such test runs on SQLite and on real PostgreSQL
#: (an unreachable PostgreSQL fails the test, never skips it).
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@contextmanager
def open_store(kind: str, tmp_path: Path) -> Iterator[Store]:
    """An open store on a temporary SQLite file (``kind`` "sqlite") or on a fresh PostgreSQL
    schema that is dropped afterwards ("postgres")."""
    if kind == "sqlite":
        with Store.open(f"sqlite:///{tmp_path / 'bastion.db'}") as store:
            yield store
        return
    schema = f"t_{uuid.uuid4().hex[:16]}"
    store = Store.open(PG_URL, schema=schema)
    try:
        yield store
    finally:
        store.close()
        engine = sa.create_engine(PG_URL)
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        engine.dispose()
