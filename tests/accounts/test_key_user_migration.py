"""Migration 0016: keys bound to a console user by a column, not by their name.

Keys made before it and named ``<user>@<label>`` for an existing user are bound to that user
(so they keep working on /v1/cases), with their creator taken from the ``key.create`` audit
record; other keys are bound to nobody. Downgrading drops the two columns.
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text

from bastion.accounts.store import AccountStore
from bastion.banks.model import utcnow
from bastion.db import Store
from bastion.keys import format_token, hash_secret, new_salt, new_secret
from bastion.store.engine import MIGRATIONS_DIR
from tests.fixtures.stores import Database
from tests.web.seed import fast_hasher


def _run(store: Store, action: str, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, action)(cfg, revision)


def _old_key(store: Store, key_id: str, name: str) -> str:
    """A key as revision 0015 stored it (no user column); returns its token."""
    secret, salt = new_secret(), new_salt()
    with store.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO api_keys (key_id, name, salt, secret_hash, scopes, created_at) "
                "VALUES (:k, :n, :s, :h, :sc, :at)"
            ),
            {
                "k": key_id,
                "n": name,
                "s": salt,
                "h": hash_secret(secret, salt),
                "sc": '["review"]',
                "at": utcnow(),
            },
        )
    return format_token(key_id, secret)


def test_0016_binds_user_named_keys_and_downgrades(empty_db: Database) -> None:
    store = Store.open(empty_db.url, schema=empty_db.schema, migrate=False)
    empty_db.opened.append(store)
    _run(store, "upgrade", "0015")
    AccountStore(store, hasher=fast_hasher()).create_user(
        "rex", "reviewer", "a long test password", actor="system"
    )
    rex = _old_key(store, "AAAAAAAAA1", "rex@tool")
    ghost = _old_key(store, "AAAAAAAAA2", "ghost@tool")
    plain = _old_key(store, "AAAAAAAAA3", "scanner")
    store.record_audit(actor="user:ada", action="key.create", target="rex@tool")
    _run(store, "upgrade", "0016")
    assert store.get_api_key("rex@tool").user == "rex"
    assert store.get_api_key("rex@tool").created_by == "user:ada"
    key = store.verify_api_key(rex)
    assert key is not None and key.user == "rex"
    for token, name in ((ghost, "ghost@tool"), (plain, "scanner")):
        key = store.verify_api_key(token)
        assert key is not None and key.name == name and key.user is None
        assert key.created_by is None
    _run(store, "downgrade", "0015")
    with store.engine.connect() as conn:
        columns = {c["name"] for c in inspect(conn).get_columns("api_keys")}
        names = {r[0] for r in conn.execute(text("SELECT name FROM api_keys"))}
    assert not {"user_id", "created_by"} & columns
    assert names == {"rex@tool", "ghost@tool", "scanner"}
