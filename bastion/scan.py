"""The pipeline: content -> signals -> matches, shared by the CLI, the API and batch jobs.

Hashing runs in worker processes (one per core). A file that crashes or hangs a worker costs
that file alone: the pool is replaced and the rest of the scan goes on.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from bastion.index.matcher import DEFAULT_PDQ_THRESHOLD, Match, Matcher
from bastion.signals import FileSignals, HashOptions, hash_file
from bastion.signals.base import DEFAULT_MIN_QUALITY, Signal

#: A file whose hashing takes longer than this is abandoned (hostile video, pathological image).
DEFAULT_FILE_TIMEOUT = 300.0


@dataclass
class ScanResult:
    """One file's outcome: its signals and matches, or why it could not be hashed."""

    path: str
    kind: str
    size: int
    signals: list[Signal] = field(default_factory=list)
    matches: list[Match] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class ScanOptions:
    threshold: int = DEFAULT_PDQ_THRESHOLD
    min_quality: int = DEFAULT_MIN_QUALITY
    dihedral: bool = False
    banks: tuple[str, ...] | None = None
    workers: int = 0  # 0 = one per core
    timeout: float = DEFAULT_FILE_TIMEOUT
    hash_options: HashOptions | None = None


@dataclass(frozen=True)
class Unreadable:
    """A directory the walk could not enter; reported as a per-path error, never skipped."""

    path: Path
    message: str


def iter_files(paths: Iterable[str | Path]) -> Iterator[Path | Unreadable]:
    """Files under ``paths`` in a stable order; missing paths are yielded so they get reported."""
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            yield path
            continue
        failed: list[OSError] = []
        for root, dirs, files in os.walk(path, onerror=failed.append):
            while failed:
                yield _unreadable(failed.pop(), root)
            dirs.sort()
            for name in sorted(files):
                yield Path(root) / name
        for exc in failed:
            yield _unreadable(exc, path)


def _unreadable(exc: OSError, fallback: str | Path) -> Unreadable:
    return Unreadable(Path(exc.filename or fallback), f"cannot read directory: {exc.strerror}")


def _hash_one(
    path: str, dihedral: bool, options: HashOptions | None, reference: bool = False
) -> FileSignals:
    return hash_file(path, dihedral=dihedral, options=options, reference=reference)


def _failed(path: Path, message: str) -> FileSignals:
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    return FileSignals(path=str(path), kind="other", size=size, signals=[], error=message)


def hash_paths(
    paths: Iterable[str | Path],
    *,
    dihedral: bool = False,
    options: HashOptions | None = None,
    workers: int = 0,
    timeout: float = DEFAULT_FILE_TIMEOUT,
    reference: bool = False,
) -> Iterator[FileSignals]:
    """Hash every file on all cores, yielding results in input order."""
    nworkers = workers or os.cpu_count() or 1
    work = partial(_hash_one, dihedral=dihedral, options=options, reference=reference)
    files = iter_files(paths)
    if nworkers == 1:
        for path in files:
            yield _checked(path, work)
        return
    pool = ProcessPoolExecutor(max_workers=nworkers)
    window: deque[tuple[Path, Future[FileSignals]]] = deque()
    try:
        for path in files:
            if isinstance(path, Path) and path.is_file():
                window.append((path, pool.submit(work, str(path))))
            else:
                done = _checked(path, work)
                window.append((Path(done.path), _done(done)))
            while len(window) >= nworkers * 4:
                pool, result = _collect(window, pool, nworkers, work, timeout)
                yield result
        while window:
            pool, result = _collect(window, pool, nworkers, work, timeout)
            yield result
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _checked(path: Path | Unreadable, work: Callable[[str], FileSignals]) -> FileSignals:
    if isinstance(path, Unreadable):
        return _failed(path.path, path.message)
    if not path.exists():
        return _failed(path, "no such file")
    if not path.is_file():
        return _failed(path, "not a regular file")
    return work(str(path))


def _done(result: FileSignals) -> Future[FileSignals]:
    fut: Future[FileSignals] = Future()
    fut.set_result(result)
    return fut


def _collect(
    window: deque[tuple[Path, Future[FileSignals]]],
    pool: ProcessPoolExecutor,
    nworkers: int,
    work: Callable[[str], FileSignals],
    timeout: float,
) -> tuple[ProcessPoolExecutor, FileSignals]:
    """Take the oldest result; on a crash or hang replace the pool and carry on."""
    path, fut = window.popleft()
    try:
        return pool, fut.result(timeout=timeout)
    except TimeoutError:
        # The oldest task was running all along, so it is the one that hangs.
        result: FileSignals | None = _failed(
            path, f"hashing took longer than {timeout:g}s and was stopped"
        )
    except BrokenProcessPool:
        result = None  # any task in flight may have killed the worker
    except Exception as exc:  # a bug in a decoder must cost one file, not the scan
        return pool, _failed(path, f"hashing failed: {type(exc).__name__}: {exc}")
    _kill(pool)
    pending = list(window)
    window.clear()
    pool = ProcessPoolExecutor(max_workers=nworkers)
    for p, f in pending:
        if f.done() and not f.cancelled() and f.exception() is None:
            window.append((p, f))
        elif result is None:
            # After a crash, re-run each unfinished file alone so the culprit is the only loss.
            window.append((p, _done(_isolated(p, work, timeout))))
        else:
            window.append((p, pool.submit(work, str(p))))
    if result is None:
        result = _isolated(path, work, timeout)
    return pool, result


def _isolated(path: Path, work: Callable[[str], FileSignals], timeout: float) -> FileSignals:
    """Hash one file in a process of its own, so a crash can be pinned on it."""
    solo = ProcessPoolExecutor(max_workers=1)
    try:
        return solo.submit(work, str(path)).result(timeout=timeout)
    except BrokenProcessPool:
        return _failed(path, "hashing crashed its worker process")
    except TimeoutError:
        return _failed(path, f"hashing took longer than {timeout:g}s and was stopped")
    except Exception as exc:
        return _failed(path, f"hashing failed: {type(exc).__name__}: {exc}")
    finally:
        _kill(solo)


def _kill(pool: ProcessPoolExecutor) -> None:
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for proc in processes:
        proc.kill()
    pool.shutdown(wait=False, cancel_futures=True)


def scan_paths(
    paths: Iterable[str | Path], matcher: Matcher, options: ScanOptions | None = None
) -> Iterator[ScanResult]:
    """Hash and match every file under ``paths``; per-file errors never stop the scan."""
    opts = options or ScanOptions()
    for fs in hash_paths(
        paths,
        dihedral=opts.dihedral,
        options=opts.hash_options,
        workers=opts.workers,
        timeout=opts.timeout,
    ):
        yield match_file(fs, matcher, opts)


def match_file(fs: FileSignals, matcher: Matcher, opts: ScanOptions) -> ScanResult:
    matches = matcher.match(
        fs.signals,
        threshold=opts.threshold,
        min_quality=opts.min_quality,
        dihedral=fs.pdq_dihedral if opts.dihedral else (),
        banks=opts.banks,
    )
    return ScanResult(
        path=fs.path,
        kind=fs.kind,
        size=fs.size,
        signals=fs.signals,
        matches=matches,
        error=fs.error,
    )
