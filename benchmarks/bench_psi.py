"""Private matching for E2EE messaging: client cost, voucher size, server cost, pdata size, and the
near-match recall on the test photos' edits beside plain PDQ at distance <= 31, for every mode
(compact with several probe counts, near, exact) in one run.

`python -m benchmarks.bench_psi [--quick] [--entries N]`. Client and server times are CPU time on
one core (``time.process_time``, the process pinned to one CPU). The pdata size comes from a real
cuckoo placement of N random PDQ hashes (1M by default); computing the blinded points for all of
them is timed on a sample and extrapolated (one scalar multiplication per key).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from bastion.client import Account, Bounds, Client, Params, PData, hash_image
from bastion.client.locality import bank_keys, probe_keys
from bastion.client.pdata import serialize
from bastion.client.voucher import voucher_bytes
from bastion.psi import ServerSecret, build_pdata, open_voucher
from bastion.psi.build import buckets_for, hash_matrix, place, table_keys
from bastion.signals.pdq import pdq_from_bytes
from benchmarks.bench_hashing import TESTDATA, Row, pin_one_core, synth_jpegs, table

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "psi.md"
ORIGINALS = [
    "bridge-mods/aaa-orig.jpg",
    "misc-images/wee.jpg",
    *(
        f"reg-test-input/labelme-subset/{n}.jpg"
        for n in ("q0122", "q0291", "q0746", "q1050", "q2821")
    ),
    *(f"reg-test-input/exif-rotn/exif-rotn-{i}.jpg" for i in (1, 3, 6, 8)),
]
DEFAULT = "compact, 52 bits, 12 probes (default)"
CONFIGS = {
    "compact, 52 bits, 8 probes": Params.for_mode("compact", probes=8, max_flips=2, weak_bits=8),
    DEFAULT: Params(),
    "compact, 52 bits, 16 probes": Params.for_mode("compact", probes=16),
    "compact, 52 bits, 32 probes": Params.for_mode("compact", probes=32, weak_bits=12),
    "compact, 64 bits, 16 probes": Params.for_mode("compact", probes=16, key_bits=64),
    "near, 5 chunks, 8 probes": Params.for_mode("near"),
    "near, 5 chunks, 16 probes": Params.for_mode("near", probes=16),
    "near, 6 chunks, 8 probes": Params.for_mode("near", chunks=6),
    "exact (one key per hash)": Params.for_mode("exact"),
}
#: The modes whose client, server and size figures are measured (recall: every config).
COST_CONFIGS = [
    "compact, 52 bits, 8 probes",
    DEFAULT,
    "compact, 52 bits, 16 probes",
    "compact, 52 bits, 32 probes",
    "near, 5 chunks, 8 probes",
    "exact (one key per hash)",
]
#: Only Params' structural limits: the benchmark measures configurations a real client refuses
#: (32 probes of 52 bits; a threshold of 1000 so that nothing opens). Never in an app.
BENCH_BOUNDS = Bounds(
    threshold=(2, 1000),
    synthetic_ppm=(0, 500_000),
    dhf_dim=(1, 512),
    epoch_seconds=(3600, 366 * 86400),
    ad_bytes=(512, 1 << 20),
    min_quality=(0, 100),
    probes=(1, 64),
    probe_bits=0.0,
    bucket_size=(1, 8),
    max_slots=1 << 31,
)


def _device(blob: bytes, root: str) -> Client:
    """A client as an app makes one: the table loaded against its published root."""
    pdata = PData.from_bytes(blob, expected_root=root, bounds=BENCH_BOUNDS)
    return Client(pdata, "user-1", Account.new())


def _cpu_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()
    start = time.process_time()
    for _ in range(repeat):
        fn()
    return (time.process_time() - start) / repeat * 1000


def _random_hashes(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [rng.randbytes(32).hex() for _ in range(n)]


# -- client and server -------------------------------------------------------------------------
def real_photos() -> tuple[str, list[bytes]]:
    """The EXIF phone photos, labelled with their size: 12 MP in Meta's originals, 0.8 MP in the
    reduced copies tests/data keeps (BASTION_BENCH_MEDIA points at the originals)."""
    paths = sorted((TESTDATA / "images/reg-test-input/exif-rotn").glob("*.jpg"))
    with Image.open(paths[0]) as img:
        megapixels = img.width * img.height / 1e6
    return f"real {megapixels:.1f} MP phone photo", [p.read_bytes() for p in paths]


def client_server(quick: bool) -> tuple[list[Row], list[Row], dict[str, float]]:
    bank = _random_hashes(2000 if quick else 20_000, 1)
    secret = ServerSecret.generate()
    params = CONFIGS[DEFAULT]
    pdata, _ = build_pdata(bank, params, secret)
    client = _device(pdata.blob, pdata.root)
    photos = synth_jpegs((4000, 3000), 2 if quick else 6, seed=12)
    real_label, real = real_photos()
    repeat = 1 if quick else 3
    rows = []
    figures: dict[str, float] = {}
    for label, datas in [
        ("synthetic 12 MP JPEG (2.3 MB)", photos),
        (real_label, real),
    ]:
        hashed = [hash_image(d) for d in datas]
        plain = statistics.mean(_cpu_ms(lambda d=d: pdq_from_bytes(d), repeat) for d in datas)
        h_ms = statistics.mean(_cpu_ms(lambda d=d: hash_image(d), repeat) for d in datas)
        v_ms = statistics.mean(
            _cpu_ms(lambda h=h: client.voucher_for_hash(h, "item"), repeat * 5) for h in hashed
        )
        total = statistics.mean(
            _cpu_ms(lambda d=d: client.voucher_for_image(d, "msg-1/att-0"), repeat) for d in datas
        )
        rows.append(Row(label, [f"{plain:.1f}", f"{h_ms:.1f}", f"{v_ms:.2f}", f"**{total:.1f}**"]))
        figures[f"client {label}"] = total
    size = voucher_bytes(params, "user-1")
    figures["voucher bytes"] = size
    # Server: one voucher at a time, crypto only, then through the store (SQLite, batches of 100).
    members = [client.voucher_for_hash(h, "m").data for h in bank[:100]]
    others = [client.voucher_for_hash(h, "m").data for h in _random_hashes(100, 2)]
    match_ms = _cpu_ms(lambda: [open_voucher(v, secret.scalar, params) for v in members], 1) / 100
    miss_ms = _cpu_ms(lambda: [open_voucher(v, secret.scalar, params) for v in others], 1) / 100
    store_ms = _store_ms(bank)
    server = [
        Row(
            f"voucher that matches nothing (all {params.probes} probes tried)",
            [f"**{miss_ms:.3f}**"],
        ),
        Row("voucher that matches (stops at the first hit)", [f"{match_ms:.3f}"]),
        Row("`VoucherStore.submit`, SQLite, batches of 100 (wall, incl. DB)", [f"{store_ms:.3f}"]),
    ]
    figures["server miss"] = miss_ms
    return rows, server, figures


def mode_costs(quick: bool) -> list[Row]:
    """Per mode: voucher bytes, client voucher crypto and total per real phone photo (hash,
    derivative, voucher), server time per voucher (miss: every probe tried; match)."""
    bank = _random_hashes(2000 if quick else 20_000, 1)
    _, real = real_photos()
    if quick:
        real = real[:2]
    hashed = [hash_image(d) for d in real]
    rows = []
    for label in COST_CONFIGS:
        params = CONFIGS[label]
        secret = ServerSecret.generate()
        pdata, _ = build_pdata(bank, params, secret)
        client = _device(pdata.blob, pdata.root)
        crypto = statistics.mean(
            _cpu_ms(lambda h=h, c=client: c.voucher_for_hash(h, "item"), 3 if quick else 10)
            for h in hashed
        )
        total = statistics.mean(
            _cpu_ms(lambda d=d, c=client: c.voucher_for_image(d, "m/a-0"), 1 if quick else 3)
            for d in real
        )
        members = [client.voucher_for_hash(h, "m").data for h in bank[:100]]
        others = [client.voucher_for_hash(h, "m").data for h in _random_hashes(100, 2)]
        n = len(members)
        miss = _cpu_ms(partial(_open_all, others, secret.scalar, params), 2) / n
        match = _cpu_ms(partial(_open_all, members, secret.scalar, params), 2) / n
        rows.append(
            Row(
                label,
                [
                    str(params.probes),
                    f"{voucher_bytes(params, 'user-1'):,}",
                    f"{crypto:.2f}",
                    f"{total:.1f}",
                    f"{miss:.3f}",
                    f"{match:.3f}",
                ],
            )
        )
    return rows


def _open_all(blobs: list[bytes], scalar: bytes, params: Params) -> None:
    for blob in blobs:
        open_voucher(blob, scalar, params)


def _store_ms(bank: list[str]) -> float:
    """Per-voucher wall time through the store, with its own table built from ``bank``."""
    import base64

    from bastion.banks.model import NewEntry
    from bastion.config import Settings
    from bastion.crypto import MasterKey
    from bastion.db import Store
    from bastion.psi.store import VoucherStore
    from bastion.signals.base import SignalType

    with tempfile.TemporaryDirectory() as tmp, Store.open(f"sqlite:///{tmp}/b.db") as store:
        store.create_bank("bench")
        store.add_entries("bench", [NewEntry(SignalType.PDQ, h) for h in bank])
        settings = Settings(
            secret_key=base64.b64encode(os.urandom(32)).decode(),
            voucher_rate_per_hour=0,
            voucher_threshold=1000,
        )
        vs = VoucherStore(store, MasterKey.generate(), settings)
        vs.build_table(actor="bench")
        info = vs.current_table()
        client = _device(vs.table_blob(info.id), info.root)
        # Accepted beside their sender and processed at once (the worker's step), as one cost.
        blobs = [(client.account_id, client.voucher_for_hash(h, "m").data) for h in bank[:50]]
        blobs += [
            (client.account_id, client.voucher_for_hash(h, "m").data)
            for h in _random_hashes(150, 3)
        ]
        start = time.perf_counter()
        for i in range(0, len(blobs), 100):
            vs.submit(blobs[i : i + 100], actor="bench", verify=lambda _: [])
        return (time.perf_counter() - start) / len(blobs) * 1000


# -- pdata size ----------------------------------------------------------------------------
def pdata_size(entries: int) -> list[Row]:
    hashes = hash_matrix(_random_hashes(entries, 5))
    secret = ServerSecret.generate()
    rows = []
    for label in (DEFAULT, "near, 5 chunks, 8 probes", "exact (one key per hash)"):
        params = CONFIGS[label]
        start = time.process_time()
        keys, dropped = table_keys(hashes, params)
        n_buckets = buckets_for(len(keys), params.bucket_size, 0.85)
        seed = os.urandom(16)
        table_ = place(keys, n_buckets, params.bucket_size, seed)
        assert table_ is not None, "placement failed"
        placed = time.process_time() - start
        sample = keys[:5000]
        t0 = time.process_time()
        for k in sample:
            secret.blind(k)
        per_key = (time.process_time() - t0) / len(sample)
        blob = len(
            serialize(
                params,
                n_buckets=n_buckets,
                seed=seed,
                public=secret.public,
                created=0,
                label="",
                slots=bytes(n_buckets * params.bucket_size * 32),
            )
        )
        per_million = blob / entries * 1_000_000
        rows.append(
            Row(
                label,
                [
                    f"{entries:,}",
                    f"{len(keys):,}",
                    f"{dropped:,}",
                    f"{len(keys) / len(table_):.3f}",
                    f"{per_million / 1e6:.1f} MB",
                    f"**{blob / entries:.1f}**",
                    f"{placed:.0f} s + {per_key * len(keys):.0f} s",
                ],
            )
        )
    return rows


# -- near-match recall ------------------------------------------------------------------------
def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _jpeg(img: Image.Image, q: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=q)
    return buf.getvalue()


def generated_edits(img: Image.Image) -> dict[str, bytes]:
    """Everyday edits of a photo (re-encode, resize, crop, blur, tone, small rotation, noise)."""
    img = img.convert("RGB")
    w, h = img.size
    out = {f"jpeg{q}": _jpeg(img, q) for q in (30, 50, 75, 95)}
    for s in (0.25, 0.5, 0.75):
        out[f"scale{s}"] = _png(img.resize((max(8, int(w * s)), max(8, int(h * s)))))
    for c in (0.02, 0.05, 0.1):
        out[f"crop{c}"] = _png(img.crop((int(w * c), int(h * c), w - int(w * c), h - int(h * c))))
    for r in (1, 2, 3):
        out[f"blur{r}"] = _png(img.filter(ImageFilter.GaussianBlur(r)))
    for e in (0.7, 1.3):
        out[f"bright{e}"] = _png(ImageEnhance.Brightness(img).enhance(e))
        out[f"contrast{e}"] = _png(ImageEnhance.Contrast(img).enhance(e))
    for a in (2, 5):
        out[f"rot{a}"] = _png(img.rotate(a, resample=Image.Resampling.BICUBIC))
    out["grey"] = _png(img.convert("L"))
    rng = np.random.default_rng(0)
    noisy = np.asarray(img).astype(float) + rng.normal(0, 8, np.asarray(img).shape)
    out["noise8"] = _png(Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)))
    return out


def edit_pairs(quick: bool) -> list[tuple[str, str, object, object]]:
    """(source, edit name, bank hash of the original, client hash of the edit)."""
    images = TESTDATA / "images"
    pairs = []
    orig = hash_image((images / "bridge-mods/aaa-orig.jpg").read_bytes())
    reference = sorted((images / "bridge-mods").glob("*.jpg")) + sorted(
        (images / "misc-images/modes").iterdir()
    )
    for p in reference:
        if p.name != "aaa-orig.jpg":
            pairs.append((ORIGINALS[0], p.name, orig, hash_image(p.read_bytes())))
    for name in ORIGINALS[: 4 if quick else None]:
        data = (images / name).read_bytes()
        base = hash_image(data)
        with Image.open(io.BytesIO(data)) as img:
            img = ImageOps.exif_transpose(img)
            for edit, blob in generated_edits(img).items():
                pairs.append((name, edit, base, hash_image(blob)))
    return pairs


def recall(quick: bool) -> tuple[list[Row], str]:
    pairs = edit_pairs(quick)
    usable = [p for p in pairs if p[3].quality >= 50 and p[2].quality >= 50]
    within = [p for p in usable if _dist(p[2].hash, p[3].hash) <= 31]
    rows = [
        Row(
            "plain PDQ, distance <= 31 (baseline)",
            ["1.000", f"{len(within)} / {len(within)}", "-", "-"],
        )
    ]
    sources = {p[0]: p[2] for p in usable}
    for label, params in CONFIGS.items():
        bank = {}
        for src, base in sources.items():
            for k in bank_keys(base.hash, params):
                bank.setdefault(k, set()).add(src)
        hits = beyond = 0
        for src, _, base, edit in usable:
            found = set()
            for k in probe_keys(edit.hash, edit.floats, params):
                found |= bank.get(k, set())
            if src in found:
                if _dist(base.hash, edit.hash) <= 31:
                    hits += 1
                else:
                    beyond += 1
        cross = sum(
            1
            for src, _, _, edit in usable
            for k in probe_keys(edit.hash, edit.floats, params)
            for other in bank.get(k, ())
            if other != src
        )
        rows.append(
            Row(
                label,
                [f"{hits / len(within):.3f}", f"{hits} / {len(within)}", str(beyond), str(cross)],
            )
        )
    note = (
        f"{len(pairs)} edit pairs ({len(pairs) - len(usable)} skipped: PDQ quality < 50), "
        f"{len(within)} of the usable {len(usable)} within distance 31 of their original"
    )
    return rows, note


def _dist(a: bytes, b: bytes) -> int:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_psi", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--entries", type=int, default=None, help="bank size for the pdata size")
    parser.add_argument("--out", type=Path, default=RESULTS, help="markdown results file")
    args, _ = parser.parse_known_args(argv)
    if not TESTDATA.is_dir():
        print(f"test media not found at {TESTDATA}", file=sys.stderr)
        return 2
    pinned = pin_one_core()
    entries = args.entries or (100_000 if args.quick else 1_000_000)
    client_rows, server_rows, figures = client_server(args.quick)
    cost_rows = mode_costs(args.quick)
    size_rows = pdata_size(entries)
    recall_rows, recall_note = recall(args.quick)
    parts = [
        f"# E2EE private matching benchmark ({date.today().isoformat()}"
        f"{', quick' if args.quick else ''})",
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"one core ({pinned}); CPU time per item.",
        "## Client, per image (ms)",
        table(
            ["image", "plain PDQ (baseline)", "hash + floats", "voucher crypto", "total"],
            client_rows,
        ),
        f"Voucher: {int(figures['voucher bytes']):,} bytes (default parameters, 8 KiB for the "
        "item id and derivative).",
        "## Every mode: voucher size, client and server time",
        table(
            [
                "mode",
                "probes",
                "voucher bytes",
                "client voucher crypto (ms)",
                f"client total, {real_photos()[0]} (ms)",
                "server, no match (ms)",
                "server, match (ms)",
            ],
            cost_rows,
        ),
        "## Server, per voucher (ms)",
        table(["case", "ms"], server_rows),
        "## pdata size",
        table(
            [
                "mode",
                "entries",
                "keys",
                "near keys dropped",
                "load",
                "per 1M entries",
                "bytes/entry",
                "build (place + blind, est.)",
            ],
            size_rows,
        ),
        "## Near-match recall on the test photos' edits",
        recall_note + ".",
        table(
            ["scheme", "recall vs PDQ <= 31", "found", "hits beyond 31", "cross-image hits"],
            recall_rows,
        ),
    ]
    report = "\n\n".join(parts) + "\n"
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
