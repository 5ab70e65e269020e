"""The reporter against the fake CyberTipline, on SQLite and PostgreSQL: exactly one finished
report per case through crashes between calls, injected failures, and retraction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import select

from bastion.db import Store
from bastion.reports.errors import ReportConflict, ReportExists
from bastion.reports.model import ReporterInfo, State, Step
from bastion.reports.ncmec import CyberTiplineClient, NcmecAuthError
from bastion.reports.reporter import Reporter
from bastion.reports.rows import ReportCredentialRow
from bastion.reports.store import ReportStore
from bastion.review.model import Case
from bastion.store import InvalidInput
from bastion.store.tables import AuditRow
from tests.fixtures.clock import Clock
from tests.reports.conftest import CREDENTIALS, REPORTER_KW
from tests.reports.fake_cybertipline import FakeCyberTipline, LoopbackServer

REPORTER = ReporterInfo(**REPORTER_KW)
CSAM = "Child Pornography (possession, manufacture, and distribution)"
Fake = tuple[FakeCyberTipline, LoopbackServer]


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing on the way catches it."""


def client(server: LoopbackServer, timeout: float = 5.0) -> CyberTiplineClient:
    return CyberTiplineClient(server.url, *CREDENTIALS, timeout=timeout)


def draft(reports: ReportStore, case: Case) -> int:
    return reports.draft_for_case(
        case, incident_type=CSAM, reporter_info=REPORTER, actor="user:root"
    ).id


def assert_one_finished(tipline: FakeCyberTipline, case: Case, files: int) -> None:
    mine = [
        r
        for r in tipline.reports.values()
        if r.state == "finished" and f"<espIdentifier>{case.uploader_id}<".encode() in r.xml
    ]
    assert len(mine) == 1
    assert len(mine[0].files) == files
    assert all(tipline.files[f].fileinfo == 1 for f in mine[0].files)


def test_a_confirmed_case_is_reported_once(
    reports: ReportStore, confirmed_case: Callable[..., Case], fake: Fake, clock: Clock
) -> None:
    tipline, server = fake
    case = confirmed_case(files=2)
    report = reports.draft_for_case(
        case, incident_type=CSAM, reporter_info=REPORTER, actor="user:root"
    )
    assert report.state == State.DRAFTED and len(report.files) == 2
    clock.advance(timedelta(minutes=30))
    assert report.age(clock()) == clock() - case.decided_at  # type: ignore[operator]
    done = Reporter(reports, client(server)).run(report.id)
    assert done.state == State.FINISHED
    assert done.external_id in tipline.reports
    assert {f.state for f in done.files} == {"described"}
    assert [f.external_id for f in done.files] == tipline.reports[done.external_id].files
    assert_one_finished(tipline, case, 2)
    assert tipline.calls == ["submit", "upload", "fileinfo", "upload", "fileinfo", "finish"]
    assert done.age(clock() + timedelta(days=1)) == done.finished_at - case.decided_at  # type: ignore[operator]
    # The file hashes NCMEC computed match what we declared in fileDetails (the fake checks).
    with pytest.raises(ReportExists):
        draft(reports, case)
    # Running again does nothing more.
    Reporter(reports, client(server)).run(report.id)
    assert len(tipline.calls) == 6


def test_only_confirmed_cases_and_audit(
    reports: ReportStore, store: Store, review, confirmed_case: Callable[..., Case]
) -> None:
    case = confirmed_case(files=1)
    draft(reports, case)
    with store.engine.connect() as conn:
        actions = list(conn.execute(select(AuditRow.__table__.c.action)).scalars())
    assert "report.draft" in actions
    from tests.review.conftest import ROOT, item, verdict

    sub = review.submit(verdict(), item("open-one"), actor="system")
    with pytest.raises(ReportConflict):
        draft(reports, review.get_case(ROOT, sub.case_id))
    with pytest.raises(InvalidInput):
        reports.draft_for_case(
            confirmed_case(files=1),
            incident_type="nonsense",
            reporter_info=REPORTER,
            actor="user:root",
        )


def test_crash_after_every_call_resumes_with_one_report(
    reports: ReportStore, confirmed_case: Callable[..., Case], fake: Fake, clock: Clock
) -> None:
    tipline, server = fake
    calls = 6  # submit, upload, fileinfo, upload, fileinfo, finish
    for k in range(calls):
        case = confirmed_case(files=2)
        rid = draft(reports, case)

        def die(n: int, step: Step, k: int = k) -> None:
            if n == k:
                raise Crash(f"after call {k} ({step.kind})")

        with pytest.raises(Crash):
            Reporter(reports, client(server), after_record=die).run(rid)
        # A fresh reporter before the dead one's lease runs out does nothing...
        assert Reporter(reports, client(server)).run(rid).state != State.FINISHED or k == 5
        # ...and once it has, resumes from the recorded step.
        clock.advance(timedelta(hours=1))
        done = Reporter(reports, client(server)).run(rid)
        assert done.state == State.FINISHED, k
        assert_one_finished(tipline, case, 2)
    assert len(tipline.reports) == calls
    assert len(tipline.finished()) == calls


