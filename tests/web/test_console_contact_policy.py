"""The console's policy page shows the contact-safety settings in force, and refuses a bad one
with its line."""

from __future__ import annotations

import re

from tests.web.conftest import Console


def test_policy_page_shows_the_contact_settings(console: Console) -> None:
    ada = console.login("ada")
    page = ada.get("/admin/policy").text
    assert 'id="contact-settings"' in page
    assert re.search(r"<dt>spam_band</dt><dd[^>]*>high</dd>", page)
    assert re.search(r"<dt>unknown_age_as_child</dt><dd[^>]*>True</dd>", page)
    assert "<td>fanout" in page and "window_hours=24.0" in page
    # Where account cases go, and the risk settings every detector shares.
    assert re.search(r"<dt>case_queue</dt><dd[^>]*>default</dd>", page)
    assert re.search(r"<dt>case_priority</dt><dd[^>]*>high</dd>", page)
    assert re.search(r"<dt>case_reopen_margin</dt><dd[^>]*>10</dd>", page)
    assert "secrecy_request → secrecy_request" in page  # contact.text_flags, label → flag kind
    assert re.search(r"<dt>lookback_days</dt><dd[^>]*>30.0</dd>", page)
    assert re.search(r"<dt>max_mutuals</dt><dd[^>]*>0</dd>", page)
    text = console.rt.policy.current().text
    edited = (
        text
        + "\ncontact:\n  decide: {spam_band: medium}\n  risk: {fanout: {enabled: false}}\n"
        + "  case_queue: senior\n"
    )
    assert ada.post_form("/admin/policy", {"text": edited}).status_code == 303
    page = ada.get("/admin/policy").text
    assert re.search(r"<dt>spam_band</dt><dd[^>]*>medium</dd>", page)
    assert re.search(r"<td>fanout <span class=\"muted\">\(off\)</span>", page)
    assert re.search(r"<dt>case_queue</dt><dd[^>]*>senior</dd>", page)
    bad = text + "\ncontact:\n  decide: {spam_band: severe}\n"
    r = ada.post_form("/admin/policy", {"text": bad})
    assert r.status_code == 400
    assert re.search(r"<li>line \d+: contact.decide.spam_band[^<]*severe", r.text)
