"""Back-scans (issue 18): hashing throughput per engine, and re-match throughput beside brute force.

`python -m benchmarks.bench_backscan [--quick] [--images N] [--stored N] [--new N] [--no-ray]`

1. The same synthetic images (benign: smooth gradients and shapes with camera-like noise; mixed
   sizes up to 12 MP, JPEG and PNG) through `bastion scan`, `bastion backscan --engine local` and
   `bastion backscan --engine ray` on a local Ray cluster started here (`ray start --head
   --num-cpus C`), each as a user runs it (a fresh process, C workers). Per-core rate = objects /
   wall seconds / C; the engine's overhead is the difference from `bastion scan`.
2. Re-match: N stored PDQ signals in a back-scan dataset against M new entries (random hashes,
   plus planted near-copies of stored ones at distances 0-40), on one core (NUMBA_NUM_THREADS=1,
   CPU time), beside numpy brute force (XOR + popcount of every pair) on a sample in the same run,
   and recall at distance 31 checked against brute force on that sample and on every planted pair.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "backscan.md"
#: (width, height, format, share): a mix weighted towards phone-sized pictures.
MIX = [
    (640, 480, "JPEG", 0.30),
    (1024, 768, "PNG", 0.15),
    (1600, 1200, "JPEG", 0.25),
    (2592, 1944, "JPEG", 0.15),
    (3264, 2448, "JPEG", 0.10),
    (4000, 3000, "JPEG", 0.05),
]


# -- 1. hashing throughput ---------------------------------------------------------------------
def make_images(root: Path, n: int, seed: int = 7) -> int:
    """``n`` benign synthetic pictures of the mix under ``root`` (kept between runs)."""
    from PIL import Image

    marker = root / f".made-{n}-{seed}"
    if marker.exists():
        return sum(p.stat().st_size for p in root.rglob("img*"))
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    shares = np.array([m[3] for m in MIX])
    kinds = rng.choice(len(MIX), n, p=shares / shares.sum())
    total = 0
    for i, k in enumerate(kinds.tolist()):
        w, h, fmt, _ = MIX[k]
        small = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
        img = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC))
        noise = rng.normal(0, 4.0, (h, w, 1)).astype(np.int16)
        img = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
        sub = root / f"{i // 500:03d}"
        sub.mkdir(exist_ok=True)
        path = sub / f"img{i:05d}.{'jpg' if fmt == 'JPEG' else 'png'}"
        Image.fromarray(img).save(path, fmt, quality=90, compress_level=1)
        total += path.stat().st_size
    marker.touch()
    return total


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{cmd[3:5]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return wall


def hashing(n: int, cores: int, with_ray: bool, work: Path) -> list[tuple[str, float, float]]:
    images = work / "images"
    size = make_images(images, n)
    print(f"{n} images, {size / 1e6:.0f} MB", flush=True)
    db = f"sqlite:///{work / 'bench.db'}"
    env = {**os.environ, "BASTION_DATABASE_URL": db}
    env.setdefault("BASTION_AUDIT_KEY_FILE", str(work / "audit.key"))
    bastion = [sys.executable, "-m", "bastion.cli"]
    backscan = [*bastion, "backscan", str(images)]
    out: list[tuple[str, float, float]] = []

    def record(name: str, wall: float) -> None:
        per_core = n / wall / cores
        out.append((name, wall, per_core))
        print(f"  {name}: {wall:.1f} s, {per_core:.2f} objects/s per core", flush=True)

    record(
        "bastion scan",
        _timed([*bastion, "scan", str(images), "--workers", str(cores), "-f", "json"], env),
    )
    shutil.rmtree(work / "out-local", ignore_errors=True)
    record(
        "bastion backscan --engine local",
        _timed(
            [
                *bastion,
                "backscan",
                str(images),
                f"--out={work / 'out-local'}",
                f"--workers={cores}",
            ],
            env,
        ),
    )
    if with_ray:
        port = _free_port()
        renv = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        ray = Path(sys.executable).with_name("ray")
        args = ["start", "--head", f"--num-cpus={cores}", f"--port={port}", "--block"]
        args += ["--node-ip-address=127.0.0.1", "--include-dashboard=false"]
        head = subprocess.Popen(
            [str(ray), *args, f"--temp-dir={work / 'ray'}"],
            env=renv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            time.sleep(15)  # the head and its raylet up before the clock starts
            shutil.rmtree(work / "out-ray", ignore_errors=True)
            addr = f"127.0.0.1:{port}"
            record(
                "bastion backscan --engine ray",
                _timed(
                    [*backscan, f"--out={work / 'out-ray'}", "--engine=ray", f"--address={addr}"],
                    renv,
                ),
            )
        finally:
            os.killpg(head.pid, signal.SIGTERM)
            try:
                head.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(head.pid, signal.SIGKILL)
                head.wait()
    return out


# -- 2. re-match ---------------------------------------------------------------------------------
def _hexes(a: np.ndarray) -> list[str]:
    h = a.tobytes().hex()
    return [h[i * 64 : (i + 1) * 64] for i in range(len(a))]


def _write_dataset(root: Path, stored: np.ndarray, shard_rows: int) -> None:
    import pyarrow as pa

    from bastion.backscan.dataset import Dataset, write_atomic
    from bastion.backscan.model import SCHEMA

    ds = Dataset(root)
    ds.data_dir.mkdir(parents=True, exist_ok=True)
    for shard, lo in enumerate(range(0, len(stored), shard_rows)):
        part = stored[lo : lo + shard_rows]
        m = len(part)
        cols = {name: pa.nulls(m, SCHEMA.field(name).type) for name in SCHEMA.names}
        cols["uri"] = pa.array([f"s3://archive/{lo + i}" for i in range(m)])
        cols["shard"] = pa.array(np.full(m, shard, np.int32))
        cols["pdq"] = pa.array(_hexes(part))
        cols["pdq_quality"] = pa.array(np.full(m, 100, np.int16))
        cols["bank_revision"] = pa.array(np.full(m, 1, np.int64))
        cols["matched"] = pa.array(np.zeros(m, np.int16))
        write_atomic(ds.data_dir / f"shard-{shard:06d}.parquet", pa.table(cols, schema=SCHEMA))


def _brute(stored: np.ndarray, new: np.ndarray, radius: int) -> list[tuple[int, int, int]]:
    """Every (stored row, new row, distance) within ``radius``: XOR and popcount of all pairs."""
    sw = stored.view(np.uint64).reshape(-1, 4)
    nw = new.view(np.uint64).reshape(-1, 4)
    out = []
    for i in range(len(sw)):
        d = np.bitwise_count(nw ^ sw[i]).sum(axis=1)
        for j in np.flatnonzero(d <= radius).tolist():
            out.append((i, j, int(d[j])))
    return out


def rematch_bench(n_stored: int, n_new: int, sample: int, work: Path) -> dict[str, float]:
    from bastion.backscan.rematch import NewEntries, RematchOptions, dataset_matches
    from bastion.banks.model import IndexEntry
    from bastion.index.matcher import Matcher
    from bastion.signals import SignalType

    rng = np.random.default_rng(18)
    stored = rng.integers(0, 256, (n_stored, 32), dtype=np.uint8)
    new = rng.integers(0, 256, (n_new, 32), dtype=np.uint8)
    planted = min(1_000, n_new)
    targets = rng.choice(n_stored, planted, replace=False)
    for j, t in enumerate(targets.tolist()):
        bits = np.unpackbits(stored[t])
        bits[rng.choice(256, int(rng.integers(0, 41)), replace=False)] ^= 1
        new[j] = np.packbits(bits)
    root = work / "rematch-ds"
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    _write_dataset(root, stored, 1_000_000)
    print(f"  dataset of {n_stored:,} stored signals written in {time.perf_counter() - t0:.0f} s")
    hexes = _hexes(new)
    entries = [
        IndexEntry(i + 1, "new", SignalType.PDQ, h, None, None, []) for i, h in enumerate(hexes)
    ]
    revision = {e.id: 2 for e in entries}
    c0, t0 = time.process_time(), time.perf_counter()
    found: dict[int, list[tuple[int, int]]] = {}
    nm = NewEntries(1, 2, Matcher.from_entries(entries), revision, 0, entries)
    for row, ms in dataset_matches(root, nm, RematchOptions()):
        i = int(str(row["uri"]).rsplit("/", 1)[1])
        found[i] = [(m.entry_id - 1, m.distance) for m in ms]
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    rate = n_stored / cpu
    print(f"  join: {wall:.1f} s wall, {cpu:.1f} CPU-s: {rate:,.0f} stored signals/s per core")
    # Brute force on a sample (and its recall check), then every planted pair.
    idx = rng.choice(n_stored, sample, replace=False)
    c0 = time.process_time()
    brute = _brute(stored[idx], new, 31)
    bcpu = time.process_time() - c0
    brate = sample / bcpu
    print(f"  numpy brute force: {brate:,.0f} stored signals/s per core ({sample} sampled)")
    want = {(int(idx[i]), j, d) for i, j, d in brute}
    for j, t in enumerate(targets.tolist()):
        d = int(np.unpackbits(stored[t] ^ new[j]).sum())
        if d <= 31:
            want.add((t, j, d))
    checked = {i for i, _, _ in want} | {int(i) for i in idx}
    got = {(i, j, d) for i in checked for j, d in found.get(i, [])}
    recall = len(got & want) / len(want) if want else 1.0
    extra = len(got - want)
    print(f"  recall at 31: {recall:.4f} over {len(want)} true pairs, {extra} false")
    return {
        "stored": n_stored,
        "new": n_new,
        "join_wall": wall,
        "join_cpu": cpu,
        "rate": rate,
        "brute_rate": brate,
        "speedup": rate / brate,
        "recall": recall,
        "false": extra,
        "pairs": len(want),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench_backscan")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--images", type=int, default=None)
    ap.add_argument("--stored", type=int, default=None)
    ap.add_argument("--new", type=int, default=100_000)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--only", choices=["hashing", "rematch"], default=None)
    args, _ = ap.parse_known_args(argv)
    n_images = args.images or (200 if args.quick else 2_000)
    n_stored = args.stored or (1_000_000 if args.quick else 10_000_000)
    work = Path(os.environ.get("BASTION_BENCH_WORK") or tempfile.gettempdir()) / "bench-backscan"
    work.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# Back-scan benchmark, {date.today()}",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "",
    ]
    if args.only in (None, "hashing"):
        print("hashing throughput:", flush=True)
        rows = hashing(n_images, args.cores, not args.no_ray, work)
        base = rows[0][2]
        lines += [
            f"{n_images} synthetic images (mix up to 12 MP), {args.cores} workers each:",
            "",
            "| run | wall s | objects/s per core | vs bastion scan |",
            "| --- | ---: | ---: | ---: |",
        ]
        lines += [f"| {n} | {w:.1f} | {r:.2f} | {r / base:.0%} |" for n, w, r in rows]
        lines.append("")
    if args.only in (None, "rematch"):
        print("re-match:", flush=True)
        import numba

        numba.set_num_threads(1)  # per core: the index kernels run on one thread
        r = rematch_bench(n_stored, args.new, 2_000 if args.quick else 5_000, work)
        lines += [
            f"Re-match of {r['stored']:,} stored PDQ signals against {r['new']:,} new entries, "
            "one core:",
            "",
            "| run | stored signals/s per core | recall at 31 |",
            "| --- | ---: | ---: |",
            f"| Bastion re-match join | {r['rate']:,.0f} | {r['recall']:.4f} "
            f"({r['pairs']} pairs, {r['false']} false) |",
            f"| numpy brute force | {r['brute_rate']:,.0f} | 1 (by definition) |",
            "",
            f"Speed-up over brute force: {r['speedup']:.0f}x.",
        ]
        print(json.dumps(r))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
