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


# -- item 8: search, and the audit log's whole-target filter ------------------------------------


def _found(user, q: str) -> dict[int, str]:  # type: ignore[no-untyped-def]
    r = user.get("/search", params={"q": q})
    assert r.status_code == 200, r.text
    rows = re.findall(
        r'<tr data-case="(\d+)">\s*<td><a[^>]*>#\d+</a></td>\s*<td>([^<]*)</td>', r.text
    )
    return {int(c): why for c, why in rows}


def test_search_finds_cases_by_id_content_uploader_hash_and_entry_within_the_queues(
    console: Console,
) -> None:
    bridge, senior, exact = (console.cases[n] for n in ("bridge", "senior", "exact"))
    rex, sue = console.login("rex"), console.login("sue")
    assert 'id="search-box"' in rex.get("/cases").text
    assert _found(rex, f"#{bridge}") == {bridge: "case id"}
    assert _found(rex, str(exact)) == {exact: "case id"}
    assert _found(rex, "content-bridge") == {bridge: "content id"}
    assert _found(rex, "uploader-3") == {exact: "uploader"}
    assert _found(rex, "ext-bridge-1") == {bridge: "bank entry"}
    item = console.rt.review.get_case(_viewer("ada"), exact).items[0]
    md5 = next(s["value"] for s in item.signals if s["type"] == "md5")
    assert _found(rex, md5) == {exact: "hash"}
    entry = item.matches[0]["entry"]
    assert _found(rex, f"entry:{entry}") == {exact: "bank entry"}
    # A senior-queue case is not found by a reviewer, whatever the key; a senior finds it.
    assert _found(rex, f"#{senior}") == {} and _found(rex, "uploader-2") == {}
    assert _found(sue, "uploader-2") == {senior: "uploader"}
    assert _found(rex, "nothing-like-this") == {}
    assert "No case in your queues" in rex.get("/search?q=zzz").text
    searches = console.store.recent_audit(50, action="case.search")
    assert {e.actor for e in searches} == {"user:rex", "user:sue"}
    assert any(e.detail["query"] == "uploader-3" for e in searches)
    assert console.login("aud").get("/search?q=1").status_code == 403


def _viewer(name: str):  # type: ignore[no-untyped-def]
    from bastion.review import Viewer

    return Viewer(name, "admin", ())


def test_audit_target_filter_matches_whole_targets(console: Console) -> None:
    for target in ("case:1", "case:1/item:2", "case:15", "case:150", "xcase:1"):
        console.store.record_audit(actor="system", action="test.target", target=target)
    aud = console.login("aud")
    page = aud.get("/audit", params={"action": "test.target", "target": "case:1"}).text
    targets = re.findall(r"<td>((?:x?case):[^<]*)</td>", page)
    assert sorted(targets) == ["case:1", "case:1/item:2"]


# -- item 12: outbox operations -----------------------------------------------------------------


def _dead(console: Console, n: int) -> list[int]:
    from bastion.actions.outbox import Outbox

    outbox = Outbox(console.store, max_attempts=1)
    for i in range(n):
        outbox.enqueue(
            action="remove_content",
            payload={"case_id": console.cases["bridge"]},
            idempotency_key=f"k-{i}",
            case_id=console.cases["bridge"],
        )
    dead = []
    for item in outbox.claim_due("test-worker", n):
        outbox.mark_failed(item, "test-worker", error="HTTP 503", status=503)
        dead.append(item.id)
    return dead


def test_outbox_retry_selected_and_all_header_alert_and_case_links(console: Console) -> None:
    ada, aud, rex = console.login("ada"), console.login("aud"), console.login("rex")
    assert 'id="dead-alert"' not in ada.get("/cases").text
    dead = _dead(console, 3)
    for user, home in ((ada, "/cases"), (aud, "/audit")):
        alert = re.search(r'role="alert" id="dead-alert">(.*?)</p>', user.get(home).text, re.S)
        assert alert and "3 webhook deliveries failed for good" in alert.group(1)
    assert 'id="dead-alert"' not in rex.get("/cases").text  # reviewers do not see the outbox
    page = ada.get("/admin/outbox?state=dead").text
    case = console.cases["bridge"]
    assert f'<a href="/cases/{case}" class="case-link">#{case}</a>' in page
    assert f'href="/cases/{case}"' not in aud.get("/admin/outbox?state=dead").text
    assert 'id="retry-all"' in page and 'id="retry-all"' not in aud.get("/admin/outbox").text
    assert ada.post_form("/admin/outbox/retry").status_code == 400  # nothing ticked
    assert aud.post_form("/admin/outbox/retry", {"all": "1"}).status_code == 403
    r = ada.post_form("/admin/outbox/retry", {"ids": [str(dead[0])]})  # type: ignore[dict-item]
    assert r.status_code == 303 and r.headers["location"].endswith("retried=1")
    assert "1 dead delivery sent back to pending" in ada.get(r.headers["location"]).text
    assert "2 webhook deliveries failed for good" in ada.get("/admin/outbox").text
    r = ada.post_form("/admin/outbox/retry", {"all": "1"})
    assert r.headers["location"].endswith("retried=2")
    assert console.rt.outbox.stats().counts["dead"] == 0
    assert 'id="dead-alert"' not in ada.get("/admin/outbox").text
    assert console.audit_actions("outbox.retry").count("outbox.retry") == 3


