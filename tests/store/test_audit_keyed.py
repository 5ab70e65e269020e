"""The keyed audit chain: HMAC under keys kept in a file outside the database, rotation, legacy
records from before the upgrade, and refusals when the key file is wrong, on SQLite and
PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import insert, inspect, select, text, update

from bastion.audit_keys import AuditKeyring
from bastion.db import Store
from bastion.store import StoreError
from bastion.store.audit_chain import AUDIT_GENESIS, AuditEvent, audit_hash, canon_numbers
from bastion.store.engine import MIGRATIONS_DIR
from bastion.store.errors import AuditKeyUnavailable
from bastion.store.tables import audit_head_t, audit_t
from tests.fixtures.stores import Database


@pytest.fixture
def key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own keyring (not the run's shared one)."""
    path = tmp_path / "keys" / "audit.key"
    monkeypatch.setenv("BASTION_AUDIT_KEY_FILE", str(path))
    return path


def _fill(store: Store, n: int, actor: str = "key:ops") -> None:
    for i in range(n):
        store.record_audit(actor=actor, action="bank.create", target=f"bank-{i}", detail={"i": i})


def old_audit_hash(event: AuditEvent) -> str:
    """The chain hash as Bastion computed it before the audit key (revision 0013 and earlier),
    copied verbatim so the legacy check is held to the old code, not to itself."""
    body = {
        "id": event.id,
        "at": event.at.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor": event.actor,
        "action": event.action,
        "target": event.target,
        "detail": canon_numbers(event.detail),
        "remote_addr": event.remote_addr,
    }
    text_ = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((event.prev_hash + text_).encode("utf-8")).hexdigest()


def rechain(
    store: Store,
    start: int,
    hasher: Any,
    *,
    stop: int | None = None,
    edit: int | None = None,
    **changes: Any,
) -> None:
    """Apply ``changes`` to record ``edit`` (default ``start``) and recompute records ``start``
    to ``stop`` (default: the last, and then the head) with ``hasher(event) -> (key_id,
    hash)``: what a forger with write access to the database does."""
    edit = start if edit is None else edit
    events = store.iter_audit(limit=10_000)
    prev = AUDIT_GENESIS if start == 1 else events[start - 2].hash
    key_id = None
    with store.engine.begin() as conn:
        for event in events[start - 1 : stop]:
            if event.id == edit:
                event = replace(event, **changes)
            event = replace(event, prev_hash=prev)
            key_id, digest = hasher(event)
            values = {c: getattr(event, c) for c in changes}
            conn.execute(
                update(audit_t)
                .where(audit_t.c.id == event.id)
                .values(prev_hash=prev, hash=digest, key_id=key_id, **values)
            )
            prev = digest
        if stop is None:
            conn.execute(update(audit_head_t).values(last_hash=prev, key_id=key_id))


def test_records_are_chained_under_a_key_kept_in_a_private_file(
    db: Database, key_file: Path
) -> None:
    store = db.open()
    _fill(store, 3)
    ring = AuditKeyring.read(key_file)
    assert ring is not None and len(ring.keys) == 1 and ring.legacy is None
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    events = store.iter_audit()
    assert {e.key_id for e in events} == {ring.newest.key_id}
    for e in events:  # HMAC under the key, not the old unkeyed hash
        assert audit_hash(e, ring.newest.secret) == e.hash != old_audit_hash(e)
    check = store.check_audit_chain()
    assert (check.ok, check.checked, check.legacy, check.key_id) == (
        True,
        3,
        0,
        ring.newest.key_id,
    )
    assert store.audit_head() == (3, events[-1].hash, ring.newest.key_id)
    _assert_no_secret_in_database(store, ring)


