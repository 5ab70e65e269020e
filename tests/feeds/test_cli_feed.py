"""``bastion feed``: key, create, list, publish, versions, disputes, remove (SQLite)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.cli import app
from bastion.config import Settings
from bastion.db import Store
from bastion.feeds import VerifyKey, parse_statement
from bastion.feeds.store import FeedStore
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


def test_feed_key_works_on_a_fresh_instance(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """No server has started yet: the CLI makes the master key, as the server would."""
    monkeypatch.delenv("BASTION_SECRET_KEY")
    with Store.open(db) as store:
        key_file = Path(str(Settings.load().in_data_dir(store.data_dir).secret_key_file))
    assert not key_file.exists()
    (made,) = json.loads(_run(db, "key", "--format", "json"))
    assert key_file.exists()
    assert VerifyKey.from_text(made["public_key"]).fingerprint == made["fingerprint"]
    assert made["fingerprint"] in _run(db, "key")  # the same key, opened with that master key


def test_signing_commands_need_the_servers_key(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a feed key exists, only its master key opens it: a new one is never made."""
    _run(db, "key")  # made under BASTION_SECRET_KEY
    monkeypatch.delenv("BASTION_SECRET_KEY")
    with Store.open(db) as store:
        key_file = Path(str(Settings.load().in_data_dir(store.data_dir).secret_key_file))
    out = _run(db, "key", code=2)
    assert "no master key" in out and not key_file.exists()


def _key_create(db: str, *args: str, code: int = 0) -> tuple[str, str]:
    r = runner.invoke(app, ["--db", db, "key", "create", *args], catch_exceptions=False)
    assert r.exit_code == code, r.output
    return r.stdout, " ".join(r.stderr.split())  # rich wraps long lines


def test_keys_are_granted_feeds_and_grants_are_audited(db: str) -> None:
    _run(db, "create", "for-x", "--bank", "pub", "--organisation", "Org A")
    _run(db, "create", "for-y", "--bank", "pub", "--organisation", "Org A")
    # --feed needs the feed scope and a feed that exists; neither mistake makes a key.
    _, errors = _key_create(db, "partner-x", "--scopes", "match", "--feed", "for-x", code=2)
    assert "--feed grants feeds to a key with the 'feed' scope" in errors
    _, errors = _key_create(db, "partner-x", "--scopes", "feed", "--feed", "nope", code=2)
    assert "no feed named 'nope'" in errors
    out, errors = _key_create(db, "partner-x", "--scopes", "feed", "--feed", "for-x")
    assert out.startswith("bst_") and "reads feeds for-x" in errors
    # A feed key made without --feed reads nothing, and is told so.
    _, errors = _key_create(db, "partner-y", "--scopes", "feed")
    assert "reads no feed until granted one: `bastion feed grant partner-y FEED`" in errors
    with Store.open(db) as store:
        assert [k.name for k in store.list_api_keys()] == ["partner-x", "partner-y"]
    r = runner.invoke(app, ["--db", db, "feed", "grants", "--format", "json"])
    assert r.exit_code == 0, r.output
    (grant,) = json.loads(r.stdout)
    assert (grant["feed"], grant["key"]) == ("for-x", "partner-x")
    assert grant["granted_by"].startswith("cli:")
    assert "feed keys with no grant read no feed: partner-y" in " ".join(r.stderr.split())

    assert "granted feed for-y to key partner-y" in _run(db, "grant", "partner-y", "for-y")
    assert "already reads for-y" in _run(db, "grant", "partner-y", "for-y")
    assert "no API key named 'nobody'" in _run(db, "grant", "nobody", "for-y", code=2)
    by_feed = json.loads(_run(db, "grants", "--feed", "for-y", "--format", "json"))
    assert [g["key"] for g in by_feed] == ["partner-y"]
    assert "no longer reads feed for-y" in _run(db, "revoke", "partner-y", "for-y")
    assert "was not granted for-y" in _run(db, "revoke", "partner-y", "for-y")
    assert json.loads(_run(db, "grants", "--key", "partner-y", "--format", "json")) == []
    assert "no feed named 'nope'" in _run(db, "grant", "partner-y", "nope", code=2)
    with Store.open(db) as store:
        events = [(e.action, e.target, (e.detail or {}).get("key")) for e in store.iter_audit()]
    assert [e for e in events if e[0].startswith("feed.grant")] == [
        ("feed.grant", "for-x", "partner-x"),
        ("feed.grant", "for-y", "partner-y"),
        ("feed.grant.revoke", "for-y", "partner-y"),
    ]
