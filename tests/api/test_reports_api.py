"""/v1/reports over HTTP on SQLite and PostgreSQL: the ``report`` scope, problem details,
drafting from a confirmed case, the XML, retry and retract, and one end-to-end run of the
reporter against the fake CyberTipline. Cases come from scanning the benign test photos."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from bastion import pipeline
from bastion.db import Store
from bastion.reports.model import INCIDENT_TYPES
from bastion.reports.ncmec import CyberTiplineClient
from bastion.reports.reporter import Reporter
from bastion.review import Decision, Viewer
from bastion.server import create_app
from tests.api.conftest import bearer
from tests.reports.fake_cybertipline import PASSWORD, USER, FakeCyberTipline, LoopbackServer
from tests.web.conftest import console_settings
from tests.web.seed import EXACT_PHOTO, scan_cases, seed_store

ADA = Viewer("ada", "admin")
BODY = {
    "incident_type": INCIDENT_TYPES[0],
    "first_name": "Pat",
    "last_name": "Example",
    "email": "safety@example.org",
    "escalation_reason": "Matched a listed item.",
}


@dataclass
class Api:
    app: FastAPI
    client: TestClient
    store: Store
    cases: dict[str, int]

    @property
    def rt(self):  # type: ignore[no-untyped-def]
        return self.app.state.runtime

    def confirm(self, name: str = "exact") -> int:
        case_id = self.cases[name]
        self.rt.review.claim(ADA, case_id)
        outcome = pipeline.decide(self.rt, ADA, case_id, Decision.confirmed("B2"))
        assert outcome.case.state == "confirmed"
        return case_id


@pytest.fixture
def api(api_store: Store, tmp_path: Path, testdata: Path) -> Iterator[Api]:
    token = seed_store(api_store, testdata)
    app = create_app(console_settings(tmp_path), store=api_store)
    with TestClient(app) as client:
        cases = scan_cases(client.post, testdata, token, names=("bridge", "exact"))
        yield Api(app, client, api_store, cases)


@pytest.fixture
def fake() -> Iterator[tuple[FakeCyberTipline, LoopbackServer]]:
    tipline = FakeCyberTipline()
    server = LoopbackServer(tipline.app).start()
    try:
        yield tipline, server
    finally:
        server.stop()


def problem(r, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    doc = r.json()
    assert doc["status"] == status and doc["title"]
    return doc


def test_the_report_scope_is_required(api: Api) -> None:
    case_id = api.confirm()
    c = api.client
    assert problem(c.get("/v1/reports"), 401)
    other = bearer(api.store, "matcher", "match", "curate")
    doc = problem(c.get("/v1/reports", headers=other), 403)
    assert "'report'" in doc["detail"]
    # A key without the scope hears 403, not what is wrong with its body.
    problem(c.post("/v1/reports", headers=other, json={"bogus": 1}), 403)
    problem(c.post("/v1/reports", headers=other, json={**BODY, "case_id": case_id}), 403)
    assert api.rt.reports.for_case(case_id) is None
    for scopes in (("report",), ("admin",)):
        headers = bearer(api.store, f"k-{scopes[0]}", *scopes)
        assert c.get("/v1/reports", headers=headers).status_code == 200


def test_draft_read_xml_and_list(api: Api, testdata: Path) -> None:
    case_id = api.confirm()
    key = bearer(api.store, "filer", "report")
    c = api.client
    r = c.post("/v1/reports", headers=key, json={**BODY, "case_id": case_id})
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["case_id"] == case_id and out["state"] == "drafted"
    assert out["created_by"] == "key:filer" and out["authority"] == "ncmec"
    assert out["age_seconds"] is not None and out["age_seconds"] >= 0
    assert [f["state"] for f in out["files"]] == ["pending"]
    rid = out["id"]

    assert c.get(f"/v1/reports/{rid}", headers=key).json()["id"] == rid
    xml = c.get(f"/v1/reports/{rid}/xml", headers=key)
    assert xml.status_code == 200 and xml.headers["content-type"].startswith("application/xml")
    assert b"<espIdentifier>uploader-3</espIdentifier>" in xml.content
    assert b"Matched a listed item." in xml.content
    assert (testdata / EXACT_PHOTO).read_bytes()[:64] not in xml.content
    audit = api.store.recent_audit(100, action="report.view")
    assert audit and audit[0].actor == "key:filer"

    ids = [x["id"] for x in c.get("/v1/reports?state=drafted&authority=ncmec", headers=key).json()]
    assert ids == [rid]
    assert c.get("/v1/reports?state=finished", headers=key).json() == []
    problem(c.get("/v1/reports?state=bogus", headers=key), 422)
    problem(c.get("/v1/reports?authority=bogus", headers=key), 422)

    doc = problem(c.post("/v1/reports", headers=key, json={**BODY, "case_id": case_id}), 409)
    assert doc["report_id"] == rid
    assert "report.draft" in [e.action for e in api.store.recent_audit(100, action="report")]


def test_problem_details_for_bad_requests(api: Api) -> None:
    key = bearer(api.store, "filer", "report")
    c = api.client
    open_case = api.cases["bridge"]
    problem(c.post("/v1/reports", headers=key, json={**BODY, "case_id": open_case}), 409)
    problem(c.post("/v1/reports", headers=key, json={**BODY, "case_id": 987654}), 404)
    confirmed = api.confirm()
    for bad in ({"email": "nope"}, {"incident_type": "Made up"}, {"extra": 1}, {"case_id": 0}):
        problem(c.post("/v1/reports", headers=key, json={**BODY, "case_id": confirmed, **bad}), 422)
    malformed = {**key, "Content-Type": "application/json"}
    problem(c.post("/v1/reports", headers=malformed, content=b"{"), 400)
    assert api.rt.reports.for_case(confirmed) is None
    for path in ("/v1/reports/424242", "/v1/reports/424242/xml"):
        problem(c.get(path, headers=key), 404)
    for path in ("/v1/reports/0", f"/v1/reports/{2**63}"):  # outside the documented id range
        problem(c.get(path, headers=key), 422)
    problem(c.get("/v1/reports/abc", headers=key), 422)
    problem(c.post("/v1/reports/424242/retry", headers=key), 404)
    problem(c.post("/v1/reports/424242/retract", headers=key, json={"reason": "x"}), 404)
    case = api.rt.review.get_case(ADA, confirmed)
    nca = api.rt.reports.draft_nca_for_case(
        case, priority="P3", detection_method="hash match", summary="Listed item.", actor="test"
    )
    assert c.get("/v1/reports?authority=nca", headers=key).json()[0]["id"] == nca.id
    problem(c.get(f"/v1/reports/{nca.id}/xml", headers=key), 409)


def test_retry_and_retract(api: Api, fake: tuple[FakeCyberTipline, LoopbackServer]) -> None:
    tipline, server = fake
    key = bearer(api.store, "filer", "report")
    c = api.client
    rid = c.post("/v1/reports", headers=key, json={**BODY, "case_id": api.confirm()}).json()["id"]
    problem(c.post(f"/v1/reports/{rid}/retry", headers=key), 409)  # not failed
    tipline.fail("submit", "http500")
    client = CyberTiplineClient(server.url, USER, PASSWORD, timeout=5)
    try:
        assert Reporter(api.rt.reports, client, max_attempts=1).run(rid).state == "failed"
    finally:
        client.close()
    r = c.post(f"/v1/reports/{rid}/retry", headers=key)
    assert r.status_code == 200 and r.json()["state"] == "drafted"
    problem(c.post(f"/v1/reports/{rid}/retract", headers=key, json={"reason": ""}), 422)
    r = c.post(f"/v1/reports/{rid}/retract", headers=key, json={"reason": "filed in error"})
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "retracted" and r.json()["retract_reason"] == "filed in error"
    actions = [(e.action, e.actor) for e in api.store.recent_audit(100, action="report")]
    assert ("report.retry", "key:filer") in actions
    assert ("report.retract_request", "key:filer") in actions


def test_draft_via_the_api_and_the_reporter_finishes_it(
    api: Api, fake: tuple[FakeCyberTipline, LoopbackServer]
) -> None:
    tipline, server = fake
    key = bearer(api.store, "filer", "report")
    c = api.client
    rid = c.post("/v1/reports", headers=key, json={**BODY, "case_id": api.confirm()}).json()["id"]
    client = CyberTiplineClient(server.url, USER, PASSWORD, timeout=5)
    try:
        Reporter(api.rt.reports, client).run(rid)
    finally:
        client.close()
    out = c.get(f"/v1/reports/{rid}", headers=key).json()
    assert out["state"] == "finished" and out["external_id"]
    assert out["finished_at"] and [f["state"] for f in out["files"]] == ["described"]
    (sent,) = tipline.finished()
    assert sent.id == out["external_id"] and len(sent.files) == 1
    problem(c.post(f"/v1/reports/{rid}/retract", headers=key, json={"reason": "late"}), 409)


NCA = {
    "priority": "P1",
    "detection_method": "hash match against a hash list",
    "summary": "Matched a listed item.",
    "email": "user@example.org",
    "login_ips": ["192.0.2.10"],
    "related_accounts": ["acct-77"],
}


def test_us_and_uk_drafted_from_one_call(api: Api) -> None:
    case_id = api.confirm()
    key = bearer(api.store, "filer", "report")
    c = api.client
    body = {**BODY, "case_id": case_id, "jurisdictions": ["US", "UK"], "nca": NCA}
    r = c.post("/v1/reports", headers=key, json=body)
    assert r.status_code == 201, r.text
    out = r.json()
    assert [x["authority"] for x in out["reports"]] == ["ncmec", "nca"]
    assert out["id"] == out["reports"][0]["id"] and out["authority"] == "ncmec"
    us, uk = (x["id"] for x in out["reports"])
    assert api.rt.reports.get(uk).priority == "P1"
    xml = c.get(f"/v1/reports/{us}/xml", headers=key).content
    assert b"<escalateToHighPriority>" in xml and b"192.0.2.10" in xml
    doc = json.loads(api.rt.reports.nca_export(uk, "json", actor="test"))
    assert doc["account"]["email"] == "user@example.org"
    assert doc["related_accounts"][0]["account_id"] == "acct-77"
    # Asking again returns the same two reports, nothing new.
    again = c.post("/v1/reports", headers=key, json=body)
    assert [x["id"] for x in again.json()["reports"]] == [us, uk]
    assert len(api.rt.reports.list()) == 2


def test_bad_nca_input_is_a_problem(api: Api) -> None:
    case_id = api.confirm()
    key = bearer(api.store, "filer", "report")
    c = api.client
    body = {**BODY, "case_id": case_id, "jurisdictions": ["US", "UK"]}
    for bad in (
        {**body, "nca": {**NCA, "priority": "P9"}},
        {**body, "nca": {**NCA, "login_ips": ["not-an-ip"]}},
        {**body, "nca": {**NCA, "email": "nope"}},
        body,  # UK without the nca object
        {**body, "jurisdictions": ["US"], "nca": NCA},
        {**body, "jurisdictions": ["FR"], "nca": NCA},
        {"case_id": case_id, "jurisdictions": ["US"]},  # US without its fields
    ):
        problem(c.post("/v1/reports", headers=key, json=bad), 422)
    assert api.rt.reports.list() == []
    # UK alone needs no NCMEC fields.
    uk_only = {"case_id": case_id, "jurisdictions": ["UK"], "nca": NCA, "additional_info": "x y"}
    out = c.post("/v1/reports", headers=key, json=uk_only).json()
    assert [x["authority"] for x in out["reports"]] == ["nca"]
