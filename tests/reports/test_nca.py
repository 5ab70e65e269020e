"""UK NCA reports (OSA s.66) on SQLite and PostgreSQL: the JSON and PDF exports of a real
confirmed case, deadlines per priority, the reference entered back (kept five years, audited,
starting evidence retention), both reports from one decision, and the overdue list."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bastion.db import Store
from bastion.reports.errors import ReportConflict, ReportExists
from bastion.reports.model import ReporterInfo, State
from bastion.reports.nca import (
    LoginIp,
    NcaAccount,
    NcaFile,
    NcaReportContent,
    build_nca_json,
    content_from_json,
    keep_until,
    render_nca_pdf,
)
from bastion.reports.ncmec import CyberTiplineClient
from bastion.reports.reporter import Reporter
from bastion.reports.store import ReportStore
from bastion.review.model import Case
from bastion.store import InvalidInput
from bastion.store.tables import AuditRow
from bastion.vault.rows import EvidenceRow
from bastion.vault.store import Vault
from tests.fixtures.clock import Clock
from tests.reports.conftest import CREDENTIALS, IMAGES, REPORTER_KW
from tests.reports.fake_cybertipline import FakeCyberTipline, LoopbackServer

REPORTER = ReporterInfo(**REPORTER_KW)
CSAM = "Child Pornography (possession, manufacture, and distribution)"
ACCOUNT = NcaAccount(
    account_id="acct-42",
    user_name="example_user",
    email="user@example.org",
    phone="+44 20 7946 0000",
    profile_url="https://example.org/u/example_user",
    login_ips=(LoginIp("198.51.100.7", datetime(2025, 2, 28, 9, 0, tzinfo=UTC), 51234),),
)
RELATED = (NcaAccount(account_id="acct-43", user_name="other_user", relationship="recipient"),)
FACTS = {
    "detection_method": "hash match against a CSAM hash list (PDQ)",
    "summary": "Two files matched a hash list; confirmed by a reviewer as A1.",
}


def audit_actions(store: Store) -> list[tuple[str, str, dict]]:
    t = AuditRow.__table__
    with store.engine.connect() as conn:
        rows = conn.execute(select(t.c.action, t.c.target, t.c.detail).order_by(t.c.id)).all()
    return [(r.action, r.target, r.detail if isinstance(r.detail, dict) else {}) for r in rows]


class NoCalls:
    """A CyberTipline client that fails the test if anything reaches it."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"an NCA report reached the CyberTipline client ({name})")


def draft(reports: ReportStore, case: Case, priority: str = "P2", **kw: object) -> int:
    return reports.draft_nca_for_case(
        case,
        priority=priority,
        actor="user:root",
        account=ACCOUNT,
        related_accounts=RELATED,
        upload_ip="203.0.113.9",
        upload_port=443,
        **{**FACTS, **kw},  # type: ignore[arg-type]
    ).id


def test_json_export_of_a_confirmed_case(
    reports: ReportStore, store: Store, confirmed_case: Callable[..., Case]
) -> None:
    case = confirmed_case(files=2)
    item = case.items[0]
    rid = draft(reports, case, urls={item.id: "https://example.org/f/1"}, platform="ExampleChat")
    doc = json.loads(reports.nca_export(rid, "json", actor="user:root"))
    assert doc["schema"] == "bastion.nca-report" and doc["schema_version"] == 1
    assert doc["case_id"] == case.id and doc["priority"] == "P2"
    assert doc["platform"] == "ExampleChat"
    assert doc["detection_method"] == FACTS["detection_method"]
    assert doc["confirmed_at"] == case.decided_at.isoformat().replace("+00:00", "Z")  # type: ignore[union-attr]
    assert doc["nca_reference"] is None
    assert doc["account"]["email"] == "user@example.org"
    assert doc["account"]["login_ips"] == [
        {"ip": "198.51.100.7", "port": 51234, "at": "2025-02-28T09:00:00Z"}
    ]
    assert [a["account_id"] for a in doc["related_accounts"]] == ["acct-43"]
    assert len(doc["files"]) == 2
    data = (IMAGES / "small.jpg").read_bytes()
    first = doc["files"][0]
    assert first["sha256"] == hashlib.sha256(data).hexdigest()
    assert first["md5"] == hashlib.md5(data).hexdigest()
    assert first["url"] == "https://example.org/f/1" and doc["files"][1]["url"] is None
    assert first["upload_ip"] == "203.0.113.9" and first["upload_port"] == 443
    assert first["upload_time"] == item.added_at.isoformat().replace("+00:00", "Z")
    assert first["classification"] == "A1"
    # No content: no base64/bytes field anywhere, and the export round-trips.
    assert set(first) == {
        "item_id", "file_name", "media_type", "size", "sha256", "md5", "url",
        "upload_time", "upload_ip", "upload_port", "classification",
    }  # fmt: skip
    assert build_nca_json(content_from_json(doc)) == doc
    exports = [a for a in audit_actions(store) if a[0] == "report.export"]
    assert exports and exports[-1][1] == f"report:{rid}"
    assert exports[-1][2].get("format") == "json"


