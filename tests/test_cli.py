"""End-to-end through the `bastion` command, on a real SQLite file (and PostgreSQL where noted)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
import shutil
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from bastion.cli import app

runner = CliRunner()


def bastion(db: str, *args: str, input: str | None = None):
    return runner.invoke(app, ["--db", db, *args], input=input, catch_exceptions=False)


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'bastion.db'}"


@pytest.fixture
def pg_db():
    """A fresh PostgreSQL schema, reached through the same URL option a user would pass."""
    base = os.environ.get(
        "BASTION_TEST_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"
    )
    schema = f"t_cli_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(base)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    yield f"{base}{sep}options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


def scan_json(db: str, *args: str) -> tuple[int, list[dict]]:
    result = bastion(db, "scan", "--format", "json", "--workers", "2", *args)
    return result.exit_code, json.loads(result.stdout)


def test_hash_prints_every_signal(testdata: Path) -> None:
    photo = testdata / "images/bridge-mods/aaa-orig.jpg"
    video = testdata / "videos/doorknob-hd-no-bar.mp4"
    result = runner.invoke(app, ["hash", "--format", "json", str(photo), str(video)])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["kind"] for r in rows] == ["image", "video"]
    sigs = {s["type"]: s for s in rows[0]["signals"]}
    assert sigs["md5"]["value"] == hashlib.md5(photo.read_bytes()).hexdigest()
    assert sigs["sha256"]["value"] == hashlib.sha256(photo.read_bytes()).hexdigest()
    assert len(sigs["pdq"]["value"]) == 64 and sigs["pdq"]["quality"] >= 80
    vsigs = {s["type"]: s for s in rows[1]["signals"]}
    frames = json.loads(vsigs["vpdq"]["value"])
    assert len(frames) >= 3 and all(len(f.split(",")[0]) == 64 for f in frames)


def test_hash_csv_and_table(testdata: Path) -> None:
    photo = testdata / "images/bridge-mods/aaa-orig.jpg"
    result = runner.invoke(app, ["hash", "--format", "csv", str(photo)])
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {r["type"] for r in rows} == {"pdq", "md5", "sha256"}
    table = runner.invoke(app, ["hash", str(photo)])
    assert "pdq" in table.stdout and "sha256" in table.stdout


def test_reference_mode_reproduces_meta_hash(testdata: Path) -> None:
    photo = testdata / "images/reg-test-input/dih/bridge-1-original.jpg"
    result = runner.invoke(app, ["hash", "--reference", "--format", "json", str(photo)])
    sigs = {s["type"]: s["value"] for s in json.loads(result.stdout)[0]["signals"]}
    assert sigs["pdq"] == "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"


def _demo_bank(db: str, testdata: Path) -> None:
    made = bastion(db, "bank", "create", "bridge", "--label", "csam", "--source", "IWF (demo)")
    assert made.exit_code == 0, made.output
    added = bastion(db, "bank", "add", "bridge", str(testdata / "images/bridge-mods/aaa-orig.jpg"))
    assert added.exit_code == 0, added.output


def test_bank_lifecycle_and_scan(testdata: Path, db: str) -> None:
    _demo_bank(db, testdata)
    listed = json.loads(bastion(db, "bank", "list", "--format", "json").stdout)
    assert listed[0]["name"] == "bridge" and listed[0]["entries"] == 3  # pdq, md5, sha256

    code, rows = scan_json(db, str(testdata / "images/bridge-mods"))
    assert code == 1
    assert len(rows) == 12
    by_name = {Path(r["path"]).name: r for r in rows}
    assert all(r["result"] == "match" for r in rows), [r for r in rows if r["result"] != "match"]
    exact = {m["signal_type"] for m in by_name["aaa-orig.jpg"]["matches"]}
    assert exact == {"pdq", "md5", "sha256"}
    for r in rows:
        pdq = [m for m in r["matches"] if m["signal_type"] == "pdq"]
        assert pdq and pdq[0]["bank"] == "bridge" and pdq[0]["distance"] <= 31

    code, rows = scan_json(db, str(testdata / "images/reg-test-input/labelme-subset"))
    assert code == 0 and rows and all(r["result"] == "none" for r in rows)

    # Disabling the PDQ entry takes effect for the next scan; exact entries still match the
    # original but not the edits.
    exported = bastion(db, "bank", "export", "bridge", "--format", "jsonl").stdout
    entries = [json.loads(line) for line in exported.splitlines() if line.strip()]
    pdq_value = next(e["value"] for e in entries if e["signal_type"] == "pdq")
    out = bastion(db, "bank", "disable", "bridge", pdq_value, "--reason", "test")
    assert out.exit_code == 0, out.output
    code, rows = scan_json(db, str(testdata / "images/bridge-mods"))
    matched = {Path(r["path"]).name for r in rows if r["result"] == "match"}
    assert matched == {"aaa-orig.jpg"}

    assert bastion(db, "bank", "rm", "bridge", "--yes").exit_code == 0
    assert json.loads(bastion(db, "bank", "list", "--format", "json").stdout) == []


def test_scan_dihedral_finds_rotations(testdata: Path, db: str) -> None:
    _demo_bank(db, testdata)
    folder = str(testdata / "images/reg-test-input/dih")
    _, plain = scan_json(db, folder)
    _, dih = scan_json(db, "--dihedral", folder)
    assert len(dih) == 8 and all(r["result"] == "match" for r in dih)
    plain_matched = {Path(r["path"]).name for r in plain if r["result"] == "match"}
    assert "bridge-1-original.jpg" in plain_matched
    assert "bridge-2-rotate-90.jpg" not in plain_matched


def test_scan_reports_bad_files_and_goes_on(testdata: Path, db: str, tmp_path: Path) -> None:
    _demo_bank(db, testdata)
    folder = tmp_path / "uploads"
    folder.mkdir()
    shutil.copy(testdata / "images/bridge-mods/blur-a-little.jpg", folder / "good.jpg")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_bytes(b"this is not a picture\n" * 10)
    data = (testdata / "images/bridge-mods/aaa-orig.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "broken.mp4").write_bytes(os.urandom(4096))
    code, rows = scan_json(db, str(folder), str(tmp_path / "missing.jpg"))
    assert code == 1
    by_name = {Path(r["path"]).name: r for r in rows}
    assert by_name["good.jpg"]["result"] == "match"
    for name in ("empty.jpg", "text.jpg", "missing.jpg"):
        assert by_name[name]["error"], name
        assert by_name[name]["result"] in ("error", "none")
    assert by_name["missing.jpg"]["error"] == "no such file"
    # A truncated JPEG either decodes what it can or says why; it never takes the scan down.
    assert by_name["truncated.jpg"]["result"] in ("match", "none", "error")
    assert by_name["broken.mp4"]["error"]


def test_import_export_and_match(db: str, tmp_path: Path) -> None:
    rng = random.Random(7)
    hashes = [f"{rng.getrandbits(256):064x}" for _ in range(3000)]
    listing = tmp_path / "list.txt"
    listing.write_text(
        "# python-threatexchange hash file\n"
        + "".join(f"pdq {h}\n" for h in hashes)
        + "pdq not-a-hash\n"
    )
    assert bastion(db, "bank", "create", "synthetic", "--label", "demo").exit_code == 0
    imported = bastion(db, "bank", "import", "synthetic", str(listing))
    assert imported.exit_code == 0, imported.output
    assert "3000 added" in imported.output and "1 lines rejected" in imported.output

    # Queries: every 10th bank hash with 5 bits flipped, plus random hashes and a junk line.
    lines = []
    expected = set()
    for h in hashes[::10]:
        v = int(h, 16)
        for bit in rng.sample(range(256), 5):
            v ^= 1 << bit
        lines.append(f"pdq {v:064x}")
        expected.add(len(lines))
    lines += [f"pdq {rng.getrandbits(256):064x}" for _ in range(500)]
    lines.append("pdq zzzz")
    queries = tmp_path / "queries.txt"
    queries.write_text("\n".join(lines) + "\n")
    result = bastion(db, "match", "--file", str(queries), "--format", "json")
    assert result.exit_code == 1
    rows = json.loads(result.stdout)
    assert len(rows) == len(lines)
    matched = {r["line"] for r in rows if r["matches"]}
    assert matched == expected
    assert all(r["matches"][0]["distance"] == 5 for r in rows if r["matches"])
    assert rows[-1]["error"] and not rows[-1]["matches"]

    # stdin and positional pairs
    one = bastion(db, "match", "pdq", hashes[0], "--format", "json")
    assert one.exit_code == 1 and json.loads(one.stdout)[0]["matches"][0]["distance"] == 0
    piped = bastion(db, "match", "--file", "-", "--format", "json", input=lines[-2] + "\n")
    assert piped.exit_code == 0 and json.loads(piped.stdout)[0]["matches"] == []

    exported = bastion(db, "bank", "export", "synthetic", "--format", "pytx").stdout
    assert sorted(line.split()[1] for line in exported.splitlines()) == sorted(hashes)


def test_url_check(db: str, tmp_path: Path) -> None:
    listing = tmp_path / "urls.jsonl"
    listing.write_text(
        "\n".join(
            json.dumps(e)
            for e in [
                {"signal_type": "url", "value": "bad.example/exact/page.html", "url_match": "url"},
                {"signal_type": "url", "value": "files.example/dir", "url_match": "prefix"},
                {"signal_type": "url", "value": "whole.example", "url_match": "domain"},
            ]
        )
        + "\n"
    )
    bastion(db, "bank", "create", "urls", "--label", "csam", "--source", "IWF (demo)")
    out = bastion(db, "bank", "import", "urls", str(listing))
    assert "3 added" in out.output, out.output
    checks = {
        "HTTPS://WWW.Bad.Example:443/exact/page.html": True,
        "http://bad.example/exact/page.html#frag": True,
        "http://bad.example/exact/other.html": False,
        "https://files.example/dir/sub/x.jpg": True,
        "https://files.example/directory": False,
        "http://cdn.whole.example/anything": True,
        "http://whole.example.evil.test/": False,
    }
    result = bastion(db, "url", "check", "--format", "json", *checks)
    assert result.exit_code == 1
    got = {r["url"]: bool(r["matches"]) for r in json.loads(result.stdout)}
    assert got == checks


def test_usage_errors(db: str, testdata: Path) -> None:
    assert bastion(db, "scan", "--bank", "nope", str(testdata / "images")).exit_code == 2
    assert bastion(db, "bank", "import", "nope", "/dev/null").exit_code == 2
    assert bastion(db, "bank", "create", "Bad Name!").exit_code == 2
    bastion(db, "bank", "create", "dup")
    assert bastion(db, "bank", "create", "dup").exit_code == 2
    assert bastion(db, "match").exit_code == 2
    assert bastion(db, "scan", "--threshold", "300", "x").exit_code == 2


def test_cli_on_postgres(testdata: Path, pg_db: str) -> None:
    _demo_bank(pg_db, testdata)
    code, rows = scan_json(pg_db, str(testdata / "images/bridge-mods"))
    assert code == 1 and all(r["result"] == "match" for r in rows)
