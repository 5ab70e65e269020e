"""One back-scan run from start to summary: plan the directory (or pick up its plan), hash and
match the shards not yet done, and total what the dataset holds."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bastion.backscan.dataset import Dataset, DatasetError
from bastion.backscan.engine import Progress, RunOptions, run_shards
from bastion.backscan.model import Tally, algorithms
from bastion.backscan.sources import DEFAULT_MAX_OBJECT_BYTES, HashJob, is_s3, list_source
from bastion.index.matcher import Matcher
from bastion.signals import HashOptions

DEFAULT_SHARD_SIZE = 256


@dataclass(frozen=True)
class Request:
    source: str
    out: Path
    run: RunOptions
    dihedral: bool = False
    endpoint_url: str | None = None
    shard_size: int = DEFAULT_SHARD_SIZE
    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES
    hash_options: HashOptions | None = None


def canonical_source(source: str) -> str:
    return source if is_s3(source) else str(Path(source).resolve())


def plan(ds: Dataset, req: Request) -> dict[str, Any]:
    """The directory's run record: made now (listing the source) or, on a restart, the one
    already there, which must be for the same source and hashing options."""
    source = canonical_source(req.source)
    wanted = {"source": source, "dihedral": req.dihedral, "format": 1}
    run = ds.run()
    if run is not None:
        for key, value in wanted.items():
            if run.get(key) != value:
                raise DatasetError(
                    f"{ds.root} holds a back-scan of {run.get('source')} "
                    f"(dihedral={run.get('dihedral')}); use another --out directory"
                )
        return run
    objects = list_source(source, endpoint_url=req.endpoint_url)
    return ds.plan(objects, wanted, req.shard_size)


def execute(
    ds: Dataset,
    req: Request,
    matcher: Matcher,
    revision: int,
    *,
    on_progress: Progress | None = None,
) -> dict[str, Any]:
    """Run the pending shards and return the run's summary (also written to summary.json)."""
    started = time.monotonic()
    run = ds.run()
    assert run is not None, "plan() first"
    job = HashJob(
        dihedral=bool(run["dihedral"]),
        hash_options=req.hash_options,
        endpoint_url=req.endpoint_url,
        max_object_bytes=req.max_object_bytes,
    )
    algos = algorithms(req.hash_options, dihedral=job.dihedral)
    skipped = len(ds.done())
    this_run = run_shards(ds, job, algos, matcher, revision, req.run, on_progress=on_progress)
    elapsed = time.monotonic() - started
    total = ds.tally()
    summary = summary_doc(run, total, this_run, elapsed, revision, skipped, req.run)
    ds.write_summary(summary)
    return summary


def summary_doc(
    run: dict[str, Any],
    total: Tally,
    this_run: Tally,
    elapsed: float,
    revision: int,
    skipped: int,
    opts: RunOptions,
) -> dict[str, Any]:
    rate = this_run.objects / elapsed if elapsed > 0 else 0.0
    return {
        "source": run["source"],
        "shards": int(run["shards"]),
        "objects_planned": int(run["objects"]),
        "complete": total.shards == int(run["shards"]),
        "total": total.as_dict(),
        "this_run": {
            **this_run.as_dict(),
            "shards_already_done": skipped,
            "seconds": round(elapsed, 3),
            "objects_per_second": round(rate, 2),
        },
        "bank_revision": revision,
        "lowest_bank_revision": total.lowest_revision
        if total.lowest_revision is not None
        else revision,
        "engine": opts.engine,
        "options": {k: v for k, v in asdict(opts).items() if k not in ("address",)},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
