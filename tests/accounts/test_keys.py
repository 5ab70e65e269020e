"""API keys in the store: token shown once, only a salted hash kept, verification, revocation,
expiry, scopes; and migration 0002 upgrading a populated 0001 database."""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, Table, insert, inspect, select, text, update

from bastion import keys as keys_mod
from bastion.accounts.keys import keys_t
from bastion.db import Store
from bastion.keys import (
    ApiKey,
    format_token,
    hash_secret,
    new_key_id,
    new_salt,
    new_secret,
    parse_scopes,
    parse_token,
)
from bastion.store import InvalidInput
from bastion.store.engine import MIGRATIONS_DIR
from bastion.store.errors import KeyExists, KeyNotFound
from tests.fixtures.stores import Database

TOKEN_RE = re.compile(r"^bst_[A-Za-z0-9]{8,12}_[A-Za-z0-9_-]{43,}$")


# -- pure helpers ------------------------------------------------------------------------------


def test_token_round_trip_and_shape() -> None:
    for _ in range(200):
        key_id, secret = new_key_id(), new_secret()
        token = format_token(key_id, secret)
        assert TOKEN_RE.match(token)
        assert "_" not in key_id  # so the token splits unambiguously
        assert parse_token(token) == (key_id, secret)


@pytest.mark.parametrize(
    "token",
    [
        None,
        42,
        b"bst_abcdefgh_" + b"x" * 43,
        "",
        "bst_",
        "Bearer bst_abcdefgh_" + "x" * 43,
        "bst_abcdefgh_" + "x" * 42,  # secret too short for 32 bytes
        "bst_abc_" + "x" * 43,  # key id too short
        "bst_abcdefghijklm_" + "x" * 43,  # key id too long
        "xyz_abcdefgh_" + "x" * 43,
        "bst_abcdefgh_" + "x" * 43 + "\n",
        "bst_abcdéfgh_" + "x" * 43,
        "bst_abcdefgh_" + "x" * 43 + "=",
        "bst_abcdefgh_" + "x" * 10_000,
    ],
)
def test_malformed_tokens_do_not_parse(token: object) -> None:
    assert parse_token(token) is None


def test_hash_is_salted_hmac() -> None:
    secret = new_secret()
    s1, s2 = new_salt(), new_salt()
    assert s1 != s2
    assert hash_secret(secret, s1) != hash_secret(secret, s2)
    expected = hmac.new(bytes.fromhex(s1), secret.encode(), "sha256").hexdigest()
    assert hash_secret(secret, s1) == expected


def test_parse_scopes() -> None:
    assert parse_scopes("hash, MATCH") == {"hash", "match"}
    assert parse_scopes(["hash,match", "curate"]) == {"hash", "match", "curate"}
    with pytest.raises(ValueError, match=r"unknown scope\(s\): 'bogus', 'root'.*hash, match"):
        parse_scopes("hash,bogus,root")
    with pytest.raises(ValueError, match="at least one scope"):
        parse_scopes(" , ")


def test_allows_and_admin_implies_all() -> None:
    now = datetime.now(UTC)
    key = ApiKey(1, "abcdefgh", "k", frozenset({"hash"}), now, None, None, None)
    assert key.allows("hash") and not key.allows("match") and not key.allows("admin")
    admin = ApiKey(2, "abcdefgi", "a", frozenset({"admin"}), now, None, None, None)
    assert all(admin.allows(s) for s in keys_mod.SCOPES)
    assert not key.allows("nonsense") and admin.is_active(now)


# -- store -------------------------------------------------------------------------------------


def test_create_returns_token_once_and_stores_only_a_hash(store: Store) -> None:
    key, token = store.create_api_key("CI-Runner", "hash,match")
    assert TOKEN_RE.match(token)
    assert key.name == "ci-runner" and key.scopes == {"hash", "match"}
    assert token.startswith(f"bst_{key.key_id}_")
    assert key.last_used_at is None and key.revoked_at is None and key.expires_at is None
    secret = token.split("_", 2)[2]
    with store.engine.connect() as conn:
        row = conn.execute(select(keys_t)).one()
        dump = " ".join(
            str(v)
            for table in ("api_keys", "audit_log")
            for r in conn.execute(text(f"SELECT * FROM {table}"))
            for v in r
        )
    assert token not in dump and secret not in dump
    assert row.secret_hash == hash_secret(secret, row.salt)
    assert len(row.salt) == 32
    # Listing shows the same key and nothing secret.
    listed = store.list_api_keys()
    assert listed == [key]
    assert not any(secret in repr(k) or token in repr(k) for k in listed)


