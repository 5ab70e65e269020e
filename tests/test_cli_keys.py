"""`bastion key`: create prints the token alone on the last line, list hides secrets, revoke
works, bad scopes are usage errors, and create/revoke are audited with the OS user."""

from __future__ import annotations

import getpass
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.cli import app
from bastion.db import Store
from tests.fixtures.stores import postgres_schema_url

runner = CliRunner()
TOKEN_RE = re.compile(r"^bst_[A-Za-z0-9]{8,12}_[A-Za-z0-9_-]{43,}$")


def bastion(db: str, *args: str):
    return runner.invoke(app, ["--db", db, *args], catch_exceptions=False)


def said(text: str) -> str:
    """Messages with Rich's line wrapping undone."""
    return " ".join(text.split())


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(getpass, "getuser", lambda: "alice")
    return f"sqlite:///{tmp_path / 'bastion.db'}"


@pytest.fixture
def pg_db(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(getpass, "getuser", lambda: "alice")
    with postgres_schema_url("t_key") as url:
        yield url


def create(db: str, name: str, *args: str) -> str:
    result = bastion(db, "key", "create", name, *args)
    assert result.exit_code == 0, result.output
    token = result.stdout.splitlines()[-1]
    assert TOKEN_RE.match(token), result.stdout
    assert result.output.rstrip("\n").splitlines()[-1] == token  # last line of all output too
    return token


def test_create_prints_a_token_that_verifies(db: str) -> None:
    result = bastion(db, "key", "create", "ingest", "--scopes", "hash,match")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("\n") == 1  # the token alone: safe for $(bastion key create …)
    token = result.stdout.strip()
    assert TOKEN_RE.match(token)
    assert "not shown again" in said(result.stderr) and token not in result.stderr.replace("\n", "")
    with Store.open(db) as store:
        key = store.verify_api_key(token)
        assert key is not None and key.name == "ingest" and key.scopes == {"hash", "match"}
        assert key.expires_at is None
        event, use = store.iter_audit()
    assert (event.actor, event.action, event.target) == ("cli:alice", "key.create", "ingest")
    assert token not in json.dumps(event.detail)
    # Verifying the key is its first use, which the audit log records under the public key id.
    assert (use.actor, use.action, use.target) == ("key:ingest", "key.use", key.key_id)
    assert token not in json.dumps(use.detail)


def test_repeated_scopes_and_expiry(db: str) -> None:
    token = create(db, "temp", "--scopes", "hash", "-s", "export", "--expires-in", "30")
    with Store.open(db) as store:
        key = store.verify_api_key(token)
    assert key is not None and key.scopes == {"hash", "export"}
    assert key.expires_at is not None and (key.expires_at - key.created_at).days in (29, 30)


def test_unknown_scope_is_a_usage_error(db: str) -> None:
    result = bastion(db, "key", "create", "x", "--scopes", "hash,superuser")
    assert result.exit_code == 2
    assert "unknown scope(s): 'superuser'" in said(result.stderr)
    assert "hash, match, curate, export, admin" in said(result.stderr)
    assert result.stdout == ""
    missing = bastion(db, "key", "create", "x")
    assert missing.exit_code == 2 and "--scopes" in missing.output
    assert json.loads(bastion(db, "key", "list", "--format", "json").stdout) == []


def test_duplicate_and_invalid_names_are_usage_errors(db: str) -> None:
    create(db, "ingest", "--scopes", "hash")
    again = bastion(db, "key", "create", "INGEST", "--scopes", "admin")
    assert again.exit_code == 2 and "already exists" in said(again.stderr) and again.stdout == ""
    bad = bastion(db, "key", "create", "no spaces", "--scopes", "admin")
    assert bad.exit_code == 2 and "invalid key name" in said(bad.stderr)


def test_list_shows_keys_without_secrets(db: str) -> None:
    t1 = create(db, "b-client", "--scopes", "match")
    t2 = create(db, "a-admin", "--scopes", "admin")
    assert bastion(db, "key", "revoke", "b-client").exit_code == 0
    result = bastion(db, "key", "list", "--format", "json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert [(r["name"], r["scopes"], r["status"]) for r in rows] == [
        ("a-admin", ["admin"], "active"),
        ("b-client", ["match"], "revoked"),
    ]
    assert rows[0]["key_id"] == t2.split("_")[1] and rows[1]["revoked_at"]
    for token in (t1, t2):
        assert token.split("_", 2)[2] not in result.stdout
    assert all("salt" not in r and "secret_hash" not in r for r in rows)
    table = bastion(db, "key", "list")
    assert table.exit_code == 0 and "a-admin" in table.stdout and "revoked" in table.stdout


def test_revoke_stops_the_key_and_is_audited(db: str) -> None:
    token = create(db, "ingest", "--scopes", "hash")
    result = bastion(db, "key", "revoke", "ingest")
    assert result.exit_code == 0 and "revoked" in said(result.stderr)
    with Store.open(db) as store:
        assert store.verify_api_key(token) is None
        actions = [(e.actor, e.action, e.target) for e in store.iter_audit()]
        assert store.verify_audit_chain() is None
    assert actions[-1] == ("cli:alice", "key.revoke", "ingest")
    unknown = bastion(db, "key", "revoke", "nope")
    assert unknown.exit_code == 2 and "no API key named 'nope'" in said(unknown.stderr)


@pytest.mark.postgres
def test_create_verify_revoke_on_postgres(pg_db: str) -> None:
    token = create(pg_db, "replica-client", "--scopes", "match")
    with Store.open(pg_db) as store:
        assert store.verify_api_key(token).scopes == {"match"}  # type: ignore[union-attr]
    assert bastion(pg_db, "key", "revoke", "replica-client").exit_code == 0
    with Store.open(pg_db) as store:
        assert store.verify_api_key(token) is None
        assert [e.action for e in store.iter_audit()] == ["key.create", "key.use", "key.revoke"]


def test_create_binds_a_key_to_a_console_user_with_user_or_the_name_sugar(db: str) -> None:
    """An operator on the host may bind a key to a user (``--user``, or the ``alice@label``
    name); the binding is stored with the key, its creator is the OS user, and a name cannot
    claim one user while binding another."""
    from bastion.accounts.store import AccountStore
    from tests.web.seed import fast_hasher

    with Store.open(db) as store:
        AccountStore(store, hasher=fast_hasher()).create_user(
            "rex", "reviewer", "a long test password", actor="system"
        )
    create(db, "desk-tool", "--scopes", "review", "--user", "rex")
    create(db, "rex@sdk", "--scopes", "review,media")
    with Store.open(db) as store:
        for name in ("desk-tool", "rex@sdk"):
            key = store.get_api_key(name)
            assert (key.user, key.created_by) == ("rex", "cli:alice"), name
        made = [e for e in store.recent_audit(10, action="key.create") if e.target == "rex@sdk"]
        assert made[0].actor == "cli:alice" and made[0].detail["user"] == "rex"
    listed = json.loads(bastion(db, "key", "list", "--format", "json").stdout)
    assert {k["name"]: k["user"] for k in listed} == {"desk-tool": "rex", "rex@sdk": "rex"}
    for args in (["rex@other", "--user", "sue"], ["ghost-tool", "--user", "ghost"]):
        result = runner.invoke(app, ["--db", db, "key", "create", *args, "--scopes", "review"])
        assert result.exit_code != 0, args
