"""`bastion bank set / quarantine / dispute / release` (issue 16), on SQLite and PostgreSQL:
settings are checked and audited with the operating-system user as actor."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from bastion.banks import NewEntry
from bastion.cli import app
from bastion.db import Store
from bastion.signals.base import SignalType
from tests.fixtures.stores import postgres_schema_url

runner = CliRunner()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bastion.db'}"
    else:
        with postgres_schema_url("t_cli_hyg") as url:
            yield url


def bastion(db: str, *args: str) -> Result:
    return runner.invoke(app, ["--db", db, *args], catch_exceptions=False)


def _open(db: str) -> Store:
    return Store.open(db)


def test_bank_settings_through_the_cli_are_checked_and_audited(db: str) -> None:
    made = bastion(db, "bank", "create", "ncii", "--threshold", "pdq=16", "--expected-rate", "50")
    assert made.exit_code == 0, made.output
    listed = json.loads(bastion(db, "bank", "list", "--format", "json").stdout)
    assert listed[0]["thresholds"] == "pdq=16" and listed[0]["expected_rate"] == 50
    assert listed[0]["kind"] == "block"
    changed = bastion(db, "bank", "set", "ncii", "--kind", "allow", "--no-expected-rate")
    assert changed.exit_code == 0, changed.output
    bad = bastion(db, "bank", "set", "ncii", "--threshold", "md5=3")
    assert bad.exit_code != 0 and "thresholds apply to pdq, vpdq only" in bad.output
    assert bastion(db, "bank", "set", "ncii", "--threshold", "pdq").exit_code == 2
    with _open(db) as store:
        bank = store.get_bank("ncii")
        assert (bank.kind, bank.thresholds, bank.expected_rate) == ("allow", {"pdq": 16}, None)
        events = [e for e in store.iter_audit() if e.action.startswith("bank.")]
    assert [e.action for e in events] == ["bank.create", "bank.update"]
    assert all(e.actor.startswith("cli:") for e in events)
    assert events[0].detail["thresholds"] == {"pdq": 16}
    assert events[1].detail == {"kind": "allow", "expected_rate": None}


def test_quarantine_list_and_dispute_through_the_cli(db: str) -> None:
    assert bastion(db, "bank", "create", "shared", "--expected-rate", "2").exit_code == 0
    with _open(db) as store:
        store.add_entries("shared", [NewEntry(SignalType.MD5, "a" * 32)])
        (entry,) = store.iter_entries()
        rules = store.bank_rules()
        held = [store.note_matches({entry.id: "shared"}, rules) for _ in range(4)]
    assert held == [set(), set(), {entry.id}, {entry.id}]
    shown = json.loads(bastion(db, "bank", "quarantine", "--format", "json").stdout)
    assert [(q["entry"], q["matches"], q["state"]) for q in shown] == [(entry.id, 3, "quarantined")]
    done = bastion(db, "bank", "dispute", str(entry.id), "--reason", "benign collision")
    assert done.exit_code == 0, done.output
    assert json.loads(bastion(db, "bank", "quarantine", "--format", "json").stdout) == []
    with _open(db) as store:
        assert store.get_entry(entry.id).enabled is False
        assert store.get_entry(entry.id).disabled_reason == "benign collision"
        (event,) = [e for e in store.iter_audit() if e.action == "bank.entry.dispute"]
        assert event.actor.startswith("cli:") and event.detail["reason"] == "benign collision"
    again = bastion(db, "bank", "release", str(entry.id))
    assert again.exit_code != 0 and "not quarantined" in again.output
