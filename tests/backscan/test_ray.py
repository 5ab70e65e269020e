"""``--engine ray`` on a real local Ray cluster: a head with two CPUs started by the test
(``ray start --head --num-cpus 2``) and reached through ``--address``, as a real cluster would be.
Kept to one small run (Ray's start-up is most of its cost); large runs are in ``make bench``."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.signals import SignalType, hash_file
from tests.backscan.conftest import bank_with, make_archive, rows, run_cli, summary
from tests.fixtures.stores import migrated_database

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A Ray head on loopback with token authentication; yields the client's environment."""
    temp = tmp_path_factory.mktemp("ray")
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    ray = Path(sys.executable).with_name("ray")
    args = ["start", "--head", "--num-cpus", "2", "--port", str(port), "--block"]
    args += ["--node-ip-address", "127.0.0.1", "--include-dashboard", "false"]
    head = subprocess.Popen(
        [str(ray), *args, "--temp-dir", str(temp)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the head's daemons share its group: stopped together below
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or head.poll() is not None:
                    raise RuntimeError("the Ray head did not start") from None
                time.sleep(0.2)
        yield {**env, "RAY_ADDRESS_FOR_TEST": f"127.0.0.1:{port}", "RAY_HEAD_PGID": str(head.pid)}
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        for pid in _session(head.pid):  # workers left behind by the head (their own groups)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_ray_engine_on_a_started_cluster_gives_the_local_engines_rows(
    ray_head: dict[str, str], tmp_path: Path
) -> None:
    files = make_archive(tmp_path / "archive", 10)
    address = ray_head["RAY_ADDRESS_FOR_TEST"]
    with migrated_database("sqlite", tmp_path) as db:
        bank_with(db.open(), files[4])
        out_ray, out_local = tmp_path / "ray", tmp_path / "local"
        proc = run_cli(
            "backscan",
            str(tmp_path / "archive"),
            "--out",
            str(out_ray),
            "--engine",
            "ray",
            "--address",
            address,
            "--shard-size",
            "3",
            db=db.url,
            env=ray_head,
        )
        assert proc.returncode == 1, proc.stderr
        doc = summary(proc)
        assert doc["engine"] == "ray" and doc["complete"] and doc["total"]["objects"] == 12
        run_cli("backscan", str(tmp_path / "archive"), "--out", str(out_local), db=db.url)
    keep = ("uri", "size", "md5", "sha256", "pdq", "pdq_quality", "matched", "matches", "error")
    by_ray = sorted(tuple(r[k] for k in keep) for r in rows(out_ray))
    by_local = sorted(tuple(r[k] for k in keep) for r in rows(out_local))
    assert by_ray == by_local
    hit = next(r for r in rows(out_ray) if r["uri"] == str(files[4].resolve()))
    assert hit["matched"] == 1
    assert hit["pdq"] == hash_file(files[4]).get(SignalType.PDQ).value  # type: ignore[union-attr]


def _session(sid: int) -> list[int]:
    """Every process of the head's session: its daemons, and the workers (own groups)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if os.getsid(int(proc.name)) == sid:
                    found.append(int(proc.name))
            except (OSError, ProcessLookupError):
                continue
    return found


def _ray_task_workers(pgid: int) -> list[int]:
    """Pids of the head's worker processes (same session, a process group of their own)
    running a hashing task: their title is ``ray::MapBatches(work)``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            title = (proc / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            if "MapBatches" in title and os.getsid(int(proc.name)) == pgid:
                found.append(int(proc.name))
        except (OSError, ProcessLookupError):
            continue
    return found


def test_a_ray_worker_killed_mid_task_is_retried_and_no_object_is_lost(
    ray_head: dict[str, str], tmp_path: Path
) -> None:
    files = make_archive(tmp_path / "archive", 24, size=(1600, 1200))
    out = tmp_path / "out"
    with migrated_database("sqlite", tmp_path) as db:
        env = {**ray_head, "BASTION_DATABASE_URL": db.url}
        args = ["backscan", str(tmp_path / "archive"), "--out", str(out), "--shard-size", "2"]
        args += ["--engine", "ray", "--address", ray_head["RAY_ADDRESS_FOR_TEST"]]
        proc = subprocess.Popen(
            [sys.executable, "-m", "bastion.cli", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 180
        killed = None
        while killed is None and time.monotonic() < deadline and proc.poll() is None:
            busy = _ray_task_workers(int(ray_head["RAY_HEAD_PGID"]))
            if busy:
                os.kill(busy[0], signal.SIGKILL)
                killed = busy[0]
            time.sleep(0.05)
        _, stderr = proc.communicate(timeout=300)
        assert killed is not None, "no Ray worker was seen running a task"
        assert proc.returncode == 0, stderr
    got = [r["uri"] for r in rows(out)]
    assert len(got) == len(set(got)) == len(files)
    errors = {r["uri"] for r in rows(out) if r["error"]}
    assert errors == {str(files[-2].resolve()), str(files[-1].resolve())}  # the two bad files
