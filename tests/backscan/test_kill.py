"""Exactly once under SIGKILL: a back-scan whose driver is killed part-way and started again
redoes only the shards that had not been committed, one whose worker process is killed finishes
without losing or repeating an object, and the dataset holds every object exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.backscan.conftest import BASTION, REPO, make_archive, rows, run_cli, summary
from tests.fixtures.stores import migrated_database

pytestmark = pytest.mark.slow

N = 48  # images; with bad files, 50 objects in 25 shards of 2


@pytest.fixture(scope="module")
def big_archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """Pictures large enough (2 MP) that a run lasts long enough to be killed part-way."""
    root = tmp_path_factory.mktemp("kill") / "archive"
    return root, make_archive(root, N, size=(1600, 1200))


def _start(root: Path, out: Path, db: str, workers: int) -> subprocess.Popen[str]:
    env = {**os.environ, "BASTION_DATABASE_URL": db}
    return subprocess.Popen(
        [
            *BASTION,
            "backscan",
            str(root),
            "--out",
            str(out),
            "--shard-size=2",
            f"--workers={workers}",
        ],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the driver and its pool, only
    )


def _wait_for_shards(out: Path, n: int, proc: subprocess.Popen[str]) -> int:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        data = out / "data"
        done = len(list(data.glob("shard-*.parquet"))) if data.is_dir() else 0
        if done >= n:
            return done
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.005)
    raise AssertionError("no shard finished in time")


def _exactly_once(out: Path, files: list[Path]) -> None:
    got = [r["uri"] for r in rows(out)]
    assert len(got) == len(set(got)) == len(files)
    assert set(got) == {str(f.resolve()) for f in files}


def test_a_killed_driver_restarts_with_only_the_unfinished_shards(
    tmp_path: Path, big_archive: tuple[Path, list[Path]]
) -> None:
    root, files = big_archive
    out = tmp_path / "out"
    with migrated_database("sqlite", tmp_path) as db:
        proc = _start(root, out, db.url, workers=1)
        _wait_for_shards(out, 3, proc)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its pool, mid-run
        proc.wait()
        committed = {
            p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (out / "data").glob("shard-*")
        }
        assert 3 <= len(committed) < 25, "the kill landed after the run ended"
        again = summary(run_cli("backscan", str(root), "--out", str(out), db=db.url))
        assert again["this_run"]["shards"] == 25 - len(committed)
        assert again["this_run"]["shards_already_done"] == len(committed)
        for name, ident in committed.items():  # committed shards were not redone
            p = out / "data" / name
            assert (p.stat().st_ino, p.stat().st_mtime_ns) == ident
        assert not list(out.rglob(".tmp-*"))
        _exactly_once(out, files)
        assert again["complete"] and again["total"]["objects"] == N + 2
        # And once complete, a rerun does nothing at all.
        final = summary(run_cli("backscan", str(root), "--out", str(out), db=db.url))
        assert final["this_run"]["objects"] == 0


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        kids += [int(k) for k in text]
    return kids


def test_a_killed_worker_costs_a_retry_not_an_object(
    tmp_path: Path, big_archive: tuple[Path, list[Path]]
) -> None:
    root, files = big_archive
    out = tmp_path / "out"
    with migrated_database("sqlite", tmp_path) as db:
        proc = _start(root, out, db.url, workers=2)
        assert _wait_for_shards(out, 2, proc) < 25
        workers = _children(proc.pid)
        assert workers, "no pool worker to kill"
        os.kill(workers[0], signal.SIGKILL)
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        _exactly_once(out, files)
        errors = {r["uri"]: r["error"] for r in rows(out) if r["error"]}
        # Only the two bad files are errors: the shards the dead worker held were redone.
        assert set(errors) == {str(files[-2].resolve()), str(files[-1].resolve())}
