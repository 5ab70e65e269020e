"""The one ``--db`` option (bastion/cli/_context.py): given before the command it sets the
database for every command; a command's own ``--db`` (audit, policy test, pdata build, worker)
overrides it when typed on that command's line; the command line beats BASTION_DATABASE_URL."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from bastion.cli import app
from bastion.store import StoreError

ENV = "BASTION_DATABASE_URL"


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """The URLs the CLI opens (each open then fails: exit 2, nothing touched)."""
    urls: list[str | None] = []

    def refuse(url: str | None = None, *args: object, **kwargs: object) -> None:
        urls.append(url)
        raise StoreError("not in this test")

    monkeypatch.setattr("bastion.cli._context.Store.open", refuse)
    return urls


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["bank", "list"], None, None),
        (["--db", "sqlite:///a.db", "bank", "list"], None, "sqlite:///a.db"),
        (["bank", "list"], "sqlite:///e.db", "sqlite:///e.db"),
        (["--db", "sqlite:///a.db", "bank", "list"], "sqlite:///e.db", "sqlite:///a.db"),
        (["audit", "tail", "--db", "sqlite:///b.db"], None, "sqlite:///b.db"),
        (
            ["--db", "sqlite:///a.db", "audit", "tail", "--db", "sqlite:///b.db"],
            None,
            "sqlite:///b.db",
        ),
        (["--db", "sqlite:///a.db", "audit", "tail"], "sqlite:///e.db", "sqlite:///a.db"),
        (["audit", "tail", "--db", "sqlite:///b.db"], "sqlite:///e.db", "sqlite:///b.db"),
        (["audit", "tail"], "sqlite:///e.db", "sqlite:///e.db"),
        (
            ["--db", "sqlite:///a.db", "pdata", "build", "--db", "sqlite:///b.db"],
            None,
            "sqlite:///b.db",
        ),
        (["--db", "sqlite:///a.db", "pdata", "build"], "sqlite:///e.db", "sqlite:///a.db"),
        (["pdata", "build"], "sqlite:///e.db", "sqlite:///e.db"),
        (
            ["--db", "sqlite:///a.db", "worker", "--once", "--db", "sqlite:///b.db"],
            None,
            "sqlite:///b.db",
        ),
        (["--db", "sqlite:///a.db", "worker", "--once"], "sqlite:///e.db", "sqlite:///a.db"),
        (["worker", "--once"], "sqlite:///e.db", "sqlite:///e.db"),
    ],
)
def test_db_option(
    opened: list[str | None], args: list[str], env: str | None, expected: str | None
) -> None:
    result = CliRunner().invoke(app, args, env={ENV: env})
    assert result.exit_code == 2, result.output
    assert "cannot open the store: not in this test" in result.output
    assert opened == [expected]