# -- items 4 and 5: claims that run out, breaks -------------------------------------------------


def _expire_claim(console: Console, case_id: int) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from bastion.banks.model import utcnow
    from bastion.review.store import cases_t

    with console.store.engine.begin() as conn:
        conn.execute(
            update(cases_t)
            .where(cases_t.c.id == case_id)
            .values(lease_until=utcnow() - timedelta(seconds=1))
        )


def test_a_failed_decision_keeps_what_was_typed_and_says_who_holds_the_case(
    console: Console,
) -> None:
    case_id = console.cases["exact"]
    url = f"/cases/{case_id}"
    rex, sue = console.login("rex"), console.login("sue")
    assert rex.post_form(f"{url}/claim").status_code == 303
    _expire_claim(console, case_id)
    assert sue.post_form(f"{url}/claim").status_code == 303
    note = "the second photo looks like the listed one, check the source"
    r = rex.post_form(f"{url}/decide", {"decision": "escalate", "note": note})
    assert r.status_code == 409
    assert "The case is now claimed by sue." in r.text
    escalate = re.search(r'<form [^>]*id="decide-escalate">(.*?)</form>', r.text, re.S)
    assert escalate and f'value="{note}"' in escalate.group(1)
    confirm = re.search(r'<form [^>]*id="decide-confirmed">(.*?)</form>', r.text, re.S)
    assert confirm and note not in confirm.group(1)  # only in the form it was typed in
    r = rex.post_form(
        f"{url}/decide", {"decision": "confirmed", "classification": "B1", "labels": "x, y"}
    )
    assert '<option value="B1" selected>' in r.text and 'value="x, y"' in r.text


def test_renewing_a_claim_and_the_break_releasing_it(console: Console) -> None:
    case_id = console.cases["bridge"]
    url = f"/cases/{case_id}"
    rex, sue = console.login("rex"), console.login("sue")
    assert rex.post_form(f"{url}/claim").status_code == 303
    page = rex.get(url).text
    assert re.search(r'id="lease" data-holder="rex" data-left="(8\d\d|900)" data-lease="900"', page)
    r = rex.post(f"{url}/renew", headers={"X-CSRF-Token": rex.csrf})
    assert r.status_code == 200 and r.json()["holder"] == "rex"
    assert 890 <= r.json()["remaining"] <= 900
    r = sue.post(f"{url}/renew", headers={"X-CSRF-Token": sue.csrf})
    assert r.status_code == 409 and r.json()["holder"] == "rex"
    claims = console.store.recent_audit(20, action="case.claim")
    assert any(e.detail.get("renewed") for e in claims)
    # "Take a break" releases the claim and says so.
    assert 'name="break" value="1"' in page
    r = rex.post_form(f"{url}/release", {"break": "1"})
    assert r.status_code == 303 and r.headers["location"] == f"/cases?released={case_id}"
    assert "is released; it is back in the queue" in rex.get(r.headers["location"]).text
    assert console.rt.review.get_case(_viewer("ada"), case_id).lease_holder is None


# -- item 7: four-eyes, the first reviewer is not offered the second review ---------------------


