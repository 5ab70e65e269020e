"""``--engine ray`` on a real local Ray cluster: a head with two CPUs started by the test
(``ray start --head --num-cpus 2``) and reached through ``--address``, as a real cluster would be.
Kept to one small run (Ray's start-up is most of its cost); large runs are in ``make bench``."""

from __future__ import annotations

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
        yield {**env, "RAY_ADDRESS_FOR_TEST": f"127.0.0.1:{port}"}
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()


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
