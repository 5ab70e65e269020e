"""``bastion feed``: key, create, list, publish, versions, disputes, remove (SQLite)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.cli import app
from bastion.feeds import VerifyKey, parse_statement
from bastion.store import Store
from bastion.store.feeds import FeedStore
from tests.feeds.conftest import pdq_entries

runner = CliRunner()
SECRET = base64.b64encode(b"c" * 32).decode()


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BASTION_SECRET_KEY", SECRET)
    url = f"sqlite:///{tmp_path / 'bastion.db'}"
    with Store.open(url) as store:
        store.create_bank("pub")
        store.add_entries("pub", pdq_entries(3))
    return url


def _run(db: str, *args: str, code: int = 0) -> str:
    r = runner.invoke(app, ["--db", db, "feed", *args], catch_exceptions=False)
    assert r.exit_code == code, r.output
    return r.output


def test_feed_commands(db: str) -> None:
    (key,) = json.loads(_run(db, "key", "--format", "json"))
    pinned = VerifyKey.from_text(key["public_key"])
    assert key["fingerprint"] == pinned.fingerprint
    assert pinned.fingerprint in _run(db, "key")  # the same key, made once
    assert "no bank named 'nope'" in _run(
        db, "create", "f", "--bank", "nope", "--organisation", "x", code=2
    )
    out = _run(db, "create", "f", "--bank", "pub", "--organisation", "Org A", "--description", "d")
    assert "feed f created" in out
    assert "already exists" in _run(
        db, "create", "f", "--bank", "pub", "--organisation", "x", code=2
    )
    out = _run(db, "publish", "f")
    assert "version 1, 3 records" in out
    assert "unchanged since version 1" in _run(db, "publish", "f")
    (version,) = json.loads(_run(db, "versions", "f", "--format", "json"))
    assert version["version"] == 1 and version["count"] == 3
    (listed,) = json.loads(_run(db, "list", "--format", "json"))
    assert listed["root"] == version["root"] and listed["publisher"] == "Org A"
    with Store.open(db) as store:
        feeds = FeedStore(store, None)
        latest = feeds.latest_version("f")
        assert latest is not None and parse_statement(latest.statement).root == version["root"]
        pinned.verify_statement(latest.statement.encode(), latest.signature)
        key_id = str(store.list_entries("pub")[0].id)
        feeds.add_feedback("f", key_id, subscriber="sub-1", reason="not_abusive")
    (dispute,) = json.loads(_run(db, "disputes", "f", "--format", "json"))
    assert (dispute["key"], dispute["kind"], dispute["subscriber"]) == (key_id, "dispute", "sub-1")
    assert "no feed named 'nope'" in _run(db, "publish", "nope", code=2)
    assert "feed f removed" in _run(db, "remove", "f")
    assert json.loads(_run(db, "list", "--format", "json")) == []


def test_signing_commands_need_the_servers_key(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BASTION_SECRET_KEY")
    out = _run(db, "key", code=2)
    assert "no master key" in out and not Path("secret.key").exists()