def test_pdf_is_printable_text_with_hashes_and_no_media(
    reports: ReportStore, confirmed_case: Callable[..., Case], clock: Clock
) -> None:
    case = confirmed_case(files=1)
    rid = draft(reports, case, priority="P1")
    reports.record_nca_reference(rid, "NCA-2025-000123", actor="user:root")
    pdf = reports.nca_export(rid, "pdf", actor="user:root")
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    text = b"\n".join(re.findall(rb"\((.*?)\) Tj", pdf)).decode("latin-1")
    data = (IMAGES / "small.jpg").read_bytes()
    for needle in (
        f"bastion-case-{case.id}",
        "NCA-2025-000123",
        "P1 - Threat to life",
        hashlib.sha256(data).hexdigest(),
        hashlib.md5(data).hexdigest(),
        "acct-42",
        "user@example.org",
        "198.51.100.7 port 51234",
        "203.0.113.9",
    ):
        assert needle in text, needle
    assert b"/Subtype /Image" not in pdf and b"/XObject" not in pdf  # text only
    assert data[:64] not in pdf and data[-64:] not in pdf
    with pytest.raises(InvalidInput):
        reports.nca_export(rid, "docx", actor="user:root")


def test_pure_pdf_is_deterministic_and_rejects_bad_input() -> None:
    content = NcaReportContent(
        case_id=7,
        priority="P3",
        platform="Example",
        files=(NcaFile(1, "ab" * 32, "cd" * 16),),
        confirmed_at=datetime(2025, 1, 1, tzinfo=UTC),
        **FACTS,
    )
    assert render_nca_pdf(content) == render_nca_pdf(content)
    from bastion.reports.model import ReportInputError

    with pytest.raises(ReportInputError, match="priority"):
        NcaReportContent(case_id=1, priority="P4", platform="x", **FACTS)
    with pytest.raises(ReportInputError, match="sha256"):
        NcaFile(1, "not-a-hash", "cd" * 16)
    with pytest.raises(ReportInputError, match="IP"):
        LoginIp("300.1.1.1")
    assert keep_until(datetime(2024, 2, 29, tzinfo=UTC)) == datetime(2029, 2, 28, tzinfo=UTC)


@pytest.mark.parametrize(
    ("priority", "due"),
    [("P1", timedelta(hours=1)), ("P2", timedelta(hours=24)), ("P3", timedelta(days=7))],
)
def test_deadline_by_priority_and_overdue(
    reports: ReportStore,
    confirmed_case: Callable[..., Case],
    clock: Clock,
    priority: str,
    due: timedelta,
) -> None:
    case = confirmed_case(files=1)
    clock.advance(timedelta(minutes=5))  # drafted a little after confirmation
    r = reports.get(draft(reports, case, priority=priority))
    assert r.authority == "nca" and r.state == State.DRAFTED and r.priority == priority
    assert r.deadline_at == case.decided_at + due  # type: ignore[operator]
    assert reports.overdue_nca(r.deadline_at) == []  # due at, not yet past
    late = r.deadline_at + timedelta(seconds=1)  # type: ignore[operator]
    assert [x.id for x in reports.overdue_nca(late)] == [r.id]
    clock.at = late
    reports.record_nca_reference(r.id, f"REF-{priority}", actor="user:root")
    assert reports.overdue_nca(late + timedelta(days=30)) == []


