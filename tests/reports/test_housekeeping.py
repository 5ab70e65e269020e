"""The worker's housekeeping pass: due reports go to the CyberTipline (here the fake one on
loopback) and evidence past its retention is purged, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from bastion.config import Settings
from bastion.crypto import MasterKey
from bastion.db import Store
from bastion.housekeeping import Housekeeping
from bastion.reports.store import ReportStore
from bastion.review.model import Case
from bastion.vault.store import Vault
from tests.fixtures.clock import Clock
from tests.reports.fake_cybertipline import PASSWORD, USER, FakeCyberTipline, LoopbackServer
from tests.reports.test_reporter import CSAM, REPORTER


class Ticks:
    """A monotonic clock moved by hand, for the duties' intervals."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_pass_sends_due_reports_and_purges_expired_evidence(
    store: Store,
    key: MasterKey,
    clock: Clock,
    reports: ReportStore,
    confirmed_case: Callable[..., Case],
    fake: tuple[FakeCyberTipline, LoopbackServer],
) -> None:
    tipline, server = fake
    old_case, case = confirmed_case(files=1), confirmed_case(files=1)
    # Evidence preserved in the (hand-set) past: its year of retention is long over by now.
    (evidence_id,) = Vault(store, key, now=clock).preserve(old_case.id, actor="system", reason="t")
    Vault(store, key).preserve(case.id, actor="system", reason="confirmed")  # preserved today
    report = reports.draft_for_case(
        case, incident_type=CSAM, reporter_info=REPORTER, actor="user:root"
    )
    ticks = Ticks()
    chores = Housekeeping.for_store(store, key, Settings(), worker_id="test", clock=ticks)

    chores.run_once()  # no CyberTipline login yet: the draft waits, the purge runs
    assert reports.get(report.id).state == "drafted" and tipline.calls == []
    assert chores.purged == 1
    (row,) = chores.vault.list(case_id=old_case.id)
    assert row.id == evidence_id and row.state == "purged" and row.purged_at is not None
    assert row.purged_at <= datetime.now(UTC)

    # Configured (as BASTION_NCMEC_* would): the next pass sends the report.
    login = Settings(ncmec_url=server.url, ncmec_username=USER, ncmec_password=PASSWORD)
    chores = Housekeeping.for_store(store, key, login, worker_id="test", clock=ticks)
    chores.run_once()
    assert reports.get(report.id).state == "finished"
    assert tipline.calls == ["submit", "upload", "fileinfo", "finish"]
    ticks.now += 1.0
    chores.run_once()  # not due again yet: each duty keeps its own interval
    assert tipline.calls == ["submit", "upload", "fileinfo", "finish"]
    ticks.now += chores.report_every
    chores.run_once()
    assert len(tipline.calls) == 4  # a finished report is not run again
    assert chores.reported == 1 and chores.purged == 0  # nothing more to purge
    # The finished report started the evidence's retention clock from the report.
    (row,) = chores.vault.list(case_id=case.id)
    assert row.state != "purged" and row.reported_at is not None
    assert row.retain_until > row.reported_at


def test_a_refused_url_is_an_error_on_the_report_not_only_a_log_line(
    store: Store,
    key: MasterKey,
    reports: ReportStore,
    confirmed_case: Callable[..., Case],
    fake: tuple[FakeCyberTipline, LoopbackServer],
) -> None:
    """Plain http off loopback is refused by the client: the draft says so (last_error, shown
    by the console and GET /v1/reports), keeps its state, and goes out once the URL is fixed."""
    tipline, server = fake
    report = reports.draft_for_case(
        confirmed_case(files=1), incident_type=CSAM, reporter_info=REPORTER, actor="user:root"
    )
    ticks = Ticks()
    insecure = Settings(
        ncmec_url="http://cybertip.example.org/ispws",
        ncmec_username=USER,
        ncmec_password=PASSWORD,
        report_poll_seconds=5.0,
    )
    chores = Housekeeping.for_store(store, key, insecure, worker_id="test", clock=ticks)
    assert chores.report_every == 5.0  # the setting, not a fixed 10 s
    chores.run_once()
    held = reports.get(report.id)
    assert held.state == "drafted" and tipline.calls == []
    assert held.last_error and "https" in held.last_error and "loopback" in held.last_error
    events = [e for e in store.iter_audit() if e.action == "report.unsendable"]
    assert [e.target for e in events] == [f"report:{report.id}"]
    ticks.now += 5.0
    chores.run_once()  # the same reason again is not audited again
    events = [e for e in store.iter_audit() if e.action == "report.unsendable"]
    assert len(events) == 1

    fixed = Settings(ncmec_url=server.url, ncmec_username=USER, ncmec_password=PASSWORD)
    Housekeeping.for_store(store, key, fixed, worker_id="test", clock=ticks).run_once()
    sent = reports.get(report.id)
    assert sent.state == "finished" and sent.last_error is None
