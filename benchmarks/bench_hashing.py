"""Hashing throughput: Bastion's PDQ pipeline beside plain Pillow + pdqhash and pytx.

`python -m benchmarks.bench_hashing [--quick]`. One core (the process is pinned to one CPU where
the OS allows), CPU time measured with ``time.process_time``. Test JPEGs are synthesised from the
benign bridge photo in tests/data: upscaled, with per-pixel noise so the entropy coder sees
camera-like texture, saved at quality 90. Also reports the PDQ distance of the fast pipeline to the
full-decode hash, and vPDQ video throughput (seconds of video hashed per CPU-second, 1 frame/s).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pdqhash
from PIL import Image

from bastion.signals.pdq import hamming, pdq_from_bytes
from bastion.signals.video import vpdq_frames

REPO = Path(__file__).resolve().parents[1]
#: The benign media: tests/data (see its SOURCES.md), or a folder laid out the same way (images/,
#: videos/) with Meta's full-size files, which docs/benchmarks.md's figures were measured on.
TESTDATA = Path(os.environ.get("BASTION_BENCH_MEDIA") or REPO / "tests" / "data")
RESULTS = REPO / "benchmarks" / "results" / "hashing.md"
SIZES = {"small (256 px)": (256, 192), "medium (1 MP)": (1155, 866), "large (12 MP)": (4000, 3000)}


@dataclass
class Row:
    name: str
    cells: list[str]


def synth_jpegs(size: tuple[int, int], count: int, seed: int = 0) -> list[bytes]:
    """Distinct quality-90 JPEGs of ``size`` made from the bridge photo (crop, scale, noise)."""
    with Image.open(TESTDATA / "images/bridge-mods/aaa-orig.jpg") as src:
        src = src.convert("RGB")
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        w, h = src.size
        dx, dy = int(rng.integers(0, w // 10)), int(rng.integers(0, h // 10))
        crop = src.crop((dx, dy, dx + w * 9 // 10, dy + h * 9 // 10))
        if i % 2:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        img = np.asarray(crop.resize(size, Image.Resampling.BICUBIC)).astype(np.int16)
        noise = rng.normal(0, 3.0, (size[1], size[0], 1)).astype(np.int16)
        img = np.clip(img + noise, 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def full_decode(data: bytes) -> tuple[str, int]:
    """Plain Pillow + pdqhash: decode everything, hash everything."""
    with Image.open(io.BytesIO(data)) as img:
        bits, quality = pdqhash.compute(np.asarray(img.convert("RGB")))
    return np.packbits(bits.astype(np.uint8)).tobytes().hex(), int(quality)


def pytx_hasher() -> Callable[[bytes], object] | None:
    try:
        from threatexchange.signal_type.pdq.signal import PdqSignal
    except ImportError:
        return None
    return PdqSignal.hash_from_bytes


def rate(fn: Callable[[bytes], object], datas: list[bytes], min_seconds: float) -> float:
    """Items per CPU-second, repeating the set until ``min_seconds`` of CPU time is spent."""
    fn(datas[0])  # warm caches and lazy imports
    n = 0
    start = time.process_time()
    while True:
        for d in datas:
            fn(d)
        n += len(datas)
        spent = time.process_time() - start
        if spent >= min_seconds:
            return n / spent


def image_benchmark(quick: bool) -> tuple[list[Row], list[Row]]:
    count = 2 if quick else 6
    min_seconds = 0.5 if quick else 3.0
    pipelines: dict[str, Callable[[bytes], object]] = {
        "Bastion default (DCT-scaled)": pdq_from_bytes,
        "Pillow full decode + pdqhash": full_decode,
    }
    pytx = pytx_hasher()
    if pytx is not None:
        pipelines["python-threatexchange PdqSignal.hash_from_bytes"] = pytx
    speed = {name: Row(name, []) for name in pipelines}
    drift: list[Row] = []
    for label, size in SIZES.items():
        datas = synth_jpegs(size, count, seed=size[0])
        for name, fn in pipelines.items():
            speed[name].cells.append(f"{rate(fn, datas, min_seconds):.1f}")
        dists = [hamming(pdq_from_bytes(d)[0], full_decode(d)[0]) for d in datas]
        drift.append(Row(f"synthetic {label}", _dist_cells(dists)))
    photos = sorted((TESTDATA / "images").rglob("*.jpg"))
    dists = []
    for p in photos:
        data = p.read_bytes()
        with Image.open(io.BytesIO(data)) as img:
            if img.getexif().get(0x0112, 1) != 1:
                continue  # the default pipeline rotates these; compared in tests instead
        ref, quality = full_decode(data)
        if quality >= 80:
            dists.append(hamming(pdq_from_bytes(data)[0], ref))
    drift.append(Row(f"test photos, quality >= 80 (n={len(dists)})", _dist_cells(dists)))
    return list(speed.values()), drift


def _dist_cells(dists: list[int]) -> list[str]:
    return [f"{statistics.mean(dists):.2f}", str(max(dists))]


def video_benchmark(quick: bool) -> list[Row]:
    videos = sorted((TESTDATA / "videos").glob("*.mp4"))
    if quick:
        videos = videos[:3]
    rows = []
    total_video = total_cpu = 0.0
    for path in videos:
        start = time.process_time()
        frames = vpdq_frames(path, seconds_per_hash=1.0, threads=1)
        cpu = time.process_time() - start
        seconds = frames[-1].timestamp + 1.0
        total_video += seconds
        total_cpu += cpu
        rows.append(Row(path.name, [f"{seconds:.0f}", f"{cpu:.2f}", f"{seconds / cpu:.1f}"]))
    rows.append(
        Row(
            "**all**",
            [f"{total_video:.0f}", f"{total_cpu:.2f}", f"{total_video / total_cpu:.1f}"],
        )
    )
    return rows


def table(header: list[str], rows: list[Row]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join([r.name, *r.cells]) + " |" for r in rows]
    return "\n".join(lines)


def pin_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    return "not pinned"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_hashing", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--out", type=Path, default=RESULTS, help="markdown results file")
    parser.add_argument("--no-video", action="store_true")
    args, _ = parser.parse_known_args(argv)
    if not TESTDATA.is_dir():
        print(f"test media not found at {TESTDATA}", file=sys.stderr)
        return 2
    pinned = pin_one_core()
    speed, drift = image_benchmark(args.quick)
    parts = [
        f"# Hashing benchmark ({date.today().isoformat()}{', quick' if args.quick else ''})",
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"one core ({pinned}); rates are per CPU-second.",
        "## PDQ images/s (synthetic quality-90 JPEGs)",
        table(["pipeline", *SIZES], speed),
        "## PDQ distance, default pipeline vs full decode",
        table(["images", "mean", "max"], drift),
    ]
    if not args.no_video:
        parts += [
            "## vPDQ (1 frame/s, 1 decoder thread)",
            table(["video", "video s", "CPU s", "video s per CPU s"], video_benchmark(args.quick)),
        ]
    report = "\n\n".join(parts) + "\n"
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