def test_a_case_awaiting_its_second_review_is_not_offered_to_its_first_reviewer(
    console: Console,
) -> None:
    from pathlib import Path

    from tests.web.seed import POLICY

    Path(console.settings.policy_file).write_text(
        POLICY.replace("four_eyes: false", "four_eyes: true") + "\n# four-eyes on\n"
    )
    console.rt.policy.refresh()  # now, not at the holder's next once-a-second check
    case_id = console.cases["exact"]
    url = f"/cases/{case_id}"
    rex, sue = console.login("rex"), console.login("sue")
    assert rex.post_form(f"{url}/claim").status_code == 303
    r = rex.post_form(f"{url}/decide", {"decision": "confirmed", "classification": "B2"})
    assert r.status_code == 303 and "event=first_confirm" in r.headers["location"]
    assert f'data-case="{case_id}"' not in rex.get("/cases").text
    assert f'data-case="{case_id}"' in sue.get("/cases").text
    page = rex.get(url).text
    assert 'id="own-pending"' in page and 'id="claim"' not in page
    r = rex.post_form(f"{url}/claim")
    assert r.status_code == 403
    assert f"Case #{case_id}" in r.text and "Not your second review" in r.text
    assert "someone other than the first reviewer" in r.text


# -- item 1: a false positive is undone on the platform -----------------------------------------

BLOCKING = """
  - name: exact-block
    description: A byte-identical copy of a listed video is removed at once
    when:
      banks: [exact]
      signal_types: [md5]
      kinds: [video]
    verdict: block
    actions: [remove_content]
    priority: high
"""


def _scan_blocked(console: Console, testdata) -> int:  # type: ignore[no-untyped-def]
    from pathlib import Path

    from tests.web.seed import POLICY, scan_cases

    policy = POLICY.replace("rules:\n", "rules:" + BLOCKING, 1)
    Path(console.settings.policy_file).write_text(policy)
    console.rt.policy.refresh()  # now, not at the holder's next once-a-second check
    _, token = console.store.create_api_key("scanner-2", {"match"})
    return scan_cases(console.main.post, testdata, token, ("video",))["video"]


def test_a_not_abusive_decision_undoes_what_was_sent_once_and_the_case_page_shows_it(
    console: Console, testdata
) -> None:  # type: ignore[no-untyped-def]
    from bastion import pipeline

    case_id = _scan_blocked(console, testdata)
    outbox = console.rt.outbox
    (removal,) = outbox.list(case_id=case_id)
    assert removal.action == "remove_content"
    (claimed,) = outbox.claim_due("test-worker", 10)
    outbox.mark_delivered(claimed, status=204, target="default")  # it went out

    url = f"/cases/{case_id}"
    sue = console.login("sue")
    page = sue.get(url).text
    assert 'id="removed-at-scan"' in page
    sent = re.search(r'<section class="panel" id="sent-actions".*?</section>', page, re.S)
    assert sent and 'data-action="remove_content" data-state="delivered"' in sent.group(0)
    assert "at scan" in sent.group(0)

    assert sue.post_form(f"{url}/claim").status_code == 303
    for item in re.findall(r'<article class="item" id="item-(\d+)"', page):
        sue.post(f"{url}/items/{item}/reveal", headers={"X-CSRF-Token": sue.csrf})
    r = sue.post_form(f"{url}/decide", {"decision": "not_abusive", "reason": "a doorknob"})
    assert r.status_code == 303, r.text
    rows = sorted(outbox.list(case_id=case_id), key=lambda o: o.id)
    assert [o.action for o in rows] == ["remove_content", "restore_content"]
    restore = rows[1]
    assert restore.state == "pending"
    assert restore.idempotency_key == f"restore_content:{removal.idempotency_key}"
    assert restore.payload["reverses"] == "remove_content"
    assert restore.payload["original_state"] == "delivered"
    assert restore.payload["content_id"] == "content-video"
    # Exactly once: running the reversal again (an appeal, a retry) queues nothing new.
    review = console.rt.policy.current().review
    with console.store.engine.begin() as conn:
        assert pipeline.queue_reversals(console.rt, conn, case_id, review) == 0
    assert len(outbox.list(case_id=case_id)) == 2
    page = sue.get(url).text
    assert 'data-action="restore_content" data-state="pending"' in page
    assert "undoes remove_content" in page


def test_reversals_are_configured_per_action_in_the_policy() -> None:
    import pytest

    from bastion.policy import PolicyError, parse_policy
    from tests.web.seed import POLICY

    def with_reversals(text: str) -> str:
        old = "  on_block: [remove_content]\n"
        return POLICY.replace(old, old + text)

    policy = parse_policy(with_reversals("  reversals:\n    remove_content: put_back\n"))
    assert policy.review.reversals == (("remove_content", "put_back"),)
    assert policy.review.reversal_of("restrict_account") is None
    assert parse_policy(POLICY).review.reversal_of("restrict_account") == "unrestrict_account"
    assert parse_policy(with_reversals("  reversals: {}\n")).review.reversals == ()
    with pytest.raises(PolicyError, match="cannot undo itself"):
        parse_policy(with_reversals("  reversals: {remove_content: remove_content}\n"))


