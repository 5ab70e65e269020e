"""The console's account case page over HTTP: the detectors, facts, contact graph, reports,
franked message reports (without their text), timeline and previous cases of an account
(metadata only); the timeline read audited with the console user as actor; no timeline for a
role that may not open the case. Deciding one: test_account_decisions.py."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from bastion import pipeline
from bastion.client import frank
from bastion.contact.store import ContactStore
from bastion.policy import Verdict
from bastion.psi import Report
from bastion.review import Decision, NewItem, Viewer
from tests.web.accounts import ACCOUNT, BLOCKED_BY, CHILDREN, REPORTED_BY, open_account_case
from tests.web.conftest import Console


def timeline_reads(console: Console) -> list[tuple[str, str, dict[str, object]]]:
    return [
        (e.actor, e.target, dict(e.detail))
        for e in console.store.recent_audit(1000, action="contact.timeline")
    ]


def counts(page: str, dd: str) -> dict[str, int]:
    found = re.search(rf'id="{dd}">([^<]*)<', page)
    assert found, dd
    return {k: int(v) for k, v in (p.split(": ") for p in found.group(1).split(" · "))}


def earlier_content_case(console: Console, account: str) -> int:
    """A content case for the same uploader, already confirmed."""
    review = console.rt.review
    verdict = Verdict("review", "earlier-rule", "earlier match", "normal", "default", (), False)
    case_id = review.submit(
        verdict, NewItem(kind="image", uploader_id=account), actor="system"
    ).case_id
    ada = Viewer("ada", "admin", ())
    review.claim(ada, case_id)
    pipeline.decide(console.rt, ada, case_id, Decision.confirmed("B2"))
    return case_id


def test_account_case_page_shows_signals_graph_reports_timeline_and_previous_cases(
    console: Console,
) -> None:
    earlier = earlier_content_case(console, ACCOUNT)
    case_id = open_account_case(console.store)
    rex = console.login("rex")
    before = len(timeline_reads(console))
    r = rex.get(f"/cases/{case_id}")
    assert r.status_code == 200, r.text
    page = r.text
    assert 'id="account"' in page and f'data-account="{ACCOUNT}"' in page
    # Detectors with their points and evidence counts; the fired ones marked.
    fired = re.findall(r'<tr data-detector="([a-z_]+)" data-fired="1"', page)
    assert {"fanout", "new_account", "cross_country", "blocked_reported"} <= set(fired)
    row = re.search(r'<tr data-detector="blocked_reported".*?</tr>', page, re.S)
    assert row and "blocked=2, reported=1" in row.group(0), row
    assert re.search(r'id="risk-now"><strong>high</strong>, score \d+', page)
    assert re.search(r'id="risk-open">high, score \d+', page)
    # Facts: age band and how it is known, country, account age.
    assert re.search(r'id="fact-age">adult <span[^>]*>\(self declared\)', page)
    assert 'id="fact-country">US<' in page
    assert re.search(r'id="fact-created">3 days', page)
    # Contact graph summary.
    minors = len(CHILDREN)
    assert f'id="graph-contacted">{minors + 1} account(s), {minors} of them children' in page
    assert counts(page, "graph-bands") == {"13-15": 4, "under13": 1, "16-17": 1, "adult": 1}
    assert counts(page, "graph-countries") == {"GB": 3, "IE": 2, "FR": 1, "US": 1}
    assert 'id="graph-requests">7 sent, 2 accepted' in page
    assert 'id="graph-connections">2<' in page
    assert 'id="graph-blocks">2 (2 by children)' in page
    assert 'id="graph-reports">1 time(s)' in page
    # kid-6 shares the friend with it; the other five children and the friend share none.
    assert f'id="graph-mutuals">1 shared with contacted accounts; {minors} contacted' in page
    # The report about it: who reported, their band, the category.
    reports = re.search(r'<table class="small" id="account-reports">.*?</table>', page, re.S)
    assert reports and REPORTED_BY in reports.group(0) and "grooming" in reports.group(0)
    # The timeline: every event naming the account, newest first, with the other side's facts.
    rows = re.findall(r'<tr data-type="([a-z_]+)" data-direction="(in|out|self)">', page)
    # its account event, the friend's request and accept, a request and a message to each
    # child, the flag, the accept, the blocks and the report (the children's own events do not
    # name it)
    assert len(rows) == 1 + 2 + 2 * minors + 1 + 1 + len(BLOCKED_BY) + 1
    assert rows[0] == ("report", "in")
    assert ("flag", "out") in rows and ("account", "self") in rows
    assert 'kid-6 <span class="muted">(13-15, FR)</span>' in page
    assert "flag: offplatform_handle" in page
    # Previous cases: the earlier content case, linked.
    assert re.search(
        rf'<li data-case="{earlier}"><a href="/cases/{earlier}">Case #{earlier}</a>'
        r" · image · confirmed \(B2\)",
        page,
    )
    # No bank matches panel, no reveal shortcuts; account findings in the form.
    assert 'id="matches"' not in page and "reveal next item" not in page
    assert re.findall(r'<option value="(\w+)">', page) == ["grooming", "sextortion"]
    boxes = re.findall(r'name="detectors" value="([a-z_]+)" checked', page)
    assert set(boxes) == set(fired)
    assert 'name="disable_entries"' not in page
    # The read was audited once, with the console user and the events it returned.
    reads = timeline_reads(console)
    assert len(reads) == before + 1
    actor, target, detail = reads[0]
    assert actor == "user:rex" and target == f"account:{ACCOUNT}"
    assert detail["events"] == len(rows)


def test_a_role_without_the_queue_gets_no_timeline(console: Console) -> None:
    senior_case = open_account_case(console.store, queue="senior")
    before = len(timeline_reads(console))
    rex = console.login("rex")  # a reviewer of "default" only
    r = rex.get(f"/cases/{senior_case}")
    assert r.status_code == 403
    assert "acct-g1" not in r.text and "kid-1" not in r.text
    aud = console.login("aud")
    r = aud.get(f"/cases/{senior_case}")
    assert r.status_code == 403 and "kid-1" not in r.text
    assert len(timeline_reads(console)) == before  # nothing was read
    denied = console.audit_actions("access.denied") + console.audit_actions("case.view")
    assert denied  # the refusals are on record
    sue = console.login("sue")  # senior reviewers see every queue
    assert sue.get(f"/cases/{senior_case}").status_code == 200
    reads = timeline_reads(console)
    assert len(reads) == before + 1 and reads[0][0] == "user:sue"


def test_content_case_page_reads_no_timeline(console: Console) -> None:
    open_account_case(console.store)
    before = len(timeline_reads(console))
    ada = console.login("ada")
    page = ada.get(f"/cases/{console.cases['bridge']}").text
    assert 'id="account"' not in page and 'id="matches"' in page
    confirm = re.search(r'<form [^>]*id="decide-confirmed">(.*?)</form>', page, re.S)
    assert confirm  # the classifications offered, not the page's other lists
    assert re.findall(r'<option value="(\w+)">', confirm.group(1)) == ["A1", "A2", "B1", "B2"]
    assert len(timeline_reads(console)) == before


def report_message(console: Console, message: bytes, sender: str, recipient: str) -> Any:
    """A recipient's verified report of a franked message (the franking protocol, end to end)."""
    vouchers = console.rt.vouchers
    franked = frank(message)
    tag, ts = vouchers.tag(franked.commitment, sender, recipient)
    report = Report(message, franked.franking_key, franked.commitment, tag, sender, recipient, ts)
    return vouchers.report(report, reporter=recipient, actor="key:platform")


