"""Exchange sync rate: a synthetic exchange applied into SQLite and PostgreSQL, beside the store's
bulk import of the same entries.

`python -m benchmarks.bench_exchange_sync [--records 200000] [--page-size 5000]
[--backends sqlite,postgres] [--quick]`; `--records 10000000` is the full-size run (a 10M-entry
list exchange).

The exchange is a real :class:`~bastion.exchanges.base.Exchange` subclass that makes its pages
as the engine asks for them (nothing held in memory beyond one page): record ``rec-<k>`` holds one
synthetic hex hash (3 in 4 PDQ, 1 in 4 MD5, digests of a counter), already canonical as the list
exchange's parsers deliver them. Each measurement runs in a fresh child process on a fresh
database (SQLite file / PostgreSQL schema), so its peak RSS is its own:

* **sync, incremental pages**: ``ExchangeStore.sync`` of pages without a snapshot (NCMEC/StopNCII
  style deltas), a first load into an empty bank;
* **sync, snapshot pages**: the same records as pages of one snapshot (a list exchange: each page
  marks its keys seen, the last one sweeps), a first load; then **re-sync, unchanged**: the same
  snapshot again, nothing to write but the seen marks and the sweep;
* **baseline**: ``Store.add_entries`` of the same entries (with the same ``external_id``) in
  batches of the page size: the store's bulk import, what an exchange page should approach.

Rows/s counts entries. Prints markdown; writes benchmarks/results/exchange_sync.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any, ClassVar

from bastion.banks.model import NewEntry, normalize_entry
from bastion.exchanges.base import (
    Checkpoint,
    Exchange,
    ExchangeConfig,
    Page,
    Upsert,
    register,
)
from bastion.signals.base import SignalType

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "exchange_sync.md"
PG_URL = os.environ.get(
    "BASTION_BENCH_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"
)
SOURCE, LIST_NAME, LABELS = "Synthetic benchmark list", "bench", ("test",)


def synthetic_entry(k: int, seed: int = 0) -> NewEntry:
    """Record ``k``'s entry: a digest of a counter (no content), canonical as the list parsers
    make them, so neither path spends time normalising it."""
    digest = hashlib.sha256(f"bench-{seed}-{k}".encode()).hexdigest()
    if k % 4 == 3:
        st, value = SignalType.MD5, digest[:32]
    else:
        st, value = SignalType.PDQ, digest
    e = NewEntry(
        st,
        value,
        source=SOURCE,
        list_name=LIST_NAME,
        external_id=f"rec-{k}",
        labels=list(LABELS),
    )
    object.__setattr__(e, "canonical", True)
    return e


class SynthConfig(ExchangeConfig):
    records: int = 1000
    page_size: int = 5000
    seed: int = 0
    snapshot: bool = False


@register
class SyntheticExchange(Exchange):
    """``records`` records in pages of ``page_size``, made on the fly. With ``snapshot`` every
    listing is one snapshot: the last page completes it and its checkpoint starts the next
    listing from the top."""

    kind: ClassVar[str] = "bench-synthetic"
    Config = SynthConfig

    def fetch(self, checkpoint: Checkpoint | None) -> Iterator[Page]:
        cfg: SynthConfig = self.config  # type: ignore[assignment]
        cp = checkpoint or {}
        start = int(cp.get("i", 0))
        snapshot = cp.get("snapshot") or (uuid.uuid4().hex if cfg.snapshot else None)
        if start >= cfg.records and not cfg.snapshot:
            return
        for lo in range(start, cfg.records, cfg.page_size):
            hi = min(cfg.records, lo + cfg.page_size)
            items = tuple(
                Upsert(f"rec-{k}", (synthetic_entry(k, cfg.seed),)) for k in range(lo, hi)
            )
            last = hi >= cfg.records
            if cfg.snapshot:
                nxt = {"i": 0} if last else {"i": hi, "snapshot": snapshot}
            else:
                nxt = {"i": hi}
            yield Page(
                items=items,
                checkpoint=nxt,
                snapshot=snapshot,
                snapshot_complete=bool(cfg.snapshot and last),
                progress=(hi, cfg.records),
            )


def _rss_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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


def _entries(n: int) -> Iterator[NewEntry]:
    return (synthetic_entry(k) for k in range(n))


# ---------------------------------------------------------------------------------------------
# one measurement per child process


def child(mode: str, backend: str, n: int, page_size: int) -> dict[str, Any]:
    from bastion.config import Settings
    from bastion.exchanges.store import ExchangeStore

    sample = synthetic_entry(0)
    assert normalize_entry(NewEntry(**_fields(sample))) == sample, "entries must be canonical"
    with tempfile.TemporaryDirectory(dir=os.environ.get("BASTION_BENCH_TMP")) as tmp:
        store, schema = _open(backend, tmp)
        try:
            out: dict[str, Any] = {"mode": mode, "backend": backend, "records": n}
            if mode == "baseline":
                store.create_bank("bench", labels=["demo"])
                t0 = time.perf_counter()
                report = store.add_entries("bench", _entries(n), batch_size=page_size)
                out["seconds"] = time.perf_counter() - t0
                out["rows"] = report.added
                out["peak_rss_mb"] = _rss_peak_mb()
                return out
            xs = ExchangeStore(store, None, Settings())
            config = {"records": n, "page_size": page_size, "snapshot": mode == "snapshot"}
            xs.add("bench", "bench-synthetic", config=config, labels=["demo"])
            t0 = time.perf_counter()
            res = xs.sync("bench")
            out["seconds"] = time.perf_counter() - t0
            if res.error:
                raise SystemExit(f"sync failed: {res.error}")
            out["rows"] = res.added
            out["peak_rss_mb"] = _rss_peak_mb()
            if mode == "snapshot":
                t0 = time.perf_counter()
                again = xs.sync("bench")
                out["resync_seconds"] = time.perf_counter() - t0
                if again.error:
                    raise SystemExit(f"re-sync failed: {again.error}")
                out["resync_changes"] = again.added + again.updated + again.disabled
                out["resync_peak_rss_mb"] = _rss_peak_mb()
            with store.engine.connect() as conn:
                out["stored"] = conn.exec_driver_sql(
                    "SELECT count(*) FROM bank_entries WHERE enabled"
                ).scalar_one()
            return out
        finally:
            _drop(store, schema)


def _fields(e: NewEntry) -> dict[str, Any]:
    return {f.name: getattr(e, f.name) for f in dataclasses.fields(e) if f.init}


# ---------------------------------------------------------------------------------------------
# driver


def _run_child(mode: str, backend: str, n: int, page_size: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.bench_exchange_sync", "--child", mode, backend]
    cmd += [str(n), str(page_size)]
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
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--page-size", type=int, default=5000)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--modes", default="sync,snapshot,baseline", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="20k records")
    parser.add_argument(
        "--child", nargs=4, metavar=("MODE", "BACKEND", "N", "PAGE"), help=argparse.SUPPRESS
    )
    args, _ = parser.parse_known_args(argv)
    if args.child:
        mode, backend, n, page = args.child
        print(json.dumps(child(mode, backend, int(n), int(page))))
        return 0
    if args.quick:
        args.records = 20_000
    n = args.records
    lines = [
        f"# Exchange sync: {n:,} synthetic records (one entry each), pages of {args.page_size:,}",
        "",
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{date.today().isoformat()}. Wall clock; load average before each row in the last column.",
        "",
        "| backend | path | rows | seconds | rows/s | peak RSS MB | load |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    print("\n".join(lines), flush=True)
    ok = True
    labels = {
        "sync": "sync, incremental pages (first load)",
        "snapshot": "sync, snapshot pages (first load)",
        "baseline": "baseline: `Store.add_entries`",
    }
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            load = _load()
            r = _run_child(mode, backend, n, args.page_size)
            ok = ok and r["rows"] == n and r.get("stored", n) == n
            rows = [(labels[mode], r["rows"], r["seconds"], r["peak_rss_mb"])]
            if mode == "snapshot":
                ok = ok and r["resync_changes"] == 0
                rows.append(
                    ("re-sync, unchanged snapshot", n, r["resync_seconds"], r["resync_peak_rss_mb"])
                )
            for label, count, seconds, rss in rows:
                row = (
                    f"| {backend} | {label} | {count:,} | {seconds:.1f} | "
                    f"{count / seconds:,.0f} | {rss:.0f} | {load} |"
                )
                lines.append(row)
                print(row, flush=True)
    report = "\n".join(lines) + "\n"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(report)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
