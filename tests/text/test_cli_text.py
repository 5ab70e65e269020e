"""`bastion scan --text`, `bastion match --text` and keyword entries imported from a JSON lines
file, on SQLite and PostgreSQL. Non-explicit terms only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.cli import app
from tests.fixtures.stores import postgres_schema_url

runner = CliRunner()

ENTRIES = [
    {"signal_type": "text", "value": "add me on another app", "external_id": "t-1"},
    {
        "signal_type": "text",
        "value": json.dumps({"and": [{"or": ["secret game"]}], "not": ["board game club"]}),
        "external_id": "q-1",
        "labels": ["grooming"],
        "metadata": {"language": "en"},
    },
    {"signal_type": "text", "value": "x"},  # too short once normalised: rejected, reported
]


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bastion.db'}"
    else:
        with postgres_schema_url("t_cli_text") as url:
            yield url


def bastion(db: str, *args: str, input: str | None = None):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["--db", db, *args], input=input, catch_exceptions=False)


def _bank(db: str, tmp_path: Path) -> None:
    assert bastion(db, "bank", "create", "grooming").exit_code == 0
    listing = tmp_path / "keywords.jsonl"
    listing.write_text("".join(json.dumps(e) + "\n" for e in ENTRIES))
    out = bastion(db, "bank", "import", "grooming", str(listing))
    assert out.exit_code == 1, out.output  # one line rejected
    assert "fewer than 2 letters" in out.output


def test_scan_text_files_and_lines(db: str, tmp_path: Path) -> None:
    _bank(db, tmp_path)
    post = tmp_path / "post.txt"
    post.write_text("hi! pls 4dd me on an0ther app :)\n")
    clean = tmp_path / "clean.txt"
    clean.write_text("see you at the board game club, bring the secret game\n")
    result = bastion(db, "scan", "--format", "json", "--text", str(post), "--text", str(clean))
    assert result.exit_code == 1, result.output
    rows = json.loads(result.stdout)
    assert [(r["path"], r["result"]) for r in rows] == [(str(post), "match"), (str(clean), "none")]
    (m,) = rows[0]["matches"]
    assert (m["external_id"], m["spans"], m["normalisations"]) == ("t-1", [[8, 29]], ["leetspeak"])
    names = tmp_path / "names.txt"
    names.write_text("alice\nsecret_game_42\n\nbob\n")
    result = bastion(db, "scan", "--format", "json", "--per-line", "--text", str(names))
    rows = json.loads(result.stdout)
    assert [(r["path"], r["result"]) for r in rows] == [
        (f"{names}:1", "none"),
        (f"{names}:2", "match"),
        (f"{names}:4", "none"),
    ]
    none = bastion(db, "scan", "--text", str(clean))
    assert none.exit_code == 0 and "1 texts scanned, 0 matched" in none.output
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\xff\xfe\x00junk")
    result = bastion(db, "scan", "--format", "json", "--text", str(bad))
    assert json.loads(result.stdout)[0]["result"] == "error"
    assert bastion(db, "scan", "--text", str(post), str(post)).exit_code == 2
    assert bastion(db, "scan").exit_code == 2


def test_match_text(db: str, tmp_path: Path) -> None:
    _bank(db, tmp_path)
    result = bastion(db, "match", "--format", "json", "--text", "wanna play a S3CRET GAME?")
    assert result.exit_code == 1, result.output
    (row,) = json.loads(result.stdout)
    assert row["type"] == "text" and row["error"] is None
    (m,) = row["matches"]
    assert (m["external_id"], m["normalisations"]) == ("q-1", ["case", "leetspeak"])
    table = bastion(db, "match", "--text", "add me on another app", "--text", "hello there")
    assert table.exit_code == 1 and "grooming#" in table.stdout and "text at 0-21" in table.stdout
    assert bastion(db, "match", "--text", "nothing to see").exit_code == 0
