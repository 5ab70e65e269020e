"""`bastion audit verify` names the record and what was done to it after real tampering through
SQL, on SQLite and PostgreSQL; `bastion audit tail` lists recent events without their details."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import Result
from sqlalchemy import text
from typer.testing import CliRunner

from bastion.accounts.model import LoginFailed, PasswordHasher
from bastion.accounts.store import AccountStore
from bastion.cli import app
from bastion.db import Store
from bastion.store.audit_chain import audit_hash
from tests.fixtures.stores import postgres_schema_url

runner = CliRunner()
PASSWORD = "correct horse battery"


def bastion(*args: str) -> Result:
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bastion.db'}"
    else:
        with postgres_schema_url("t_audit") as pg:
            yield pg


def fill(url: str, n: int) -> None:
    """n real events: a user created, then logins (every other one failing)."""
    with Store.open(url) as store:
        accounts = AccountStore(
            store, hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
        )
        accounts.create_user("boss", "admin", PASSWORD, actor="cli:alice")
        for i in range(n - 1):
            with contextlib.suppress(LoginFailed):
                accounts.authenticate(
                    "boss", PASSWORD if i % 2 else "wrong", remote_addr=f"192.0.2.{i}"
                )


def tamper(url: str, *statements: str) -> None:
    with Store.open(url) as store, store.engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))


def verify(url: str) -> Result:
    return bastion("audit", "verify", "--db", url)


def test_intact(url: str) -> None:
    empty = verify(url)
    assert (empty.exit_code, empty.stdout) == (0, "audit log intact: 0 records (empty)\n")
    fill(url, 5)
    with Store.open(url) as store:
        head = store.iter_audit()[-1].hash
        key_id = store.iter_audit()[-1].key_id
    assert key_id is not None  # chained under the audit key
    result = verify(url)
    assert result.exit_code == 0
    assert result.stdout == f"audit log intact: 5 records, head {head[:16]}\n"
    # The global --db works as well as the command's own.
    assert bastion("--db", url, "audit", "verify").stdout == result.stdout
    as_json = json.loads(bastion("audit", "verify", "--db", url, "--format", "json").stdout)
    assert as_json == {
        "ok": True,
        "records": 5,
        "head_id": 5,
        "head_hash": head,
        "kind": None,
        "record_id": None,
        "missing": None,
        "problem": None,
        "legacy": 0,
        "key_id": key_id,
        "checkpoints": [],
    }


def test_an_edited_record(url: str) -> None:
    fill(url, 6)
    tamper(url, """UPDATE audit_log SET detail = '{"reason": "nothing to see"}' WHERE id = 4""")
    result = verify(url)
    assert result.exit_code == 1
    assert result.stdout == (
        "audit log BROKEN (edited): record 4 was edited: its contents do not match its hash. "
        "3 records before it verified.\n"
    )


def test_a_deleted_record(url: str) -> None:
    fill(url, 6)
    tamper(url, "DELETE FROM audit_log WHERE id = 2", "DELETE FROM audit_log WHERE id = 3")
    result = verify(url)
    assert result.exit_code == 1
    assert (
        "(deleted): records 2-3 are missing (deleted): the log jumps from record 1 to record 4"
        in (result.stdout)
    )
    assert result.stdout.endswith("to record 4. 1 record before it verified.\n")
    as_json = json.loads(bastion("audit", "verify", "--db", url, "-f", "json").stdout)
    assert (as_json["ok"], as_json["record_id"], as_json["missing"]) == (False, 2, [2, 3])


def test_swapped_records(url: str) -> None:
    fill(url, 6)
    tamper(
        url,
        "UPDATE audit_log SET id = -1 WHERE id = 2",
        "UPDATE audit_log SET id = 2 WHERE id = 3",
        "UPDATE audit_log SET id = 3 WHERE id = -1",
    )
    result = verify(url)
    assert result.exit_code == 1
    assert "(reordered): record 2 holds the event written as record 3" in result.stdout


def test_a_replaced_record(url: str) -> None:
    """The row's own hash recomputed: the next row no longer links to it."""
    fill(url, 5)
    with Store.open(url) as store:
        row = store.iter_audit()[2]
        forged = replace(row, target="someone-else")
        forged = replace(forged, hash=audit_hash(forged))
    tamper(
        url, f"UPDATE audit_log SET target = 'someone-else', hash = '{forged.hash}' WHERE id = 3"
    )
    result = verify(url)
    assert result.exit_code == 1
    assert "(unlinked): record 4 does not follow record 3" in result.stdout
    assert "between ids 3 and 4" in result.stdout


def test_records_cut_off_the_end(url: str) -> None:
    fill(url, 8)
    tamper(url, "DELETE FROM audit_log WHERE id > 5")
    result = verify(url)
    assert result.exit_code == 1
    assert result.stdout == (
        "audit log BROKEN (truncated): the log ends at record 5 but the head says it ends at "
        "record 8: records 6-8 are missing (deleted from the end). 5 records before it "
        "verified.\n"
    )


def test_tail(url: str) -> None:
    fill(url, 6)
    result = bastion("audit", "tail", "--db", url, "-n", "3", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["id"] for r in rows] == [4, 5, 6]
    assert [(r["action"], r["actor"], r["remote_addr"]) for r in rows] == [
        ("login.failure", "anonymous", "192.0.2.2"),
        ("login.success", "user:boss", "192.0.2.3"),
        ("login.failure", "anonymous", "192.0.2.4"),
    ]
    assert set(rows[0]) == {"id", "at", "actor", "action", "target", "remote_addr"}
    assert datetime.fromisoformat(rows[0]["at"]).tzinfo == UTC
    logins = json.loads(
        bastion("audit", "tail", "--db", url, "--action", "login.", "-f", "json").stdout
    )
    assert [r["id"] for r in logins] == [2, 3, 4, 5, 6]
    only = json.loads(bastion("audit", "tail", "--db", url, "-a", "user", "-f", "json").stdout)
    assert [(r["action"], r["target"]) for r in only] == [("user.create", "boss")]
    none = json.loads(bastion("audit", "tail", "--db", url, "-a", "login.s%", "-f", "json").stdout)
    assert none == []  # LIKE wildcards are literal
    table = bastion("audit", "tail", "--db", url)
    assert table.exit_code == 0 and "user.create" in table.stdout and "reason" not in table.stdout
    bad = bastion("audit", "tail", "--db", url, "-n", "0")
    assert bad.exit_code == 2