def test_deadlines_come_from_settings(
    store: Store, key, clock: Clock, confirmed_case: Callable[..., Case]
) -> None:
    from bastion.config import Settings

    reports = ReportStore(store, key, clock=clock, settings=Settings(nca_p3_minutes=30 * 24 * 60))
    case = confirmed_case(files=1)
    r = reports.get(draft(reports, case, priority="P3"))
    assert r.deadline_at == case.decided_at + timedelta(days=30)  # type: ignore[operator]


def test_reference_is_kept_five_years_audited_and_starts_retention(
    store: Store, key, clock: Clock, confirmed_case: Callable[..., Case]
) -> None:
    vault = Vault(store, key, now=clock)
    reports = ReportStore(store, key, clock=clock, vault=vault)
    case = confirmed_case(files=2)
    made = vault.preserve(case.id, actor="system", reason="confirmed", jurisdictions=("UK",))
    assert len(made) == 2
    rid = draft(reports, case)
    clock.advance(timedelta(days=3))
    submitted = clock() - timedelta(hours=2)
    r = reports.record_nca_reference(rid, " NCA-77 ", actor="user:pat", submitted_at=submitted)
    assert r.state == State.FINISHED and r.external_id == "NCA-77"
    assert r.submitted_at == submitted and r.finished_at == submitted
    assert r.keep_until == submitted.replace(year=submitted.year + 5)
    ev = EvidenceRow.__table__
    with store.engine.connect() as conn:
        rows = conn.execute(select(ev).where(ev.c.case_id == case.id)).all()
    assert {row.retain_until for row in rows} == {submitted + vault.rules.period("UK")}
    assert all(row.reports[-1]["reference"] == "NCA-77" for row in rows)
    audits = audit_actions(store)
    ref = [a for a in audits if a[0] == "report.reference"]
    assert len(ref) == 1 and ref[0][1] == f"report:{rid}"
    assert ref[0][2]["reference"] == "NCA-77" and ref[0][2]["late"] is True
    assert any(a[0] == "evidence.report" and a[2].get("jurisdiction") == "UK" for a in audits)
    # Same reference again: no-op; another one: conflict; a bad one: precise error.
    assert reports.record_nca_reference(rid, "NCA-77", actor="user:pat").id == rid
    assert len([a for a in audit_actions(store) if a[0] == "report.reference"]) == 1
    with pytest.raises(ReportConflict):
        reports.record_nca_reference(rid, "NCA-78", actor="user:pat")
    with pytest.raises(InvalidInput):
        reports.record_nca_reference(rid, "bad\nref", actor="user:pat")
    with pytest.raises(InvalidInput):
        reports.record_nca_reference(
            rid, "NCA-77", actor="user:pat", submitted_at=clock() + timedelta(hours=1)
        )
    assert json.loads(reports.nca_export(rid, actor="user:pat"))["nca_reference"] == "NCA-77"


def test_nca_draft_rules(reports: ReportStore, review, confirmed_case: Callable[..., Case]) -> None:
    from tests.review.conftest import ROOT, item, verdict

    case = confirmed_case(files=1)
    rid = draft(reports, case)
    with pytest.raises(ReportExists):
        draft(reports, case)
    sub = review.submit(verdict(), item("open-nca"), actor="system")
    with pytest.raises(ReportConflict):
        draft(reports, review.get_case(ROOT, sub.case_id))
    with pytest.raises(InvalidInput, match="priority"):
        draft(reports, confirmed_case(files=1), priority="urgent")
    with pytest.raises(InvalidInput, match="upload ip"):
        reports.draft_nca_for_case(
            confirmed_case(files=1), priority="P2", actor="u", upload_ip="nope", **FACTS
        )
    # NCA reports never go to the CyberTipline reporter, and NCMEC exports are refused.
    assert Reporter(reports, NoCalls()).run_due() == []  # type: ignore[arg-type]
    assert reports.get(rid).state == State.DRAFTED
    ncmec = reports.draft_for_case(
        confirmed_case(files=1), incident_type=CSAM, reporter_info=REPORTER, actor="u"
    )
    with pytest.raises(ReportConflict):
        reports.nca_export(ncmec.id, actor="u")
    with pytest.raises(ReportConflict):
        reports.record_nca_reference(ncmec.id, "X", actor="u")


