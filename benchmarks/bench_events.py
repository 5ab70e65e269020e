"""Contact-event intake through `POST /v1/events` (SQLite and PostgreSQL), beside a raw baseline.

`python -m benchmarks.bench_events [--users 2000] [--days 10] [--batch 1000] [--quick]
[--backends sqlite,postgres]`

The events are a simulated contact population (:func:`bastion.contact.simulate.simulate`: flags
and metadata only), serialised into request bodies of ``--batch`` events before the clock starts.
For each database:

* **HTTP path**: one `bastion serve` worker (uvicorn, no background worker) over a fresh
  database; one client posts the batches one after another over a kept-alive connection. Each
  request validates every event, inserts the new ones under their unique id, applies them to the
  incremental risk state and writes the changed risk, facts and connections, in one
  transaction. Every answer is checked (all ``ok``) and the stored count compared.
* **raw driver** (baseline, same run): the same events as ready-made rows of ``contact_events``
  (id, type, parties, time, digest, JSON body) through the driver's ``executemany`` (sqlite3,
  psycopg) in batches of the same size, one commit per batch, into another fresh database: no
  HTTP, no validation, no risk; the ceiling of the insert alone.

"Per server CPU-second" divides the events by the server process's user + system CPU time during
the run (the database server's CPU is not in it; it runs beside it on the same cores). Prints
markdown; writes benchmarks/results/events.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.bench_server import free_port

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "events.md"
PG_URL = os.environ.get(
    "BASTION_BENCH_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"
)


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _schema_url(schema: str) -> str:
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options=-csearch_path%3D{schema}"


def _rows(events: list[Any]) -> list[tuple[Any, ...]]:
    from bastion.contact.model import event_to_json

    now = datetime.now(UTC)
    rows = []
    for e in events:
        body = json.dumps(event_to_json(e), sort_keys=True, separators=(",", ":"))
        account = getattr(e, "account", None) or e.actor
        rows.append(
            (
                e.event_id,
                e.type,
                account,
                getattr(e, "target", None),
                e.time,
                hashlib.sha256(body.encode()).hexdigest(),
                body,
                now,
            )
        )
    return rows


def _fresh(kind: str, tmp: Path, name: str) -> tuple[str, str | None]:
    """A migrated, empty database: (URL for the server, PostgreSQL schema or None)."""
    from bastion.db import Store

    if kind == "sqlite":
        url = f"sqlite:///{tmp / f'{name}.db'}"
        Store.open(url).close()
        return url, None
    schema = f"bench_{name}_{uuid.uuid4().hex[:8]}"
    Store.open(PG_URL, schema=schema).close()
    return _schema_url(schema), schema


def _drop(schema: str | None) -> None:
    if schema is None:
        return
    import sqlalchemy as sa

    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    engine.dispose()


def _raw_sqlite(path: str, rows: list[tuple[Any, ...]], batch: int) -> tuple[float, int]:
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    sql = (
        "INSERT OR IGNORE INTO contact_events (event_id, type, account, target, time, "
        "digest, body, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    )
    plain = [(*r[:4], r[4].isoformat(), r[5], r[6], r[7].isoformat()) for r in rows]
    t0 = time.perf_counter()
    for start in range(0, len(plain), batch):
        db.executemany(sql, plain[start : start + batch])
        db.commit()
    wall = time.perf_counter() - t0
    stored = int(db.execute("SELECT count(*) FROM contact_events").fetchone()[0])
    db.close()
    return wall, stored


def _raw_postgres(schema: str, rows: list[tuple[Any, ...]], batch: int) -> tuple[float, int]:
    import psycopg

    dsn = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    sql = (
        "INSERT INTO contact_events (event_id, type, account, target, time, digest, "
        "body, received_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (event_id) DO NOTHING"
    )
    with psycopg.connect(dsn, options=f"-csearch_path={schema}") as pg:
        t0 = time.perf_counter()
        for start in range(0, len(rows), batch):
            pg.cursor().executemany(sql, rows[start : start + batch])
            pg.commit()
        wall = time.perf_counter() - t0
        row = pg.execute("SELECT count(*) FROM contact_events").fetchone()
    return wall, int(row[0]) if row else 0


def raw_executemany(kind: str, rows: list[tuple[Any, ...]], batch: int, tmp: Path) -> float:
    """Seconds to insert ``rows`` with the driver's executemany, one commit per batch."""
    url, schema = _fresh(kind, tmp, "raw")
    try:
        if schema is None:
            wall, stored = _raw_sqlite(url.removeprefix("sqlite:///"), rows, batch)
        else:
            wall, stored = _raw_postgres(schema, rows, batch)
        assert stored == len(rows), stored
        return wall
    finally:
        _drop(schema)


