"""A back-scan's directory: its plan, its output shards and its run record, written so that a run
killed at any instant and started again does each shard exactly once.

Layout under ``DIR``::

    backscan.json            the run: source, options, shard count (written once planning is done)
    plan/shard-000042.parquet   the objects of shard 42 (uri and what the listing knew)
    data/shard-000042.parquet   shard 42's output rows: present = shard done
    summary.json             totals of the last completed run

A shard's output is written to a temporary file in ``data/``, flushed to disk and renamed into
place; the rename is the record that the shard is done, so output and completion are one atomic
step. A half-written shard leaves only a ``.tmp-`` file, removed on the next start, and the shard
is redone. ``pyarrow.dataset.dataset(DIR / "data")`` then reads every object exactly once.
One process at a time holds ``DIR/.lock`` (an OS file lock, released when the process dies).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from bastion.backscan.model import SCHEMA, Tally
from bastion.backscan.sources import PLAN_COLUMNS

PLAN_SCHEMA = pa.schema([(c, pa.int64() if c == "size" else pa.string()) for c in PLAN_COLUMNS])
_SHARD = re.compile(r"^shard-(\d{6,})\.parquet$")
RUN_FILE = "backscan.json"
SUMMARY_FILE = "summary.json"


class DatasetError(ValueError):
    """The directory is in use, or belongs to a different run."""


def shard_name(i: int) -> str:
    return f"shard-{i:06d}.parquet"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, table: pa.Table) -> None:
    """Write ``table`` to ``path`` so that ``path`` exists only complete and on disk."""
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    pq.write_table(table, tmp, compression="zstd")
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def write_json_atomic(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class Dataset:
    """One back-scan directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.plan_dir = self.root / "plan"
        self.data_dir = self.root / "data"
        self._lock: IO[str] | None = None

    # -- locking ------------------------------------------------------------------------------
    def lock(self) -> None:
        """Take the directory for this process; a second run on it is refused, not interleaved."""
        self.root.mkdir(parents=True, exist_ok=True)
        f = open(self.root / ".lock", "a+", encoding="utf-8")  # noqa: SIM115 - held until unlock
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise DatasetError(f"{self.root} is in use by another back-scan") from None
        self._lock = f

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # -- the run record -----------------------------------------------------------------------
    def run(self) -> dict[str, Any] | None:
        """The run record, or None while the directory is not (fully) planned."""
        try:
            return dict(json.loads((self.root / RUN_FILE).read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None

    def summary(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads((self.root / SUMMARY_FILE).read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None

    def write_summary(self, doc: dict[str, Any]) -> None:
        write_json_atomic(self.root / SUMMARY_FILE, doc)

    # -- planning -----------------------------------------------------------------------------
    def plan(
        self, objects: Iterable[dict[str, Any]], run: dict[str, Any], shard_size: int
    ) -> dict[str, Any]:
        """Split the listing into shards and record the run; an unfinished earlier plan (no run
        record yet, so no shard was started) is thrown away first."""
        if self.plan_dir.exists():
            shutil.rmtree(self.plan_dir)
        self.plan_dir.mkdir(parents=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        shards = objects_total = 0
        batch: list[dict[str, Any]] = []

        def flush() -> None:
            nonlocal shards
            table = pa.Table.from_pylist(batch, schema=PLAN_SCHEMA)
            write_atomic(self.plan_dir / shard_name(shards), table)
            shards += 1
            batch.clear()

        for obj in objects:
            batch.append(obj)
            objects_total += 1
            if len(batch) >= shard_size:
                flush()
        if batch:
            flush()
        run = {**run, "shards": shards, "objects": objects_total, "shard_size": shard_size}
        run["planned_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        write_json_atomic(self.root / RUN_FILE, run)
        return run

    def plan_shard(self, i: int) -> list[dict[str, Any]]:
        return pq.read_table(self.plan_dir / shard_name(i)).to_pylist()

    # -- output -------------------------------------------------------------------------------
    def clean(self) -> None:
        """Remove temporary files a killed run left (their shards were never recorded done)."""
        for d in (self.root, self.data_dir, self.plan_dir):
            if d.is_dir():
                for p in d.glob(".tmp-*"):
                    p.unlink(missing_ok=True)

    def done(self) -> set[int]:
        if not self.data_dir.is_dir():
            return set()
        out = set()
        for p in self.data_dir.iterdir():
            m = _SHARD.match(p.name)
            if m:
                out.add(int(m.group(1)))
        return out

    def pending(self) -> list[int]:
        run = self.run()
        if run is None:
            return []
        done = self.done()
        return [i for i in range(int(run["shards"])) if i not in done]

    def commit(self, i: int, rows: list[dict[str, Any]]) -> None:
        """Record shard ``i`` done with its rows, in one atomic rename."""
        write_atomic(self.data_dir / shard_name(i), pa.Table.from_pylist(rows, schema=SCHEMA))

    def iter_rows(self, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        """Every output row, shard by shard, as record batches of the wanted columns."""
        for i in sorted(self.done()):
            pf = pq.ParquetFile(self.data_dir / shard_name(i))
            yield from pf.iter_batches(columns=columns, batch_size=65_536)

    def tally(self) -> Tally:
        """Totals over the shards done so far (reads only the small columns)."""
        t = Tally()
        for i in sorted(self.done()):
            table = pq.read_table(
                self.data_dir / shard_name(i),
                columns=["size", "error", "matched", "matches", "bank_revision"],
            )
            t.add_rows(table.to_pylist())
        return t
