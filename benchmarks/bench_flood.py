"""Flood protection (issue 16): benign uploads that all match one planted colliding entry.

`python -m benchmarks.bench_flood [--uploads 10000] [--rate 100] [--quick]
[--backends sqlite,postgres]`

A bank labelled ``csam`` holds one PDQ entry planted 8 bits from a benign photo (what a poisoned
or colliding hash looks like to the index); under the default policy a match blocks at once
(``csam-confident``: remove_content and preserve). ``--uploads`` distinct benign files (the
photo at 128x128 with one pixel changed per upload, so every file has its own bytes and nearly
the same PDQ), each from its own uploader, go through ``POST /v1/scan`` (the real app in
process, FastAPI's TestClient, a fresh database) one after another. For each database:

* **flood protection**: the bank's ``expected_rate`` is ``--rate`` matches per entry and hour.
  Reported: the time from the first upload's request to the entry's quarantine (its
  ``quarantined_at``), how many uploads came before it, and how many automatic actions were
  queued in the webhook outbox (goal: at most the rate's worth of blocked uploads);
* **no flood protection** (baseline, same run): the same uploads against the same bank without
  an expected rate, into another fresh database: every upload acts.

Both report scans/s, so the cost of counting matches shows beside the baseline. Prints markdown;
writes benchmarks/results/flood.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "flood.md"
PHOTO = REPO / "tests" / "data" / "images" / "bridge-mods" / "aaa-orig.jpg"
PG_URL = os.environ.get(
    "BASTION_BENCH_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"
)


def uploads(n: int) -> list[bytes]:
    """``n`` distinct benign JPEGs of one small picture: one pixel differs in each."""
    base = Image.open(PHOTO).convert("RGB").resize((128, 128))
    out = []
    for i in range(n):
        img = base.copy()
        img.putpixel((i % 128, (i // 128) % 128), ((i * 7) % 256, (i * 13) % 256, i % 256))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def _flip(hexval: str, bits: int) -> str:
    return f"{int(hexval, 16) ^ (((1 << bits) - 1) << (256 - bits)):064x}"


def run(kind: str, tmp: Path, files: list[bytes], rate: int | None) -> dict[str, Any]:
    from bastion.config import Settings
    from bastion.db import Store
    from bastion.server import create_app
    from bastion.signals import pdq_from_bytes

    schema = None
    if kind == "sqlite":
        store = Store.open(f"sqlite:///{tmp / f'flood-{rate}.db'}")
    else:
        schema = f"bench_flood_{uuid.uuid4().hex[:8]}"
        store = Store.open(PG_URL, schema=schema)
    try:
        settings = Settings(rate_limit_per_minute=0, index_poll_seconds=3600)
        with TestClient(create_app(settings, store=store)) as client:
            _, token = store.create_api_key("bench", {"admin"})
            auth = {"Authorization": f"Bearer {token}"}
            planted = _flip(pdq_from_bytes(files[0])[0], 8)
            body: dict[str, Any] = {"name": "shared", "labels": ["csam"]}
            if rate is not None:
                body["expected_rate"] = rate
            assert client.post("/v1/banks", headers=auth, json=body).status_code == 201
            r = client.post(
                "/v1/banks/shared/entries",
                headers=auth,
                json={"entries": [{"signal_type": "pdq", "value": planted}]},
            )
            assert r.status_code == 200 and r.json()["added"] == 1, r.text
            decisions: dict[str, int] = {}
            first_review = None
            start_wall = datetime.now(UTC)
            t0 = time.perf_counter()
            for i, data in enumerate(files):
                ctx = json.dumps({"content_id": f"c-{i}", "uploader_id": f"u-{i}"})
                r = client.post(
                    "/v1/scan",
                    headers=auth,
                    files={"file": ("upload.jpg", data)},
                    data={"context": ctx},
                )
                assert r.status_code == 200, r.text
                got = r.json()
                assert got["matches"], "every upload must match the planted entry"
                decision = got["verdict"]["decision"]
                decisions[decision] = decisions.get(decision, 0) + 1
                if decision == "review" and first_review is None:
                    first_review = i
            wall = time.perf_counter() - t0
        with store.engine.connect() as conn:
            actions = conn.execute(sa.text("SELECT count(*) FROM outbox")).scalar_one()
        held = store.quarantined()
        to_quarantine = (held[0].quarantined_at - start_wall).total_seconds() if held else None
        return {
            "backend": kind,
            "rate": rate,
            "uploads": len(files),
            "wall": wall,
            "scans_per_s": len(files) / wall,
            "decisions": decisions,
            "actions": int(actions),
            "blocked": decisions.get("block", 0),
            "uploads_before": first_review,
            "to_quarantine": to_quarantine,
        }
    finally:
        store.close()
        if schema is not None:
            engine = sa.create_engine(PG_URL)
            with engine.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=10_000)
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--quick", action="store_true", help="1,000 uploads, rate 20")
    args, _ = parser.parse_known_args(argv)
    if args.quick:
        args.uploads, args.rate = 1_000, 20
    files = uploads(args.uploads)
    rows = []
    with tempfile.TemporaryDirectory() as tmpdir:
        for backend in args.backends.split(","):
            kind = "sqlite" if backend.startswith("sqlite") else "postgres"
            for rate in (args.rate, None):
                res = run(kind, Path(tmpdir), files, rate)
                rows.append(res)
                print(json.dumps(res), flush=True)
    lines = [
        f"Flood protection: {args.uploads:,} benign uploads matching one planted entry "
        f"(expected rate {args.rate}/h); {platform.machine()}, {os.cpu_count()} cores, "
        f"{datetime.now(UTC):%Y-%m-%d}",
        "",
        "| database | flood protection | scans/s | blocked (acted) | outbox actions | uploads "
        "before quarantine | first upload to quarantine |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        prot = f"expected_rate {r['rate']}/h" if r["rate"] else "off (baseline)"
        before = "-" if r["uploads_before"] is None else f"{r['uploads_before']:,}"
        took = "-" if r["to_quarantine"] is None else f"{r['to_quarantine']:.2f} s"
        lines.append(
            f"| {r['backend']} | {prot} | {r['scans_per_s']:.1f} | {r['blocked']:,} | "
            f"{r['actions']:,} | {before} | {took} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    met = all(r["blocked"] <= r["rate"] for r in rows if r["rate"])
    print(
        "goal (automatic actions before quarantine <= expected rate):", "met" if met else "NOT met"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