def test_rotation_keeps_old_records_verifiable_and_is_itself_audited(
    db: Database, key_file: Path
) -> None:
    store = db.open()
    stale = db.open()  # another process that loaded the keyring before the rotation
    _fill(store, 2)
    _fill(stale, 1)
    old, new = store.rotate_audit_key(actor="cli:ops", remote_addr="::1")
    ring = AuditKeyring.read(key_file)
    assert ring is not None and [k.key_id for k in ring.keys] == [old, new] and old != new
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    _fill(stale, 2)  # follows the rotation: re-reads the key file for the head's new key
    events = store.iter_audit()
    rotation = events[3]
    assert (rotation.action, rotation.actor, rotation.target, rotation.remote_addr) == (
        "audit.rotate-key",
        "cli:ops",
        new,
        "::1",
    )
    assert rotation.detail == {"from": old, "to": new}
    assert [e.key_id for e in events] == [old] * 3 + [new] * 3
    check = store.check_audit_chain()
    assert (check.ok, check.checked, check.key_id) == (True, 6, new)
    _assert_no_secret_in_database(store, ring)

    # Someone holding only the old key forges the newest record under it: caught.
    rechain(store, 6, lambda e: (old, audit_hash(replace(e, key_id=old), ring.keys[0].secret)))
    check = store.check_audit_chain()
    assert (check.ok, check.kind, check.record_id) == (False, "key", 6)
    assert f"record 6 is chained under audit key {old} but record 5 under {new}" in (
        check.problem or ""
    )


def test_a_missing_or_foreign_key_file_refuses_appends_and_the_change_with_them(
    db: Database, key_file: Path, tmp_path: Path
) -> None:
    store = db.open()
    _fill(store, 2)
    key_id = store.audit_head()[2]
    elsewhere = db.open()
    elsewhere.use_audit_key_file(tmp_path / "nowhere" / "audit.key")
    with pytest.raises(AuditKeyUnavailable, match="does not exist: restore it"):
        elsewhere.create_api_key("ops", ["match"], actor="cli:ops")
    assert store.list_api_keys() == []  # the key and its audit record rolled back together
    assert not (tmp_path / "nowhere" / "audit.key").exists()
    check = elsewhere.check_audit_chain()
    assert (check.ok, check.kind, check.record_id) == (False, "key", 1)
    assert f"chained under audit key {key_id}, but there is no audit key file" in (
        check.problem or ""
    )

    other = tmp_path / "other.key"
    AuditKeyring.create(other, None)  # a keyring that lacks this log's key
    elsewhere.use_audit_key_file(other)
    with pytest.raises(AuditKeyUnavailable, match="does not hold"):
        elsewhere.record_audit(actor="cli:ops", action="bank.create")
    assert elsewhere.check_audit_chain().kind == "key"

    key_file.chmod(0o644)
    with pytest.raises(StoreError, match="chmod 600"):
        db.open().record_audit(actor="cli:ops", action="bank.create")
    check = db.open().check_audit_chain()  # reported, not raised (the console shows it)
    assert (check.ok, check.kind) == (False, "key") and "chmod 600" in (check.problem or "")
    assert store.audit_head()[0] == 2


def test_the_key_file_is_made_in_the_key_directory_never_beside_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BASTION_AUDIT_KEY_FILE")
    monkeypatch.setenv("BASTION_KEY_DIR", str(tmp_path / "keydir"))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "secret.key").write_bytes(bytes(32))  # an old install's master key
    (tmp_path / "data" / "secret.key").chmod(0o600)
    with Store.open(f"sqlite:///{tmp_path / 'data' / 'b.db'}") as store:
        _fill(store, 1)
        assert store.audit_key_file == tmp_path / "keydir" / "audit.key"
    made = tmp_path / "keydir" / "audit.key"
    assert AuditKeyring.read(made) is not None and stat.S_IMODE(made.stat().st_mode) == 0o600
    assert not (tmp_path / "data" / "audit.key").exists()
    # An explicit master key file: the audit key goes beside it, in its own file.
    monkeypatch.setenv("BASTION_SECRET_KEY_FILE", str(tmp_path / "keys" / "secret.key"))
    with Store.open(f"sqlite:///{tmp_path / 'two' / 'b.db'}") as store:
        _fill(store, 1)
        assert store.audit_key_file == tmp_path / "keys" / "audit.key"
    assert AuditKeyring.read(tmp_path / "keys" / "audit.key") is not None


def _at_revision_0013(db: Database) -> Store:
    store = Store.open(db.url, schema=db.schema, migrate=False)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0013")
    with store.engine.connect() as conn:
        assert "key_id" not in {c["name"] for c in inspect(conn).get_columns("audit_log")}
    return store


