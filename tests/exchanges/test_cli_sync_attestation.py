"""`bastion exchange sync` reports the partner's attestations it checked: a mismatch (our copy
differs from the root the partner signed) is in `--format json` output and exits 3, not only a
line on stderr with exit 0. A fake exchange kind registered here attests each page."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bastion.banks import NewEntry
from bastion.cli import app
from bastion.exchanges import (
    Checkpoint,
    Exchange,
    ExchangeConfig,
    ExchangeCredentials,
    Page,
    Upsert,
    register,
)
from bastion.exchanges.base import Attestation
from bastion.signals.base import SignalType

runner = CliRunner()
KIND = "test-attesting"


class AttestingConfig(ExchangeConfig):
    #: The root each page attests; "" attests what verify_state computes (they agree).
    root: str = ""


class NoCredentials(ExchangeCredentials):
    pass


def _root(count: int) -> str:
    return hashlib.sha256(f"{count} entries".encode()).hexdigest()


@register
class AttestingExchange(Exchange):
    """Two pages of two synthetic MD5 records, each page with an attestation."""

    kind = KIND
    Config = AttestingConfig
    Credentials = NoCredentials
    default_interval = 600.0

    def fetch(self, checkpoint: Checkpoint | None) -> Iterator[Page]:
        assert isinstance(self.config, AttestingConfig)
        start = int((checkpoint or {}).get("page", 0))
        for page in range(start, 2):
            items = [
                Upsert(
                    key=f"rec-{page}-{i}",
                    entries=(
                        NewEntry(
                            signal_type=SignalType.MD5,
                            value=hashlib.md5(f"attest {page}/{i}".encode()).hexdigest(),
                        ),
                    ),
                )
                for i in range(2)
            ]
            count = 2 * (page + 1)
            att = Attestation(version=page + 1, root=self.config.root or _root(count), count=count)
            yield Page(items, checkpoint={"page": page + 1}, attestation=att)

    def verify_state(self, attestation: Attestation, entries: Iterable[Any]) -> str | None:
        return _root(sum(1 for _ in entries))


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    for name in ("BASTION_CONFIG", "BASTION_SECRET_KEY", "BASTION_SECRET_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    return f"sqlite:///{tmp_path / 'bastion.db'}"


def _cli(db: str, *args: str) -> Any:
    return runner.invoke(app, ["--db", db, "exchange", *args], catch_exceptions=False)


def test_agreeing_attestations_are_counted(db: str) -> None:
    assert _cli(db, "add", "partner", "--type", KIND).exit_code == 0
    r = _cli(db, "sync", "partner", "--format", "json")
    assert r.exit_code == 0, r.output
    (out,) = json.loads(r.stdout)
    assert out["attestations"] == 2 and out["attestation_mismatches"] == []


def test_a_mismatch_is_in_the_json_and_the_exit_code(db: str) -> None:
    forged = "0" * 64
    assert _cli(db, "add", "partner", "--type", KIND, "--set", f"root={forged}").exit_code == 0
    r = _cli(db, "sync", "partner", "--format", "json")
    assert r.exit_code == 3, r.output
    (out,) = json.loads(r.stdout)
    assert out["added"] == 4 and out["complete"] is True and out["attestations"] == 2
    assert [(m["version"], m["root"]) for m in out["attestation_mismatches"]] == [
        (1, forged),
        (2, forged),
    ]
    assert all(m["computed"] == _root(2 * m["version"]) for m in out["attestation_mismatches"])
    assert "does not match the partner's signed root" in " ".join(r.stderr.split())


def test_a_disabled_exchange_can_be_synced_by_hand(db: str) -> None:
    """docs/exchanges.md: disable (the worker skips it), sync by hand, enable: no race."""
    assert _cli(db, "add", "partner", "--type", KIND).exit_code == 0
    assert _cli(db, "disable", "partner").exit_code == 0
    r = _cli(db, "sync", "partner", "--format", "json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)[0]["added"] == 4
    assert _cli(db, "enable", "partner").exit_code == 0
