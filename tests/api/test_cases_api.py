"""``/v1/cases`` for every role, on SQLite and PostgreSQL, beside the console on the same app.

Keys are bound to the console users of ``tests/web/seed.py`` (ada: admin, sue: senior reviewer,
rex: reviewer of ``default``, aud: auditor), as an operator binds them on the host
(``bastion key create rex@tool``: the key's ``user``, named ``rex@tool``). Cases come from
scanning benign test photos through ``/v1/scan``: ``bridge`` (default queue, must be revealed),
``exact`` (default queue, decided from the match), ``senior`` (senior queue).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import update

from bastion.banks.model import utcnow
from bastion.db import Store
from bastion.keys import key_user
from bastion.review.store import cases_t
from bastion.server import create_app
from bastion.store import InvalidInput
from tests.web.conftest import SOFT_LIMIT, Console, console_settings
from tests.web.seed import BRIDGE_SCANNED, POLICY, USERS, scan_cases, seed_store

PROBLEM = "application/problem+json"


@dataclass
class Desk:
    """The app, its console, and a ``review,media`` key for each console user."""

    console: Console
    client: TestClient
    keys: dict[str, dict[str, str]]

    @property
    def cases(self) -> dict[str, int]:
        return self.console.cases

    def call(self, user: str, method: str, path: str, **kw: Any) -> Any:
        headers = {**self.keys[user], **kw.pop("headers", {})}
        return self.client.request(method, f"/v1/cases{path}", headers=headers, **kw)

    def get(self, user: str, path: str = "", **kw: Any) -> Any:
        return self.call(user, "GET", path, **kw)

    def post(self, user: str, path: str, **kw: Any) -> Any:
        return self.call(user, "POST", path, **kw)

    def case(self, user: str, name: str) -> dict[str, Any]:
        r = self.get(user, f"/{self.cases[name]}")
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    def claim(self, user: str, name: str) -> Any:
        return self.post(user, f"/{self.cases[name]}/claim")

    def decide(self, user: str, name: str, **body: Any) -> Any:
        return self.post(user, f"/{self.cases[name]}/decide", json=body)

    def reveal_all(self, user: str, name: str) -> None:
        for item in self.case(user, name)["must_reveal"]:
            r = self.post(user, f"/{self.cases[name]}/items/{item}/reveal")
            assert r.status_code == 200, r.text

    def audit(self, prefix: str = "") -> list[Any]:
        return self.console.store.recent_audit(1000, action=prefix or None)


def key_for(store: Store, name: str, *scopes: str) -> dict[str, str]:
    """A key; one named ``<user>@<label>`` is bound to that user (as the CLI's sugar does)."""
    _, token = store.create_api_key(name, set(scopes), user=key_user(name))
    return {"Authorization": f"Bearer {token}"}


def _desk(store: Store, tmp_path: Path, testdata: Path, policy: str = POLICY) -> Iterator[Desk]:
    (tmp_path / "policy.yaml").write_text(policy)
    token = seed_store(store, testdata)
    settings = console_settings(tmp_path)
    app = create_app(settings, store=store)
    keys = {user: key_for(store, f"{user}@tool", "review", "media") for user in USERS}
    with TestClient(app, follow_redirects=False) as main:
        cases = scan_cases(main.post, testdata, token)
        console = Console(app=app, store=store, settings=settings, cases=cases, main=main)
        yield Desk(console=console, client=main, keys=keys)


@pytest.fixture
def desk(api_store: Store, tmp_path: Path, testdata: Path) -> Iterator[Desk]:
    yield from _desk(api_store, tmp_path, testdata)


@pytest.fixture
def four_eyes(api_store: Store, tmp_path: Path, testdata: Path) -> Iterator[Desk]:
    yield from _desk(
        api_store, tmp_path, testdata, POLICY.replace("four_eyes: false", "four_eyes: true")
    )


# -- who a key acts as ------------------------------------------------------------------------


def test_a_key_not_bound_to_a_user_is_refused_and_audited(desk: Desk) -> None:
    store = desk.console.store
    platform = key_for(store, "platform", "admin")  # every scope, but no person behind it
    case_id = desk.cases["exact"]
    for method, path, body in [
        ("GET", "", None),
        ("GET", "/queues", None),
        ("GET", f"/{case_id}", None),
        ("POST", f"/{case_id}/claim", None),
        ("POST", f"/{case_id}/decide", {"decision": "escalate"}),
    ]:
        r = desk.client.request(method, f"/v1/cases{path}", headers=platform, json=body)
        assert r.status_code == 403, (path, r.text)
        assert r.headers["content-type"] == PROBLEM and r.json()["code"] == "not_bound"
        assert "bound to a console user" in r.json()["detail"]
    denied = [e for e in desk.audit("access.denied") if e.actor == "key:platform"]
    assert len(denied) == 5
    # Nothing was read, claimed or decided by the refused calls.
    assert not [e for e in desk.audit("case.") if e.actor == "key:platform"]
    with store.engine.connect() as conn:
        row = conn.execute(cases_t.select().where(cases_t.c.id == case_id)).first()
    assert row is not None and row.lease_holder is None and row.state == "open"


def test_a_bound_key_needs_the_review_scope_and_an_enabled_user(desk: Desk) -> None:
    store = desk.console.store
    hash_only = key_for(store, "rex@hasher", "hash")
    r = desk.client.get("/v1/cases", headers=hash_only)
    assert r.status_code == 403 and "'review' scope" in r.json()["detail"]
    assert desk.get("rex").status_code == 200
    desk.console.rt.accounts.set_disabled("rex", True, actor="test")
    r = desk.get("rex")
    assert r.status_code == 403 and "disabled" in r.json()["detail"]
    desk.console.rt.accounts.set_disabled("rex", False, actor="test")
    assert desk.get("rex").status_code == 200


def test_a_key_can_only_be_bound_to_an_existing_enabled_user(desk: Desk) -> None:
    store = desk.console.store
    with pytest.raises(InvalidInput, match="no console user named 'nobody'"):
        store.create_api_key("nobody@tool", "review", user="nobody")
    desk.console.rt.accounts.set_disabled("rex", True, actor="test")
    with pytest.raises(InvalidInput, match="disabled"):
        store.create_api_key("rex@other", "review", user="rex")
    with pytest.raises(InvalidInput, match="invalid key name"):
        store.create_api_key("rex@", "review", user="rex")
    with pytest.raises(InvalidInput, match="invalid key name"):
        store.create_api_key("a@b@c", "review", user="a")
    # A name cannot claim a user the key is not bound to.
    with pytest.raises(InvalidInput, match="must be bound to the console user 'sue'"):
        store.create_api_key("sue@other", "review")
    with pytest.raises(InvalidInput, match="must be bound to the console user 'sue'"):
        store.create_api_key("sue@other", "review", user="ada")
    assert store.get_api_key("sue@tool").user == "sue"
    assert store.get_api_key("scanner").user is None
    # The binding is a column, not the name: a plain name bound with user= acts as that user.
    _, token = store.create_api_key("desk-tool", "review", user="sue")
    assert store.get_api_key("desk-tool").user == "sue"
    r = desk.client.get("/v1/cases", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text


def test_an_admin_cannot_bind_a_key_to_a_user_in_the_console(desk: Desk) -> None:
    """Binding is the user's own (My API keys) or an operator's on the host, never an admin's
    on someone else's behalf (the key would act, and count under four-eyes, as that user)."""
    ada = desk.console.login("ada")
    r = ada.post_form("/admin/keys", {"name": "rex@desk", "scopes": "review"})
    assert r.status_code == 400 and "must be bound to the console user" in r.text
    assert not [k for k in desk.console.store.list_api_keys() if k.name == "rex@desk"]
    r = ada.post_form("/admin/keys", {"name": "ghost@desk", "scopes": "review"})
    assert r.status_code == 400
    assert not [e for e in desk.audit("key.create") if e.target == "rex@desk"]


def test_role_changes_apply_at_the_next_call(desk: Desk) -> None:
    senior = desk.cases["senior"]
    assert desk.get("rex", f"/{senior}").status_code == 403
    desk.console.rt.accounts.set_role("rex", "senior_reviewer", actor="test")
    assert desk.get("rex", f"/{senior}").status_code == 200


# -- what each role sees ----------------------------------------------------------------------


def _listed(desk: Desk, user: str, **params: Any) -> set[int]:
    r = desk.get(user, params=params)
    assert r.status_code == 200, r.text
    return {c["id"] for c in r.json()["cases"]}


def test_a_reviewer_reads_and_decides_only_in_their_queues(desk: Desk) -> None:
    cases = desk.cases
    assert _listed(desk, "rex") == {cases["bridge"], cases["exact"]}
    assert {q["queue"] for q in desk.get("rex", "/queues").json()} == {"default"}
    senior = cases["senior"]
    for method, path, body in [
        ("GET", "?queue=senior", None),
        ("GET", f"/{senior}", None),
        ("POST", f"/{senior}/claim", None),
        ("POST", f"/{senior}/release", None),
        ("POST", f"/{senior}/decide", {"decision": "escalate"}),
        ("POST", f"/{senior}/items/1/reveal", None),
        ("GET", f"/{senior}/items/1/media", None),
    ]:
        r = desk.call("rex", method, path, json=body)
        assert r.status_code == 403, (path, r.text)
        assert r.headers["content-type"] == PROBLEM
    denied = [e for e in desk.audit("access.denied") if e.actor == "user:rex"]
    assert len(denied) >= 6 and {e.target for e in denied} >= {f"case:{senior}"}
    # An escalated case leaves the reviewer's sight at once.
    assert desk.claim("rex", "exact").status_code == 200
    r = desk.decide("rex", "exact", decision="escalate", note="unsure")
    assert r.status_code == 200 and r.json()["event"] == "escalated"
    assert r.json()["queue"] == "senior"
    assert desk.get("rex", f"/{cases['exact']}").status_code == 403
    assert desk.get("sue", f"/{cases['exact']}").status_code == 200


@pytest.mark.parametrize("user", ["sue", "ada"])
def test_senior_reviewers_and_admins_see_every_queue(desk: Desk, user: str) -> None:
    assert _listed(desk, user) == set(desk.cases.values())
    assert _listed(desk, user, queue="senior") == {desk.cases["senior"]}
    counts = {q["queue"]: q for q in desk.get(user, "/queues").json()}
    assert counts["senior"]["senior"] is True and counts["senior"]["open"] == 1
    assert counts["default"]["open"] == 2
    assert desk.case(user, "senior")["queue"] == "senior"


def test_an_auditor_sees_no_content(desk: Desk) -> None:
    bridge = desk.cases["bridge"]
    for method, path in [
        ("GET", ""),
        ("GET", "/queues"),
        ("GET", f"/{bridge}"),
        ("POST", f"/{bridge}/claim"),
        ("POST", f"/{bridge}/items/1/reveal"),
        ("GET", f"/{bridge}/items/1/media"),
    ]:
        r = desk.call("aud", method, path)
        assert r.status_code == 403, (path, r.text)
        assert "no access to cases" in r.json()["detail"]
        assert "matches" not in r.text and "uploader" not in r.text
    assert not [e for e in desk.audit("case.view") if e.actor == "user:aud"]
    assert [e for e in desk.audit("access.denied") if e.actor == "user:aud"]


# -- reading ----------------------------------------------------------------------------------


def test_reading_a_case_is_audited_and_carries_no_media_without_the_media_scope(
    desk: Desk, testdata: Path
) -> None:
    no_media = key_for(desk.console.store, "rex@reader", "review")
    bridge = desk.cases["bridge"]
    r = desk.client.get(f"/v1/cases/{bridge}", headers=no_media)
    assert r.status_code == 200, r.text
    case = r.json()
    (item,) = case["items"]
    assert item["matches"][0]["bank"] == "bridge" and item["matches"][0]["distance"] >= 0
    assert {s["type"] for s in item["signals"]} >= {"pdq", "md5", "sha256"}
    assert item["content_id"] == "content-bridge" and item["has_media"] is True
    assert item["media_url"] is None  # no media scope
    assert case["must_reveal"] == [item["id"]]
    assert [e["kind"] for e in case["history"]] == ["open"]
    views = [e for e in desk.audit("case.view") if e.target == f"case:{bridge}"]
    assert [e.actor for e in views] == ["user:rex"]
    media = f"/v1/cases/{bridge}/items/{item['id']}/media"
    for method, path in [("GET", media), ("POST", media.replace("/media", "/reveal"))]:
        r = desk.client.request(method, path, headers=no_media)
        assert r.status_code == 403 and r.json()["code"] == "no_media_scope"
    assert not desk.audit("content.")

    # With the media scope: blurred by default, clear only after this user's reveal.
    item_url = desk.case("rex", "bridge")["items"][0]["media_url"]
    assert item_url == media
    blurred = desk.client.get(media, headers=desk.keys["rex"])
    assert blurred.status_code == 200 and blurred.headers["content-type"] == "image/jpeg"
    red, green, blue = Image.open(io.BytesIO(blurred.content)).convert("RGB").split()
    assert red.tobytes() == green.tobytes() == blue.tobytes()
    original = (testdata / BRIDGE_SCANNED).read_bytes()
    assert blurred.content != original
    r = desk.client.get(f"{media}?clear=true", headers=desk.keys["rex"])
    assert r.status_code == 403 and "reveal item" in r.json()["detail"]
    # Only the claim holder reveals (issue 19).
    r = desk.post("rex", f"/{bridge}/items/{item['id']}/reveal")
    assert r.status_code == 409 and r.json()["code"] == "not_leased"
    desk.claim("rex", "bridge")
    r = desk.post("rex", f"/{bridge}/items/{item['id']}/reveal")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "item_id": item["id"],
        "count": 1,
        "limit": SOFT_LIMIT,
        "media_url": f"{media}?clear=true",
    }
    clear = desk.client.get(r.json()["media_url"], headers=desk.keys["rex"])
    assert clear.status_code == 200 and clear.content == original
    assert clear.headers["cache-control"].startswith("no-store")
    assert clear.headers["content-disposition"] == "attachment"
    # The reveal was rex's: sue still gets the blurred one only.
    assert desk.client.get(f"{media}?clear=true", headers=desk.keys["sue"]).status_code == 403
    views = [e for e in desk.audit("content.") if e.actor == "user:rex"]
    assert sorted(e.action for e in views) == [
        "content.reveal",
        "content.view",
        "content.view",
    ]
    assert desk.console.rt.accounts.exposure_today("rex") == 1
    assert desk.case("rex", "bridge")["viewable"] == [item["id"]]


def test_reveals_past_the_soft_limit_need_a_deliberate_choice(desk: Desk) -> None:
    bridge = desk.cases["bridge"]
    item = desk.case("rex", "bridge")["items"][0]["id"]
    reveal = f"/{bridge}/items/{item}/reveal"
    desk.claim("rex", "bridge")
    for n in range(1, SOFT_LIMIT + 1):
        assert desk.post("rex", reveal).json()["count"] == n
    r = desk.post("rex", reveal)
    assert r.status_code == 409 and r.json()["code"] == "take_a_break"
    assert r.json()["count"] == SOFT_LIMIT and r.json()["limit"] == SOFT_LIMIT
    assert not desk.audit("exposure.continue")
    r = desk.post("rex", reveal, params={"continue_past_limit": "true"})
    assert r.status_code == 200 and r.json()["count"] == SOFT_LIMIT + 1
    assert [e.actor for e in desk.audit("exposure.continue")] == ["user:rex"]


def test_filters_and_paging(desk: Desk) -> None:
    cases = desk.cases
    assert _listed(desk, "ada", priority="critical") == {cases["senior"]}
    assert _listed(desk, "ada", priority="high") == {cases["exact"]}
    assert _listed(desk, "ada", priority="low") == set()
    assert _listed(desk, "ada", overdue="true") == set()
    with desk.console.store.engine.begin() as conn:
        conn.execute(
            update(cases_t)
            .where(cases_t.c.id == cases["bridge"])
            .values(due_at=utcnow() - timedelta(minutes=5))
        )
    assert _listed(desk, "ada", overdue="true") == {cases["bridge"]}
    assert _listed(desk, "ada", overdue="false") == {cases["exact"], cases["senior"]}
    summary = next(c for c in desk.get("ada").json()["cases"] if c["id"] == cases["bridge"])
    assert summary["overdue"] is True and summary["item_count"] == 1
    # Pages of one, most urgent first, each case once.
    seen: list[int] = []
    after: int | None = None
    while True:
        params: dict[str, Any] = {"limit": 1, **({"after": after} if after else {})}
        page = desk.get("ada", params=params).json()
        seen += [c["id"] for c in page["cases"]]
        after = page["next_after"]
        if after is None:
            break
    assert seen == [c["id"] for c in desk.get("ada").json()["cases"]]
    assert sorted(seen) == sorted(cases.values())
    assert seen[0] == cases["senior"]  # critical first
    assert _listed(desk, "ada", state="closed") == set()
    for params in ({"state": "bogus"}, {"priority": "urgent"}, {"limit": 0}, {"after": 0}):
        r = desk.get("ada", params=params)
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, params
    r = desk.get("ada", params={"after": 2**62})
    assert r.status_code == 404 and r.json()["code"] == "not_found"


def test_errors_are_problem_details(desk: Desk) -> None:
    for path in ("/0", f"/{2**63}", "/abc"):
        r = desk.get("ada", path)
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, path
    r = desk.get("ada", "/999999")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    exact = desk.cases["exact"]
    assert desk.get("ada", f"/{exact}/items/999999/media").status_code == 404
    desk.claim("ada", "exact")
    for body in (
        {"decision": "confirmed"},
        {"decision": "confirmed", "classification": "Z9"},
        {"decision": "not_abusive", "reason": "   "},
        {"decision": "escalate", "classification": "A1"},
        {"decision": "maybe"},
        {"decision": "confirmed", "classification": "A1", "labels": ["a;b"]},
        {"decision": "escalate", "note": "a\x00b"},
    ):
        r = desk.post("ada", f"/{exact}/decide", json=body)
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, (body, r.text)
    r = desk.post(
        "ada",
        f"/{exact}/decide",
        content=b'{"decision":"escalate","note":"\\ud800"}',
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 422 and "unicode" in r.text
    r = desk.post(
        "ada",
        f"/{exact}/decide",
        content=b"{",
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert desk.case("ada", "exact")["state"] == "open"


# -- leases and decisions, shared with the console --------------------------------------------


def test_leases_are_the_consoles(desk: Desk) -> None:
    bridge = desk.cases["bridge"]
    r = desk.claim("rex", "bridge")
    assert r.status_code == 200, r.text
    assert r.json()["lease_holder"] == "rex" and r.json()["lease_until"]
    assert "items" not in r.json()  # a claim is not a read of the content
    # The console sees rex's lease, and another user cannot take it there...
    ada = desk.console.login("ada")
    r = ada.post_form(f"/cases/{bridge}/claim")
    assert r.status_code == 409 and "claimed by rex" in r.text
    # ...nor through the API; rex claiming again renews it.
    r = desk.claim("ada", "bridge")
    assert r.status_code == 409 and r.json()["code"] == "case_leased"
    assert r.json()["holder"] == "rex"
    assert desk.claim("rex", "bridge").status_code == 200
    # A reviewer cannot release someone else's lease; the holder can.
    sue_console = desk.console.login("sue")
    assert sue_console.post_form(f"/cases/{bridge}/claim").status_code == 409
    assert desk.post("rex", f"/{bridge}/release").status_code == 204
    assert sue_console.post_form(f"/cases/{bridge}/claim").status_code == 303
    r = desk.post("rex", f"/{bridge}/release")
    assert r.status_code == 403 and "claimed by sue" in r.json()["detail"]
    assert desk.case("rex", "bridge")["lease_holder"] == "sue"
    # A senior reviewer may force it (recorded as forced).
    assert desk.post("ada", f"/{bridge}/release").status_code == 204
    assert desk.case("rex", "bridge")["lease_holder"] is None
    releases = [e for e in desk.audit("case.release") if e.target == f"case:{bridge}"]
    assert [(e.actor, e.detail["forced"]) for e in releases] == [
        ("user:ada", True),
        ("user:rex", False),
    ]


def test_deciding_needs_the_lease_and_every_required_reveal(desk: Desk) -> None:
    bridge = desk.cases["bridge"]
    decide = {"decision": "not_abusive", "reason": "a bridge, not abuse"}
    r = desk.decide("sue", "bridge", **decide)
    assert r.status_code == 409 and r.json()["code"] == "not_leased"
    assert desk.claim("sue", "bridge").status_code == 200
    r = desk.decide("sue", "bridge", **decide)
    assert r.status_code == 409 and r.json()["code"] == "reveal_required"
    item = desk.case("sue", "bridge")["items"][0]["id"]
    assert r.json()["items"] == [item]
    desk.reveal_all("sue", "bridge")
    r = desk.decide("sue", "bridge", **decide, disable_entries=True)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["event"] == "not_abusive" and out["final"] is True
    (entry,) = desk.console.store.list_entries("bridge")
    assert out["disputed"] == [f"bridge/{entry.id}"]
    assert out["disabled"] == [f"bridge/{entry.id}"]
    assert not entry.enabled and "not abusive" in entry.disabled_reason
    assert desk.console.rt.review.disputes_for_entry(entry.id) == 1
    r = desk.decide("sue", "bridge", **decide)
    assert r.status_code == 409 and r.json()["code"] in ("case_closed", "not_leased")
    # The console shows the API's decision in the case's history.
    page = desk.console.login("sue").get(f"/cases/{bridge}").text
    assert "not_abusive" in page
    decided = [e for e in desk.audit("case.decide") if e.target == f"case:{bridge}"]
    assert [e.actor for e in decided] == ["user:sue"]


def test_confirming_through_the_api_queues_the_consoles_actions(desk: Desk) -> None:
    exact = desk.cases["exact"]
    assert desk.claim("rex", "exact").status_code == 200
    r = desk.decide("rex", "exact", decision="confirmed", classification="B2", labels=["x", "y"])
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["event"] == "confirmed" and out["state"] == "confirmed"
    assert out["classification"] == "B2" and out["labels"] == ["x", "y"]
    assert out["actions"] == ["remove_content", "preserve"]
    assert out["first_reviewer"] == "rex"
    queued = sorted(o.action for o in desk.console.rt.outbox.list(case_id=exact))
    assert queued == ["preserve", "remove_content"]
    # The decision preserved the evidence in its own transaction, as the console's does.
    assert desk.console.rt.vault.list(case_id=exact)
    assert desk.case("ada", "exact")["lease_holder"] is None


# -- four-eyes across the API and the console --------------------------------------------------


def test_four_eyes_api_first_then_console(four_eyes: Desk) -> None:
    desk = four_eyes
    bridge = desk.cases["bridge"]
    assert desk.claim("rex", "bridge").status_code == 200
    desk.reveal_all("rex", "bridge")
    r = desk.decide("rex", "bridge", decision="confirmed", classification="A2")
    assert r.status_code == 200 and r.json()["event"] == "first_confirm"
    assert r.json()["state"] == "awaiting_second" and r.json()["first_reviewer"] == "rex"
    assert desk.console.rt.outbox.list(case_id=bridge) == []
    # The same human cannot be the second pair of eyes, through either channel.
    r = desk.claim("rex", "bridge")
    assert r.status_code == 403 and "someone other than the first reviewer" in r.json()["detail"]
    rex = desk.console.login("rex")
    assert rex.post_form(f"/cases/{bridge}/claim").status_code == 403
    # A different user in the console finishes it.
    sue = desk.console.login("sue")
    assert sue.post_form(f"/cases/{bridge}/claim").status_code == 303
    (item,) = desk.case("sue", "bridge")["must_reveal"]
    sue.post(f"/cases/{bridge}/items/{item}/reveal", headers={"X-CSRF-Token": sue.csrf})
    r = sue.post_form(f"/cases/{bridge}/decide", {"decision": "confirmed", "classification": "A2"})
    assert r.status_code == 303 and "event=confirmed" in r.headers["location"], r.text
    case = desk.case("ada", "bridge")
    assert case["state"] == "confirmed"
    assert (case["first_reviewer"], case["second_reviewer"]) == ("rex", "sue")
    assert desk.console.rt.outbox.list(case_id=bridge)


def test_four_eyes_console_first_then_api(four_eyes: Desk) -> None:
    desk = four_eyes
    exact = desk.cases["exact"]
    ada = desk.console.login("ada")
    assert ada.post_form(f"/cases/{exact}/claim").status_code == 303
    r = ada.post_form(f"/cases/{exact}/decide", {"decision": "confirmed", "classification": "B1"})
    assert r.status_code == 303 and "event=first_confirm" in r.headers["location"]
    # ada's own key is ada: refused as the second reviewer.
    r = desk.claim("ada", "exact")
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    # rex, through the API, agrees: final.
    assert desk.claim("rex", "exact").status_code == 200
    r = desk.decide("rex", "exact", decision="confirmed", classification="B1", labels=["z"])
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["event"] == "confirmed" and out["final"] is True
    assert (out["first_reviewer"], out["second_reviewer"]) == ("ada", "rex")
    assert sorted(o.action for o in desk.console.rt.outbox.list(case_id=exact)) == [
        "preserve",
        "remove_content",
    ]


def test_four_eyes_a_second_api_user_who_disagrees_escalates(four_eyes: Desk) -> None:
    desk = four_eyes
    exact = desk.cases["exact"]
    desk.claim("rex", "exact")
    assert desk.decide("rex", "exact", decision="confirmed", classification="A1").json()[
        "event"
    ] == ("first_confirm")
    # Two keys of one user are still one user.
    rex_again = key_for(desk.console.store, "rex@second", "review")
    r = desk.client.post(f"/v1/cases/{exact}/claim", headers=rex_again)
    assert r.status_code == 403
    desk.claim("sue", "exact")
    r = desk.decide("sue", "exact", decision="confirmed", classification="A2")
    assert r.status_code == 200 and r.json()["event"] == "disagreed"
    assert r.json()["queue"] == "senior" and r.json()["state"] == "open"
    assert desk.console.rt.outbox.list(case_id=exact) == []


def test_the_document_describes_the_cases_api(desk: Desk) -> None:
    doc = desk.client.get("/openapi.json").json()
    paths = doc["paths"]
    assert {
        "/v1/cases",
        "/v1/cases/queues",
        "/v1/cases/detectors",
        "/v1/cases/{case_id}",
        "/v1/cases/{case_id}/claim",
        "/v1/cases/{case_id}/release",
        "/v1/cases/{case_id}/decide",
        "/v1/cases/{case_id}/items/{item_id}/reveal",
        "/v1/cases/{case_id}/items/{item_id}/media",
    } <= set(paths)
    decide = paths["/v1/cases/{case_id}/decide"]["post"]
    body = decide["requestBody"]["content"]["application/json"]
    assert set(body["examples"]) == {
        "confirmed",
        "not_abusive",
        "account_confirmed",
        "account_not_abusive",
        "escalate",
    }
    assert body["schema"]["discriminator"]["propertyName"] == "decision"
    for status in ("401", "403", "404", "409", "422"):
        assert PROBLEM in decide["responses"][status]["content"], status
    schemas = doc["components"]["schemas"]
    assert schemas["CaseOut"]["examples"][0]["items"][0]["media_url"]
    assert schemas["ConfirmIn"]["properties"]["classification"]["enum"] == [
        "A1",
        "A2",
        "B1",
        "B2",
        "grooming",
        "sextortion",
    ]
    assert schemas["NotAbusiveIn"]["properties"]["detectors"]["maxItems"] == 32
    assert schemas["CaseOut"]["properties"]["subject"]["enum"] == ["content", "account"]
    assert decide["security"] == [{"apiKey": []}]
    params = {p["name"]: p for p in paths["/v1/cases"]["get"]["parameters"]}
    assert set(params) == {"queue", "state", "priority", "overdue", "after", "limit", "subject"}
    assert params["after"]["schema"]["anyOf"][0]["maximum"] == 2**63 - 1
