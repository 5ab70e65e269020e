"""End-to-end through the `bastion` command, on a real SQLite file (and PostgreSQL where noted)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
import re
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from bastion.cli import app
from tests.fixtures.stores import postgres_schema_url

runner = CliRunner()


def bastion(db: str, *args: str, input: str | None = None):
    return runner.invoke(app, ["--db", db, *args], input=input, catch_exceptions=False)


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'bastion.db'}"


@pytest.fixture
def pg_db():
    """A fresh PostgreSQL schema, reached through the same URL option a user would pass."""
    with postgres_schema_url("t_cli") as url:
        yield url


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
    got = {Path(r["path"]).name: (r["result"], r["error"]) for r in rows}
    assert got == {
        "broken.mp4": ("error", "not a video: bytes look like unrecognised binary data"),
        "empty.jpg": ("error", "empty file (0 bytes)"),
        "good.jpg": ("match", None),
        "missing.jpg": ("error", "no such file"),
        "text.jpg": ("error", "not an image: bytes look like text"),
        "truncated.jpg": ("error", got["truncated.jpg"][1]),
    }
    assert got["truncated.jpg"][1].startswith("truncated JPEG")


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
    assert imported.exit_code == 1, imported.output  # some lines rejected
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
    assert out.exit_code == 0 and "3 added" in out.output, out.output
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


def test_untrusted_names_are_not_markup(testdata: Path, db: str, tmp_path: Path) -> None:
    _demo_bank(db, testdata)
    folder = tmp_path / "a["
    folder.mkdir()
    shutil.copy(testdata / "images/bridge-mods/blur-a-lot.jpg", folder / "b].jpg")
    shutil.copy(testdata / "images/bridge-mods/blur-a-lot.jpg", folder / "[red]z.jpg")
    result = bastion(db, "scan", "--workers", "1", str(folder))
    assert result.exit_code == 1, result.output
    squeezed = "".join(result.stdout.split()).replace("│", "")
    assert "[red]z.jpg" in squeezed and "b].jpg" in squeezed
    bad = tmp_path / "bad.txt"
    bad.write_text("pdq [/x]\n")
    out = bastion(db, "bank", "import", "bridge", str(bad))
    assert out.exit_code == 1 and "[/x]" in out.output
    assert bastion(db, "bank", "disable", "bridge", "[/x]").exit_code == 2


def test_bank_add_refuses_empty_broken_and_flat_files(db: str, tmp_path: Path) -> None:
    from PIL import Image

    bastion(db, "bank", "create", "b", "--label", "demo")
    tmp_path = tmp_path / "media"  # keep the database file out of the folder being added
    tmp_path.mkdir()
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    Image.new("RGB", (300, 300), (128, 128, 128)).save(tmp_path / "flat.png")
    out = bastion(db, "bank", "add", "b", str(tmp_path))
    assert out.exit_code == 0, out.output
    assert "empty file" in out.output and "--keep-exact" in out.output
    assert "pdq not added" in out.output
    exported = bastion(db, "bank", "export", "b").stdout
    entries = [json.loads(line) for line in exported.splitlines()]
    # Only the flat image's exact hashes: no empty-file hash, no junk, no weak PDQ.
    assert sorted(e["signal_type"] for e in entries) == ["md5", "sha256"]
    assert {e["metadata"]["filename"] for e in entries} == {"flat.png"}
    code, rows = scan_json(db, str(tmp_path / "empty.jpg"))
    assert code == 0 and rows[0]["result"] == "error"
    kept = bastion(db, "bank", "add", "b", "--keep-exact", str(tmp_path / "junk.jpg"))
    assert "2 entries added" in kept.output
    code, rows = scan_json(db, str(tmp_path / "flat.png"))
    assert rows[0]["result"] == "match"  # its exact hashes were added
    assert re.fullmatch(r"pdq quality \d+ < 50: not matched", rows[0]["note"])


def test_crash_paths_are_usage_errors(db: str, tmp_path: Path) -> None:
    bastion(db, "bank", "create", "b")
    assert bastion(db, "match", "--file", str(tmp_path / "nope.txt")).exit_code == 2
    assert bastion(db, "match", "--file", str(tmp_path)).exit_code == 2
    keep = tmp_path / "keep.txt"
    keep.write_text("precious\n")
    assert bastion(db, "bank", "export", "nosuch", "-o", str(keep)).exit_code == 2
    assert bastion(db, "bank", "export", "b", "--format", "bogus", "-o", str(keep)).exit_code == 2
    assert keep.read_text() == "precious\n"
    assert bastion(db, "bank", "export", "b", "-o", str(tmp_path / "no/dir/x")).exit_code == 2
    assert bastion(db, "bank", "export", "b", "-o", str(tmp_path)).exit_code == 2
    assert list(tmp_path.glob(".bastion-export-*")) == []
    assert bastion(db, "scan", "--workers", "-1", str(tmp_path)).exit_code == 2
    assert bastion(db, "bank", "rm", "b").exit_code == 2  # not a TTY and no --yes
    assert json.loads(bastion(db, "bank", "list", "-f", "json").stdout)[0]["name"] == "b"


def test_import_from_stdin_reports_bad_bytes_per_line(db: str) -> None:
    bastion(db, "bank", "create", "b")
    good = "pdq " + "ab" * 32
    data = (good + "\n" + "pdq \udcff\n").encode("utf-8", "surrogateescape")
    result = runner.invoke(app, ["--db", db, "bank", "import", "b", "-"], input=data)
    assert result.exit_code == 1, result.output
    assert "1 added" in result.output and "line 2" in result.output and "UTF-8" in result.output


def test_match_caps_and_clips_bad_lines(db: str, tmp_path: Path) -> None:
    bastion(db, "bank", "create", "b")
    f = tmp_path / "q.txt"
    f.write_bytes(b"pdq " + b"z" * 5000 + b"\n" + b"x" * 2_000_000 + b"\nfoo bar\n")
    result = bastion(db, "match", "--file", str(f), "-f", "json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert [r["line"] for r in rows] == [1, 2, 3]
    assert len(rows[0]["value"]) < 200 and rows[0]["error"]
    assert "longer than" in rows[1]["error"]
    assert "unknown signal type" in rows[2]["error"]


def test_bad_stored_entry_does_not_stop_matching(testdata: Path, db: str) -> None:
    _demo_bank(db, testdata)
    engine = sa.create_engine(db)
    with engine.begin() as conn:  # a row damaged behind Bastion's back
        conn.execute(sa.text("UPDATE bank_entries SET value = 'zz' WHERE signal_type = 'md5'"))
    engine.dispose()
    code, rows = scan_json(db, str(testdata / "images/bridge-mods/aaa-orig.jpg"))
    assert code == 1 and {m["signal_type"] for m in rows[0]["matches"]} == {"pdq", "sha256"}