def _legacy_log(db: Database, n: int) -> list[AuditEvent]:
    """``n`` records as Bastion wrote them before the audit key: a database at revision 0013,
    chained with the old unkeyed hash."""
    old = _at_revision_0013(db)
    prev, events = AUDIT_GENESIS, []
    with old.engine.begin() as conn:
        for i in range(1, n + 1):
            event = AuditEvent(
                id=i,
                at=old_now(i),
                actor="user:bob",
                action="case.decide",
                target=f"case:{i}",
                detail={"decision": "confirmed", "n": i},
                remote_addr=None,
                prev_hash=prev,
                hash="",
            )
            event = replace(event, hash=old_audit_hash(event))
            conn.execute(
                insert(audit_t).values(
                    id=i,
                    at=event.at,
                    actor=event.actor,
                    action=event.action,
                    target=event.target,
                    detail=event.detail,
                    remote_addr=None,
                    prev_hash=prev,
                    hash=event.hash,
                )
            )
            prev = event.hash
            events.append(event)
        conn.execute(
            text("UPDATE audit_head SET last_id = :n, last_hash = :h"), {"n": n, "h": prev}
        )
    old.close()
    return events


def old_now(i: int) -> datetime:
    return datetime(2025, 1, 1, 12, 0, i, 123456, tzinfo=UTC)


def test_records_from_before_the_upgrade_verify_as_legacy(
    empty_db: Database, key_file: Path
) -> None:
    legacy = _legacy_log(empty_db, 4)
    store = empty_db.open()  # migrates to head
    assert [e.key_id for e in store.iter_audit()] == [None] * 4
    check = store.check_audit_chain()  # no key file yet: nothing can be keyed
    assert (check.ok, check.checked, check.legacy, check.key_id) == (True, 4, 4, None)
    assert not key_file.exists()

    _fill(store, 3, actor="cli:ops")  # the first keyed append creates the key file
    ring = AuditKeyring.read(key_file)
    assert ring is not None and ring.legacy is not None
    assert (ring.legacy.last_id, ring.legacy.last_hash) == (4, legacy[-1].hash)
    events = store.iter_audit()
    assert [e.key_id for e in events] == [None] * 4 + [ring.newest.key_id] * 3
    assert events[4].prev_hash == legacy[-1].hash  # the keyed chain continues the legacy one
    check = store.check_audit_chain()
    assert (check.ok, check.checked, check.legacy, check.key_id) == (
        True,
        7,
        4,
        ring.newest.key_id,
    )


def test_legacy_records_cannot_be_rewritten_nor_keyed_ones_passed_off_as_legacy(
    empty_db: Database, key_file: Path
) -> None:
    _legacy_log(empty_db, 4)
    store = empty_db.open()
    _fill(store, 3)
    # A legacy record edited and the legacy chain recomputed with the old hash: the key file
    # remembers where the legacy records ended and with what hash.
    rechain(store, 2, lambda e: (None, old_audit_hash(e)), stop=4, actor="user:alice")
    check = store.check_audit_chain()
    assert (check.ok, check.kind, check.record_id) == (False, "edited", 4)
    assert "records 1-4, chained without a key before the upgrade, were rewritten" in (
        check.problem or ""
    )


def test_keyed_records_rewritten_as_legacy_are_refused(empty_db: Database, key_file: Path) -> None:
    _legacy_log(empty_db, 4)
    store = empty_db.open()
    _fill(store, 3)
    rechain(store, 6, lambda e: (None, old_audit_hash(e)), actor="cli:mallory")
    check = store.check_audit_chain()
    assert (check.ok, check.kind, check.record_id) == (False, "unkeyed", 6)
    assert "chained without a key after keyed records" in (check.problem or "")
    rechain(store, 5, lambda e: (None, old_audit_hash(e)), actor="cli:mallory")
    check = store.check_audit_chain()
    assert (check.ok, check.kind, check.record_id) == (False, "unkeyed", 5)
    assert "accepts no unkeyed records after record 4" in (check.problem or "")
    # ...and the log refuses to chain on after them (it would vouch for them).
    with pytest.raises(AuditKeyUnavailable, match="does not accept"):
        empty_db.open().record_audit(actor="cli:ops", action="bank.create")


def _assert_no_secret_in_database(store: Store, ring: AuditKeyring) -> None:
    """No form of any audit key appears in any column of any row of any table."""
    forms = [
        f
        for k in ring.keys
        for f in (k.secret.hex(), base64.b64encode(k.secret).decode(), k.secret.hex().upper())
    ]
    with store.engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            for row in conn.execute(select(text("*")).select_from(text(f'"{table}"'))):
                dumped = repr(tuple(row))
                assert not any(f in dumped for f in forms), table