@pytest.mark.parametrize(
    ("step", "mode"),
    [
        ("submit", "http500"),
        ("submit", "code:1000"),
        ("submit", "timeout"),
        ("upload", "http500"),
        ("upload", "code:1111"),
        ("upload", "timeout"),
        ("fileinfo", "code:1100"),
        ("fileinfo", "timeout"),
        ("finish", "http500"),
        ("finish", "code:1300"),
        ("finish", "lost"),
    ],
)
def test_failure_at_each_step_is_retried_with_backoff(
    reports: ReportStore,
    confirmed_case: Callable[..., Case],
    fake: Fake,
    clock: Clock,
    step: str,
    mode: str,
) -> None:
    tipline, server = fake
    case = confirmed_case(files=1)
    rid = draft(reports, case)
    tipline.fail(step, mode)
    reporter = Reporter(reports, client(server, timeout=0.5), backoff_base=60)
    first = reporter.run(rid)
    assert first.state != State.FINISHED
    assert first.attempts == 1
    assert first.last_error and step in first.last_error
    assert first.next_attempt_at > clock()
    assert reporter.run_due() == []  # not due yet
    clock.advance(timedelta(minutes=5))
    [done] = reporter.run_due()
    assert done.state == State.FINISHED and done.attempts == 0 and done.last_error is None
    assert_one_finished(tipline, case, 1)


def test_unfinishable_report_is_retracted_once(
    reports: ReportStore, confirmed_case: Callable[..., Case], fake: Fake, clock: Clock
) -> None:
    tipline, server = fake
    case = confirmed_case(files=1)
    rid = draft(reports, case)
    tipline.fail("upload", *["http500"] * 3)
    reporter = Reporter(reports, client(server), max_attempts=3, backoff_base=1)
    for _ in range(3):
        reporter.run_due()
        clock.advance(timedelta(minutes=1))
    report = reports.get(rid)
    assert report.state == State.RETRACTED
    assert report.retract_reason and "could not complete" in report.retract_reason
    assert tipline.reports[report.external_id].state == "retracted"  # type: ignore[index]
    assert tipline.calls.count("retract") == 1
    clock.advance(timedelta(hours=1))
    assert reporter.run_due() == []
    assert tipline.calls.count("retract") == 1


def test_validation_rejection_retracts_at_once(
    reports: ReportStore, confirmed_case: Callable[..., Case], fake: Fake
) -> None:
    tipline, server = fake
    rid = draft(reports, confirmed_case(files=1))
    tipline.fail("fileinfo", "code:4100")
    report = Reporter(reports, client(server)).run(rid)
    assert report.state == State.RETRACTED
    assert report.last_response_code is None  # the retract that followed succeeded
    assert tipline.calls == ["submit", "upload", "fileinfo", "retract"]


def test_rejected_submission_fails_and_can_be_retried(
    reports: ReportStore, confirmed_case: Callable[..., Case], fake: Fake
) -> None:
    tipline, server = fake
    rid = draft(reports, confirmed_case(files=1))
    tipline.fail("submit", "code:4100")
    report = Reporter(reports, client(server)).run(rid)
    assert report.state == State.FAILED and report.last_response_code == 4100
    assert "4100" in (report.last_error or "") and "Validation failed" in report.last_error
    assert reports.retry(rid, actor="user:root").state == State.DRAFTED
    assert Reporter(reports, client(server)).run(rid).state == State.FINISHED


def test_admin_retract_of_a_submitted_report(
    reports: ReportStore, confirmed_case: Callable[..., Case], fake: Fake, clock: Clock
) -> None:
    tipline, server = fake
    rid = draft(reports, confirmed_case(files=2))

    def stop(n: int, step: Step) -> None:
        if n == 1:
            raise Crash

    with pytest.raises(Crash):
        Reporter(reports, client(server), after_record=stop).run(rid)
    assert reports.retract(rid, actor="user:root", reason="sent in error").state == (
        State.RETRACTING
    )
    clock.advance(timedelta(hours=1))
    assert Reporter(reports, client(server)).run(rid).state == State.RETRACTED
    assert next(iter(tipline.reports.values())).state == "retracted"
    # A never-submitted report is retracted locally; a finished one cannot be.
    other = draft(reports, confirmed_case(files=1))
    assert reports.retract(other, actor="user:root", reason="duplicate").state == State.RETRACTED
    third = draft(reports, confirmed_case(files=1))
    Reporter(reports, client(server)).run(third)
    with pytest.raises(ReportConflict):
        reports.retract(third, actor="user:root", reason="too late")


def test_wrong_password_is_a_typed_error(
    reports: ReportStore, confirmed_case: Callable[..., Case], fake: Fake
) -> None:
    _, server = fake
    rid = draft(reports, confirmed_case(files=1))
    bad = CyberTiplineClient(server.url, "esp-test", "wrong")
    report = Reporter(reports, bad).run(rid)
    assert report.state == State.DRAFTED and "credentials" in (report.last_error or "")
    with pytest.raises(NcmecAuthError):
        bad.status()


def test_credentials_are_sealed_and_env_overrides(reports: ReportStore, store: Store, key) -> None:
    assert reports.credentials() is None
    reports.set_credentials(
        None, "esp-user", "s3cret-password", actor="user:root", environment="production"
    )
    creds = reports.credentials()
    assert creds is not None and creds.source == "console"
    assert (creds.url, creds.username, creds.password) == (
        "https://report.cybertip.org/ispws",
        "esp-user",
        "s3cret-password",
    )
    assert "s3cret" not in repr(creds)
    with store.engine.connect() as conn:
        sealed = conn.execute(select(ReportCredentialRow.__table__.c.sealed)).scalar_one()
    assert b"s3cret-password" not in sealed and b"esp-user" not in sealed
    from bastion.config import Settings

    env = Settings(ncmec_username="env-user", ncmec_password="env-pass")
    creds = ReportStore(store, key, settings=env).credentials()
    assert creds is not None and creds.source == "env" and creds.username == "env-user"
    assert creds.url == "https://exttest.cybertip.org/ispws"
    with pytest.raises(InvalidInput):
        reports.set_credentials("http://x", "u", "p", actor="user:root", environment="test")