# -- item 10: readable decided cases ------------------------------------------------------------


def test_a_decided_case_reads_as_a_summary_with_readable_history_and_no_due_time(
    console: Console,
) -> None:
    case_id = console.cases["exact"]
    url = f"/cases/{case_id}"
    rex = console.login("rex")
    assert 'id="due"' in rex.get(url).text  # an open case has a due time
    assert rex.post_form(f"{url}/claim").status_code == 303
    r = rex.post_form(
        f"{url}/decide",
        {"decision": "confirmed", "classification": "B2", "labels": "x", "note": "same file"},
    )
    assert r.status_code == 303, r.text
    page = rex.get(url).text
    assert 'id="due"' not in page
    card = re.search(r'<div class="summary-card" id="decision-summary">(.*?)</div>\n', page, re.S)
    assert card
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", card.group(1)))
    assert "confirmed, B2" in text and "Labels x" in text
    assert "rex confirmed it" in text and "Note: same file" in text
    assert "Actions sent: remove_content pending , preserve pending" in text
    history = re.search(r'<ol class="history" id="history">(.*?)</ol>', page, re.S)
    assert history
    lines = [
        re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", li)).strip()
        for li in re.findall(r"<li[^>]*>(.*?)</li>", history.group(1), re.S)
    ]
    assert any(line.endswith("rex claimed the case") for line in lines), lines
    assert any("rex confirmed it as B2 (labels x); note: same file" in line for line in lines)
    assert "note=" not in history.group(1) and "=" not in " ".join(lines)
    assert re.search(r'<time datetime="[0-9T:+-]+" title="[^"]+UTC">', history.group(1))


# -- item 6: escalations stay visible ------------------------------------------------------------


def test_escalation_banner_queue_column_and_read_only_outcome_for_the_escalator(
    console: Console,
) -> None:
    case_id = console.cases["bridge"]
    url = f"/cases/{case_id}"
    rex, sue, ada = console.login("rex"), console.login("sue"), console.login("ada")
    assert rex.post_form(f"{url}/claim").status_code == 303
    r = rex.post_form(f"{url}/decide", {"decision": "escalate", "note": "source unclear"})
    assert r.status_code == 303
    queue = sue.get("/cases?queue=senior").text
    row = re.search(rf'<tr data-case="{case_id}".*?</tr>', queue, re.S)
    assert row and 'class="escalated">rex<div class="muted small">source unclear' in row.group(0)
    page = sue.get(url).text
    assert re.search(r'id="escalation-banner">Escalated by <strong>rex</strong>', page)
    assert "from queue default: “source unclear”" in page
    # The reviewer who escalated follows it: read-only, no media, no claim, audited.
    mine = rex.get(url)
    assert mine.status_code == 200 and 'id="read-only"' in mine.text
    assert 'id="awaiting-outcome"' in mine.text and f'src="{url}/items' not in mine.text
    assert rex.post_form(f"{url}/claim").status_code == 403
    items = re.findall(r'<article class="item" id="item-(\d+)"', mine.text)
    assert items and rex.get(f"{url}/items/{items[0]}/media").status_code == 403
    views = console.store.recent_audit(50, action="case.view")
    assert any(e.actor == "user:rex" and e.detail.get("read_only") for e in views)
    # The senior decides; the escalating reviewer sees the outcome.
    assert ada.post_form(f"{url}/claim").status_code == 303
    for item in items:
        ada.post(f"{url}/items/{item}/reveal", headers={"X-CSRF-Token": ada.csrf})
    r = ada.post_form(f"{url}/decide", {"decision": "not_abusive", "reason": "a bridge"})
    assert r.status_code == 303, r.text
    outcome = rex.get(url).text
    assert "Outcome: not abusive." in outcome and 'id="decision-summary"' in outcome


# -- item 9: a faster decision loop -------------------------------------------------------------


