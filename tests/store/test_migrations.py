"""Schema management: Alembic to head on open, idempotent reopen, models agree with migrations."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from bastion.banks.model import NewEntry
from bastion.db import Base, Store  # bastion.db imports every domain's tables
from bastion.signals.base import SignalType
from bastion.store.engine import MIGRATIONS_DIR
from tests.fixtures.stores import Database


def _head() -> str:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def test_open_migrates_an_empty_database_to_head(empty_db: Database) -> None:
    store = empty_db.open()
    with store.engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == _head()
        tables = set(inspect(conn).get_table_names())
    assert {"banks", "bank_entries", "entry_tombstones", "store_state"} <= tables
    assert store.current_revision() == 0


def test_migrations_match_the_models(db: Database) -> None:
    store = db.open()
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_reopen_is_idempotent_and_keeps_data(empty_db: Database) -> None:
    first = empty_db.open()
    first.create_bank("kept")
    first.add_entries("kept", [NewEntry(SignalType.MD5, "0" * 32)])
    first.close()
    second = empty_db.open()
    second.migrate()  # running again at head changes nothing
    assert [b.name for b in second.list_banks()] == ["kept"]
    assert [e.value for e in second.iter_entries()] == ["0" * 32]
    with second.engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == _head()


def test_sqlite_defaults_wal_foreign_keys_and_env_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BASTION_DATABASE_URL", raising=False)
    with Store.open() as store:
        assert (tmp_path / "bastion-data" / "bastion.db").is_file()
        with store.engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    other = tmp_path / "elsewhere" / "x.db"
    monkeypatch.setenv("BASTION_DATABASE_URL", f"sqlite:///{other}")
    with Store.open() as store:
        store.create_bank("env")
    assert other.is_file()


def test_schema_option_is_postgres_only(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="schema= is for PostgreSQL"):
        Store.open(f"sqlite:///{tmp_path / 'x.db'}", schema="s1")
