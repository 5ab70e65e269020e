"""Background pdata builds on SQLite and PostgreSQL: a request records a job, a worker claims it
under a lease (never two at once), publishes the table together with the job's completion, and
a lost lease or a failed build never publishes anything."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from bastion.actions.worker import BuildLoop
from bastion.banks.model import NewEntry
from bastion.cli import app as cli_app
from bastion.client import PData
from bastion.crypto import MasterKey
from bastion.db import Store
from bastion.psi.records import MAX_BUILD_ATTEMPTS, LeaseLost
from bastion.psi.rows import PsiBuildRow
from bastion.psi.store import VoucherStore
from bastion.signals.base import SignalType
from bastion.store import BankNotFound

from .conftest import voucher_settings
from .helpers import LAB_BOUNDS, random_hashes

BANK = random_hashes(40, seed=500)
builds_t = PsiBuildRow.__table__


def _vstore(store: Store, tmp_path: Path) -> VoucherStore:
    store.create_bank("known")
    store.add_entries("known", [NewEntry(SignalType.PDQ, h) for h in BANK])
    return VoucherStore(store, MasterKey.generate(), voucher_settings(tmp_path))


def _expire(store: Store, job_id: int) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            update(builds_t)
            .where(builds_t.c.id == job_id)
            .values(lease_until=datetime.now(UTC) - timedelta(seconds=1))
        )


def test_job_lifecycle_pending_building_done(db_store: Store, tmp_path: Path) -> None:
    vs = _vstore(db_store, tmp_path)
    job = vs.request_build(actor="key:admin", banks=["known"])
    assert job.state == "pending" and job.banks == ["known"] and job.root is None
    assert job.params["mode"] == vs.params.mode and vs.current_table() is None
    assert [e.target for e in db_store.iter_audit() if e.action == "pdata.request"] == [
        f"pdata-build:{job.id}"
    ]
    claimed = vs.claim_build("worker-a")
    assert claimed is not None and claimed.id == job.id
    assert claimed.state == "building" and claimed.attempts == 1
    assert claimed.lease_owner == "worker-a" and claimed.lease_until is not None
    assert vs.claim_build("worker-b") is None  # never two workers on one job
    done = vs.run_build(claimed, "worker-a")
    table = vs.current_table()
    assert done.state == "done" and table is not None
    assert done.root == table.root and done.table_id == table.id and done.progress == 1.0
    assert table.stats["entries"] == 40 and table.banks == ["known"]
    pdata = PData.from_bytes(vs.table_blob(table.id), expected_root=done.root, bounds=LAB_BOUNDS)
    assert pdata.params == vs.params
    (event,) = [e for e in db_store.iter_audit() if e.action == "pdata.build"]
    assert event.detail["job"] == job.id and event.actor == "key:admin"
    assert vs.claim_build("worker-b") is None  # done jobs are not claimable
    assert [j.id for j in vs.list_builds()] == [job.id]


def test_unknown_bank_is_refused_at_request_time(db_store: Store, tmp_path: Path) -> None:
    vs = _vstore(db_store, tmp_path)
    with pytest.raises(BankNotFound):
        vs.request_build(actor="key:admin", banks=["missing"])
    assert vs.list_builds() == []


def test_an_expired_lease_passes_the_job_on_and_the_old_worker_publishes_nothing(
    db_store: Store, tmp_path: Path
) -> None:
    vs = _vstore(db_store, tmp_path)
    job = vs.request_build(actor="key:admin")
    stale = vs.claim_build("worker-a")
    assert stale is not None
    _expire(db_store, job.id)  # worker-a stalled past its lease
    taken = vs.claim_build("worker-b")
    assert taken is not None and taken.attempts == 2 and taken.lease_owner == "worker-b"
    with pytest.raises(LeaseLost):
        vs.renew_build(job.id, "worker-a", 0.5)
    after_a = vs.run_build(stale, "worker-a")  # finishes its build late: refused
    assert after_a.state == "building" and after_a.lease_owner == "worker-b"
    assert vs.current_table() is None  # the table went back with the refused transaction
    done = vs.run_build(taken, "worker-b")
    assert done.state == "done" and vs.current_table().root == done.root


def test_a_failing_build_is_marked_failed_and_audited(db_store: Store, tmp_path: Path) -> None:
    vs = _vstore(db_store, tmp_path)
    db_store.create_bank("doomed")
    job = vs.request_build(actor="key:admin", banks=["doomed"])
    db_store.delete_bank("doomed")  # gone before a worker got to it
    failed = vs.build_pending_once("worker-a")
    assert failed is not None and failed.id == job.id and failed.state == "failed"
    assert "doomed" in (failed.error or "") and vs.current_table() is None
    (event,) = [e for e in db_store.iter_audit() if e.action == "pdata.build_failed"]
    assert event.target == f"pdata-build:{job.id}"


def test_a_job_abandoned_too_often_is_failed_not_retried(db_store: Store, tmp_path: Path) -> None:
    vs = _vstore(db_store, tmp_path)
    job = vs.request_build(actor="key:admin")
    for i in range(MAX_BUILD_ATTEMPTS):
        assert vs.claim_build(f"worker-{i}") is not None
        _expire(db_store, job.id)  # the worker died mid-build
    assert vs.claim_build("worker-last") is None
    ended = vs.get_build(job.id)
    assert ended is not None and ended.state == "failed" and "abandoned" in (ended.error or "")


def test_worker_step_claims_and_completes_builds_in_order(db_store: Store, tmp_path: Path) -> None:
    vs = _vstore(db_store, tmp_path)
    first = vs.request_build(actor="key:admin")
    second = vs.request_build(actor="key:admin")
    loop = BuildLoop(vs, worker_id="test-worker")
    ran = loop.run_once()
    assert ran is not None and ran.id == first.id and ran.state == "done"
    assert vs.get_build(second.id).state == "pending"
    ran2 = loop.run_once()
    assert ran2 is not None and ran2.id == second.id and ran2.state == "done"
    assert loop.run_once() is None and (loop.built, loop.failed) == (2, 0)
    assert vs.current_table().root == ran2.root != ran.root  # newest build is served


def test_cli_builds_in_the_foreground_and_prints_the_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = f"sqlite:///{tmp_path}/cli.db"
    key = base64.b64encode(bytes(range(32))).decode()
    monkeypatch.setenv("BASTION_SECRET_KEY", key)
    monkeypatch.setenv("BASTION_VOUCHER_THRESHOLD", "3")
    with Store.open(db) as store:
        store.create_bank("known")
        store.add_entries("known", [NewEntry(SignalType.PDQ, h) for h in BANK])
    result = CliRunner().invoke(cli_app, ["pdata", "build", "--db", db, "--bank", "known"])
    assert result.exit_code == 0, result.output
    root = result.stdout.strip().splitlines()[-1]
    with Store.open(db) as store:
        vs = VoucherStore(store, MasterKey.from_base64(key), voucher_settings(tmp_path))
        table = vs.current_table()
        (job,) = vs.list_builds()
    assert table is not None and table.root == root == job.root and job.state == "done"
    assert table.banks == ["known"] and table.params["threshold"] == 3
    bad = CliRunner().invoke(cli_app, ["pdata", "build", "--db", db, "--bank", "missing"])
    assert bad.exit_code == 2 and "missing" in bad.output
