"""A sync killed with SIGKILL inside a page's transaction, on SQLite and PostgreSQL: another
worker takes over once the lease has run out and ends with exactly the upstream list, every page
committed once (counted by the runs' page counters, committed with each page), and a live index
that was loaded before the crash catches up by refreshing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from bastion.banks.model import utcnow
from bastion.config import Settings
from bastion.db import Store
from bastion.exchanges.store import ExchangeStore
from bastion.index.live import LiveIndex
from tests.conftest import REPO
from tests.exchanges.scripted import SCRIPTS, synthetic
from tests.fixtures.stores import BACKENDS, postgres_schema_url

RECORDS, PAGE = 400, 40  # 10 pages
KILL_AT = 6  # the 6th page's transaction is where the worker dies

CHILD = """
import sys, time
from bastion.config import Settings
from bastion.db import Store
from bastion.exchanges.store import ExchangeStore
from tests.exchanges.scripted import SCRIPTS, synthetic

url, marker, kill_at, records, page = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
SCRIPTS["crash"] = synthetic(records, page, seed=2, snapshot="new")
xs = ExchangeStore(Store.open(url), None, Settings(exchange_lease_seconds=5))
calls = 0

def hook(conn):
    global calls
    calls += 1
    if calls == kill_at:
        with open(marker, "w") as f:
            f.write("inside the page transaction")
        time.sleep(600)

xs._in_page_transaction = hook
xs.sync("crash", worker_id="doomed")
"""


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'crash.db'}"
    else:
        with postgres_schema_url("crash") as u:
            yield u


@pytest.mark.slow  # over ~5 s: `make test` runs it, `make test-fast` does not
def test_a_sync_killed_mid_page_resumes_to_exactly_the_upstream_list(
    url: str, tmp_path: Path
) -> None:
    store = Store.open(url)
    try:
        xs = ExchangeStore(store, None, Settings())
        # What we held before: an older listing with 20 more records and other values.
        SCRIPTS["crash"] = synthetic(RECORDS + 20, PAGE, seed=1, snapshot="old")
        xs.add("crash", "scripted", config={"script": "crash"})
        assert xs.sync("crash").error is None
        xs.update("crash", checkpoint=None)  # the next listing is read from its start
        index = LiveIndex(store)
        index.load()
        assert index.size() == (RECORDS + 20) * 11 // 10

        marker = tmp_path / "in-transaction"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        args = [str(marker), str(KILL_AT), str(RECORDS), str(PAGE)]
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, url, *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 120
            while not marker.exists():
                if child.poll() is not None or time.monotonic() > deadline:
                    out = child.stdout.read().decode() if child.stdout else ""
                    pytest.fail(f"the child never reached the page transaction:\n{out}")
                time.sleep(0.05)
        finally:
            if child.poll() is None:
                os.kill(child.pid, signal.SIGKILL)
            child.wait()
        assert child.returncode == -signal.SIGKILL

        info = xs.get("crash")
        assert info.lease_holder == "doomed" and info.checkpoint == {"i": KILL_AT - 1}
        # The lease still stands: nobody else may sync until it runs out.
        later = ExchangeStore(store, None, Settings(), clock=lambda: utcnow() + timedelta(hours=1))
        upstream = synthetic(RECORDS, PAGE, seed=2, snapshot="new")
        SCRIPTS["crash"] = upstream
        result = later.sync("crash", worker_id="rescuer")
        assert result.error is None and result.complete
        assert upstream.fetched == list(range(KILL_AT - 1, RECORDS // PAGE))

        want = {(u.key, e.value) for step in upstream.steps for u in step.items for e in u.entries}
        held = {
            (e.external_id, e.value): e
            for e in store.iter_entries(banks=["crash"], enabled_only=False)
        }
        assert {k for k, e in held.items() if e.enabled} == want
        assert all(
            e.disabled_reason.startswith("upstream:") for k, e in held.items() if k not in want
        )
        runs = {r.worker_id: r for r in later.runs("crash")}
        assert runs["doomed"].state == "interrupted" and runs["doomed"].pages == KILL_AT - 1
        assert runs["rescuer"].pages == RECORDS // PAGE - (KILL_AT - 1)
        assert (
            sum(r.pages for r in later.runs("crash"))
            == (RECORDS + 20 + PAGE - 1) // PAGE + RECORDS // PAGE
        )
        assert later.get("crash").checkpoint == {"i": RECORDS // PAGE}

        index.refresh()
        assert index.size() == len(want)
    finally:
        SCRIPTS.pop("crash", None)
        store.close()
