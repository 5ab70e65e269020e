"""Issue 15's acceptance path, against the real `bastion serve` and its worker child (SQLite and
PostgreSQL): a simulated population (`bastion simulate contacts`: flags and metadata, never
text) posted to ``POST /v1/events``; the worker's account-case loop opens one account case per
risky account (and no duplicate however often it runs); two reviewers confirm a planted
groomer's case through ``/v1/cases`` (four-eyes); the worker delivers exactly one signed
``restrict_account`` webhook to a real receiver (no ``remove_content``: there is no content);
and the final confirmation itself drafts a text-only CyberTipline report (no files, incident
type "Online Enticement of Children for Sexual Act") and a UK NCA report, as the service (the
reporting contact is configured), exactly once. Another planted account's case is
found not abusive per detector, and the detectors' precision shows both."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bastion.accounts.store import AccountStore
from bastion.db import Store
from bastion.reports.model import ACCOUNT_INCIDENT_TYPE
from tests.actions.receiver import Receiver, running
from tests.fixtures.servers import BASTION, Server
from tests.fixtures.stores import postgres_schema_url
from tests.web.seed import POLICY, fast_hasher

SECRET = "account-cases-e2e-secret-0123456789"
DEADLINE = 90.0  # the worker child starts beside a loaded machine


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bastion.db'}"
        return
    with postgres_schema_url("t_acct") as url:
        yield url


def cli(db_url: str, tmp_path: Path, *args: str) -> str:
    done = subprocess.run(
        [BASTION, *args],
        env={**os.environ, "BASTION_DATABASE_URL": db_url},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def key(db_url: str, tmp_path: Path, name: str, scopes: str) -> dict[str, str]:
    token = cli(db_url, tmp_path, "key", "create", name, "--scopes", scopes)
    return {"Authorization": f"Bearer {token.strip().splitlines()[-1]}"}


def until(what: str, check: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + DEADLINE
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what}: not within {DEADLINE:g} s"
        time.sleep(0.2)


def applied(receiver: Receiver) -> list[dict[str, Any]]:
    with receiver.lock:
        return [json.loads(b) for b in receiver.applied.values()]


def test_simulated_events_to_an_account_case_a_webhook_and_a_text_only_report(
    db_url: str, tmp_path: Path
) -> None:
    policy = POLICY.replace("four_eyes: false", "four_eyes: true")
    policy += "contact:\n  case_band: high\n  case_queue: default\n  case_priority: critical\n"
    (tmp_path / "policy.yaml").write_text(policy)
    config = tmp_path / "bastion.toml"
    config.write_text(
        f'policy_file = "{tmp_path / "policy.yaml"}"\n'
        f'webhook_secret = "{SECRET}"\n'
        "outbox_poll_seconds = 0.1\noutbox_backoff_seconds = 0.5\n"
        "contact_case_interval_seconds = 0.5\n"
        # The service's reporting contact: the confirmation drafts the reports itself.
        'report_first_name = "Test"\nreport_last_name = "Reporter"\n'
        'report_email = "reports@example.org"\n'
    )
    # The population: 200 accounts over 3 days, with planted groomers, a sextortion ring and a
    # ban evader, written as an operator would (flags and metadata only).
    events_file = tmp_path / "events.jsonl"
    out = cli(
        db_url,
        tmp_path,
        "simulate",
        "contacts",
        "--users",
        "200",
        "--days",
        "3",
        "--seed",
        "7",
        "--out",
        str(events_file),
    )
    assert out.startswith("events=")
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    labels = [
        json.loads(line) for line in (tmp_path / "events.labels.jsonl").read_text().splitlines()
    ]
    planted = {r["account"]: r["kind"] for r in labels if r["planted"]}
    groomer = next(a for a, kind in planted.items() if kind == "fanout_groomer")
    assert all("text" not in e and "message" not in e for e in events)

    with Store.open(db_url) as store:
        accounts = AccountStore(store, hasher=fast_hasher())
        for name in ("rex", "sue"):
            accounts.create_user(name, "reviewer", "a long test password", actor="system")
    platform = key(db_url, tmp_path, "platform", "events,risk,report")
    rex = key(db_url, tmp_path, "rex@tooling", "review")
    sue = key(db_url, tmp_path, "sue@tooling", "review")
    with running(SECRET) as receiver:
        server = Server(
            db_url, tmp_path, "--config", str(config), env={"BASTION_WEBHOOK_URL": receiver.url}
        )
        try:
            with httpx.Client(base_url=server.base, timeout=60) as http:
                for start in range(0, len(events), 1000):
                    r = http.post(
                        "/v1/events",
                        json={"events": events[start : start + 1000]},
                        headers=platform,
                    )
                    assert r.status_code == 200, r.text
                    assert r.json()["refused"] == 0
                risk = http.get(f"/v1/accounts/{groomer}/risk", headers=platform).json()
                assert risk["band"] == "high"

                # The worker opens the groomer's account case; nothing else opened it.
                def account_cases() -> list[dict[str, Any]]:
                    r = http.get(
                        "/v1/cases",
                        params={"subject": "account", "state": "active", "limit": 500},
                        headers=rex,
                    )
                    assert r.status_code == 200, r.text
                    cases: list[dict[str, Any]] = r.json()["cases"]
                    return cases

                found = until(
                    "the groomer's account case",
                    lambda: [c for c in account_cases() if c["uploader_id"] == groomer],
                )
                case_id = found[0]["id"]
                assert found[0]["subject"] == "account" and found[0]["priority"] == "critical"
                # Several passes later: still one case per account.
                time.sleep(2.0)
                opened = account_cases()
                owners = [c["uploader_id"] for c in opened]
                assert len(owners) == len(set(owners)) and groomer in owners
                assert set(owners) & set(planted)  # planted actors are what gets reviewed

                case = http.get(f"/v1/cases/{case_id}", headers=rex).json()
                [item] = case["items"]
                assert (item["kind"], item["has_media"], item["uploader_id"]) == (
                    "account",
                    False,
                    groomer,
                )
                [snap] = item["signals"]
                assert snap["type"] == "contact_risk" and snap["band"] == "high"
                assert snap["score"] == risk["score"]
                fired = [c["detector"] for c in risk["contributions"] if c["fired"]]
                assert case["detectors_fired"] == fired and fired

                # A content classification is refused for an account case (409: a well-formed
                # decision that does not fit the case; nothing done).
                assert http.post(f"/v1/cases/{case_id}/claim", headers=rex).status_code == 200
                bad = http.post(
                    f"/v1/cases/{case_id}/decide",
                    json={"decision": "confirmed", "classification": "A1"},
                    headers=rex,
                )
                assert bad.status_code == 409, bad.text
                # Four-eyes: rex confirms grooming first, sue agrees.
                first = http.post(
                    f"/v1/cases/{case_id}/decide",
                    json={"decision": "confirmed", "classification": "grooming"},
                    headers=rex,
                ).json()
                assert (first["event"], first["final"], first["actions"], first["reports"]) == (
                    "first_confirm",
                    False,
                    [],
                    [],
                )
                assert http.post(f"/v1/cases/{case_id}/claim", headers=sue).status_code == 200
                done = http.post(
                    f"/v1/cases/{case_id}/decide",
                    json={"decision": "confirmed", "classification": "grooming"},
                    headers=sue,
                ).json()
                assert (done["event"], done["state"], done["actions"]) == (
                    "confirmed",
                    "confirmed",
                    ["restrict_account"],
                )
                # The final confirmation itself drafted both reports (US first).
                assert len(done["reports"]) == 2 and done["report_needed"] is False

                # The worker delivers restrict_account, signed, once; nothing else for the case.
                hooks = until(
                    "the restrict_account webhook",
                    lambda: [h for h in applied(receiver) if h["case_id"] == case_id],
                )
                time.sleep(1.5)  # a duplicate would have arrived by now
                hooks = [h for h in applied(receiver) if h["case_id"] == case_id]
                assert [h["action"] for h in hooks] == ["restrict_account"]
                data = hooks[0]["data"]
                assert data["uploader_id"] == groomer and data["classification"] == "grooming"
                with receiver.lock:
                    assert all(r.signature_ok for r in receiver.requests)
                    assert not receiver.duplicates

                # A text-only CyberTipline report and an NCA report, drafted by the
                # confirmation through the shared drafting, by the service; drafts, unsent.
                confirmed = http.get(f"/v1/cases/{case_id}", headers=rex).json()
                assert confirmed["incident_type"] == ACCOUNT_INCIDENT_TYPE
                us, uk = (
                    http.get(f"/v1/reports/{i}", headers=platform).json() for i in done["reports"]
                )
                assert (us["authority"], us["state"], us["files"]) == ("ncmec", "drafted", [])
                assert us["case_id"] == uk["case_id"] == case_id
                assert us["incident_type"] == ACCOUNT_INCIDENT_TYPE
                assert (uk["authority"], uk["state"], uk["files"]) == ("nca", "drafted", [])
                assert us["created_by"] == uk["created_by"] == "system:account-report"
                assert us["held"] is True  # the worker leaves it until a person sends it
                # Drafting again by hand returns the same two reports, nothing new.
                r = http.post(
                    "/v1/reports",
                    json={
                        "case_id": case_id,
                        "jurisdictions": ["US", "UK"],
                        "incident_type": confirmed["incident_type"],
                        "first_name": "Test",
                        "last_name": "Reporter",
                        "email": "reports@example.org",
                        "nca": {
                            "priority": "P2",
                            "detection_method": "behavioural risk detectors, human review",
                            "summary": "Adult account contacting many unconnected children.",
                        },
                    },
                    headers=platform,
                )
                assert r.status_code == 201, r.text
                assert [x["id"] for x in r.json()["reports"]] == done["reports"]
                listed = http.get("/v1/reports", headers=platform).json()
                assert sorted(x["id"] for x in listed if x["case_id"] == case_id) == sorted(
                    done["reports"]
                )
                xml = http.get(f"/v1/reports/{us['id']}/xml", headers=platform)
                assert xml.status_code == 200, xml.text
                assert f"<incidentType>{ACCOUNT_INCIDENT_TYPE}</incidentType>" in xml.text
                assert "<fileDetails" not in xml.text and groomer in xml.text
                assert "Detection method: behavioural risk detectors (metadata)" in xml.text
                assert all(f"Detector {d}:" in xml.text for d in fired)

                # Another planted account's case, found not abusive per detector (four-eyes).
                other = next(c for c in account_cases() if c["uploader_id"] != groomer)
                other_case = http.get(f"/v1/cases/{other['id']}", headers=rex).json()
                named = other_case["detectors_fired"][:1]
                for who in (rex, sue):
                    assert (
                        http.post(f"/v1/cases/{other['id']}/claim", headers=who).status_code == 200
                    )
                    r = http.post(
                        f"/v1/cases/{other['id']}/decide",
                        json={"decision": "not_abusive", "reason": "e2e", "detectors": named},
                        headers=who,
                    )
                    assert r.status_code == 200, r.text
                assert r.json()["state"] == "not_abusive" and r.json()["actions"] == []
                precision = {
                    d["detector"]: d for d in http.get("/v1/cases/detectors", headers=rex).json()
                }
                assert precision[named[0]]["not_abusive"] == 1
                for d in case["detectors_fired"]:
                    assert precision[d]["confirmed"] == 1
                first = fired[0]  # confirmed once, and not abusive once if it was the one named
                assert precision[first]["precision"] == (1.0 if named[0] != first else 0.5)
        finally:
            server.stop()
    with Store.open(db_url) as store:
        actions = [e.action for e in store.recent_audit(2000)]
    assert "case.open" in actions and "report.draft" in actions
