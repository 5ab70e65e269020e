"""`bastion identity` (issue 16) on SQLite and PostgreSQL: groups with sealed keys, an audited
key export to a private file, joining with it, identifiers into a bank as keyed hashes only."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from bastion.cli import app
from bastion.db import Store
from bastion.identity.model import Identifier, hash_identifier
from bastion.identity.store import parse_key
from bastion.signals.base import SignalType
from tests.fixtures.stores import postgres_schema_url

runner = CliRunner()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    monkeypatch.chdir(tmp_path)  # the master key goes to ./bastion-data, never the checkout
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bastion.db'}"
    else:
        with postgres_schema_url("t_cli_ident") as url:
            yield url


def bastion(db: str, *args: str, input: str | None = None) -> Result:
    return runner.invoke(app, ["--db", db, *args], input=input, catch_exceptions=False)


def test_groups_keys_and_identifiers_through_the_cli(db: str, tmp_path: Path) -> None:
    assert bastion(db, "identity", "create", "lantern").exit_code == 0
    keyfile = tmp_path / "lantern.key"
    done = bastion(db, "identity", "export-key", "lantern", "--out", str(keyfile))
    assert done.exit_code == 0, done.output
    assert stat.S_IMODE(os.stat(keyfile).st_mode) == 0o600
    key = parse_key(keyfile.read_text())
    again = bastion(db, "identity", "export-key", "lantern", "--out", str(keyfile))
    assert again.exit_code != 0 and "exists" in again.output
    joined = bastion(db, "identity", "create", "lantern-b", "--key-file", str(keyfile))
    assert joined.exit_code == 0, joined.output
    listed = bastion(db, "identity", "list", "--format", "json").stdout
    assert listed.count(f'"{joined.output.split()[-1]}"') == 2  # both hold one key id

    assert bastion(db, "bank", "create", "ids").exit_code == 0
    names = tmp_path / "names.txt"
    names.write_text("@SecretGameHost\n\n  another_handle \n")
    add = bastion(
        db,
        "identity",
        "add",
        "ids",
        str(names),
        "--group",
        "lantern",
        "--type",
        "username",
        "--platform",
        "discord",
    )
    assert add.exit_code == 0, add.output
    assert "added 2 username hashes" in add.output
    bad = bastion(
        db,
        "identity",
        "add",
        "ids",
        "-",
        "--group",
        "lantern",
        "--type",
        "email",
        input="not-an-address\nok@example.com\n",
    )
    assert bad.exit_code == 1 and "line 1: email is not an address" in bad.output
    assert "not-an-address" not in bad.output
    with Store.open(db) as store:
        values = sorted(e.value for e in store.iter_entries(banks=["ids"]))
        expected = sorted(
            [
                hash_identifier(key, Identifier(SignalType.USERNAME, "secretgamehost", "discord")),
                hash_identifier(key, Identifier(SignalType.USERNAME, "another_handle", "discord")),
                hash_identifier(key, Identifier(SignalType.EMAIL, "ok@example.com")),
            ]
        )
        assert values == expected
        actions = [e.action for e in store.iter_audit() if e.action.startswith("identity.")]
        stored = repr([e.detail for e in store.iter_audit()])
    assert actions == [
        "identity.group.create",
        "identity.group.key.export",
        "identity.group.create",
    ]
    assert "secretgamehost" not in stored.lower() and keyfile.read_text().strip() not in stored
