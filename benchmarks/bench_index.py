"""PDQ index benchmark: Bastion's PDQIndex beside numpy brute force and faiss, at 1M and 10M hashes.

Run ``python -m benchmarks.bench_index [--sizes 1000000,10000000] [--radii 31,52] [--quick]``.
Prints a markdown report and writes it to ``benchmarks/results/index.md``.

Queries mix random hashes (almost never a hit at scale) with planted near-duplicates of indexed
hashes at distances spread over ``0..radius``, so recall is measured on real hits. Ground truth
is faiss ``IndexBinaryFlat`` (exhaustive), cross-checked against numpy on the queries numpy ran.
Single-lookup rates are per query on one thread (faiss with ``omp_set_num_threads(1)``), from
the thread's CPU time so that other load on a shared machine does not count; wall-clock rates
are shown beside them. Batched rates are wall clock with every core.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np

from bastion.index import PDQIndex

# Two OpenMP runtimes share the process (faiss's and numba's threading layer); busy-waiting
# threads of one would steal the cores the other is timed on.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

RESULTS = Path(__file__).resolve().parent / "results" / "index.md"
Hits = list[set[int]]


@dataclass
class Row:
    size: int
    radius: int
    method: str
    build_s: float | None
    bytes_per_hash: float | None
    single_cpu: float | None
    single_wall: float | None
    batch: float | None
    recall: float | None
    exact: bool | None
    note: str = ""


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _flip(h: np.ndarray, d: int, rng: np.random.Generator) -> np.ndarray:
    bits = np.unpackbits(h)
    bits[rng.choice(256, d, replace=False)] ^= 1
    return np.packbits(bits)


def make_queries(hashes: np.ndarray, radius: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Half random hashes, half indexed hashes with 0..radius bits flipped, shuffled."""
    planted = [
        _flip(hashes[i], int(rng.integers(0, radius + 1)), rng)
        for i in rng.integers(0, len(hashes), n // 2)
    ]
    random = rng.integers(0, 256, (n - len(planted), 32), dtype=np.uint8)
    queries = np.concatenate([np.stack(planted), random])
    return queries[rng.permutation(n)]


def timed_singles(
    fn: Callable[[np.ndarray], Hits | set[int]], queries: np.ndarray, budget_s: float
) -> tuple[Hits, float, float]:
    """Run single queries until ``budget_s`` of CPU time; returns hits, CPU rate, wall rate."""
    fn(queries[0])  # warm-up (compilation, caches)
    hits: Hits = []
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    for q in queries:
        hits.append(fn(q))  # type: ignore[arg-type]
        if time.thread_time() - cpu0 > budget_s:
            break
    cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
    return hits, len(hits) / cpu, len(hits) / wall


def score(hits: Hits, truth: Hits) -> tuple[float, bool]:
    """Recall over all true hits of the queries run, and whether nothing false was returned."""
    found = sum(len(h & t) for h, t in zip(hits, truth, strict=False))
    total = sum(len(t) for t in truth[: len(hits)])
    exact = all(h <= t for h, t in zip(hits, truth, strict=False))
    return (found / total if total else 1.0), exact


def _faiss_hits(lims: np.ndarray, ids: np.ndarray) -> Hits:
    return [set(ids[lims[i] : lims[i + 1]].tolist()) for i in range(len(lims) - 1)]


def bench_size(n: int, radii: Sequence[int], nq: int, budget_s: float, seed: int = 1) -> list[Row]:
    import faiss

    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    ids = np.arange(n, dtype=np.int64)
    rows: list[Row] = []
    ncores = os.cpu_count() or 1

    # Warm numba's compiled kernels on a small index so compile time is not counted as build.
    warm = PDQIndex()
    warm.add(ids[:5000], hashes[:5000])
    for r in radii:
        warm.search(hashes[0], r)
        warm.search_batch(hashes[:4], r)

    rss0 = _rss()
    t = time.perf_counter()
    index = PDQIndex()
    index.add(ids, hashes)
    build = time.perf_counter() - t
    bastion_bph = index.memory_bytes() / n
    bastion_rss = (_rss() - rss0) / n

    faiss.omp_set_num_threads(ncores)
    t = time.perf_counter()
    flat = faiss.IndexBinaryFlat(256)
    flat.add(hashes)
    flat_build = time.perf_counter() - t

    rss0 = _rss()
    t = time.perf_counter()
    mh = faiss.IndexBinaryMultiHash(256, 16, 16)
    mh.nflip = 1
    mh.add(hashes)
    mh_build = time.perf_counter() - t
    mh_bph = (_rss() - rss0) / n

    words = hashes.view(np.uint64)
    for radius in radii:
        queries = make_queries(hashes, radius, nq, rng)
        # faiss binary range search is strict (d < radius), hence radius + 1 throughout.
        faiss.omp_set_num_threads(ncores)
        truth = _faiss_hits(*flat.range_search(queries, radius + 1)[::2])

        def brute(q: np.ndarray, radius: int = radius) -> set[int]:
            d = np.bitwise_count(words ^ q.view(np.uint64)).sum(axis=1, dtype=np.int64)
            return set(np.flatnonzero(d <= radius).tolist())

        np_hits, np_cpu, np_wall = timed_singles(brute, queries, budget_s / 2)
        assert np_hits == truth[: len(np_hits)], "faiss ground truth disagrees with numpy"

        def bastion(q: np.ndarray, radius: int = radius) -> set[int]:
            return {i for i, _ in index.search(q, radius)}

        b_hits, b_cpu, b_wall = timed_singles(bastion, queries, budget_s)
        t = time.perf_counter()
        b_batch_hits = [{i for i, _ in r} for r in index.search_batch(queries, radius)]
        b_batch = nq / (time.perf_counter() - t)
        assert b_batch_hits[: len(b_hits)] == b_hits, "batched and single lookups disagree"
        recall, exact = score(b_batch_hits, truth)
        assert exact, "Bastion returned a hash beyond the radius"
        rows.append(
            Row(
                n,
                radius,
                "**Bastion PDQIndex**",
                build,
                bastion_bph,
                b_cpu,
                b_wall,
                b_batch,
                *score(b_hits, truth),
                note=f"batch recall {recall:.4f}; RSS grew {bastion_rss:.0f} B/hash",
            )
        )

        faiss.omp_set_num_threads(1)
        f_hits, f_cpu, f_wall = timed_singles(
            lambda q, r=radius: _faiss_hits(*flat.range_search(q[None], r + 1)[::2])[0],
            queries,
            budget_s / 2,
        )
        faiss.omp_set_num_threads(ncores)
        t = time.perf_counter()
        flat.range_search(queries, radius + 1)
        f_batch = nq / (time.perf_counter() - t)
        rows.append(
            Row(
                n,
                radius,
                "faiss IndexBinaryFlat",
                flat_build,
                flat.code_size,
                f_cpu,
                f_wall,
                f_batch,
                *score(f_hits, truth),
                note="bytes/hash: its code size",
            )
        )

        faiss.omp_set_num_threads(1)
        _, m_cpu, m_wall = timed_singles(
            lambda q, r=radius: _faiss_hits(*mh.range_search(q[None], r + 1)[::2])[0],
            queries,
            budget_s,
        )
        faiss.omp_set_num_threads(ncores)
        t = time.perf_counter()
        m_batch_hits = _faiss_hits(*mh.range_search(queries, radius + 1)[::2])
        m_batch = nq / (time.perf_counter() - t)
        m_recall, m_exact = score(m_batch_hits, truth)
        rows.append(
            Row(
                n,
                radius,
                "faiss MultiHash(256,16,16) nflip=1 (HMA)",
                mh_build,
                mh_bph,
                m_cpu,
                m_wall,
                m_batch,
                m_recall,
                m_exact,
                note="bytes/hash: RSS growth; recall over all queries",
            )
        )

        rows.append(
            Row(
                n,
                radius,
                "numpy brute force",
                None,
                32.0,
                np_cpu,
                np_wall,
                None,
                *score(np_hits, truth),
            )
        )
    rows.append(_updates(index, hashes, rng))
    return rows


def _updates(index: PDQIndex, hashes: np.ndarray, rng: np.random.Generator) -> Row:
    """Latency of a single add and a single remove, each checked by the very next lookup."""
    n = len(index)
    adds, removes = [], []
    new_ids = np.arange(n, n + 200, dtype=np.int64) + 10**12
    new = rng.integers(0, 256, (200, 32), dtype=np.uint8)
    for i in range(200):
        t = time.perf_counter()
        index.add(new_ids[i : i + 1], new[i : i + 1])
        adds.append(time.perf_counter() - t)
        assert (int(new_ids[i]), 0) in index.search(new[i], 0)
    for i in range(200):
        t = time.perf_counter()
        index.remove([int(new_ids[i])])
        removes.append(time.perf_counter() - t)
        assert index.search(new[i], 0) == []
    # Amortised: enough single adds to freeze the tail into a segment once.
    more = rng.integers(0, 256, (5000, 32), dtype=np.uint8)
    t = time.perf_counter()
    for i in range(5000):
        index.add(np.array([10**13 + i]), more[i : i + 1])
    amortised = (time.perf_counter() - t) / 5000
    note = (
        f"single add median {np.median(adds) * 1e6:.0f} µs (max {max(adds) * 1e6:.0f}); "
        f"single remove median {np.median(removes) * 1e6:.0f} µs (max {max(removes) * 1e6:.0f}); "
        f"amortised add over 5,000 single adds incl. a tail flush {amortised * 1e6:.0f} µs; "
        "each verified by the next lookup"
    )
    return Row(n, 0, "updates", None, None, None, None, None, None, None, note=note)


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def render(rows: list[Row], args: argparse.Namespace) -> str:
    machine = f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
    header = (
        "| hashes | radius | method | build s | bytes/hash | single/s (1 core, CPU) "
        "| single/s (wall) | batch/s (all cores) | recall | exact | notes |"
    )
    lines = [
        f"# PDQ index benchmark ({date.today().isoformat()})",
        "",
        f"Machine: {machine}. Sizes {args.sizes}; {args.queries} queries per radius, half of them "
        "planted near-duplicates of indexed hashes.",
        "",
        header,
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|:-:|---|",
    ]
    updates = []
    for r in rows:
        if r.method == "updates":
            updates.append(f"- {r.size:,} hashes: {r.note}")
            continue
        exact = "-" if r.exact is None else ("yes" if r.exact else "no")
        cells = [
            f"{r.size:,}",
            str(r.radius),
            r.method,
            _fmt(r.build_s, ".2f"),
            _fmt(r.bytes_per_hash, ".0f"),
            _fmt(r.single_cpu, ",.0f"),
            _fmt(r.single_wall, ",.0f"),
            _fmt(r.batch, ",.0f"),
            _fmt(r.recall, ".4f"),
            exact,
            r.note,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Updates (Bastion):", *updates, ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,10000000", help="comma-separated index sizes")
    parser.add_argument("--radii", default="31,52", help="comma-separated radii")
    parser.add_argument("--queries", type=int, default=1000, help="queries per radius")
    parser.add_argument(
        "--budget", type=float, default=4.0, help="CPU seconds per single-query run"
    )
    parser.add_argument("--quick", action="store_true", help="100k hashes, fewer queries (<1 min)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.queries, args.budget = "100000", 200, 0.5
    sizes = [int(s) for s in args.sizes.split(",")]
    radii = [int(r) for r in args.radii.split(",")]
    rows: list[Row] = []
    for n in sizes:
        rows += bench_size(n, radii, args.queries, args.budget)
    report = render(rows, args)
    print(report)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
