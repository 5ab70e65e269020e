"""Attacks on ``/v1/cases`` and on keys bound to console users, each shown to fail now.

An independent review of issue 14's cases API found: exact match distances given to keys
without ``export`` (a distance oracle on bank hashes, issue 12 finding 6), a bound key that kept
working on other routes after its user was disabled, an admin who could mint a key acting as
another user and so complete both halves of four-eyes alone (issue 12 finding 8), and a list
cursor that told a reviewer which hidden cases exist. Each test performs the attack on SQLite
and PostgreSQL (the ``desk`` fixtures of test_cases_api).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.db import Store
from bastion.index.probing import band
from bastion.signals import hamming
from tests.api.test_cases_api import Desk, _desk, key_for
from tests.web.seed import BRIDGE_BANKED, BRIDGE_SCANNED, POLICY, reference_pdq


@pytest.fixture
def desk(api_store: Store, tmp_path: Path, testdata: Path) -> Iterator[Desk]:
    yield from _desk(api_store, tmp_path, testdata)


@pytest.fixture
def four_eyes(api_store: Store, tmp_path: Path, testdata: Path) -> Iterator[Desk]:
    policy = POLICY.replace("four_eyes: false", "four_eyes: true")
    assert policy != POLICY
    yield from _desk(api_store, tmp_path, testdata, policy)


# -- distances: banded for keys without export ------------------------------------------------


def test_a_review_key_without_export_gets_banded_distances(desk: Desk, testdata: Path) -> None:
    """The case read, its items' reasons and the case list carry the band, never the exact
    distance between the scanned photo and the bank's hash."""
    exact = hamming(reference_pdq(testdata, BRIDGE_SCANNED), reference_pdq(testdata, BRIDGE_BANKED))
    near = desk.console.settings.match_near_distance
    assert exact > 0 and exact not in (near, 31)  # a near copy, not a band's own number
    store = desk.console.store
    assert "export" not in store.get_api_key("rex@tool").scopes
    case = desk.case("rex", "bridge")
    [item] = case["items"]
    pdq = [m for m in item["matches"] if m["signal_type"] == "pdq"]
    assert pdq and pdq[0]["band"] == band(exact, near)
    assert pdq[0]["distance"] != exact
    texts = [item["reason"], case["reason"]]
    listed = desk.get("rex").json()["cases"]
    texts += [c["reason"] for c in listed if c["id"] == desk.cases["bridge"]]
    assert len(texts) == 3
    for text in texts:
        assert not re.search(rf"\bdistance {exact}\b", text), text
        assert f"distance {band(exact, near)}" in text, text
    # A key with export could export the bank outright: it still reads the exact figure.
    exporter = key_for(store, "rex@export", "review", "export")
    r = desk.client.get(f"/v1/cases/{desk.cases['bridge']}", headers=exporter)
    assert r.status_code == 200, r.text
    [item] = r.json()["items"]
    assert [m["distance"] for m in item["matches"] if m["signal_type"] == "pdq"] == [exact]
    assert f"distance {exact}" in item["reason"]


# -- the list cursor --------------------------------------------------------------------------


def test_the_list_cursor_does_not_reveal_hidden_cases(desk: Desk) -> None:
    """``after`` naming a case outside the reviewer's queues answers as a missing id does."""
    senior = desk.cases["senior"]
    assert desk.get("rex", f"/{senior}").status_code == 403
    hidden = desk.get("rex", params={"after": senior})
    missing = desk.get("rex", params={"after": 999_999})
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["code"] == missing.json()["code"] == "not_found"
    assert hidden.json()["detail"].replace(str(senior), "N") == missing.json()["detail"].replace(
        "999999", "N"
    )
    # A visible cursor still pages, and an admin may use any case as a cursor.
    first = desk.get("rex", params={"limit": 1}).json()
    assert first["next_after"] is not None
    assert desk.get("rex", params={"after": first["next_after"]}).status_code == 200
    assert desk.get("ada", params={"after": senior}).status_code == 200


# -- a bound key is its user's, on every route ------------------------------------------------


