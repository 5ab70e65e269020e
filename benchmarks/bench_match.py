"""`bastion match` end to end: import a bank, load it into the index, look up precomputed hashes.

`python -m benchmarks.bench_match [--size 1000000] [--queries 100000] [--quick]`. The bank is N
random PDQ hashes imported from a python-threatexchange hash file into a fresh SQLite store; the
queries are half bank hashes with 10 bits flipped, half random. Baselines in the same run: a plain
sqlite3 ``executemany`` of the same rows (import), and faiss ``IndexBinaryFlat`` range search of
the same queries on the same hashes (lookup), which is what a platform gets without an index.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "match.md"


def make_files(tmp: Path, size: int, queries: int) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    bank = rng.integers(0, 256, size=(size, 32), dtype=np.uint8)
    q = np.empty((queries, 32), dtype=np.uint8)
    half = queries // 2
    q[:half] = bank[rng.choice(size, half, replace=False)]
    for row in q[:half]:
        for bit in rng.choice(256, 10, replace=False):
            row[bit // 8] ^= 1 << (7 - bit % 8)
    q[half:] = rng.integers(0, 256, size=(queries - half, 32), dtype=np.uint8)
    bank_file, query_file = tmp / "bank.txt", tmp / "queries.txt"
    bank_file.write_text("".join(f"pdq {r.tobytes().hex()}\n" for r in bank))
    query_file.write_text("".join(f"pdq {r.tobytes().hex()}\n" for r in q))
    return bank_file, query_file, bank, q


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    t = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    return time.perf_counter() - t, done


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="100k bank, 10k queries")
    args, _ = parser.parse_known_args(argv)
    if args.quick:
        args.size, args.queries = 100_000, 10_000
    bastion = str(Path(sys.executable).with_name("bastion"))
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        bank_file, query_file, bank, queries = make_files(tmp, args.size, args.queries)
        env = {**os.environ, "BASTION_DATABASE_URL": f"sqlite:///{tmp / 'bastion.db'}"}
        subprocess.run([bastion, "bank", "create", "bench", "--label", "demo"], env=env, check=True)
        t_import, done = timed([bastion, "bank", "import", "bench", str(bank_file)], env)
        if done.returncode:
            print(done.stderr)
            return 1
        t_match, done = timed([bastion, "match", "--file", str(query_file), "-f", "csv"], env)
        rows = done.stdout.splitlines()[1:]
        matched = sum(1 for line in rows if ",pdq," in line and "[{" in line)
        t_load, _ = timed([bastion, "match", "pdq", "0" * 64], env)

        raw = sqlite3.connect(tmp / "raw.db")
        raw.execute("create table t (id integer primary key, signal_type text, value text)")
        t0 = time.perf_counter()
        with bank_file.open() as f:
            raw.executemany(
                "insert into t (signal_type, value) values (?, ?)", (ln.split() for ln in f)
            )
        raw.commit()
        t_raw = time.perf_counter() - t0

        import faiss

        flat = faiss.IndexBinaryFlat(256)
        flat.add(bank)
        t0 = time.perf_counter()
        lims, _, _ = flat.range_search(queries, 32)  # faiss binary range is strict: d < 32
        t_faiss = time.perf_counter() - t0
        faiss_matched = int(np.count_nonzero(np.diff(lims)))

    n, q = args.size, args.queries
    lines = [
        f"# `bastion match`: {n:,} bank hashes, {q:,} lookups (wall clock, 2 cores)",
        "",
        "| step | Bastion | baseline in the same run |",
        "| --- | --- | --- |",
        f"| import {n:,} pdq lines | {t_import:.1f} s ({n / t_import:,.0f} rows/s) | "
        f"plain sqlite3 executemany {t_raw:.1f} s ({n / t_raw:,.0f} rows/s), no validation |",
        f"| `bastion match` start-up with the bank loaded (1 lookup) | {t_load:.1f} s | - |",
        f"| `bastion match --file` with {q:,} lookups, total | {t_match:.1f} s | - |",
        f"| of which lookups (total minus start-up) | {max(t_match - t_load, 0):.1f} s "
        f"({q / max(t_match - t_load, 1e-9):,.0f}/s) | faiss IndexBinaryFlat range search "
        f"{t_faiss:.1f} s ({q / t_faiss:,.0f}/s) |",
        f"| queries with a match (expected {q // 2:,}) | {matched:,} | {faiss_matched:,} |",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(report)
    return 0 if matched == faiss_matched else 1


if __name__ == "__main__":
    raise SystemExit(main())
