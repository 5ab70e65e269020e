"""Identity matching (issue 16): lookups per second at 10M hashed identifiers.

`python -m benchmarks.bench_identity [--size 10000000] [--queries 200000] [--quick]`

The bank is ``--size`` HMAC-SHA256 digests (random 32-byte values: what keyed hashes look like)
loaded into :class:`bastion.index.hashed.HashedIndex` in one bulk load. The queries are half
digests of the bank, half absent. Measured, single-threaded, in one process:

* **HashedIndex.lookup**: one digest (64 hex characters, as the scan path passes them) per call;
* **HashedIndex.lookup_many**: batches of 1,000 (one vectorised search);
* **full path**: an e-mail address normalised, HMAC-SHA256'd under the group key and looked up
  (what ``/v1/scan`` does per identifier and group, without HTTP);
* **baseline** (same run): a plain Python ``dict`` from the same 10M digests (bytes) to ids, and
  ``in`` on a ``set`` of them, the fastest exact lookup Python offers, at several times the memory.

Memory is each structure's resident-set growth while built. Prints markdown; writes
benchmarks/results/identity.md.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "identity.md"


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}/s"


def main(argv: Sequence[str] | None = None) -> int:
    from bastion.identity.model import Identifier, hash_identifier
    from bastion.index.hashed import HashedIndex
    from bastion.signals.base import SignalType

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000_000)
    parser.add_argument("--queries", type=int, default=200_000)
    parser.add_argument("--quick", action="store_true", help="1M digests, 50k queries")
    args, _ = parser.parse_known_args(argv)
    if args.quick:
        args.size, args.queries = 1_000_000, 50_000
    rng = np.random.default_rng(16)
    digests = rng.integers(0, 256, size=(args.size, 32), dtype=np.uint8)
    half = args.queries // 2
    present = digests[rng.choice(args.size, half, replace=False)]
    absent = rng.integers(0, 256, size=(args.queries - half, 32), dtype=np.uint8)
    queries = [r.tobytes().hex() for r in np.concatenate([present, absent])]
    rng.shuffle(queries)  # type: ignore[arg-type]
    rows = []

    gc.collect()
    before = rss()
    t = time.perf_counter()
    index = HashedIndex()
    index.add_arrays(np.arange(1, args.size + 1, dtype=np.int64), digests)
    built = time.perf_counter() - t
    index_bytes = rss() - before
    t = time.perf_counter()
    hits = sum(1 for q in queries if index.lookup(q))
    single = time.perf_counter() - t
    assert hits == half, hits
    t = time.perf_counter()
    batched = 0
    for i in range(0, len(queries), 1000):
        batched += sum(1 for ids in index.lookup_many(queries[i : i + 1000]) if ids)
    many = time.perf_counter() - t
    assert batched == half
    key = bytes(range(32))
    emails = [f"person{i}@example.com" for i in range(min(args.queries, 100_000))]
    t = time.perf_counter()
    for e in emails:
        index.lookup(hash_identifier(key, Identifier(SignalType.EMAIL, e)))
    full = time.perf_counter() - t
    rows.append(("HashedIndex.lookup (one digest a call)", rate(len(queries), single)))
    rows.append(("HashedIndex.lookup_many (1,000 a call)", rate(len(queries), many)))
    rows.append(("full path: normalise + HMAC + lookup (e-mail)", rate(len(emails), full)))
    per_entry = index_bytes / args.size
    del index
    gc.collect()

    before = rss()
    t = time.perf_counter()
    table = {r.tobytes(): i for i, r in enumerate(digests, 1)}
    dict_built = time.perf_counter() - t
    dict_bytes = rss() - before
    raw_queries = [bytes.fromhex(q) for q in queries]
    t = time.perf_counter()
    dict_hits = sum(1 for q in queries if bytes.fromhex(q) in table)
    dict_time = time.perf_counter() - t
    assert dict_hits == half
    t = time.perf_counter()
    raw_hits = sum(1 for q in raw_queries if q in table)
    raw_time = time.perf_counter() - t
    assert raw_hits == half
    rows.append(("baseline: dict, hex -> bytes -> lookup", rate(len(queries), dict_time)))
    rows.append(("baseline: dict, bytes ready", rate(len(queries), raw_time)))

    lines = [
        f"Identity matching: {args.size:,} keyed digests, {len(queries):,} lookups (half "
        f"present); {platform.machine()}, {os.cpu_count()} cores, {datetime.now(UTC):%Y-%m-%d}",
        "",
        "| path | lookups |",
        "| --- | --- |",
        *[f"| {a} | {b} |" for a, b in rows],
        "",
        f"Memory: HashedIndex {per_entry:.0f} B/entry (built in {built:.1f} s); dict baseline "
        f"{dict_bytes / args.size:.0f} B/entry (built in {dict_built:.1f} s).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