def test_one_decision_drafts_both_reports_once(
    reports: ReportStore, store: Store, confirmed_case: Callable[..., Case]
) -> None:
    case = confirmed_case(files=2)
    kw = {
        "actor": "user:root",
        "priority": "P1",
        "incident_type": CSAM,
        "reporter_info": REPORTER,
        "account": ACCOUNT,
        "related_accounts": RELATED,
        "upload_ip": "203.0.113.9",
        "upload_port": 443,
        **FACTS,
    }
    both = reports.draft_for_jurisdictions(case, {"US", "UK"}, **kw)  # type: ignore[arg-type]
    assert [r.authority for r in both] == ["ncmec", "nca"]
    assert {r.case_id for r in both} == {case.id}
    again = reports.draft_for_jurisdictions(case, {"uk", "us"}, **kw)  # type: ignore[arg-type]
    assert [r.id for r in again] == [r.id for r in both]
    drafts = [a for a in audit_actions(store) if a[0] == "report.draft"]
    assert len([d for d in drafts if d[2].get("case_id") == case.id]) == 2
    # The shared facts reached both reports.
    xml = reports.report_xml(both[0].id)
    assert b"<screenName>example_user</screenName>" in xml
    assert b"198.51.100.7" in xml and b"203.0.113.9" in xml
    assert b"escalateToHighPriority" in xml
    doc = json.loads(reports.nca_export(both[1].id, actor="user:root"))
    assert doc["account"]["user_name"] == "example_user" and doc["priority"] == "P1"
    # Adding a jurisdiction later drafts only the missing one.
    other = confirmed_case(files=1)
    us = reports.draft_for_jurisdictions(other, {"US"}, **kw)  # type: ignore[arg-type]
    later = reports.draft_for_jurisdictions(other, {"US", "UK"}, **kw)  # type: ignore[arg-type]
    assert later[0].id == us[0].id and later[1].authority == "nca"
    with pytest.raises(InvalidInput):
        reports.draft_for_jurisdictions(case, {"FR"}, **kw)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="incident_type"):
        reports.draft_for_jurisdictions(
            confirmed_case(files=1), {"US"}, actor="u", priority="P2", **FACTS
        )


def test_invalid_us_facts_leave_no_uk_draft(
    reports: ReportStore, confirmed_case: Callable[..., Case]
) -> None:
    case = confirmed_case(files=1)
    with pytest.raises(InvalidInput):
        reports.draft_for_jurisdictions(
            case,
            {"US", "UK"},
            actor="u",
            priority="P2",
            incident_type="nonsense",
            reporter_info=REPORTER,
            **FACTS,
        )
    assert reports.list() == []  # one transaction: nothing drafted


def test_finished_ncmec_report_starts_us_retention(
    store: Store,
    key,
    clock: Clock,
    confirmed_case: Callable[..., Case],
    fake: tuple[FakeCyberTipline, LoopbackServer],
) -> None:
    _, server = fake
    vault = Vault(store, key, now=clock)
    reports = ReportStore(store, key, clock=clock, vault=vault)
    case = confirmed_case(files=1)
    vault.preserve(case.id, actor="system", reason="confirmed")
    rid = reports.draft_for_case(
        case, incident_type=CSAM, reporter_info=REPORTER, actor="user:root"
    ).id
    clock.advance(timedelta(days=2))
    done = Reporter(reports, CyberTiplineClient(server.url, *CREDENTIALS, timeout=5.0)).run(rid)
    assert done.state == State.FINISHED
    ev = EvidenceRow.__table__
    with store.engine.connect() as conn:
        row = conn.execute(select(ev).where(ev.c.case_id == case.id)).one()
    assert row.retain_until == done.finished_at + vault.rules.period("US")  # type: ignore[operator]
    assert row.reports[-1] == {
        "jurisdiction": "US",
        "reference": done.external_id,
        "reported_at": done.finished_at.isoformat(),  # type: ignore[union-attr]
    }
