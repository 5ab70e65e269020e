"""Issue 19 over HTTP (TestClient): need-to-know reveals, search, outbox operations, claims.
The browser tests (test_browser_issue19.py) drive the same pages in Chromium."""

from __future__ import annotations

import re

from tests.web.conftest import Console


def _item(html: str) -> int:
    found = re.search(r'<article class="item" id="item-(\d+)"', html)
    assert found
    return int(found.group(1))


# -- item 2: only the claim holder reveals; decided cases need a reason -------------------------


def test_only_the_claim_holder_reveals_and_a_closed_case_needs_a_reason(
    console: Console,
) -> None:
    url = f"/cases/{console.cases['exact']}"
    rex, sue = console.login("rex"), console.login("sue")
    page = rex.get(url).text
    item = _item(page)
    assert re.search(r'data-action="reveal" disabled title="Claim the case to reveal"', page)
    reveal = f"{url}/items/{item}/reveal"
    r = rex.post(reveal, headers={"X-CSRF-Token": rex.csrf})
    assert r.status_code == 409 and "nobody holds it" in r.json()["detail"]
    assert rex.post_form(f"{url}/claim").status_code == 303
    # A senior sees every queue but does not look at a case another reviewer holds.
    r = sue.post(reveal, headers={"X-CSRF-Token": sue.csrf})
    assert r.status_code == 409 and "claimed by rex" in r.json()["detail"]
    assert console.rt.accounts.exposure_today("sue") == 0
    assert rex.post(reveal, headers={"X-CSRF-Token": rex.csrf}).status_code == 200
    r = rex.post_form(f"{url}/decide", {"decision": "not_abusive", "reason": "benign photo"})
    assert r.status_code == 303, r.text

    # Decided: match details only, no preview; a reveal needs a reason and is no exposure.
    page = sue.get(url).text
    assert "match details only" in page and f'src="{url}/items/{item}/media"' not in page
    assert 'class="reveal-reason"' in page and 'class="match"' in page
    r = sue.post(reveal, headers={"X-CSRF-Token": sue.csrf})
    assert r.status_code == 400 and "state why" in r.json()["detail"]
    r = sue.post(
        reveal, headers={"X-CSRF-Token": sue.csrf}, data={"reason": "bank owner asked to check"}
    )
    assert r.status_code == 200 and r.json()["count"] == 0
    assert sue.get(r.json()["url"]).status_code == 200
    assert console.rt.accounts.exposure_today("sue") == 0
    (event,) = console.store.recent_audit(10, action="content.reveal.closed")
    assert event.actor == "user:sue"
    assert event.detail == {"closed": True, "reason": "bank owner asked to check"}