def test_franked_reports_of_its_messages_are_listed_without_their_text(console: Console) -> None:
    case_id = open_account_case(console.store)
    message = b"add me on another app"  # a benign grooming-style fixture, never explicit
    stored = report_message(console, message, ACCOUNT, REPORTED_BY)
    report_message(console, b"secret game", "someone-else", REPORTED_BY)  # not this account's
    page = console.login("rex").get(f"/cases/{case_id}").text
    rows = re.findall(r'<tr data-report="(\d+)">(.*?)</tr>', page, re.S)
    assert [int(r[0]) for r in rows] == [stored.id]
    assert REPORTED_BY in rows[0][1] and f"{len(message)} bytes" in rows[0][1]
    assert stored.message_sha256[:16] in rows[0][1]
    assert "another app" not in page and "secret game" not in page


def test_previous_cases_list_only_the_queues_the_viewer_may_open(console: Console) -> None:
    review = console.rt.review
    senior = Verdict("review", "senior-rule", "senior match", "high", "senior", (), False)
    hidden = review.submit(
        senior, NewItem(kind="image", uploader_id=ACCOUNT), actor="system"
    ).case_id
    case_id = open_account_case(console.store)
    rex_page = console.login("rex").get(f"/cases/{case_id}").text
    assert f'data-case="{hidden}"' not in rex_page and "None in the queues you may see" in rex_page
    sue_page = console.login("sue").get(f"/cases/{case_id}").text
    assert f'<li data-case="{hidden}"><a href="/cases/{hidden}">' in sue_page


def test_a_decided_case_whose_events_were_erased_still_opens(console: Console) -> None:
    case_id = open_account_case(console.store)
    sue = console.login("sue")
    assert sue.post_form(f"/cases/{case_id}/claim").status_code == 303
    form = {"decision": "not_abusive", "reason": "checked", "detectors": ["", "fanout"]}
    assert sue.post_form(f"/cases/{case_id}/decide", form).status_code == 303  # type: ignore[arg-type]
    erased = ContactStore.for_runtime(console.rt).erase(ACCOUNT, actor="user:ada")
    assert erased.deleted > 0
    r = sue.get(f"/cases/{case_id}")
    assert r.status_code == 200
    page = r.text
    assert "No events are held for this account" in page
    assert 'id="risk-now">no events name this account now' in page
    assert re.search(r'id="risk-open">high, score \d+', page)  # the snapshot stays with the case
    assert 'id="fact-age">unknown' in page and 'id="graph-contacted">0 account(s)' in page


def test_a_wide_fan_out_looks_up_the_most_recent_counterparts_only(console: Console) -> None:
    now = datetime.now(UTC)
    extra = 300
    events: list[dict[str, object]] = []
    for n in range(extra):
        kid, at = f"wide-{n}", now - timedelta(days=3, minutes=n)
        events.append(
            {
                "event_id": f"wide-a{n}",
                "time": (at - timedelta(days=300)).isoformat(),
                "type": "account",
                "account": kid,
                "age_band": "13-15",
                "country": "GB",
            }
        )
        events.append(
            {
                "event_id": f"wide-m{n}",
                "time": at.isoformat(),
                "type": "message",
                "actor": ACCOUNT,
                "target": kid,
                "conversation": f"c-{kid}",
            }
        )
    ContactStore.for_runtime(console.rt).ingest(events)
    case_id = open_account_case(console.store, now=now)
    page = console.login("rex").get(f"/cases/{case_id}").text
    total = extra + len(CHILDREN) + 1  # and the friend
    assert f"Facts looked up for the 300 most recent of {total} counterparts" in page
    bands = counts(page, "graph-bands")
    assert bands["unknown"] == total - 300  # the oldest, not looked up
    assert sum(bands.values()) == total