def test_a_disabled_users_key_is_refused_on_every_route(desk: Desk) -> None:
    """Once rex is disabled, rex's key exports no bank, reads no entry or report: every refusal
    is audited. Enabled again, the key works again (nothing else changed)."""
    store = desk.console.store
    rex = key_for(store, "rex@tool2", "review", "export", "report", "match")
    bank = store.list_banks()[0].name
    routes = ["/v1/cases", f"/v1/banks/{bank}/export", f"/v1/banks/{bank}/entries", "/v1/reports"]
    for path in routes:
        assert desk.client.get(path, headers=rex).status_code == 200, path
    desk.console.rt.accounts.set_disabled("rex", True, actor="test")
    before = len(desk.audit("access.denied"))
    for path in routes:
        r = desk.client.get(path, headers=rex)
        assert r.status_code == 403, (path, r.status_code)
        assert r.json()["code"] == "user_disabled" and "disabled" in r.json()["detail"]
        assert r.headers["content-type"] == "application/problem+json"
    denied = [e for e in desk.audit("access.denied") if e.actor == "key:rex@tool2"]
    assert len(desk.audit("access.denied")) - before == len(routes) == len(denied)
    assert {e.target for e in denied} == set(routes)
    desk.console.rt.accounts.set_disabled("rex", False, actor="test")
    assert desk.client.get(f"/v1/banks/{bank}/export", headers=rex).status_code == 200
    # A key of the platform (bound to nobody) is untouched by any of this.
    platform = key_for(store, "platform2", "export")
    assert desk.client.get(f"/v1/banks/{bank}/export", headers=platform).status_code == 200


# -- who may bind a key to a user, and four-eyes ----------------------------------------------


def _token(html: str) -> str | None:
    found = re.search(r"(bst_[A-Za-z0-9_\-]+)", html)
    return found.group(1) if found else None


def test_an_admin_cannot_act_as_a_reviewer_to_finish_four_eyes(four_eyes: Desk) -> None:
    """ada confirms first in the console, then tries to mint a key acting as rex (the admin
    key form) and to second her own finding through a key of her own: both fail, the case
    waits for a second person, and nothing is queued."""
    desk = four_eyes
    exact = desk.cases["exact"]
    ada = desk.console.login("ada")
    assert ada.post_form(f"/cases/{exact}/claim").status_code == 303
    r = ada.post_form(f"/cases/{exact}/decide", {"decision": "confirmed", "classification": "B1"})
    assert "event=first_confirm" in r.headers["location"]
    r = ada.post_form("/admin/keys", {"name": "rex@ada", "scopes": "review"})
    assert r.status_code == 400 and _token(r.text) is None
    assert not [k for k in desk.console.store.list_api_keys() if k.name == "rex@ada"]
    # Her own key is hers: named ada@..., bound to ada, refused as the second reviewer.
    r = ada.post_form("/account/keys", {"label": "rex", "scopes": "review"})
    assert r.status_code == 200, r.text
    own = {"Authorization": f"Bearer {_token(r.text)}"}
    assert desk.console.store.get_api_key("ada@rex").user == "ada"
    r = desk.client.post(f"/v1/cases/{exact}/claim", headers=own)
    assert r.status_code == 403 and "other than the first reviewer" in r.json()["detail"]
    r = desk.client.post(
        f"/v1/cases/{exact}/decide",
        headers=own,
        json={"decision": "confirmed", "classification": "B1"},
    )
    assert r.status_code in (403, 409)
    assert desk.case("sue", "exact")["state"] == "awaiting_second"
    assert desk.console.rt.outbox.list(case_id=exact) == []


