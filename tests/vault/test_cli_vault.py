"""`bastion vault`: verify exit codes, list, show (metadata only), hold/release, purge, on SQLite
and PostgreSQL, against evidence preserved from a real case."""

from __future__ import annotations

import base64
import getpass
import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from bastion.cli import app
from bastion.crypto import MasterKey
from bastion.db import Store
from bastion.review.store import ReviewStore
from bastion.vault.rows import EvidenceRow
from bastion.vault.store import Vault
from tests.fixtures.clock import Clock
from tests.fixtures.stores import postgres_schema_url
from tests.review.conftest import item, verdict

from .conftest import IMAGE

runner = CliRunner()
evidence_t = EvidenceRow.__table__


def bastion(db: str, *args: str):
    return runner.invoke(app, ["--db", db, "vault", *args], catch_exceptions=False)


def said(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    monkeypatch.setattr(getpass, "getuser", lambda: "alice")
    monkeypatch.chdir(tmp_path)
    for name in ("BASTION_CONFIG", "BASTION_SECRET_KEY", "BASTION_SECRET_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bastion.db'}"
    else:
        with postgres_schema_url("t_vault") as url:
            yield url


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> MasterKey:
    key = MasterKey.generate()
    monkeypatch.setenv("BASTION_SECRET_KEY", base64.b64encode(key._key).decode())
    return key


@pytest.fixture
def preserved(db: str, key: MasterKey) -> Iterator[tuple[Store, list[int]]]:
    """Two items preserved in 2020 (so their year has long passed by the real clock)."""
    store = Store.open(db)
    clock = Clock(datetime(2020, 1, 1, tzinfo=UTC))
    review = ReviewStore(store, key, now=clock)
    vault = Vault(store, key, now=clock)
    ids = []
    for n in (1, 2):
        sub = review.submit(
            verdict(),
            item(f"u{n}", media=IMAGE.read_bytes(), media_type="image/jpeg"),
            actor="key:t",
        )
        ids += vault.preserve(sub.case_id, actor="system", reason="blocked")
    try:
        yield store, ids
    finally:
        store.close()


def test_verify_exits_0_when_intact_and_1_naming_a_damaged_item(
    db: str, preserved: tuple[Store, list[int]]
) -> None:
    store, (_, b) = preserved
    ok = bastion(db, "verify")
    assert ok.exit_code == 0, ok.output
    assert "evidence intact: 2 checked, 2 ok, 0 failed" in ok.stdout
    with store.engine.begin() as conn:
        blob = bytearray(
            conn.execute(select(evidence_t.c.sealed).where(evidence_t.c.id == b)).scalar_one()
        )
        blob[-3] ^= 0xFF
        conn.execute(update(evidence_t).where(evidence_t.c.id == b).values(sealed=bytes(blob)))
    bad = bastion(db, "verify")
    assert bad.exit_code == 1
    assert "DAMAGED: 2 checked, 1 ok, 1 failed" in bad.stdout
    assert f"evidence {b}: content does not decrypt" in bad.stdout
    as_json = bastion(db, "verify", "--format", "json")
    assert as_json.exit_code == 1
    assert [f["id"] for f in json.loads(as_json.stdout)["failures"]] == [b]
    actors = {e.actor for e in store.iter_audit() if e.action == "evidence.verify"}
    assert actors == {"cli:alice"}


def test_verify_with_the_wrong_key_fails(
    db: str, preserved: tuple[Store, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    other = MasterKey.generate()
    monkeypatch.setenv("BASTION_SECRET_KEY", base64.b64encode(other._key).decode())
    result = bastion(db, "verify")
    assert result.exit_code == 1 and "0 ok, 2 failed" in result.stdout


def test_a_missing_key_file_is_an_error_not_a_new_key(db: str, tmp_path: Path) -> None:
    result = bastion(db, "verify")
    assert result.exit_code == 2
    assert "no master key" in said(result.stderr)
    assert not list(tmp_path.rglob("secret.key"))


def test_list_show_hold_release_purge(db: str, preserved: tuple[Store, list[int]]) -> None:
    store, (a, b) = preserved
    listed = bastion(db, "list", "--format", "json")
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [(r["id"], r["state"]) for r in rows] == [(a, "expired"), (b, "expired")]
    assert rows[0]["sha256"] == hashlib.sha256(IMAGE.read_bytes()).hexdigest()

    shown = bastion(db, "show", str(a))
    assert shown.exit_code == 0, shown.output
    doc = json.loads(shown.stdout)
    assert doc["id"] == a and doc["md5"] == hashlib.md5(IMAGE.read_bytes()).hexdigest()
    assert doc["metadata"]["item"]["media_type"] == "image/jpeg"
    assert "sealed" not in doc and "data" not in doc
    assert bastion(db, "show", "999").exit_code == 2

    held = bastion(db, "hold", str(b), "--reason", "court order 9")
    assert held.exit_code == 0, held.output
    again = bastion(db, "hold", str(b), "--reason", "x")
    assert again.exit_code == 2 and "already on legal hold" in said(again.stderr)

    dry = bastion(db, "purge", "--dry-run")
    assert dry.exit_code == 0
    assert [line.split("\t")[0] for line in dry.stdout.splitlines()] == [str(a)]
    assert "would be purged" in said(dry.stderr)

    purged = bastion(db, "purge")
    assert purged.exit_code == 0 and "purged the content of 1 item" in said(purged.stderr)
    states = {r["id"]: r["state"] for r in json.loads(bastion(db, "list", "-f", "json").stdout)}
    assert states == {a: "purged", b: "held"}

    released = bastion(db, "release", str(b), "--reason", "order lifted")
    assert released.exit_code == 0, released.output
    assert "released from legal hold" in said(released.stderr)
    assert bastion(db, "verify").exit_code == 0

    audit = [(e.actor, e.action, e.target) for e in store.iter_audit()]
    assert ("cli:alice", "evidence.show", f"evidence:{a}") in audit
    assert ("cli:alice", "evidence.hold", f"evidence:{b}") in audit
    assert ("cli:alice", "evidence.purge", f"evidence:{a}") in audit
    assert ("cli:alice", "evidence.release", f"evidence:{b}") in audit
    assert store.verify_audit_chain() is None
