"""Finding 9 of the security review, performed: on a copy of the database the decider of a case
is changed in the audit log and the chain recomputed. Without the audit key (the old unkeyed
hash, a downgrade to "legacy", the new HMAC under a guessed key) `bastion audit verify` reports
the damage; with the key (an insider) it reports the rewrite against a signed checkpoint taken
earlier. Also: `bastion audit rotate-key`, `checkpoint` and `public-key`. SQLite and
PostgreSQL."""

from __future__ import annotations

import json
import secrets
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import Result
from typer.testing import CliRunner

from bastion.audit_keys import AuditKeyring
from bastion.cli import app
from bastion.crypto import MasterKey
from bastion.db import Store
from bastion.review import Decision
from bastion.review.store import ReviewStore
from bastion.store.audit_chain import audit_hash
from bastion.store.tables import audit_head_t, audit_t
from tests.fixtures.stores import PG_URL, Database
from tests.review.conftest import BOB, ONE_REVIEW, POLICY, item, verdict
from tests.store.test_audit_keyed import _legacy_log, old_audit_hash, rechain

runner = CliRunner()


def bastion(*args: str) -> Result:
    return runner.invoke(app, list(args), catch_exceptions=False)


class Databases:
    """The original database and copies of it (a file copy, or a schema copied table by
    table), all dropped afterwards."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind, self.tmp, self.schemas = kind, tmp_path, []
        self.origin = self._new()

    def _new(self) -> str:
        if self.kind == "sqlite":
            path = self.tmp / f"db{len(self.schemas)}" / "bastion.db"
            path.parent.mkdir()
            self.schemas.append(str(path))
            return f"sqlite:///{path}"
        schema = f"t_{uuid.uuid4().hex[:16]}"
        engine = sa.create_engine(PG_URL)
        with engine.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        engine.dispose()
        self.schemas.append(schema)
        sep = "&" if "?" in PG_URL else "?"
        return f"{PG_URL}{sep}options=-csearch_path%3D{schema}"

    def copy(self) -> str:
        source = self.schemas[0]
        url = self._new()
        if self.kind == "sqlite":
            with sqlite3.connect(source) as src, sqlite3.connect(self.schemas[-1]) as dst:
                src.backup(dst)
            return url
        engine = sa.create_engine(PG_URL)
        with engine.begin() as conn:
            tables = conn.execute(
                sa.text(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = :s AND table_type = 'BASE TABLE'"
                ),
                {"s": source},
            ).scalars()
            for table in list(tables):
                new, old = f'"{self.schemas[-1]}"."{table}"', f'"{source}"."{table}"'
                conn.exec_driver_sql(f"CREATE TABLE {new} (LIKE {old} INCLUDING ALL)")
                conn.exec_driver_sql(f"INSERT INTO {new} SELECT * FROM {old}")
        engine.dispose()
        return url

    def close(self) -> None:
        if self.kind == "sqlite":
            return
        engine = sa.create_engine(PG_URL)
        with engine.begin() as conn:
            for schema in reversed(self.schemas):
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def dbs(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Databases]:
    monkeypatch.setenv("BASTION_AUDIT_KEY_FILE", str(tmp_path / "keys" / "audit.key"))
    databases = Databases(request.param, tmp_path)
    try:
        yield databases
    finally:
        databases.close()


def decided_by_bob(url: str) -> int:
    """A real case, decided by bob, amid other events; the id of the audit record of bob's
    decision."""
    with Store.open(url) as store:
        review = ReviewStore(store, MasterKey.generate(), policy=lambda: POLICY)
        store.create_api_key("scanner", ["hash", "match"], actor="cli:ops")
        case_id = review.submit(verdict(view_required=False), item(), actor="key:scanner").case_id
        review.claim(BOB, case_id)
        review.decide(BOB, case_id, Decision.confirmed("A1"), policy_review=ONE_REVIEW)
        store.record_audit(actor="key:scanner", action="scan.match", target="upload-1")
        store.record_audit(actor="key:scanner", action="scan.match", target="upload-2")
        [decision] = [e for e in store.iter_audit() if e.action.startswith("case.decide")]
    assert decision.actor == "user:bob" and decision.detail["decision"] == "confirmed"
    return decision.id


def verify(url: str, *args: str) -> Result:
    return bastion("audit", "verify", "--db", url, *args)


def test_changing_a_decider_is_caught_without_the_key_and_against_a_checkpoint_with_it(
    dbs: Databases, tmp_path: Path
) -> None:
    record = decided_by_bob(dbs.origin)
    cp = tmp_path / "checkpoint.json"
    made = bastion("audit", "checkpoint", "--db", dbs.origin, "--out", str(cp))
    assert made.exit_code == 0, made.output
    public = bastion("audit", "public-key", "--db", dbs.origin).stdout.strip()
    assert verify(dbs.origin).exit_code == 0
    assert verify(dbs.origin, "--checkpoint", str(cp), "--public-key", public).exit_code == 0
    head = json.loads(cp.read_text())["record_id"]
    assert head > record

    stranger = secrets.token_bytes(32)
    forgeries = {
        # The project's own old, unkeyed hash, key ids left as they were.
        "old hash": (record, lambda e: (e.key_id, old_audit_hash(e)), "edited", record),
        # The same, every record passed off as a legacy one chained before the upgrade.
        "as legacy": (1, lambda e: (None, old_audit_hash(e)), "unkeyed", 1),
        # The new code's hash function, without the key: under a key of the forger's own.
        "guessed key": (record, lambda e: (e.key_id, audit_hash(e, stranger)), "edited", record),
    }
    for name, (start, hasher, kind, at) in forgeries.items():
        copy = dbs.copy()
        with Store.open(copy) as store:
            rechain(store, start, hasher, edit=record, actor="user:alice")
            [forged] = [e for e in store.iter_audit() if e.id == record]
            assert forged.actor == "user:alice", name
        result = verify(copy)
        assert result.exit_code == 1, (name, result.output)
        assert result.stdout.startswith(f"audit log BROKEN ({kind}): record {at} "), name

    # An insider holding the audit key recomputes the chain properly: the chain alone cannot
    # tell (that is what the key gives them), the checkpoint taken before can.
    copy = dbs.copy()
    with Store.open(copy) as store:
        rechain(store, record, lambda e: (e.key_id, audit_hash(e)), actor="user:alice")
    assert verify(copy).exit_code == 0
    result = verify(copy, "--checkpoint", str(cp), "--public-key", public)
    assert result.exit_code == 1, result.output
    assert f"checkpoint {cp} FAILED: record {head} no longer has the chain hash it had" in (
        result.stdout
    )
    assert f"rewritten at or before record {head}" in result.stdout
    as_json = json.loads(verify(copy, "-c", str(cp), "-f", "json").stdout)
    assert as_json["ok"] is False and as_json["checkpoints"][0]["ok"] is False

    # Nor can the insider make the checkpoint agree: it is signed, and the key is pinned.
    with Store.open(copy) as store:
        rewritten = next(e for e in store.iter_audit() if e.id == head).hash
    doc = json.loads(cp.read_text())
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps({**doc, "hash": rewritten}))
    result = verify(copy, "-c", str(tampered), "--public-key", public)
    assert result.exit_code == 1
    assert "FAILED: checkpoint signature does not verify under the trusted key" in result.stdout
    # A checkpoint of the rewritten log under a signing key of the insider's own.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BASTION_AUDIT_SIGNING_KEY_FILE", str(tmp_path / "mallory" / "signing.key"))
        own = tmp_path / "own.json"
        assert bastion("audit", "checkpoint", "--db", copy, "-o", str(own)).exit_code == 0
        assert verify(copy, "-c", str(own)).exit_code == 0  # self-signed: of course it agrees
    result = verify(copy, "-c", str(own), "--public-key", public)
    assert result.exit_code == 1 and "does not verify under the trusted key" in result.stdout


def test_records_cut_off_the_end_are_caught_by_a_checkpoint(dbs: Databases, tmp_path: Path) -> None:
    decided_by_bob(dbs.origin)
    cp = tmp_path / "cp.json"
    assert bastion("audit", "checkpoint", "--db", dbs.origin, "-o", str(cp)).exit_code == 0
    head = json.loads(cp.read_text())["record_id"]
    with Store.open(dbs.origin) as store:
        [keep] = [e for e in store.iter_audit() if e.id == head - 2]
        with store.engine.begin() as conn:  # the end cut off and the head set back to match
            conn.execute(sa.delete(audit_t).where(audit_t.c.id > keep.id))
            conn.execute(sa.update(audit_head_t).values(last_id=keep.id, last_hash=keep.hash))
    assert verify(dbs.origin).exit_code == 0
    result = verify(dbs.origin, "-c", str(cp))  # this instance's own checkpoint key
    assert result.exit_code == 1
    assert f"record {head}, the head when the checkpoint was taken" in result.stdout
    assert "is no longer in the log" in result.stdout


def test_checkpoint_refuses_a_broken_log_and_verify_needs_a_trusted_key(
    dbs: Databases, tmp_path: Path
) -> None:
    decided_by_bob(dbs.origin)
    cp = tmp_path / "cp.json"
    result = verify(dbs.origin, "-c", str(cp))
    assert result.exit_code == 2 and "pass --public-key" in result.output
    with Store.open(dbs.origin) as store, store.engine.begin() as conn:
        conn.execute(sa.update(audit_t).where(audit_t.c.id == 2).values(target="edited"))
    result = bastion("audit", "checkpoint", "--db", dbs.origin, "-o", str(cp))
    assert result.exit_code == 1 and "Not signing a checkpoint" in result.output
    assert not cp.exists()


def test_rotate_key_from_the_command_line(
    dbs: Databases, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decided_by_bob(dbs.origin)
    monkeypatch.setattr("getpass.getuser", lambda: "ops-alice")
    cp = tmp_path / "cp.json"
    assert bastion("audit", "checkpoint", "--db", dbs.origin, "-o", str(cp)).exit_code == 0
    result = bastion("audit", "rotate-key", "--db", dbs.origin)
    assert result.exit_code == 0, result.output
    new = result.stdout.strip()
    ring = AuditKeyring.read(tmp_path / "keys" / "audit.key")
    assert ring is not None and [k.key_id for k in ring.keys][-1] == new and len(ring.keys) == 2
    with Store.open(dbs.origin) as store:
        store.record_audit(actor="cli:ops", action="bank.create", target="after")
        events = store.iter_audit()
    rotation = events[-2]
    assert (rotation.actor, rotation.action, rotation.target) == (
        "cli:ops-alice",
        "audit.rotate-key",
        new,
    )
    assert rotation.detail == {"from": ring.keys[0].key_id, "to": new}
    assert [e.key_id for e in events[-2:]] == [new, new]
    assert {e.key_id for e in events[:-2]} == {ring.keys[0].key_id}
    result = verify(dbs.origin, "-c", str(cp))
    assert result.exit_code == 0, result.output
    assert "is still in the log" in result.stdout
    as_json = json.loads(verify(dbs.origin, "-f", "json").stdout)
    assert (as_json["ok"], as_json["key_id"], as_json["legacy"]) == (True, new, 0)

    # A server whose keyring was not updated (not copied after the rotation) cannot continue
    # the chain, and says so instead of chaining under a key nobody can check it with.
    stale = tmp_path / "stale.key"
    stale.write_bytes(
        json.dumps(
            {
                **json.loads((tmp_path / "keys" / "audit.key").read_text()),
                "keys": json.loads((tmp_path / "keys" / "audit.key").read_text())["keys"][:1],
            }
        ).encode()
    )
    stale.chmod(0o600)
    monkeypatch.setenv("BASTION_AUDIT_KEY_FILE", str(stale))
    result = bastion("--db", dbs.origin, "key", "create", "late", "--scopes", "match")
    assert result.exit_code == 2 and "does not hold" in " ".join(result.output.split())
    with Store.open(dbs.origin) as store:
        assert [k.name for k in store.list_api_keys()] == ["scanner"]


def test_verify_says_which_records_are_legacy(dbs: Databases) -> None:
    """Records chained before the upgrade keep verifying, and are named as unkeyed."""
    schema = None if dbs.kind == "sqlite" else dbs.schemas[0]
    _legacy_log(Database(dbs.kind, PG_URL if schema else dbs.origin, schema), 3)
    result = verify(dbs.origin)
    assert result.exit_code == 0, result.output
    assert "3 records legacy (chained without a key before the upgrade" in result.stdout
    assert ", 0 keyed" in result.stdout
    assert bastion("--db", dbs.origin, "key", "create", "ops", "--scopes", "match").exit_code == 0
    result = verify(dbs.origin)
    assert result.exit_code == 0 and result.stdout.startswith("audit log intact: 4 records")
    assert "3 records legacy" in result.stdout and ", 1 keyed" in result.stdout
    with Store.open(dbs.origin) as store:
        assert [e.key_id is None for e in store.iter_audit()] == [True] * 3 + [False]
