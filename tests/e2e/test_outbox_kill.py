"""kill -9 mid-delivery loses no action and applies none twice, for real.

A receiver that honours Idempotency-Key (applies a key the first time, acknowledges repeats
with 200) stalls one request; the real `bastion worker` process is SIGKILLed while that request
is in flight, then started again. Every action must be applied exactly once, none lost, and the
interrupted one must have arrived twice with the same key and the same bytes (proof that the
kill really landed mid-delivery). Then the same for `bastion serve` and its worker child.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bastion.actions.outbox import Outbox
from bastion.db import Store
from tests.actions.receiver import Receiver, running
from tests.e2e.test_server import Server
from tests.fixtures.stores import postgres_schema_url

BASTION = str(Path(sys.executable).with_name("bastion"))
SECRET = "e2e-receiver-secret-0123456789"
N = 30
STALLED = "action-7"  # held for 2 s the first time it arrives: the kill lands then
FLAKY = "action-3"  # 503 the first time: a retry across the restart too
DEADLINE = 60.0


def plan(key: str, nth: int) -> int | tuple[str, float] | None:
    if key == STALLED and nth == 1:
        return ("stall", 2.0)
    if key == FLAKY and nth == 1:
        return 503
    return None


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bastion.db'}"
        return
    with postgres_schema_url("t_outbox") as url:
        yield url


def write_config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "bastion.toml"
    path.write_text(
        f"""
webhook_url = "{url}"
webhook_secret = "{SECRET}"
webhook_timeout = 4
outbox_lease_seconds = 5
outbox_backoff_seconds = 0.5
outbox_backoff_max_seconds = 2
outbox_poll_seconds = 0.1
outbox_concurrency = 2
outbox_heartbeat_seconds = 1
"""
    )
    return path


def enqueue_all(db_url: str) -> list[str]:
    keys = [f"action-{i}" for i in range(N)]
    with Store.open(db_url) as store:
        outbox = Outbox(store)
        for i, key in enumerate(keys):
            action = ("remove_content", "restrict_account", "preserve")[i % 3]
            outbox.enqueue(action=action, payload={"seq": i}, idempotency_key=key, case_id=i + 1)
    return keys


def wait_for(what: str, predicate: Callable[[], bool], *procs: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        for proc in procs:
            assert proc.poll() is None, f"{what}: process {proc.args} exited with {proc.returncode}"
        assert time.monotonic() < deadline, f"{what}: not reached within {DEADLINE:g} s"
        time.sleep(0.05)


def start_worker(db_url: str, config: Path, log: Path, *, flag: bool) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    # The run's audit keyring and key directory (tests/conftest.py): the log this test's store
    # began is keyed, and a worker must never reach for the machine's own key directory.
    env["BASTION_AUDIT_KEY_FILE"] = os.environ["BASTION_AUDIT_KEY_FILE"]
    env["BASTION_KEY_DIR"] = os.environ["BASTION_KEY_DIR"]
    args = [BASTION, "worker", "--config", str(config)]
    if flag:
        args += ["--db", db_url]
    else:
        env["BASTION_DATABASE_URL"] = db_url
    with log.open("ab") as out:
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)


def delivered_count(db_url: str) -> int:
    with Store.open(db_url) as store:
        return Outbox(store).stats().counts["delivered"]


def check_exactly_once(db_url: str, rx: Receiver, keys: list[str]) -> None:
    # None lost: every key applied; none twice: one application per action (if a retry had
    # come with a new key, its action would have been applied again under that key).
    assert sorted(rx.applied) == sorted(keys)
    seqs = Counter(json.loads(body)["data"]["seq"] for body in rx.applied.values())
    assert seqs == Counter(range(N))
    assert all(r.signature_ok for r in rx.requests)
    bodies: dict[str, set[bytes]] = {}
    for r in rx.requests:
        bodies.setdefault(r.headers["idempotency-key"], set()).add(r.body)
    assert all(len(b) == 1 for b in bodies.values()), "a retry changed the body"
    with Store.open(db_url) as store:
        outbox = Outbox(store)
        assert outbox.stats().counts == {
            "pending": 0,
            "delivering": 0,
            "delivered": N,
            "dead": 0,
        }
        events = store.iter_audit(limit=10_000)
        assert sum(e.action == "action.delivered" for e in events) == N
        assert store.verify_audit_chain() is None


def test_kill_9_of_the_worker_mid_delivery_loses_nothing_and_sends_nothing_twice(
    db_url: str, tmp_path: Path
) -> None:
    keys = enqueue_all(db_url)
    log = tmp_path / "worker.log"
    with running(SECRET, plan) as rx:
        config = write_config(tmp_path, rx.url)
        first = start_worker(db_url, config, log, flag=True)
        try:
            wait_for("a delivery in flight", rx.stalled.is_set, first)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
        assert first.returncode == -signal.SIGKILL
        with Store.open(db_url) as store:
            in_flight = Outbox(store).list(state="delivering")
        assert STALLED in {i.idempotency_key for i in in_flight}
        assert delivered_count(db_url) < N

        second = start_worker(db_url, config, log, flag=False)
        try:
            wait_for("all delivered", lambda: delivered_count(db_url) == N, second)
            # The heartbeat is due every second; a loaded machine can finish the deliveries
            # before the first one, so wait for it rather than assume it.
            wait_for("the heartbeat", lambda: "alive:" in log.read_text(), second)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(30)
        assert second.returncode == 0, log.read_text()
    assert rx.received[STALLED] >= 2, "the kill did not land mid-delivery"
    assert rx.duplicates[STALLED] >= 1
    assert rx.received[FLAKY] >= 2
    check_exactly_once(db_url, rx, keys)
    assert "alive:" in log.read_text()  # the heartbeat


def _worker_pid(log: Path) -> int | None:
    found = re.findall(r"outbox worker [^ ]*:(\d+):[0-9a-f]+ started", log.read_text())
    return int(found[-1]) if found else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return True


def test_serve_runs_the_worker_and_a_kill_9_of_serve_loses_nothing(tmp_path: Path) -> None:
    """`bastion serve` delivers through its worker child; when serve is SIGKILLed the orphaned
    child stops by itself (after finishing what it was sending), and a restarted serve delivers
    the rest. SIGTERM to serve stops its child too."""
    db_url = f"sqlite:///{tmp_path / 'bastion.db'}"
    keys = enqueue_all(db_url)
    with running(SECRET, plan) as rx:
        config = write_config(tmp_path, rx.url)
        server = Server(db_url, tmp_path, "--config", str(config), "--log-level", "info")
        log = Path(server.log.name)
        wait_for("a delivery in flight", rx.stalled.is_set, server.proc)
        child = _worker_pid(log)
        assert child is not None and child != server.proc.pid, log.read_text()
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
        server.log.close()
        wait_for("the orphaned worker to stop", lambda: not _alive(child))

        again = Server(db_url, tmp_path, "--config", str(config), "--log-level", "info")
        try:
            wait_for("all delivered", lambda: delivered_count(db_url) == N, again.proc)
            child = _worker_pid(Path(again.log.name))
            assert child is not None and _alive(child)
        finally:
            again.stop()
        assert again.proc.returncode in (0, -signal.SIGTERM)
        assert not _alive(child), "serve exited but left its worker running"
    assert rx.received[STALLED] == 1  # the orphan finished it before stopping
    check_exactly_once(db_url, rx, keys)