def test_take_next_presets_and_where_a_decision_leads(console: Console) -> None:
    rex, ada = console.login("rex"), console.login("ada")
    bridge, exact = console.cases["bridge"], console.cases["exact"]
    # exact (high) comes before bridge (normal); a case someone else holds is skipped.
    assert ada.post_form(f"/cases/{exact}/claim").status_code == 303
    r = rex.post_form("/cases/next")
    assert r.status_code == 303 and r.headers["location"] == f"/cases/{bridge}"
    assert console.rt.review.get_case(_viewer("ada"), bridge).lease_holder == "rex"
    r = rex.post_form("/cases/next")  # rex's own claim is the next one for rex
    assert r.headers["location"] == f"/cases/{bridge}"
    # A preset reason, with free text after it; back to the filtered queue the reviewer used.
    page = rex.get(f"/cases/{bridge}").text
    (item,) = re.findall(r'<article class="item" id="item-(\d+)"', page)
    rex.post(f"/cases/{bridge}/items/{item}/reveal", headers={"X-CSRF-Token": rex.csrf})
    r = rex.post_form(
        f"/cases/{bridge}/decide",
        {
            "decision": "not_abusive",
            "preset": "false match: a different image",
            "reason": "another bridge",
            "back": "/cases?queue=default&state=open",
        },
    )
    assert r.status_code == 303
    assert r.headers["location"] == (
        f"/cases?queue=default&state=open&done={bridge}&event=not_abusive"
    )
    (dispute,) = [e for e in console.store.recent_audit(20, action="entry.dispute")]
    assert dispute.detail["reason"] == "false match: a different image: another bridge"
    # Nothing left for rex (exact is ada's): the queue says so.
    r = rex.post_form("/cases/next")
    assert r.headers["location"] == "/cases?empty=1"
    assert "No case is waiting in your queues" in rex.get("/cases?empty=1").text
    # then=next goes straight to the next case, with the last decision's notice on it.
    assert ada.post_form(f"/cases/{exact}/release").status_code == 303
    senior = console.cases["senior"]
    sue = console.login("sue")
    assert sue.post_form(f"/cases/{exact}/claim").status_code == 303
    r = sue.post_form(
        f"/cases/{exact}/decide",
        {"decision": "escalate", "note": "n", "then": "next", "back": "https://evil.example/"},
    )
    assert r.headers["location"] == f"/cases/{senior}?done={exact}&event=escalated"
    assert "This is the next case." in sue.get(r.headers["location"]).text
    r = ada.post_form(f"/cases/{bridge}/claim")  # decided: back to the case, not elsewhere
    assert r.status_code == 409


# -- item 14 (part): notes without deciding -----------------------------------------------------


def test_reviewers_add_notes_without_deciding(console: Console) -> None:
    url = f"/cases/{console.cases['bridge']}"
    rex = console.login("rex")
    r = rex.post_form(f"{url}/note", {"text": "checked the uploader's other posts"})
    assert r.status_code == 303 and r.headers["location"] == f"{url}#history"
    page = rex.get(url).text
    assert "noted: checked the uploader&#39;s other posts" in page
    assert 'data-state="open"' in page or 'id="case-state" data-state="open"' in page
    (event,) = console.store.recent_audit(10, action="case.note")
    assert event.actor == "user:rex" and event.detail == {"length": 34}  # no text in the log
    assert rex.post_form(f"{url}/note", {"text": "   "}).status_code == 400
    senior = f"/cases/{console.cases['senior']}"
    assert rex.post_form(f"{senior}/note", {"text": "x"}).status_code == 403
    assert console.login("aud").post_form(f"{url}/note", {"text": "x"}).status_code == 403


# -- item 13 (part): the team view for leads ----------------------------------------------------


def test_team_view_shows_exposure_and_breaks_to_leads_only(console: Console) -> None:
    url = f"/cases/{console.cases['bridge']}"
    rex, sue = console.login("rex"), console.login("sue")
    assert rex.post_form(f"{url}/claim").status_code == 303
    item = _item(rex.get(url).text)
    assert rex.post(f"{url}/items/{item}/reveal", headers={"X-CSRF-Token": rex.csrf}).is_success
    assert rex.post_form(f"{url}/release", {"break": "1"}).status_code == 303
    page = sue.get("/team")
    assert page.status_code == 200 and 'href="/team"' in page.text
    row = re.search(r'<tr data-user="rex"[^>]*>(.*?)</tr>', page.text, re.S)
    assert row
    assert '<td class="exposure-count">1 of 3</td>' in row.group(1)
    assert '<td class="breaks">1</td>' in row.group(1)
    assert 'data-user="aud"' not in page.text  # auditors review nothing
    assert "team.view" in console.audit_actions("team")
    assert rex.get("/team").status_code == 403 and 'href="/team"' not in rex.get("/cases").text
    assert console.login("aud").get("/team").status_code == 403
