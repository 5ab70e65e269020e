"""Running a back-scan: shards are hashed by a process pool (``local``) or by Ray Data tasks
(``ray``); the driver matches each finished shard against the banks and commits it.

Only the driver writes output, one atomic rename per shard (:class:`Dataset.commit`), so a task
that Ray retries after its worker died, or a pool that is replaced after a crash, can never write
a shard twice; a killed driver leaves every committed shard in place and the next run does the
rest. Hashing is :func:`bastion.backscan.sources.hash_object`, the code ``bastion scan`` runs.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bastion.backscan.dataset import Dataset
from bastion.backscan.model import Tally, hashed_row, with_matches
from bastion.backscan.sources import HashJob, hash_object
from bastion.index.matcher import DEFAULT_PDQ_THRESHOLD, Matcher
from bastion.scan import DEFAULT_FILE_TIMEOUT
from bastion.signals import FileSignals, Signal, SignalType, parse_frames
from bastion.signals.base import DEFAULT_MIN_QUALITY

Engine = Literal["local", "ray"]


@dataclass(frozen=True)
class RunOptions:
    engine: Engine = "local"
    workers: int = 0  # local: processes (0 = one per core)
    address: str | None = None  # ray: cluster address (None = start or join a local one)
    threshold: int = DEFAULT_PDQ_THRESHOLD
    min_quality: int = DEFAULT_MIN_QUALITY
    timeout: float = DEFAULT_FILE_TIMEOUT  # per object, before it is abandoned
    banks: tuple[str, ...] | None = None


# -- worker side --------------------------------------------------------------------------------
def hash_shard(
    shard: int, objects: list[dict[str, Any]], job: HashJob, algos: str
) -> list[dict[str, Any]]:
    """Hash every object of one shard into unmatched rows; a bad object is a row with an error."""
    rows = []
    for obj in objects:
        try:
            fs, version = hash_object(obj, job)
        except Exception as exc:  # a decoder bug costs one object, never the shard
            fs = FileSignals(str(obj["uri"]), "other", 0, [], error=f"hashing failed: {exc}")
            version = None
        rows.append(hashed_row(obj, fs, version, shard, algos))
    return rows


def _hash_plan_shard(
    root: str, shard: int, job: HashJob, algos: str
) -> tuple[int, list[dict[str, Any]]]:
    return shard, hash_shard(shard, Dataset(Path(root)).plan_shard(shard), job, algos)


# -- driver side --------------------------------------------------------------------------------
def row_signals(row: dict[str, Any]) -> list[Signal]:
    """A row's signals, as the matcher takes them."""
    out = []
    for t in (SignalType.MD5, SignalType.SHA256):
        if row.get(str(t)):
            out.append(Signal(t, row[str(t)]))
    if row.get("pdq"):
        out.append(Signal(SignalType.PDQ, row["pdq"], row.get("pdq_quality")))
    if row.get("vpdq"):
        out.append(Signal(SignalType.VPDQ, row["vpdq"], None, parse_frames(row["vpdq"])))
    return out


def match_rows(
    rows: list[dict[str, Any]], matcher: Matcher, revision: int, opts: RunOptions
) -> list[dict[str, Any]]:
    for row in rows:
        matches = matcher.match(
            row_signals(row),
            threshold=opts.threshold,
            min_quality=opts.min_quality,
            dihedral=row.get("pdq_dihedral") or (),
            banks=opts.banks,
        )
        with_matches(row, matches, revision)
    return rows


Progress = Callable[[Tally], None]


def run_shards(
    ds: Dataset,
    job: HashJob,
    algos: str,
    matcher: Matcher,
    revision: int,
    opts: RunOptions,
    *,
    on_progress: Progress | None = None,
) -> Tally:
    """Hash, match and commit every pending shard; returns the totals of this run's shards."""
    pending = ds.pending()
    tally = Tally()
    if not pending:
        return tally
    hashed = (
        _ray_shards(ds, pending, job, algos, opts)
        if opts.engine == "ray"
        else _local_shards(ds, pending, job, algos, opts)
    )
    for shard, rows in hashed:
        rows = match_rows(rows, matcher, revision, opts)
        ds.commit(shard, rows)
        tally.add_rows(rows)
        if on_progress is not None:
            on_progress(tally)
    return tally


