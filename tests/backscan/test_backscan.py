"""``bastion backscan`` on a local folder and on manifests: one row per object, the same signals
as ``bastion scan``, matches against the banks, error rows for bad objects, and a rerun that does
nothing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bastion.backscan.model import SCHEMA
from bastion.signals import SignalType, hash_file
from tests.backscan.conftest import bank_with, make_image, rows, run_cli, summary
from tests.fixtures.stores import Database


def test_a_folder_becomes_one_row_per_object_with_scan_signals_and_matches(
    db: Database, archive: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    root, files = archive
    store = db.open()
    entry_ids = bank_with(store, files[3])
    revision = store.current_revision()
    out = tmp_path / "out"
    proc = run_cli("backscan", str(root), "--out", str(out), "--shard-size", "5", db=db.schema_url)
    assert proc.returncode == 1, proc.stderr  # something matched
    got = rows(out)
    assert sorted(r["uri"] for r in got) == sorted(str(f.resolve()) for f in files)
    assert pq.read_table(out / "data").schema.equals(SCHEMA)
    by_uri = {r["uri"]: r for r in got}
    for f in files[:12]:
        fs = hash_file(f)
        r = by_uri[str(f.resolve())]
        assert r["md5"] == fs.get(SignalType.MD5).value  # type: ignore[union-attr]
        assert r["sha256"] == fs.get(SignalType.SHA256).value  # type: ignore[union-attr]
        pdq = fs.get(SignalType.PDQ)
        assert pdq is not None and (r["pdq"], r["pdq_quality"]) == (pdq.value, pdq.quality)
        assert r["size"] == f.stat().st_size and r["version"].startswith("mtime:")
        assert r["bank_revision"] == revision and r["error"] is None
        assert "pdqhash" in json.loads(r["algorithms"])["pdq"]
    hit = by_uri[str(files[3].resolve())]
    assert hit["matched"] == 1
    (m,) = json.loads(hit["matches"])
    assert (m["bank"], m["entry"], m["distance"]) == ("demo", entry_ids[0], 0)
    assert sum(r["matched"] for r in got) == 1
    assert "corrupt" in by_uri[str(files[12].resolve())]["error"]
    assert by_uri[str(files[13].resolve())]["error"] == "empty file (0 bytes)"
    doc = summary(proc)
    assert doc["complete"] and doc["shards"] == 3
    assert doc["total"]["objects"] == 14 and doc["total"]["matched"] == 1
    assert doc["total"]["errors"] == 2
    events = [e for e in store.iter_audit(limit=1000) if e.action == "backscan.run"]
    assert len(events) == 1 and events[0].detail["objects"] == 14


def test_a_rerun_after_completion_does_nothing(
    db: Database, archive: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    root, _ = archive
    out = tmp_path / "out"
    run_cli("backscan", str(root), "--out", str(out), "--shard-size", "4", db=db.schema_url)
    before = {p.name: p.stat().st_mtime_ns for p in (out / "data").iterdir()}
    again = summary(
        run_cli("backscan", str(root), "--out", str(out), "--shard-size", "4", db=db.schema_url)
    )
    assert {p.name: p.stat().st_mtime_ns for p in (out / "data").iterdir()} == before
    assert again["this_run"]["objects"] == 0 and again["this_run"]["shards_already_done"] == 4
    assert again["total"]["objects"] == 14
    status = json.loads(run_cli("backscan", "status", str(out), db=db.schema_url).stdout)
    assert status["shards_done"] == status["shards"] == 4 and status["complete"]
    assert status["objects"] == 14 and status["errors"] == 2


def test_another_source_into_the_same_directory_is_refused(
    db: Database, archive: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    root, _ = archive
    out = tmp_path / "out"
    run_cli("backscan", str(root), "--out", str(out), db=db.schema_url)
    other = tmp_path / "other"
    other.mkdir()
    make_image(other / "x.png", 99)
    proc = run_cli("backscan", str(other), "--out", str(out), db=db.schema_url, check=False)
    assert proc.returncode == 2 and "use another --out" in " ".join(proc.stderr.split())


def test_manifests_carry_the_platform_ids_and_report_bad_lines(
    db: Database, archive: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    root, files = archive
    recs = [
        {"uri": str(files[0]), "content_id": "c-0", "uploader_id": "u-1", "age_band": "13-15"},
        {"uri": files[1].relative_to(root).as_posix(), "content_id": "c-1"},
        {"uri": str(root / "missing.jpg"), "content_id": "c-2"},
        {"content_id": "c-3"},
    ]
    (root / "m.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\nnot json\n")
    with open(root / "m.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["uri", "content_id", "uploader_id", "created_at", "age_band"])
        w.writeheader()
        for r in recs:
            w.writerow(r)
    pq.write_table(
        pa.Table.from_pylist([{**r, "uri": r.get("uri")} for r in recs]), root / "m.parquet"
    )
    for name, n_rows in (("m.jsonl", 5), ("m.csv", 4), ("m.parquet", 4)):
        out = tmp_path / f"out-{name}"
        run_cli("backscan", str(root / name), "--out", str(out), db=db.schema_url)
        got = rows(out)
        assert len(got) == n_rows, name
        by_cid = {r["content_id"]: r for r in got if r["content_id"]}
        assert by_cid["c-0"]["uploader_id"] == "u-1" and by_cid["c-0"]["age_band"] == "13-15"
        assert by_cid["c-0"]["pdq"] and by_cid["c-1"]["pdq"], name  # relative uri resolved
        assert by_cid["c-1"]["uri"] == str(files[1].resolve())
        assert by_cid["c-2"]["error"] == "cannot read file: no such file"
        errors = sorted(r["error"] for r in got if r["content_id"] is None)
        assert "manifest row has no uri" in errors
        if name == "m.jsonl":
            assert any(e.startswith("manifest line is not JSON") for e in errors)


def test_a_missing_source_is_a_usage_error(db: Database, tmp_path: Path) -> None:
    proc = run_cli(
        "backscan",
        str(tmp_path / "nope"),
        "--out",
        str(tmp_path / "o"),
        db=db.schema_url,
        check=False,
    )
    assert proc.returncode == 2 and "no such folder or manifest" in " ".join(proc.stderr.split())


def test_dry_run_writes_the_dataset_and_says_what_policy_would_do(
    db: Database, archive: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    from bastion.backscan.store import BackscanStore

    root, files = archive
    store = db.open()
    bank_with(store, files[5])
    out = tmp_path / "out"
    proc = run_cli("backscan", str(root), "--out", str(out), "--dry-run", db=db.schema_url)
    review = summary(proc)["review"]
    assert review["dry_run"] is True and sum(review["would"].values()) == 1
    assert len(rows(out)) == 14
    assert BackscanStore(store).findings() == [] and BackscanStore(store).datasets() == []
    # Run again for real: nothing is re-hashed, the finding goes to review.
    real = summary(run_cli("backscan", str(root), "--out", str(out), db=db.schema_url))
    assert real["this_run"]["objects"] == 0 and real["review"]["added"] == 1
    assert sum(real["review"]["opened_now"].values()) == 1
    assert [d.objects for d in BackscanStore(store).datasets()] == [14]
    status = json.loads(
        run_cli("backscan", "status", str(out), "--backlog", db=db.schema_url).stdout
    )
    (queue,) = status["backlog"]
    assert queue["opened_last_hour"] == 1 and queue["pending"] == 0