def test_an_admin_cannot_whitelist_alone_through_a_key(four_eyes: Desk) -> None:
    """The same for 'not abusive' with disabling the entries (issue 12 finding 8)."""
    desk = four_eyes
    exact = desk.cases["exact"]
    ada = desk.console.login("ada")
    r = ada.post_form("/admin/keys", {"name": "sue@ada", "scopes": "review"})
    assert r.status_code == 400 and _token(r.text) is None
    assert ada.post_form(f"/cases/{exact}/claim").status_code == 303
    r = ada.post_form(
        f"/cases/{exact}/decide",
        {"decision": "not_abusive", "reason": "false positive", "disable_entries": "1"},
    )
    assert r.status_code == 303
    r = ada.post_form("/account/keys", {"label": "sue", "scopes": "review"})
    own = {"Authorization": f"Bearer {_token(r.text)}"}
    assert desk.client.post(f"/v1/cases/{exact}/claim", headers=own).status_code == 403
    case = desk.case("sue", "exact")
    assert case["state"] == "awaiting_second"
    # The bank entry still matches: nothing was disabled or disputed.
    assert all(e.enabled for e in desk.console.store.iter_entries())
    assert not desk.audit("entry.dispute")


def test_four_eyes_refuses_a_second_review_through_a_key_the_first_reviewer_made(
    four_eyes: Desk,
) -> None:
    """A key bound to rex but created by ada (as the admin form did before this change;
    migration 0016 keeps its creator) cannot second ada's finding; rex's own key can, and the
    decision's audit record names the key it came through."""
    desk = four_eyes
    store = desk.console.store
    exact = desk.cases["exact"]
    _, token = store.create_api_key("rex@legacy", {"review"}, user="rex", actor="user:ada")
    legacy = {"Authorization": f"Bearer {token}"}
    assert store.get_api_key("rex@legacy").created_by == "user:ada"
    ada = desk.console.login("ada")
    assert ada.post_form(f"/cases/{exact}/claim").status_code == 303
    ada.post_form(f"/cases/{exact}/decide", {"decision": "confirmed", "classification": "B1"})
    r = desk.client.post(f"/v1/cases/{exact}/claim", headers=legacy)
    assert r.status_code == 403 and "a key the first reviewer created" in r.json()["detail"]
    assert desk.claim("rex", "exact").status_code == 200  # rex's own key (the operator's)
    r = desk.decide("rex", "exact", decision="confirmed", classification="B1")
    assert r.status_code == 200 and r.json()["final"] is True
    assert (r.json()["first_reviewer"], r.json()["second_reviewer"]) == ("ada", "rex")
    [decided] = [
        e
        for e in desk.audit("case.decide")
        if e.target == f"case:{exact}" and e.actor == "user:rex"
    ]
    assert decided.detail["via"] == f"key:{store.get_api_key('rex@tool').key_id}"
    [first] = [e for e in desk.audit("case.decide") if e.actor == "user:ada"]
    assert "via" not in first.detail  # the console's own decision


def test_a_user_makes_their_own_keys_in_the_console(desk: Desk) -> None:
    """My API keys: review and media only, bound to the user, audited as theirs; another
    user's key cannot be revoked there; auditors (no case access) have no such page."""
    store = desk.console.store
    rex = desk.console.login("rex")
    assert rex.get("/account/keys").status_code == 200
    r = rex.post_form("/account/keys", {"label": "mytool", "scopes": ["review", "media"]})
    assert r.status_code == 200, r.text
    key = store.get_api_key("rex@mytool")
    assert (key.user, key.created_by, key.scopes) == ("rex", "user:rex", {"review", "media"})
    [made] = [e for e in desk.audit("key.create") if e.target == "rex@mytool"]
    assert made.actor == "user:rex" and made.detail["user"] == "rex"
    r = desk.client.get("/v1/cases", headers={"Authorization": f"Bearer {_token(r.text)}"})
    assert r.status_code == 200
    for scopes in (["review", "export"], ["review", "report"], ["media"], ["admin"]):
        r = rex.post_form("/account/keys", {"label": "more", "scopes": scopes})
        assert r.status_code == 400, scopes
    assert not [k for k in store.list_api_keys() if k.name == "rex@more"]
    assert rex.post_form("/account/keys/sue@tool/revoke").status_code == 404
    assert store.get_api_key("sue@tool").revoked_at is None
    assert rex.post_form("/account/keys/rex@mytool/revoke").status_code == 303
    assert store.get_api_key("rex@mytool").revoked_at is not None
    aud = desk.console.login("aud")
    assert aud.get("/account/keys").status_code == 403
    assert aud.post_form("/account/keys", {"label": "x", "scopes": "review"}).status_code == 403
