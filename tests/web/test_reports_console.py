"""Reports in the console over HTTP (SQLite and PostgreSQL): roles, CSRF, preview, drafting from
a case confirmed through the console, retry, retract, "Send now" against the fake CyberTipline,
and the sealed CyberTipline login. Media are the benign test photos the web fixtures scan."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from bastion.reports.model import INCIDENT_TYPES
from bastion.reports.ncmec import CyberTiplineClient
from bastion.reports.reporter import Reporter
from bastion.reports.rows import ReportCredentialRow
from bastion.review import Viewer
from bastion.server import create_app
from tests.reports.fake_cybertipline import PASSWORD as NCMEC_PASSWORD
from tests.reports.fake_cybertipline import USER as NCMEC_USER
from tests.reports.fake_cybertipline import FakeCyberTipline, LoopbackServer
from tests.web.conftest import Console, User, console_settings
from tests.web.seed import EXACT_PHOTO

FORM = {
    "incident_type": INCIDENT_TYPES[0],
    "first_name": "Pat",
    "last_name": "Example",
    "email": "safety@example.org",
    "additional_info": "Found by hash match during upload scanning.",
}


@pytest.fixture
def fake() -> Iterator[tuple[FakeCyberTipline, LoopbackServer]]:
    tipline = FakeCyberTipline()
    server = LoopbackServer(tipline.app).start()
    try:
        yield tipline, server
    finally:
        server.stop()


def confirm(console: Console, name: str = "exact") -> int:
    """Confirm a case the way a reviewer does: claim, then decide (the 'exact' rule lets the
    reviewer decide from the match)."""
    rex = console.login("rex")
    case_id = console.cases[name]
    assert rex.post_form(f"/cases/{case_id}/claim").status_code == 303
    r = rex.post_form(f"/cases/{case_id}/decide", {"decision": "confirmed", "classification": "B2"})
    assert r.status_code == 303 and "event=confirmed" in r.headers["location"], r.text
    return case_id


def draft(client: User, case_id: int) -> int:
    r = client.post_form(f"/cases/{case_id}/report", FORM)
    assert r.status_code == 303, r.text
    found = re.fullmatch(r"/reports/(\d+)\?done=drafted", r.headers["location"])
    assert found, r.headers["location"]
    return int(found.group(1))


def xml_of(page: str, element_id: str) -> str:
    found = re.search(rf'<pre class="xml" id="{element_id}">(.*?)</pre>', page, re.S)
    assert found, f"no {element_id} on the page"
    return html.unescape(found.group(1))


def test_roles_limit_reports_to_admins_and_senior_reviewers(console: Console) -> None:
    case_id = confirm(console)
    sue, ada = console.login("sue"), console.login("ada")
    for path in ("/reports", f"/cases/{case_id}/report"):
        assert sue.get(path).status_code == 200
        assert ada.get(path).status_code == 200
    assert ada.get("/admin/ncmec").status_code == 200
    assert sue.get("/admin/ncmec").status_code == 403
    assert 'href="/reports"' in sue.get("/cases").text
    for name in ("rex", "aud"):
        client = console.login(name)
        assert 'href="/reports"' not in client.get("/audit" if name == "aud" else "/cases").text
        for path in ("/reports", f"/cases/{case_id}/report", "/admin/ncmec", "/reports/1"):
            assert client.get(path).status_code == 403, (name, path)
        assert client.post_form(f"/cases/{case_id}/report", FORM).status_code == 403
        assert client.post_form("/reports/1/retract", {"reason": "x"}).status_code == 403
        assert client.post_form("/admin/ncmec", {"username": "u", "password": "p"}).status_code
    assert console.rt.reports.for_case(case_id) is None
    assert "access.denied" in console.audit_actions("access")
    # The confirmed case offers the report to those who may file it, not to reviewers.
    assert f'href="/cases/{case_id}/report"' in sue.get(f"/cases/{case_id}").text
    assert "/report" not in console.login("rex").get(f"/cases/{case_id}").text


def test_posts_need_the_session_csrf_token(console: Console) -> None:
    case_id = confirm(console)
    sue = console.login("sue")
    r = sue.post(f"/cases/{case_id}/report", data={**FORM, "csrf_token": "forged"})
    assert r.status_code == 403
    r = sue.post("/admin/ncmec", data={"username": "u", "password": "p" * 12})
    assert r.status_code == 403
    assert console.rt.reports.for_case(case_id) is None
    rid = draft(sue, case_id)
    assert sue.post(f"/reports/{rid}/retract", data={"reason": "x"}).status_code == 403
    assert console.rt.reports.get(rid).state == "drafted"


def test_only_a_confirmed_case_is_reported(console: Console) -> None:
    sue = console.login("sue")
    case_id = console.cases["bridge"]  # still open
    assert sue.get(f"/cases/{case_id}/report").status_code == 409
    assert sue.post_form(f"/cases/{case_id}/report", FORM).status_code == 409
    assert sue.get("/cases/999999/report").status_code == 404
    assert console.rt.reports.list() == []


def test_preview_stores_nothing_and_submit_drafts_the_report(
    console: Console, testdata: Path
) -> None:
    case_id = confirm(console)
    sue = console.login("sue")
    listing = sue.get("/reports").text
    assert f'<tr data-case="{case_id}">' in listing  # confirmed, not yet reported
    form = sue.get(f"/cases/{case_id}/report").text
    assert all(html.escape(t) in form for t in INCIDENT_TYPES)

    r = sue.post_form(f"/cases/{case_id}/report", {**FORM, "preview": "1"})
    assert r.status_code == 200, r.text
    preview = xml_of(r.text, "report-preview")
    assert "<incidentType>Child Pornography" in preview
    assert "<espIdentifier>uploader-3</espIdentifier>" in preview
    assert "Found by hash match during upload scanning." in preview
    assert console.rt.reports.for_case(case_id) is None  # a preview stores nothing

    rid = draft(sue, case_id)
    report = console.rt.reports.get(rid)
    assert (report.case_id, report.state, report.created_by) == (case_id, "drafted", "user:sue")
    assert len(report.files) == 1
    page = sue.get(f"/reports/{rid}?done=drafted").text
    stored = xml_of(page, "report-xml")
    assert stored == preview  # the preview showed exactly what is sent
    media = (testdata / EXACT_PHOTO).read_bytes()
    assert media[:64].decode("latin-1") not in stored and "base64" not in stored
    assert "Report drafted" in page and 'data-state="drafted"' in page
    # The form now offers only the UK report; posting US again leads to the report, unchanged.
    form = sue.get(f"/cases/{case_id}/report").text
    assert f'href="/reports/{rid}"' in form and 'id="j-us"' not in form
    again = sue.post_form(f"/cases/{case_id}/report", FORM)
    assert again.status_code == 303 and again.headers["location"] == f"/reports/{rid}"
    assert [r.id for r in console.rt.reports.list()] == [rid]
    listing = sue.get("/reports").text
    assert f'<tr data-report="{rid}" data-state="drafted">' in listing
    assert f'<tr data-case="{case_id}">' not in listing
    assert re.search(r'class="age">\d+ min<', listing)
    assert f'data-report="{rid}"' not in sue.get("/reports?state=finished").text
    assert f'data-report="{rid}"' in sue.get("/reports?state=drafted&authority=ncmec").text
    assert sue.get("/reports?state=bogus").status_code == 400
    assert sue.get("/reports?authority=bogus").status_code == 400
    actions = console.audit_actions("report")
    assert "report.draft" in actions and "report.view" in actions


def test_bad_report_input_shows_the_form_again(console: Console) -> None:
    case_id = confirm(console)
    sue = console.login("sue")
    r = sue.post_form(f"/cases/{case_id}/report", {**FORM, "email": "not-an-email"})
    assert r.status_code == 400 and "email" in r.text and 'value="Pat"' in r.text
    r = sue.post_form(f"/cases/{case_id}/report", {**FORM, "incident_type": "Made up"})
    assert r.status_code == 400
    assert console.rt.reports.for_case(case_id) is None


def test_retract_an_unsent_report_and_retry_a_failed_one(
    console: Console, fake: tuple[FakeCyberTipline, LoopbackServer]
) -> None:
    tipline, server = fake
    case_id = confirm(console)
    sue = console.login("sue")
    rid = draft(sue, case_id)
    assert sue.post_form(f"/reports/{rid}/retry").status_code == 409  # not failed
    # The worker's reporter fails for good at submit (one attempt allowed): failed.
    tipline.fail("submit", "http500")
    client = CyberTiplineClient(server.url, NCMEC_USER, NCMEC_PASSWORD, timeout=5)
    try:
        failed = Reporter(console.rt.reports, client, max_attempts=1).run(rid)
    finally:
        client.close()
    assert failed.state == "failed" and failed.last_error
    page = sue.get(f"/reports/{rid}").text
    assert 'id="retry-form"' in page
    assert sue.post_form(f"/reports/{rid}/retry").status_code == 303
    assert console.rt.reports.get(rid).state == "drafted"

    assert sue.post_form(f"/reports/{rid}/retract", {"reason": ""}).status_code == 400
    r = sue.post_form(f"/reports/{rid}/retract", {"reason": "drafted in error"})
    assert r.status_code == 303
    report = console.rt.reports.get(rid)
    assert report.state == "retracted" and report.retract_reason == "drafted in error"
    assert "drafted in error" in sue.get(f"/reports/{rid}").text
    actions = console.audit_actions("report")
    assert "report.retry" in actions and "report.retract_request" in actions


@pytest.mark.slow  # over ~5 s: `make test` runs it, `make test-fast` does not
def test_send_now_finishes_the_report_at_the_fake_cybertipline(
    console: Console, fake: tuple[FakeCyberTipline, LoopbackServer], tmp_path: Path
) -> None:
    tipline, server = fake
    case_id = confirm(console)
    sue = console.login("sue")
    rid = draft(sue, case_id)
    # Without a login configured, sending is refused and nothing changes.
    assert sue.post_form(f"/reports/{rid}/send").status_code == 409
    assert console.rt.reports.get(rid).state == "drafted"

    settings = console_settings(
        tmp_path, ncmec_url=server.url, ncmec_username=NCMEC_USER, ncmec_password=NCMEC_PASSWORD
    )
    app = create_app(settings, store=console.store)
    with TestClient(app, follow_redirects=False) as main:
        other = Console(app, console.store, settings, console.cases, main)
        sue2 = other.login("sue")
        r = sue2.post_form(f"/reports/{rid}/send")
        assert r.status_code == 303, r.text
        report = other.rt.reports.get(rid)
        assert report.state == "finished" and report.external_id
        assert [f.state for f in report.files] == ["described"]
        assert len(tipline.finished()) == 1
        page = sue2.get(f"/reports/{rid}").text
        assert 'data-state="finished"' in page and 'id="retract-form"' not in page
        assert sue2.post_form(f"/reports/{rid}/retract", {"reason": "x"}).status_code == 409
        ncmec = other.login("ada").get("/admin/ncmec").text
        assert 'id="env-override"' in ncmec and NCMEC_PASSWORD not in ncmec


def test_credentials_form_stores_the_login_sealed(console: Console) -> None:
    ada = console.login("ada")
    secret = "hunter2-very-secret-password"
    bad = {"username": "esp-user", "password": secret, "environment": "test"}
    r = ada.post_form("/admin/ncmec", {**bad, "url": "http://plain.example/ispws"})
    assert r.status_code == 400 and "https" in r.text
    assert console.rt.reports.credentials() is None
    r = ada.post_form("/admin/ncmec", {**bad, "url": "https://exttest.example.org/ispws"})
    assert r.status_code == 303
    creds = console.rt.reports.credentials()
    assert creds is not None and creds.source == "console"
    assert (creds.username, creds.password) == ("esp-user", secret)
    page = ada.get("/admin/ncmec?saved=1").text
    assert "esp-user" in page and secret not in page
    table = ReportCredentialRow.__table__
    with console.store.engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(sa.select(table)).all()]
    assert len(rows) == 1
    dump = repr(rows).encode()
    assert secret.encode() not in dump and b"esp-user" not in dump
    assert all(secret not in str(e.detail) for e in console.store.recent_audit(1000))
    assert "report.credentials" in console.audit_actions("report")


def test_an_nca_report_is_exported_and_its_reference_recorded(console: Console) -> None:
    case_id = confirm(console)
    case = console.rt.review.get_case(Viewer("sue", "senior_reviewer"), case_id)
    rid = console.rt.reports.draft_nca_for_case(
        case,
        priority="P2",
        detection_method="hash match",
        summary="Matched a listed item.",
        actor="user:sue",
    ).id
    sue = console.login("sue")
    page = sue.get(f"/reports/{rid}").text
    assert 'id="nca-export"' in page and 'id="report-xml"' not in page
    assert 'id="send-form"' not in page and 'id="reference-form"' in page
    assert f'data-report="{rid}"' in sue.get("/reports?authority=nca").text
    assert f'data-report="{rid}"' not in sue.get("/reports?authority=ncmec").text
    pdf = sue.get(f"/reports/{rid}/export?fmt=pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert "attachment" in pdf.headers["content-disposition"]
    doc = sue.get(f"/reports/{rid}/export?fmt=json")
    assert doc.status_code == 200 and "Matched a listed item." in doc.text
    assert sue.get(f"/reports/{rid}/export?fmt=exe").status_code == 400
    assert console.login("rex").get(f"/reports/{rid}/export?fmt=json").status_code == 403
    assert "report.export" in console.audit_actions("report")
    assert sue.post_form(f"/reports/{rid}/reference", {"reference": ""}).status_code == 400
    r = sue.post_form(f"/reports/{rid}/reference", {"reference": "NCA-0001"})
    assert r.status_code == 303
    report = console.rt.reports.get(rid)
    assert report.state == "finished" and report.external_id == "NCA-0001"


UK = {
    "jurisdiction": ["US", "UK"],
    "nca_priority": "P2",
    "nca_detection_method": "hash match against a hash list",
    "nca_email": "user@example.org",
    "nca_profile_url": "https://example.org/u/3",
    "nca_login_ips": "192.0.2.10\n198.51.100.7",
    "nca_related_accounts": "acct-77\nacct-78",
}


def test_one_form_post_drafts_the_us_and_uk_reports(console: Console) -> None:
    case_id = confirm(console)
    sue = console.login("sue")
    page = sue.get(f"/cases/{case_id}/report").text
    assert 'id="j-us"' in page and 'id="j-uk"' in page and 'id="nca-fields"' in page
    r = sue.post_form(f"/cases/{case_id}/report", {**FORM, **UK})
    assert r.status_code == 303, r.text
    us = console.rt.reports.for_case(case_id)
    uk = console.rt.reports.for_case(case_id, "nca")
    assert us is not None and uk is not None and us.id != uk.id
    assert r.headers["location"] == f"/reports/{us.id}?done=drafted"
    assert uk.priority == "P2" and uk.state == "drafted"
    doc = sue.get(f"/reports/{uk.id}/export?fmt=json").json()
    assert doc["priority"] == "P2" and doc["detection_method"] == UK["nca_detection_method"]
    assert doc["summary"] == FORM["additional_info"]
    assert doc["account"]["email"] == "user@example.org"
    assert doc["account"]["profile_url"] == "https://example.org/u/3"
    assert [x["ip"] for x in doc["account"]["login_ips"]] == ["192.0.2.10", "198.51.100.7"]
    assert [a["account_id"] for a in doc["related_accounts"]] == ["acct-77", "acct-78"]
    assert f'href="/reports/{uk.id}"' in sue.get(f"/reports/{us.id}").text
    listing = sue.get("/reports").text
    assert f'href="/reports/{uk.id}/export?fmt=json"' in listing
    assert f'href="/reports/{uk.id}/export?fmt=pdf"' in listing
    assert f'href="/reports/{uk.id}#reference-form"' in listing
    assert f'href="/reports/{us.id}/export' not in listing
    # Posting again changes nothing; the form now leads to the report.
    before = [(x.id, x.state) for x in console.rt.reports.list()]
    r = sue.post_form(f"/cases/{case_id}/report", {**FORM, **UK})
    assert r.status_code == 303 and r.headers["location"] == f"/reports/{us.id}"
    assert [(x.id, x.state) for x in console.rt.reports.list()] == before
    assert sue.get(f"/cases/{case_id}/report").headers["location"] == f"/reports/{us.id}"


def test_a_case_with_a_us_report_can_add_the_uk_one(console: Console) -> None:
    case_id = confirm(console)
    sue = console.login("sue")
    us = draft(sue, case_id)
    page = sue.get(f"/cases/{case_id}/report")
    assert page.status_code == 200 and 'id="j-us"' not in page.text
    assert f'href="/reports/{us}"' in page.text
    bad = sue.post_form(
        f"/cases/{case_id}/report",
        {"additional_info": "Listed item.", **UK, "jurisdiction": "UK", "nca_priority": "P9"},
    )
    assert bad.status_code == 400 and "priority" in bad.text
    assert console.rt.reports.for_case(case_id, "nca") is None
    r = sue.post_form(
        f"/cases/{case_id}/report",
        {"additional_info": "Listed item.", **UK, "jurisdiction": "UK"},
    )
    assert r.status_code == 303, r.text
    uk = console.rt.reports.for_case(case_id, "nca")
    assert uk is not None and r.headers["location"] == f"/reports/{uk.id}?done=drafted"
    assert console.rt.reports.for_case(case_id).id == us  # type: ignore[union-attr]
    assert len(console.rt.reports.list()) == 2