def test_verify_accepts_the_token_and_rejects_everything_else(store: Store) -> None:
    key, token = store.create_api_key("client", ["hash"])
    _other, other_token = store.create_api_key("other", ["match"])
    found = store.verify_api_key(token)
    assert found is not None and found.id == key.id and found.scopes == {"hash"}
    assert store.verify_api_key(other_token).name == "other"  # type: ignore[union-attr]
    wrong_secret = format_token(key.key_id, new_secret())
    assert store.verify_api_key(wrong_secret) is None
    # Another key's secret under this key's id.
    assert store.verify_api_key(format_token(key.key_id, other_token.split("_", 2)[2])) is None
    assert store.verify_api_key(format_token(new_key_id(), token.split("_", 2)[2])) is None
    assert store.verify_api_key(token[:-1]) is None
    assert store.verify_api_key(token + "x") is None
    assert store.verify_api_key("") is None
    assert store.verify_api_key(None) is None


def test_verify_uses_a_constant_time_compare(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    _key, token = store.create_api_key("client", ["hash"])
    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(keys_mod.hmac, "compare_digest", spy)
    assert store.verify_api_key(token) is not None
    assert len(calls) == 1
    assert store.verify_api_key(format_token(_key.key_id, new_secret())) is None
    assert len(calls) == 2
    # An unknown key id still costs a hash and a compare.
    assert store.verify_api_key(format_token(new_key_id(), new_secret())) is None
    assert len(calls) == 3


def test_revoked_keys_fail_and_keep_their_row(store: Store) -> None:
    _key, token = store.create_api_key("client", "hash")
    revoked = store.revoke_api_key("CLIENT")
    assert revoked.revoked_at is not None and revoked.revoked
    assert store.verify_api_key(token) is None
    again = store.revoke_api_key("client")
    assert again.revoked_at == revoked.revoked_at  # the first revocation time stays
    assert [k.name for k in store.list_api_keys()] == ["client"]
    with pytest.raises(KeyNotFound, match="no API key named 'nope'"):
        store.revoke_api_key("nope")
    with pytest.raises(KeyExists):  # a revoked key's name stays taken
        store.create_api_key("client", "hash")


def test_expired_keys_fail(store: Store) -> None:
    soon = datetime.now(UTC) + timedelta(days=1)
    key, token = store.create_api_key("temp", "match", expires_at=soon)
    assert key.expires_at == soon
    assert store.verify_api_key(token) is not None
    with store.engine.begin() as conn:
        conn.execute(update(keys_t).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert store.verify_api_key(token) is None


def test_bad_names_scopes_and_expiry_are_refused(store: Store) -> None:
    with pytest.raises(InvalidInput, match=r"unknown scope.*'superuser'"):
        store.create_api_key("k", "hash,superuser")
    with pytest.raises(InvalidInput, match="at least one scope"):
        store.create_api_key("k", [])
    with pytest.raises(InvalidInput, match="invalid key name"):
        store.create_api_key("has space", "hash")
    with pytest.raises(InvalidInput, match="invalid key name"):
        store.create_api_key("x" * 65, "hash")
    with pytest.raises(InvalidInput, match="timezone-aware"):
        store.create_api_key("k", "hash", expires_at=datetime(2100, 1, 1))
    with pytest.raises(InvalidInput, match="in the past"):
        store.create_api_key("k", "hash", expires_at=datetime(2000, 1, 1, tzinfo=UTC))
    store.create_api_key("k", "hash")
    with pytest.raises(KeyExists, match="already exists"):
        store.create_api_key("K", "admin")
    assert [k.name for k in store.list_api_keys()] == ["k"]


def test_last_used_is_written_at_most_once_a_minute(db: Database) -> None:
    store = db.open()
    _key, token = store.create_api_key("client", "hash")
    first = store.verify_api_key(token)
    assert first is not None and first.last_used_at is not None
    recent = datetime.now(UTC) - timedelta(seconds=30)
    with store.engine.begin() as conn:
        conn.execute(update(keys_t).values(last_used_at=recent))
    other = db.open()  # a fresh process has no memory of earlier touches
    assert other.verify_api_key(token).last_used_at == recent  # type: ignore[union-attr]
    assert other.get_api_key("client").last_used_at == recent
    stale = datetime.now(UTC) - timedelta(minutes=2)
    with store.engine.begin() as conn:
        conn.execute(update(keys_t).values(last_used_at=stale))
    touched = db.open().verify_api_key(token)
    assert touched is not None and touched.last_used_at > stale  # type: ignore[operator]
    assert store.get_api_key("client").last_used_at == touched.last_used_at


def test_a_locked_database_skips_the_touch_not_the_request(db: Database) -> None:
    store = db.open()
    _key, token = store.create_api_key("client", "hash")
    blocker = db.open()
    with blocker.engine.connect() as conn:
        if db.kind == "sqlite":
            conn.exec_driver_sql("UPDATE store_state SET revision = revision")  # write lock
        else:
            conn.execute(select(keys_t.c.id).with_for_update())
        verified: list[ApiKey | None] = []
        worker = threading.Thread(target=lambda: verified.append(store.verify_api_key(token)))
        worker.start()
        worker.join(timeout=20)
        conn.rollback()
    assert verified and verified[0] is not None and verified[0].last_used_at is None
    assert store.get_api_key("client").last_used_at is None


def test_create_and_revoke_with_actor_are_audited(store: Store) -> None:
    key, _ = store.create_api_key("client", "hash,curate", actor="cli:alice", remote_addr="::1")
    store.revoke_api_key("client", actor="cli:bob")
    with pytest.raises(KeyExists):
        store.create_api_key("client", "hash", actor="cli:alice")  # refused: no audit row
    events = store.iter_audit()
    assert [(e.actor, e.action, e.target) for e in events] == [
        ("cli:alice", "key.create", "client"),
        ("cli:bob", "key.revoke", "client"),
    ]
    assert events[0].detail == {
        "key_id": key.key_id,
        "scopes": ["curate", "hash"],
        "expires_at": None,
    }
    assert events[0].remote_addr == "::1"
    assert events[1].detail == {"key_id": key.key_id, "already_revoked": False}
    assert store.verify_audit_chain() is None


# -- migration 0002 ----------------------------------------------------------------------------


def test_0002_upgrades_a_populated_0001_database_and_downgrades(empty_db: Database) -> None:
    store = Store.open(empty_db.url, schema=empty_db.schema, migrate=False)
    empty_db.opened.append(store)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))

    def run(action: str) -> None:
        with store.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            getattr(command, action)(cfg, "0001")

    run("upgrade")
    with store.engine.connect() as conn:
        assert "api_keys" not in inspect(conn).get_table_names()
    # The bank and its entry are written as 0001 had them: today's Store knows columns that
    # later revisions added, so it cannot write (or read) a 0001 database.
    now = datetime.now(UTC)
    with store.engine.begin() as conn:
        banks = Table("banks", MetaData(), autoload_with=conn)
        entries = Table("bank_entries", MetaData(), autoload_with=conn)
        bank_id = conn.execute(
            insert(banks).values(
                name="old",
                description="",
                labels=[],
                source="local",
                enabled=True,
                is_demo=False,
                version=1,
                created_at=now,
                updated_at=now,
            )
        ).inserted_primary_key[0]
        conn.execute(
            insert(entries).values(
                bank_id=bank_id,
                signal_type="md5",
                value="a" * 32,
                value_hash=hashlib.sha256(b"a" * 32).hexdigest(),
                quality=None,
                url_match="",
                source="local",
                list_name="",
                external_id=None,
                added_at=now,
                labels=[],
                enabled=True,
                disabled_reason="",
                metadata={},
                created_at=now,
                updated_at=now,
                revision=1,
            )
        )
    store.migrate()
    with store.engine.connect() as conn:
        # migrate() goes to the newest revision, which is at least 0002
        assert MigrationContext.configure(conn).get_current_revision() >= "0002"
        tables = set(inspect(conn).get_table_names())
    assert {"api_keys", "audit_log", "audit_head", "scans"} <= tables
    assert [e.value for e in store.iter_entries()] == ["a" * 32]
    _key, token = store.create_api_key("k", "hash", actor="test")
    assert store.verify_api_key(token) is not None
    assert store.record_scan(
        actor="k", content_kind="image", context={}, signals=[], matches=[], verdict="allow"
    )
    assert store.verify_audit_chain() is None
    run("downgrade")
    with store.engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
    assert "api_keys" not in tables and "audit_log" not in tables and "scans" not in tables
    with store.engine.connect() as conn:
        banks = Table("banks", MetaData(), autoload_with=conn)
        assert conn.execute(select(banks.c.name)).scalars().all() == ["old"]