def http_path(kind: str, bodies: list[bytes], total: int, tmp: Path) -> dict[str, Any]:
    from bastion.db import Store

    url, schema = _fresh(kind, tmp, "http")
    with Store.open(url, migrate=False) as store:
        _, token = store.create_api_key("bench-events", {"events"})
    port = free_port()
    env = {
        **os.environ,
        "BASTION_DATABASE_URL": url,
        "BASTION_RATE_LIMIT_PER_MINUTE": "0",
        "BASTION_DATA_DIR": str(tmp / f"data-{kind}"),
    }
    bastion = str(Path(sys.executable).with_name("bastion"))
    log_path = tmp / f"server-{kind}.log"
    log = log_path.open("w")
    server = subprocess.Popen(
        [bastion, "serve", "--port", str(port), "--log-level", "warning", "--no-worker"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp,
    )
    try:
        t0 = time.perf_counter()
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.perf_counter() - t0 > 300:
                raise RuntimeError(log_path.read_text())
            time.sleep(0.3)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        accepted = 0
        latencies: list[float] = []
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=300
        ) as http:
            cpu0, t0 = _proc_cpu(server.pid), time.perf_counter()
            for body in bodies:
                s = time.perf_counter()
                r = http.post("/v1/events", content=body)
                latencies.append(time.perf_counter() - s)
                r.raise_for_status()
                doc = r.json()
                assert doc["refused"] == 0, doc["results"][:3]
                accepted += doc["accepted"]
            wall, cpu = time.perf_counter() - t0, _proc_cpu(server.pid) - cpu0
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        log.close()
    try:
        with Store.open(url, migrate=False) as store, store.engine.connect() as conn:
            stored = conn.exec_driver_sql("SELECT count(*) FROM contact_events").scalar_one()
            risk_rows = conn.exec_driver_sql("SELECT count(*) FROM contact_risk").scalar_one()
    finally:
        _drop(schema)
    assert accepted == stored == total, (accepted, stored, total)
    latencies.sort()
    return {
        "wall": wall,
        "cpu": cpu,
        "p50": latencies[len(latencies) // 2],
        "max": latencies[-1],
        "risk_rows": risk_rows,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--quick", action="store_true", help="500 users, 3 days")
    args, _ = parser.parse_known_args(argv)
    if args.quick:
        args.users, args.days = 500, 3
    from bastion.contact.model import event_to_json
    from bastion.contact.simulate import simulate

    events, _ = simulate(args.users, args.days, args.seed)
    docs = [event_to_json(e) for e in events]
    bodies = [
        json.dumps({"events": docs[i : i + args.batch]}, default=str).encode()
        for i in range(0, len(docs), args.batch)
    ]
    rows = _rows(events)
    n = len(events)
    lines = [
        f"# Contact events through `POST /v1/events` ({n:,} simulated events, "
        f"{args.users:,} users, {args.days} days, batches of {args.batch})",
        "",
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{date.today().isoformat()}; one `bastion serve` worker, one client posting batches "
        "in turn; the database server shares the cores.",
        "",
        "| database | path | events/s (wall) | per server CPU-second | p50 / max per batch | "
        "raw executemany baseline (same run) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for kind in args.backends.split(","):
            raw = raw_executemany(kind, rows, args.batch, tmp)
            h = http_path(kind, bodies, n, tmp)
            name = "SQLite" if kind == "sqlite" else "PostgreSQL"
            lines.append(
                f"| {name} | HTTP `POST /v1/events` (validate, insert, incremental risk, "
                f"projections; {h['risk_rows']:,} risk rows) | {n / h['wall']:,.0f} | "
                f"{n / h['cpu']:,.0f} | {h['p50'] * 1000:.0f} / {h['max'] * 1000:.0f} ms | "
                f"{n / raw:,.0f} events/s |"
            )
            print(lines[-1], flush=True)
    load = "/".join(f"{x:.1f}" for x in os.getloadavg()[:2])
    lines += ["", f"Load average at the end (1/5 min): {load}."]
    report = "\n".join(lines) + "\n"
    print(report)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