def _local_shards(
    ds: Dataset, pending: list[int], job: HashJob, algos: str, opts: RunOptions
) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """Shards hashed on a process pool, in completion order. A worker that dies (a decoder
    crash, the OOM killer, a SIGKILL) costs its shards a retry on a fresh pool; a shard that
    breaks the pool twice, or overruns its time, is redone one object per process so only the
    culprit becomes an error row."""
    nworkers = opts.workers or os.cpu_count() or 1
    root = str(ds.root)
    shard_budget = opts.timeout * int((ds.run() or {}).get("shard_size", 1))
    todo = deque(pending)
    attempts: dict[int, int] = {}
    pool = ProcessPoolExecutor(max_workers=nworkers)
    running: dict[Future[tuple[int, list[dict[str, Any]]]], tuple[int, float]] = {}
    try:
        while todo or running:
            while todo and len(running) < nworkers * 2:
                shard = todo.popleft()
                fut = pool.submit(_hash_plan_shard, root, shard, job, algos)
                running[fut] = (shard, time.monotonic())
            done, _ = wait(list(running), timeout=5.0, return_when=FIRST_COMPLETED)
            broken = False
            for fut in done:
                shard, _started = running.pop(fut)
                try:
                    yield fut.result()
                except BrokenProcessPool:
                    broken = True
                    attempts[shard] = attempts.get(shard, 0) + 1
                    if attempts[shard] >= 2:
                        yield shard, _isolated_shard(ds, shard, job, algos, opts.timeout)
                    else:
                        todo.appendleft(shard)
            overdue = [
                (f, s) for f, (s, t0) in running.items() if time.monotonic() - t0 > shard_budget
            ]
            if broken or overdue:
                _kill(pool)
                for f, (s, _t) in list(running.items()):
                    if (f, s) in overdue:
                        yield s, _isolated_shard(ds, s, job, algos, opts.timeout)
                    else:
                        todo.appendleft(s)
                running.clear()
                pool = ProcessPoolExecutor(max_workers=nworkers)
    finally:
        _kill(pool)


def _hash_one_object(obj: dict[str, Any], job: HashJob) -> tuple[FileSignals, str | None]:
    return hash_object(obj, job)


def _isolated_shard(
    ds: Dataset, shard: int, job: HashJob, algos: str, timeout: float
) -> list[dict[str, Any]]:
    """Each object of a shard in a process of its own, so a crash or hang is pinned on it."""
    rows = []
    for obj in ds.plan_shard(shard):
        solo = ProcessPoolExecutor(max_workers=1)
        version: str | None = None
        try:
            fs, version = solo.submit(_hash_one_object, obj, job).result(timeout=timeout)
        except BrokenProcessPool:
            fs = FileSignals(str(obj["uri"]), "other", 0, [], error="hashing crashed its worker")
        except TimeoutError:
            msg = f"hashing took longer than {timeout:g}s and was stopped"
            fs = FileSignals(str(obj["uri"]), "other", 0, [], error=msg)
        except Exception as exc:
            fs = FileSignals(str(obj["uri"]), "other", 0, [], error=f"hashing failed: {exc}")
        finally:
            _kill(solo)
        rows.append(hashed_row(obj, fs, version, shard, algos))
    return rows


def _kill(pool: ProcessPoolExecutor) -> None:
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.kill()
    pool.shutdown(wait=False, cancel_futures=True)


# -- Ray ----------------------------------------------------------------------------------------
def _ray_shards(
    ds: Dataset, pending: list[int], job: HashJob, algos: str, opts: RunOptions
) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """Shards hashed by Ray Data: one row per shard in, one row per shard out (its rows as
    JSON), streamed back to the driver as tasks finish. Ray retries a task whose worker died; the
    driver commits each shard once. The plan is read by the tasks themselves, so ``DIR`` must be
    on storage every node sees (or the cluster a single machine)."""
    import json

    try:
        import ray
    except ImportError as exc:  # pragma: no cover - ray is an optional extra
        raise RuntimeError("--engine ray needs Ray: pip install 'bastion[ray]'") from exc
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            address=opts.address,
            ignore_reinit_error=True,
            log_to_driver=False,
            include_dashboard=False,
            configure_logging=False,
        )
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.preserve_order = False
    root = str(ds.root)

    def work(batch: dict[str, Any]) -> dict[str, Any]:
        out_shard, out_rows = [], []
        for shard in batch["shard"]:
            s, rows = _hash_plan_shard(root, int(shard), job, algos)
            out_shard.append(s)
            out_rows.append(json.dumps(rows, separators=(",", ":")))
        return {"shard": out_shard, "rows": out_rows}

    data = ray.data.from_items([{"shard": s} for s in pending], override_num_blocks=len(pending))
    # Ray retries a task whose worker or node died (Ray Data's default for tasks).
    hashed = data.map_batches(work, batch_size=1, num_cpus=1)
    try:
        for row in hashed.iter_rows():
            yield int(row["shard"]), list(json.loads(row["rows"]))
    finally:
        if started_here:
            ray.shutdown()
