"""The console's quarantine (issue 16): entries quarantined for flooding are listed on the banks
page with a one-click dispute (disables the entry) and release, admins only, audited."""

from __future__ import annotations

import re

from tests.web.conftest import Console


def _flood(console: Console) -> int:
    store = console.store
    store.update_bank("bridge", expected_rate=1)
    (entry,) = store.iter_entries(banks=["bridge"])
    rules = store.bank_rules()
    assert store.note_matches({entry.id: "bridge"}, rules) == set()
    assert store.note_matches({entry.id: "bridge"}, rules) == {entry.id}
    return entry.id


def test_the_banks_page_lists_quarantined_entries_and_a_click_disputes_one(
    console: Console,
) -> None:
    entry = _flood(console)
    ada = console.login("ada")
    page = ada.get("/admin/banks").text
    assert re.search(rf'<tr data-entry="{entry}">\s*<td>{entry}</td>\s*<td>bridge</td>', page)
    assert re.search(r'data-bank="bridge">.*?<td class="rate">1/h</td>', page, re.S)
    # Reviewers and auditors cannot end a quarantine.
    for who in ("rex", "aud"):
        r = console.login(who).post_form(f"/admin/quarantine/{entry}/dispute", {})
        assert r.status_code == 403, who
    r = ada.post_form(f"/admin/quarantine/{entry}/dispute", {})
    assert r.status_code == 303 and r.headers["location"] == "/admin/banks?saved=bridge"
    assert console.store.get_entry(entry).enabled is False
    assert console.store.get_quarantine(entry).state == "disputed"
    assert "bank.entry.dispute" in console.audit_actions("bank.entry")
    assert f'data-entry="{entry}"' not in ada.get("/admin/banks").text
    # Ended once: a second click is refused, and an unknown entry or action is a 404.
    assert ada.post_form(f"/admin/quarantine/{entry}/release", {}).status_code == 400
    assert ada.post_form("/admin/quarantine/999999/release", {}).status_code == 404
    assert ada.post_form(f"/admin/quarantine/{entry}/explode", {}).status_code == 404


def test_release_from_the_console_lets_the_entry_act_again(console: Console) -> None:
    entry = _flood(console)
    r = console.login("ada").post_form(f"/admin/quarantine/{entry}/release", {})
    assert r.status_code == 303
    assert console.store.get_quarantine(entry).state == "released"
    assert console.store.get_entry(entry).enabled is True
    assert console.store.quarantined() == []
