"""``/v1/cases`` with account cases (issue 15), on SQLite and PostgreSQL, beside the content cases
of the shared desk (tests/api/test_cases_api.py): listing by subject, reading the risk snapshot,
the decision rules for an account (grooming or sextortion; not abusive per detector; no bank
entries), restrict_account queued exactly once, and each detector's precision. Events are
flags and metadata only."""

from __future__ import annotations

from typing import Any

from bastion.contact.cases import AccountCaseLoop
from bastion.contact.model import Event
from bastion.contact.store import ContactStore
from bastion.reports.model import ACCOUNT_INCIDENT_TYPE
from bastion.runtime import Runtime
from tests.api import test_cases_api
from tests.api.test_cases_api import PROBLEM, Desk
from tests.contact.helpers import account, at, ev, message

#: The shared desk: the console users, their review keys and three content cases.
desk = test_cases_api.desk


def _groomer(name: str) -> list[Event]:
    events: list[Event] = [account(name, "adult", country="GB")]
    events += [account(f"{name}-k{i}", "13-15", country="GB") for i in range(8)]
    events += [
        ev("connection_request", at(minutes=10 * i), actor=name, target=f"{name}-k{i}")
        for i in range(8)
    ]
    return [*events, message(f"{name}-x", f"{name}-y", at(hours=12))]


def _open_account_cases(desk: Desk, *names: str) -> dict[str, int]:
    rt: Runtime = desk.client.app.state.runtime  # type: ignore[attr-defined]
    events = [e for name in names for e in _groomer(name)]
    assert {r.status for r in ContactStore.for_runtime(rt).ingest(events)} == {"ok"}
    loop = AccountCaseLoop(rt.store, rt.review, rt.policy.current)
    assert loop.run_once().opened == len(names)
    assert loop.run_once().opened == 0
    listed = desk.get("rex", "", params={"subject": "account"}).json()["cases"]
    return {c["uploader_id"]: c["id"] for c in listed}


def test_account_cases_are_listed_read_and_decided_by_their_own_rules(desk: Desk) -> None:
    cases = _open_account_cases(desk, "acct-1", "acct-2")
    assert set(cases) == {"acct-1", "acct-2"}
    content = desk.get("rex", "", params={"subject": "content"}).json()["cases"]
    assert content and {c["subject"] for c in content} == {"content"}
    assert not set(cases.values()) & {c["id"] for c in content}

    # Under review, the account's events cannot be erased (a legal hold's rule).
    admin = test_cases_api.key_for(desk.console.store, "dpo", "admin")
    r = desk.client.delete("/v1/accounts/acct-1/events", headers=admin)
    assert r.status_code == 409 and "under review" in r.json()["detail"], r.text

    one = desk.get("rex", f"/{cases['acct-1']}").json()
    assert (one["subject"], one["incident_type"], one["must_reveal"]) == ("account", None, [])
    [item] = one["items"]
    assert (item["kind"], item["has_media"], item["media_url"]) == ("account", False, None)
    assert item["signals"][0]["type"] == "contact_risk"
    assert {"fanout", "age_gap"} <= set(one["detectors_fired"])

    def decide(user: str, case_id: int, **body: Any) -> Any:
        return desk.post(user, f"/{case_id}/decide", json=body)

    assert desk.post("rex", f"/{cases['acct-1']}/claim").status_code == 200
    refused: list[tuple[dict[str, Any], str]] = [
        ({"decision": "confirmed", "classification": "A1"}, "grooming, sextortion"),
        (
            {"decision": "not_abusive", "reason": "x", "disable_entries": True},
            "no bank entries",
        ),
        (
            {"decision": "not_abusive", "reason": "x", "detectors": ["ban_evasion"]},
            "did not fire",
        ),
    ]
    for body, why in refused:
        r = decide("rex", cases["acct-1"], **body)
        assert r.status_code in (403, 409, 422) and r.headers["content-type"] == PROBLEM, r.text
        assert why in r.json()["detail"]
    for bad in (["Fan-Out"], [""], ["x"] * 33):
        r = decide("rex", cases["acct-1"], decision="not_abusive", reason="x", detectors=bad)
        assert r.status_code == 422, bad
    # A content case takes neither account classifications nor detectors.
    exact = desk.cases["exact"]
    assert desk.post("rex", f"/{exact}/claim").status_code == 200
    r = decide("rex", exact, decision="confirmed", classification="grooming")
    # A well-formed decision that does not fit the case is a conflict with it (409), not a
    # malformed request (422).
    assert r.status_code == 409 and "A1, A2, B1, B2" in r.json()["detail"]
    r = decide("rex", exact, decision="not_abusive", reason="x", detectors=["fanout"])
    assert r.status_code == 409 and "account case" in r.json()["detail"]
    # Nothing of the refused decisions happened.
    assert desk.get("rex", f"/{cases['acct-1']}").json()["state"] == "open"

    done = decide("rex", cases["acct-1"], decision="confirmed", classification="sextortion")
    assert done.status_code == 200, done.text
    assert (done.json()["state"], done.json()["actions"]) == ("confirmed", ["restrict_account"])
    assert desk.get("rex", f"/{cases['acct-1']}").json()["incident_type"] == ACCOUNT_INCIDENT_TYPE
    rt: Runtime = desk.client.app.state.runtime  # type: ignore[attr-defined]
    queued = rt.outbox.list(case_id=cases["acct-1"])
    assert [(q.action, q.payload["uploader_id"]) for q in queued] == [
        ("restrict_account", "acct-1")
    ]

    assert desk.post("rex", f"/{cases['acct-2']}/claim").status_code == 200
    r = decide(
        "rex", cases["acct-2"], decision="not_abusive", reason="a coach", detectors=["fanout"]
    )
    assert r.status_code == 200 and r.json()["actions"] == [], r.text
    history = desk.get("rex", f"/{cases['acct-2']}").json()["history"]
    assert history[-1]["detail"]["detectors"] == ["fanout"]
    assert rt.outbox.list(case_id=cases["acct-2"]) == []
    # Found not abusive, acct-2 is no longer under review: its events can be erased now.
    r = desk.client.delete("/v1/accounts/acct-2/events", headers=admin)
    assert r.status_code == 200 and r.json()["deleted"] == 9, r.text
    # A confirmed account is not counted as a confirmed uploader of content (policy input).
    assert rt.review.prior_confirmed("acct-1") == 0

    precision = {d["detector"]: d for d in desk.get("rex", "/detectors").json()}
    assert precision["fanout"] == {
        "detector": "fanout",
        "confirmed": 1,
        "not_abusive": 1,
        "unjudged": 0,
        "precision": 0.5,
    }
    assert precision["age_gap"]["confirmed"] == 1 and precision["age_gap"]["unjudged"] == 1
    assert precision["age_gap"]["precision"] == 1.0
    # An auditor sees no cases, nor these counts.
    r = desk.get("aud", "/detectors")
    assert r.status_code == 403 and r.headers["content-type"] == PROBLEM
