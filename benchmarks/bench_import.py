"""Bulk import rate: a streamed synthetic hash list into SQLite and PostgreSQL, beside baselines.

`python -m benchmarks.bench_import [--entries 1000000] [--baseline-entries 200000]
[--backends sqlite,postgres] [--quick]`; `--entries 10000000` is the full-size run.

The list is python-threatexchange hash lines (3 in 4 random PDQ, 1 in 4 random MD5), generated
as the importer reads it: no file, nothing held in memory. Each measurement runs in a fresh child
process on a fresh database (SQLite file / PostgreSQL schema), so its peak RSS is its own:

* **Bastion**: ``Store.import_file`` (parse, validate, duplicate checks, batches of 5,000, one
  revision per batch), then a ``LiveIndex`` loaded before the import catches up through
  ``refresh()`` (the change feed, no rebuild), for runs of at most ``BASTION_BENCH_REFRESH_MAX``
  entries (default 1,000,000);
* **old path**: the import as it was before the bulk paths: every line through the general
  validator, and SQLAlchemy ``insert().on_conflict_do_nothing()`` executemany of one dict per
  row, each value through SQLAlchemy's type processing;
* **raw driver**: ``executemany`` of ready-made tuples of the same rows straight through the
  driver (sqlite3 / psycopg) into the same table and indexes: no parsing or validation, the ceiling.

Baselines run on ``--baseline-entries`` (inserts slow down as indexes grow, so compare rates at
equal sizes where the full run is larger). Prints markdown; writes benchmarks/results/import.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "import.md"
PG_URL = os.environ.get(
    "BASTION_BENCH_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"
)


class SyntheticList:
    """``n`` hash lines made on demand (``readline`` is all the parsers use)."""

    def __init__(self, n: int, seed: int = 1) -> None:
        self.remaining = n
        self.rng = random.Random(seed)
        self.read_bytes = 0

    def readline(self, limit: int = -1) -> bytes:
        if self.remaining <= 0:
            return b""
        self.remaining -= 1
        if self.remaining % 4:
            line = b"pdq %064x\n" % self.rng.getrandbits(256)
        else:
            line = b"md5 %032x\n" % self.rng.getrandbits(128)
        self.read_bytes += len(line)
        return line


def _rss_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_now_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _open(backend: str, tmp: str) -> tuple[Any, str | None]:
    from bastion.db import Store

    if backend == "sqlite":
        return Store.open(f"sqlite:///{tmp}/bench.db"), None
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    return Store.open(PG_URL, schema=schema), schema


def _drop(store: Any, schema: str | None) -> None:
    if schema is not None:
        with store.engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    store.close()


# ---------------------------------------------------------------------------------------------
# one measurement per child process


def child(mode: str, backend: str, n: int) -> dict[str, Any]:
    from bastion.banks.formats import parse
    from bastion.index.live import LiveIndex

    with tempfile.TemporaryDirectory(dir=os.environ.get("BASTION_BENCH_TMP")) as tmp:
        store, schema = _open(backend, tmp)
        try:
            store.create_bank("bench", labels=["demo"])
            out: dict[str, Any] = {"mode": mode, "backend": backend, "entries": n}
            if mode == "bastion":
                index = LiveIndex(store)
                index.load()
                base_rss = _rss_now_mb()
                t0 = time.perf_counter()
                report = store.import_file("bench", SyntheticList(n), "pytx")
                out["seconds"] = time.perf_counter() - t0
                out["added"] = report.added
                out["peak_rss_mb"] = _rss_peak_mb()
                out["rss_growth_mb"] = _rss_now_mb() - base_rss
                if n <= int(os.environ.get("BASTION_BENCH_REFRESH_MAX", "1000000")):
                    t0 = time.perf_counter()
                    out["refreshed"] = index.refresh()
                    out["refresh_seconds"] = time.perf_counter() - t0
                    out["index_size"] = index.size()
            elif mode == "old":
                import bastion.banks.formats as formats

                # The parser as it was too: every line through normalize_entry.
                formats.canonical_hex_entry = lambda *a, **k: None  # type: ignore[assignment]
                legacy = _legacy_store_class()(store.engine)
                t0 = time.perf_counter()
                report = legacy.add_entries("bench", parse(SyntheticList(n), "pytx"))
                out["seconds"] = time.perf_counter() - t0
                out["added"] = report.added
                out["peak_rss_mb"] = _rss_peak_mb()
            else:
                t0 = time.perf_counter()
                out["added"] = _raw_executemany(store, n)
                out["seconds"] = time.perf_counter() - t0
                out["peak_rss_mb"] = _rss_peak_mb()
            return out
        finally:
            _drop(store, schema)


def _legacy_store_class() -> type:
    """Store with the insert path as it was before the bulk paths (kept here as the baseline)."""
    from sqlalchemy import func, select
    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    from bastion.banks.model import utcnow
    from bastion.banks.sql import entries_t, entry_values, require_bank, touch_bank
    from bastion.db import Store

    class LegacyStore(Store):
        def _insert_batch(self, bank: str, batch: list[Any], report: Any) -> None:
            unique: dict[tuple[str, str, str], dict[str, Any]] = {}
            now = utcnow()
            for e in batch:
                row = entry_values(e, now)
                key = (row["signal_type"], row["value_hash"], row["url_match"])
                if key in unique:
                    report.duplicates += 1
                else:
                    unique[key] = row
            with self.write() as (conn, rev):
                bank_row = require_bank(conn, bank)
                fresh = [{**r, "bank_id": bank_row.id, "revision": rev} for r in unique.values()]
                dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
                stmt = dialect_insert(entries_t).on_conflict_do_nothing(
                    index_elements=["bank_id", "signal_type", "value_hash", "url_match"]
                )
                if fresh:
                    conn.execute(stmt, fresh)
                added = conn.execute(
                    select(func.count()).select_from(entries_t).where(entries_t.c.revision == rev)
                ).scalar_one()
                if added:
                    touch_bank(conn, bank_row.id)
                report.added += added
                report.duplicates += len(fresh) - added
            report.batches += 1

    return LegacyStore


def _raw_rows(n: int, bank_id: int) -> Iterator[tuple[Any, ...]]:
    src = SyntheticList(n)
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")
    while True:
        line = src.readline()
        if not line:
            return
        st, value = line.decode().split()
        digest = hashlib.sha256(value.encode()).hexdigest()
        yield (bank_id, st, value, digest, "", "", "", now, "[]", True, "", "{}", now, now, 1)


def _raw_executemany(store: Any, n: int) -> int:
    """The same rows, ready-made, through the driver's executemany in batches of 5,000."""
    cols = (
        "bank_id, signal_type, value, value_hash, url_match, source, list_name, added_at, "
        "labels, enabled, disabled_reason, metadata, created_at, updated_at, revision"
    )
    with store.engine.connect() as conn:
        bank_id = conn.exec_driver_sql("SELECT id FROM banks WHERE name = 'bench'").scalar_one()
        raw = conn.connection.dbapi_connection
        mark = "?" if store.engine.dialect.name == "sqlite" else "%s"
        sql = (
            f"INSERT INTO bank_entries ({cols}) VALUES ({', '.join([mark] * 15)}) "
            "ON CONFLICT (bank_id, signal_type, value_hash, url_match) DO NOTHING"
        )
        conn.commit()
        rows = _raw_rows(n, bank_id)
        done = 0
        while True:
            batch = [r for _, r in zip(range(5000), rows, strict=False)]
            if not batch:
                break
            cur = raw.cursor()
            if mark == "?":  # Bastion's SQLite connections autocommit unless told BEGIN
                cur.execute("BEGIN")
            cur.executemany(sql, batch)
            raw.commit()
            done += len(batch)
    return done


