"""`bastion bank disable --external-id`: withdrawing an item (a photo's PDQ, MD5 and SHA-256)
from a bank or feed is one command and one audit event, not one disable per signal."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.banks import NewEntry
from bastion.cli import app
from bastion.db import Store
from bastion.signals.base import SignalType

runner = CliRunner()
PHOTO = [
    NewEntry(signal_type=SignalType.PDQ, value="f" * 64, external_id="photo-7"),
    NewEntry(signal_type=SignalType.MD5, value="1" * 32, external_id="photo-7"),
    NewEntry(signal_type=SignalType.SHA256, value="2" * 64, external_id="photo-7"),
]
OTHER = NewEntry(signal_type=SignalType.MD5, value="3" * 32, external_id="photo-8")


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'bastion.db'}"
    with Store.open(url) as store:
        store.create_bank("shared")
        store.add_entries("shared", [*PHOTO, OTHER])
    return url


def _cli(db: str, *args: str) -> object:
    return runner.invoke(app, ["--db", db, "bank", *args], catch_exceptions=False)


def _enabled(db: str) -> dict[str, bool]:
    with Store.open(db) as store:
        return {f"{e.external_id}/{e.signal_type}": e.enabled for e in store.list_entries("shared")}


def test_disable_by_external_id_takes_every_signal_of_the_item(db: str) -> None:
    r = _cli(db, "disable", "shared", "--external-id", "photo-7", "--reason", "withdrawn")
    assert r.exit_code == 0, r.output
    assert "disabled 3 entries" in r.stderr
    assert _enabled(db) == {
        "photo-7/pdq": False,
        "photo-7/md5": False,
        "photo-7/sha256": False,
        "photo-8/md5": True,
    }
    with Store.open(db) as store:
        events = [e for e in store.iter_audit() if e.action == "bank.entry.disable"]
        (event,) = events  # one change, audited once, naming every entry
        assert len(event.detail["entries"]) == 3 and event.detail["reason"] == "withdrawn"
    r = _cli(db, "enable", "shared", "--external-id", "photo-7")
    assert r.exit_code == 0 and "enabled 3 entries" in r.stderr
    assert all(_enabled(db).values())


def test_external_id_is_never_read_as_an_id_or_a_hash(db: str) -> None:
    with Store.open(db) as store:
        first = store.list_entries("shared")[0].id
    for ref in (str(first), "1" * 32):  # an entry id and a stored hash: not external ids
        r = _cli(db, "disable", "shared", "--external-id", ref)
        assert r.exit_code == 2 and "no entry with external id" in " ".join(r.stderr.split())
    assert all(_enabled(db).values())
    r = _cli(db, "disable", "shared", "photo-8", "--external-id", "photo-7")
    assert r.exit_code == 2 and "not both" in r.stderr
    assert _cli(db, "disable", "shared").exit_code == 2
