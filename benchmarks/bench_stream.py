"""Contact-event intake through the Redis stream into PostgreSQL, beside a raw executemany baseline.

`python -m benchmarks.bench_stream [--users 2000] [--days 10] [--batch 1000,5000] [--quick]`

The events are a simulated contact population (:func:`bastion.contact.simulate.simulate`: flags
and metadata only), published to a fresh Redis stream (not timed), then:

* **stream path**: one :class:`~bastion.contact.stream.StreamConsumer` (this process, one core)
  reads the stream through a consumer group, in batches of each ``--batch`` size (one
  transaction each; the first size is also the baseline's), and applies each batch through
  ``ContactStore.ingest`` (validation, idempotent insert, incremental risk and its projections,
  one transaction), acknowledging after the commit, into a fresh PostgreSQL schema;
* **stream, no store**: the same consumer with an ``apply`` that does nothing: the stream's
  own cost (read, decode and validate, acknowledge);
* **raw driver**: the same events as ready-made rows of ``contact_events`` (id, type, parties,
  time, digest, JSON body) through psycopg's ``executemany`` in batches of the same size, into
  another fresh schema: no stream, no validation, no risk; the ceiling of the insert alone.

Per core: events over CPU-seconds (user + system) during the run, of this process alone and of
this process plus the PostgreSQL backends serving its connections (found by application_name,
CPU from /proc; the server runs beside, on the same two cores); Redis's CPU is in neither. Prints
markdown; writes benchmarks/results/stream.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "stream.md"
PG_URL = os.environ.get(
    "BASTION_BENCH_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("BASTION_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def _cpu() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def _open() -> tuple[Any, str]:
    """A fresh schema; its connections carry the schema's name as their application_name, so
    :func:`_backend_cpu` finds their PostgreSQL backends."""
    from bastion.db import Store

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}application_name={schema}"
    return Store.open(url, schema=schema), schema


def _backend_cpu(store: Any, schema: str) -> dict[int, float]:
    """CPU seconds (user + system) of each PostgreSQL backend serving ``store``'s connections,
    from /proc (the server runs on this machine; empty when it does not)."""
    with store.engine.connect() as conn:
        pids = conn.exec_driver_sql(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %(app)s", {"app": schema}
        ).scalars()
        found = {}
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            found[int(pid)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return found


def _db_cpu(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def _drop(store: Any, schema: str) -> None:
    with store.engine.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    store.close()


def stream_path(
    events: list[Any], batch: int, *, store_events: bool = True, profile: str | None = None
) -> dict[str, Any]:
    """Through the stream into the store (``store_events``), or into nothing: the consumer's
    own cost (read, decode and validate, acknowledge) without the database."""
    import functools

    import redis

    from bastion.contact.model import event_to_json
    from bastion.contact.store import ContactStore
    from bastion.contact.stream import RedisStream, StreamConsumer, ingest_apply

    name = f"bench:bastion:events:{uuid.uuid4().hex[:10]}"
    store, schema = _open()
    client: Any = redis.Redis.from_url(REDIS_URL)
    try:
        transport = RedisStream(REDIS_URL, name, "bench", "c1")
        transport.publish([json.dumps(event_to_json(e)).encode() for e in events])
        ingest = functools.partial(ContactStore(store).ingest, max_batch=batch)
        apply = ingest_apply(ingest) if store_events else (lambda _: [])
        loop = StreamConsumer(transport, apply, batch=batch, block_ms=10, claim_every_s=3600)
        profiler: Any = None
        if profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        db0 = _backend_cpu(store, schema)
        cpu0, t0 = _cpu(), time.perf_counter()
        total = loop.run(until_idle=True)
        wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
        db_cpu = _db_cpu(db0, _backend_cpu(store, schema))
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)
        assert total.applied == len(events) and transport.pending() == 0, total
        with store.engine.connect() as conn:
            stored = conn.exec_driver_sql("SELECT count(*) FROM contact_events").scalar_one()
        assert stored == (len(events) if store_events else 0), stored
        transport.close()
    finally:
        client.delete(name, f"{name}:dead")
        client.close()
        _drop(store, schema)
    path = "Redis stream → ContactStore.ingest" if store_events else "Redis stream, no store"
    path += f", batches of {batch:,}"
    return {"path": path, "events": len(events), "wall": wall, "cpu": cpu, "db_cpu": db_cpu}


def raw_executemany(events: list[Any], batch: int) -> dict[str, Any]:
    import hashlib

    from bastion.contact.model import event_to_json

    store, schema = _open()
    now = datetime.now(UTC)
    try:
        rows = []
        for e in events:
            body = json.dumps(event_to_json(e), sort_keys=True, separators=(",", ":"))
            account = getattr(e, "account", None) or e.actor
            target = getattr(e, "target", None)
            rows.append(
                (
                    e.event_id,
                    e.type,
                    account,
                    target,
                    e.time,
                    hashlib.sha256(body.encode()).hexdigest(),
                    body,
                    now,
                )
            )
        sql = (
            "INSERT INTO contact_events (event_id, type, account, target, time, digest, body, "
            "received_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (event_id) DO NOTHING"
        )
        with store.engine.connect() as conn:
            raw = conn.connection.dbapi_connection
            assert raw is not None
            conn.commit()
            db0 = _backend_cpu(store, schema)
            cpu0, t0 = _cpu(), time.perf_counter()
            for start in range(0, len(rows), batch):
                cur = raw.cursor()
                cur.executemany(sql, rows[start : start + batch])
                raw.commit()
            wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
            db_cpu = _db_cpu(db0, _backend_cpu(store, schema))
            stored = conn.exec_driver_sql("SELECT count(*) FROM contact_events").scalar_one()
        assert stored == len(events), stored
    finally:
        _drop(store, schema)
    return {
        "path": f"raw executemany, batches of {batch:,}",
        "events": len(events),
        "wall": wall,
        "cpu": cpu,
        "db_cpu": db_cpu,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--batch",
        default="1000,5000",
        help="entries per transaction, comma-separated sizes (each a stream-path row)",
    )
    parser.add_argument(
        "--profile", metavar="FILE", help="cProfile the first stream-path run into FILE"
    )
    parser.add_argument("--quick", action="store_true", help="500 users, 3 days")
    args, _ = parser.parse_known_args(argv)
    if args.quick:
        args.users, args.days = 500, 3
    from bastion.contact.simulate import simulate
    from bastion.contact.stream import tune_gc

    tune_gc()  # as `bastion events consume` does (every path here runs with it)
    events, _ = simulate(args.users, args.days, args.seed)
    sizes = [int(size) for size in str(args.batch).split(",")]
    results = [raw_executemany(events, sizes[0])]
    for i, size in enumerate(sizes):
        results.append(stream_path(events, size, profile=args.profile if i == 0 else None))
    results.append(stream_path(events, sizes[0], store_events=False))
    load = "/".join(f"{x:.1f}" for x in os.getloadavg()[:2])
    lines = [
        f"Contact events into PostgreSQL, {len(events):,} simulated events "
        f"({args.users} users, {args.days} days, seed {args.seed}), baseline batches of "
        f"{sizes[0]:,}; "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{date.today().isoformat()}, load {load}",
        "",
        "| path | events | seconds | events/s | per CPU-second: this process "
        "| per CPU-second: this process + its PostgreSQL backends |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        both = r["cpu"] + r["db_cpu"]
        lines.append(
            f"| {r['path']} | {r['events']:,} | {r['wall']:.2f} | {r['events'] / r['wall']:,.0f} "
            f"| {r['events'] / max(r['cpu'], 1e-9):,.0f} | {r['events'] / max(both, 1e-9):,.0f} |"
        )
    text = "\n".join(lines)
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