# ---------------------------------------------------------------------------------------------
# driver


def _run_child(mode: str, backend: str, n: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.bench_import", "--child", mode, backend, str(n)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{mode} on {backend} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _load() -> str:
    try:
        one, five, _ = os.getloadavg()
        return f"{one:.1f}/{five:.1f}"
    except OSError:
        return "?"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--baseline-entries", type=int, default=200_000)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--quick", action="store_true", help="100k entries, 50k for baselines")
    parser.add_argument(
        "--child", nargs=3, metavar=("MODE", "BACKEND", "N"), help=argparse.SUPPRESS
    )
    args, _ = parser.parse_known_args(argv)
    if args.child:
        mode, backend, n = args.child
        print(json.dumps(child(mode, backend, int(n))))
        return 0
    if args.quick:
        args.entries, args.baseline_entries = 100_000, 50_000
    base_n = min(args.baseline_entries, args.entries)
    lines = [
        f"# Import rate: {args.entries:,} synthetic entries (3/4 PDQ, 1/4 MD5), streamed",
        "",
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{date.today().isoformat()}. Wall clock; load average before each row in the last column.",
        "",
        "| backend | path | entries | seconds | rows/s | peak RSS MB | notes | load |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    print("\n".join(lines), flush=True)
    ok = True
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        runs = [("bastion", args.entries), ("old", base_n), ("raw", base_n)]
        if base_n != args.entries:
            runs.insert(1, ("bastion", base_n))
        for mode, n in runs:
            load = _load()
            r = _run_child(mode, backend, n)
            ok = ok and r["added"] == n
            note = ""
            if mode == "bastion":
                note = f"RSS growth in the import {r['rss_growth_mb']:.0f} MB"
                if "refreshed" in r:
                    rate = r["refreshed"] / r["refresh_seconds"]
                    note += (
                        f"; then LiveIndex.refresh() took {r['refreshed']:,} changes in "
                        f"{r['refresh_seconds']:.1f} s ({rate:,.0f}/s), index size "
                        f"{r['index_size']:,}"
                    )
                    ok = ok and r["refreshed"] == n and r["index_size"] == n
            label = {
                "bastion": "Bastion `import_file`",
                "old": "old path (SQLAlchemy dict executemany)",
                "raw": "raw driver executemany, no parse/validation",
            }[mode]
            row = (
                f"| {backend} | {label} | {n:,} | {r['seconds']:.1f} | "
                f"{n / r['seconds']:,.0f} | {r['peak_rss_mb']:.0f} | {note} | {load} |"
            )
            lines.append(row)
            print(row, flush=True)
    report = "\n".join(lines) + "\n"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(report)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
