"""Opening a store: every way it can fail is a StoreUnavailable with a message for people."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from bastion.db import Store
from bastion.store import StoreError, StoreUnavailable
from tests.fixtures.stores import PG_URL


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("garbage://", "cannot use database URL 'garbage://': unknown database kind 'garbage'"),
        ("not a url", "invalid database URL 'not a url'"),
        ("postgresql://u:hunter2@db:notaport/x", "invalid database URL"),
        ("sqlite:////proc/x.db", "cannot open database 'sqlite:////proc/x.db'"),
    ],
)
def test_bad_urls_are_store_errors(url: str, message: str) -> None:
    with pytest.raises(StoreUnavailable, match=message) as info:
        Store.open(url)
    assert isinstance(info.value, StoreError)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("migrate", [True, False])
def test_unreachable_postgres_is_a_store_error_without_the_password(migrate: bool) -> None:
    url = "postgresql+psycopg://someone:hunter2@127.0.0.1:1/nothing"
    with pytest.raises(StoreUnavailable, match="cannot open database") as info:
        Store.open(url, migrate=migrate)
    assert "hunter2" not in str(info.value)
    assert "someone:***@127.0.0.1:1" in str(info.value)
    assert "Connection refused" in str(info.value) or "connect" in str(info.value)


@pytest.mark.postgres
def test_wrong_password_is_a_store_error_without_the_password() -> None:
    from sqlalchemy.engine import make_url

    url = make_url(PG_URL).set(username="no_such_user_x", password="hunter2")
    with pytest.raises(StoreUnavailable, match="cannot open database") as info:
        Store.open(url.render_as_string(hide_password=False))
    assert "hunter2" not in str(info.value)


def test_a_mistyped_sqlite_directory_tree_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "typo" / "deeper" / "bastion.db"
    with pytest.raises(StoreUnavailable, match=r"directory .*typo.* does not exist"):
        Store.open(f"sqlite:///{path}")
    assert not (tmp_path / "typo").exists()


def test_the_sqlite_directory_is_created_one_level_deep(tmp_path: Path) -> None:
    path = tmp_path / "new-dir" / "bastion.db"
    with Store.open(f"sqlite:///{path}") as store:
        assert store.list_banks() == []
    assert path.is_file()


def test_the_default_database_directory_is_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BASTION_DATABASE_URL", raising=False)
    with Store.open() as store:
        store.create_bank("b")
    assert (tmp_path / "bastion-data" / "bastion.db").is_file()


def test_a_schema_from_a_newer_bastion_is_a_store_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'future.db'}"
    with Store.open(url) as store, store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'from_the_future'"))
    with pytest.raises(StoreUnavailable, match="cannot open database"):
        Store.open(url)
