"""A confirmed account case's report drafts (issue 15, item 5), on SQLite and PostgreSQL: with
the reporting contact configured (``report_*`` settings) the final confirmation itself drafts a
text-only CyberTipline report and a UK NCA report through the shared drafting, in the
decision's transaction, exactly once (console and ``/v1/cases`` alike, after four-eyes);
without it nothing is drafted and the decision answer says a draft is needed; a contact the
drafting refuses leaves the decision standing and is audited. Events are flags and metadata
only, never text."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bastion.config import ConfigError, Settings
from bastion.db import Store
from bastion.reports.drafting import (
    ACCOUNT_DETECTION_METHOD,
    AUTO_DRAFT_ACTOR,
    draft_account_case_in,
)
from bastion.reports.model import ACCOUNT_INCIDENT_TYPE
from bastion.reports.ncmec import CyberTiplineClient
from bastion.reports.reporter import Reporter
from bastion.review import Viewer
from bastion.server import create_app
from tests.reports.fake_cybertipline import PASSWORD, USER, FakeCyberTipline, LoopbackServer
from tests.web.accounts import ACCOUNT, open_account_case
from tests.web.conftest import Console, console_settings
from tests.web.seed import POLICY, scan_cases, seed_store

ADA = Viewer("ada", "admin")
CONTACT: dict[str, Any] = {
    "report_first_name": "Pat",
    "report_last_name": "Example",
    "report_email": "safety@example.org",
    "report_phone": "+44 20 7946 0000",
}


def make_console(
    store: Store, tmp_path: Path, testdata: Path, *, four_eyes: bool = False, **overrides: object
) -> Iterator[Console]:
    if four_eyes:
        (tmp_path / "policy.yaml").write_text(POLICY.replace("four_eyes: false", "four_eyes: true"))
    token = seed_store(store, testdata)
    settings = console_settings(tmp_path, **overrides)
    app = create_app(settings, store=store)
    with TestClient(app, follow_redirects=False) as main:
        cases = scan_cases(main.post, testdata, token)
        yield Console(app=app, store=store, settings=settings, cases=cases, main=main)


@pytest.fixture
def filing(web_store: Store, tmp_path: Path, testdata: Path) -> Iterator[Console]:
    """The console with the reporting contact configured."""
    yield from make_console(web_store, tmp_path, testdata, **CONTACT)


@pytest.fixture
def filing4(web_store: Store, tmp_path: Path, testdata: Path) -> Iterator[Console]:
    """The same, with four-eyes review."""
    yield from make_console(web_store, tmp_path, testdata, four_eyes=True, **CONTACT)


@pytest.fixture
def fake() -> Iterator[tuple[FakeCyberTipline, LoopbackServer]]:
    """The CyberTipline test double on loopback."""
    tipline = FakeCyberTipline()
    server = LoopbackServer(tipline.app).start()
    try:
        yield tipline, server
    finally:
        server.stop()


def review_key(console: Console, user: str) -> dict[str, str]:
    """A ``review`` key bound to the console user (it acts as them on ``/v1/cases``)."""
    _, token = console.store.create_api_key(f"{user}@tooling", {"review"}, user=user)
    return {"Authorization": f"Bearer {token}"}


def drafts(console: Console) -> list[tuple[int, str, str]]:
    return [(r.case_id, r.authority, r.created_by) for r in console.rt.reports.list()]


def test_the_console_confirmation_drafts_both_reports_text_only(filing: Console) -> None:
    case_id = open_account_case(filing.store)
    rex = filing.login("rex")
    assert rex.post_form(f"/cases/{case_id}/claim").status_code == 303
    r = rex.post_form(
        f"/cases/{case_id}/decide", {"decision": "confirmed", "classification": "grooming"}
    )
    assert r.status_code == 303, r.text
    assert [d.action for d in filing.rt.outbox.list(case_id=case_id)] == ["restrict_account"]
    reports = filing.rt.reports
    us, uk = reports.for_case(case_id, "ncmec"), reports.for_case(case_id, "nca")
    assert us is not None and uk is not None
    assert (us.state, us.incident_type, us.files, us.created_by) == (
        "drafted",
        ACCOUNT_INCIDENT_TYPE,
        (),
        AUTO_DRAFT_ACTOR,
    )
    assert (uk.state, uk.priority, uk.files, uk.created_by) == (
        "drafted",
        "P2",
        (),
        AUTO_DRAFT_ACTOR,
    )
    xml = reports.report_xml(us.id).decode()
    assert f"<incidentType>{ACCOUNT_INCIDENT_TYPE}</incidentType>" in xml
    assert "<fileDetails" not in xml and f"<espIdentifier>{ACCOUNT}</espIdentifier>" in xml
    assert "<firstName>Pat</firstName>" in xml and "safety@example.org" in xml
    # additionalInfo: the detection method, the detectors that fired and their evidence counts.
    assert f"Detection method: {ACCOUNT_DETECTION_METHOD}" in xml
    assert re.search(r"Detector blocked_reported: \d+ points; evidence counts: blocked=2", xml)
    assert "Detector fanout" in xml and "grooming" in xml
    doc = json.loads(reports.nca_export(uk.id, "json", actor="test"))
    assert doc["detection_method"] == ACCOUNT_DETECTION_METHOD
    assert "Detector fanout" in doc["summary"]
    # Audited like a person's draft, by the service, beside the reviewer's decision.
    drafted = filing.store.recent_audit(100, action="report.draft")
    assert {(e.actor, e.detail["authority"]) for e in drafted} == {
        (AUTO_DRAFT_ACTOR, "ncmec"),
        (AUTO_DRAFT_ACTOR, "nca"),
    }
    assert filing.store.recent_audit(100, action="case.decide")[0].actor == "user:rex"
    # The drafts are kept as drafts: the report page shows them, and drafting again (a retried
    # hook) returns the same two, nothing new.
    sue = filing.login("sue")
    r = sue.get(f"/cases/{case_id}/report")
    assert r.status_code in (302, 303) and r.headers["location"] == f"/reports/{us.id}"
    case = filing.rt.review.get_case(ADA, case_id)
    with filing.store.engine.begin() as conn:
        again = draft_account_case_in(filing.rt, conn, case)
    assert [r.id for r in again] == [us.id, uk.id]
    assert len(drafts(filing)) == 2


def test_four_eyes_drafts_on_the_final_confirm_through_the_api(filing4: Console) -> None:
    case_id = open_account_case(filing4.store)
    rex, sue = review_key(filing4, "rex"), review_key(filing4, "sue")
    c = filing4.main
    assert c.post(f"/v1/cases/{case_id}/claim", headers=rex).status_code == 200
    body = {"decision": "confirmed", "classification": "sextortion"}
    first = c.post(f"/v1/cases/{case_id}/decide", json=body, headers=rex).json()
    assert (first["event"], first["final"], first["reports"], first["report_needed"]) == (
        "first_confirm",
        False,
        [],
        False,
    )
    assert drafts(filing4) == []  # not before the second reviewer agrees
    assert c.post(f"/v1/cases/{case_id}/claim", headers=sue).status_code == 200
    done = c.post(f"/v1/cases/{case_id}/decide", json=body, headers=sue).json()
    assert (done["state"], done["actions"], done["report_needed"]) == (
        "confirmed",
        ["restrict_account"],
        False,
    )
    assert len(done["reports"]) == 2
    assert drafts(filing4) == [
        (case_id, "nca", AUTO_DRAFT_ACTOR),
        (case_id, "ncmec", AUTO_DRAFT_ACTOR),
    ]
    # A repeated decision is refused and drafts nothing more.
    assert c.post(f"/v1/cases/{case_id}/claim", headers=sue).status_code != 200
    again = c.post(f"/v1/cases/{case_id}/decide", json=body, headers=sue)
    assert again.status_code in (409, 422), again.text
    assert len(drafts(filing4)) == 2


def test_without_the_contact_nothing_is_drafted_and_a_draft_is_needed(
    web_store: Store, tmp_path: Path, testdata: Path
) -> None:
    for console in make_console(web_store, tmp_path, testdata):
        case_id = open_account_case(console.store)
        rex = review_key(console, "rex")
        c = console.main
        assert c.post(f"/v1/cases/{case_id}/claim", headers=rex).status_code == 200
        body = {"decision": "confirmed", "classification": "grooming"}
        done = c.post(f"/v1/cases/{case_id}/decide", json=body, headers=rex).json()
        assert (done["state"], done["reports"], done["report_needed"]) == ("confirmed", [], True)
        assert drafts(console) == []
        assert console.store.recent_audit(100, action="report.draft") == []
        # The console offers the report form (a person drafts it).
        form = console.login("sue").get(f"/cases/{case_id}/report")
        assert form.status_code == 200 and 'name="first_name"' in form.text


def test_a_refused_contact_leaves_the_decision_standing(
    web_store: Store, tmp_path: Path, testdata: Path
) -> None:
    long_name = {**CONTACT, "report_first_name": "P" * 300}  # over the CyberTipline's 200
    for console in make_console(web_store, tmp_path, testdata, **long_name):
        case_id = open_account_case(console.store)
        rex = console.login("rex")
        assert rex.post_form(f"/cases/{case_id}/claim").status_code == 303
        r = rex.post_form(
            f"/cases/{case_id}/decide", {"decision": "confirmed", "classification": "grooming"}
        )
        assert r.status_code == 303, r.text
        case = console.rt.review.get_case(ADA, case_id)
        assert case.state == "confirmed"
        assert [d.action for d in console.rt.outbox.list(case_id=case_id)] == ["restrict_account"]
        assert drafts(console) == []
        [failed] = console.store.recent_audit(100, action="report.auto_draft_failed")
        assert failed.target == f"case:{case_id}" and failed.actor == AUTO_DRAFT_ACTOR


def test_the_contact_is_all_or_nothing() -> None:
    with pytest.raises(ConfigError, match="report_email"):
        Settings(report_first_name="Pat", report_last_name="Example")
    with pytest.raises(ConfigError, match="not an email"):
        Settings(**{**CONTACT, "report_email": "nobody"})
    assert Settings(**CONTACT).report_phone == CONTACT["report_phone"]


def test_the_service_s_draft_is_held_until_a_person_sends_it(
    web_store: Store, tmp_path: Path, testdata: Path, fake: tuple[FakeCyberTipline, LoopbackServer]
) -> None:
    tipline, server = fake
    login = {"ncmec_url": server.url, "ncmec_username": USER, "ncmec_password": PASSWORD}
    for filing in make_console(web_store, tmp_path, testdata, **CONTACT, **login):
        held_until_sent(filing, tipline, server)


def held_until_sent(filing: Console, tipline: FakeCyberTipline, server: LoopbackServer) -> None:
    case_id = open_account_case(filing.store)
    rex = filing.login("rex")
    assert rex.post_form(f"/cases/{case_id}/claim").status_code == 303
    rex.post_form(
        f"/cases/{case_id}/decide", {"decision": "confirmed", "classification": "grooming"}
    )
    us = filing.rt.reports.for_case(case_id)
    assert us is not None and us.held and us.state == "drafted"
    key = {"Authorization": f"Bearer {filing.store.create_api_key('filer', {'report'})[1]}"}
    assert filing.main.get(f"/v1/reports/{us.id}", headers=key).json()["held"] is True
    # The worker's reporter, with a login configured, leaves it alone.
    client = CyberTiplineClient(server.url, USER, PASSWORD, timeout=5)
    try:
        assert Reporter(filing.rt.reports, client).run_due() == []
    finally:
        client.close()
    assert tipline.finished() == [] and filing.rt.reports.get(us.id).state == "drafted"
    # A person reads it and sends it: it reaches the CyberTipline, text only.
    sue = filing.login("sue")
    page = sue.get(f"/reports/{us.id}").text
    assert 'id="held"' in page and "held for a person" in page
    r = sue.post_form(f"/reports/{us.id}/send")
    assert r.status_code == 303, r.text
    sent = filing.rt.reports.get(us.id)
    assert sent.state == "finished" and not sent.held
    (done,) = tipline.finished()
    assert done.id == sent.external_id and done.files == []
    [audit] = filing.store.recent_audit(100, action="report.send_now")
    assert (audit.actor, audit.detail["held"]) == ("user:sue", True)
