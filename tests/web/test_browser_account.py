"""An account case in a real browser (Playwright, Debian's Chromium, a real `bastion serve`):
open it from the queue, see its timeline and detectors, claim it, decide it by keyboard
(confirmed as grooming), and clear another as not abusive naming the detectors that were wrong.
No timed waits: Playwright waits for states."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from bastion.db import Store
from tests.web.accounts import ACCOUNT, CHILDREN, open_account_case
from tests.web.server import ConsoleServer, login, watched_page

OTHER = "acct-g2"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, testdata: Path) -> Iterator[ConsoleServer]:
    tmp = tmp_path_factory.mktemp("console-accounts")
    srv = ConsoleServer(tmp, testdata)
    srv.db_url = f"sqlite:///{tmp / 'bastion.db'}"  # type: ignore[attr-defined]
    try:
        with Store.open(srv.db_url) as store:  # type: ignore[attr-defined]
            srv.cases["account"] = open_account_case(store)
            srv.cases["other"] = open_account_case(store, account=OTHER)
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    # The refused decision the test provokes on purpose, and the favicon the console does not
    # have, are logged as failed loads; nothing else may be.
    with watched_page(browser, allowed="400|404") as pg:
        yield pg


def audit(server: ConsoleServer, action: str) -> list[tuple[str, str, dict[str, object]]]:
    with Store.open(server.db_url) as store:  # type: ignore[attr-defined]
        return [
            (e.actor, e.target, dict(e.detail)) for e in store.recent_audit(1000, action=action)
        ]


def test_reviewer_opens_an_account_case_from_the_queue_claims_and_confirms_it(
    page: Page, server: ConsoleServer
) -> None:
    case_id = server.cases["account"]
    login(page, server, "rex")
    row = page.locator(f'tr[data-case="{case_id}"]')
    expect(row).to_contain_text("account")
    row.get_by_role("link").click()
    expect(page.locator("h1")).to_have_text(f"Case #{case_id}")

    # The account, not content: no media, no reveal; detectors, graph and the timeline instead.
    expect(page.locator("#account")).to_have_attribute("data-account", ACCOUNT)
    expect(page.locator(".item")).to_have_count(0)
    expect(page.locator('[data-action="reveal"]')).to_have_count(0)
    expect(page.locator('#detectors tr[data-detector="fanout"]')).to_have_attribute(
        "data-fired", "1"
    )
    expect(page.locator('#detectors tr[data-detector="blocked_reported"]')).to_contain_text(
        "blocked=2"
    )
    expect(page.locator("#graph-contacted")).to_contain_text(f"{len(CHILDREN)} of them children")
    timeline = page.locator("#timeline tbody tr")
    expect(timeline.first).to_have_attribute("data-type", "report")
    assert timeline.count() > 2 * len(CHILDREN)
    expect(page.locator('#timeline tr[data-type="flag"]')).to_contain_text("offplatform_handle")
    # Seeing the timeline was recorded, with this reviewer as the reader.
    reads = [(a, t) for a, t, _ in audit(server, "contact.timeline")]
    assert ("user:rex", f"account:{ACCOUNT}") in reads

    # Deciding needs the claim, as for content; no reveal is needed after it.
    confirm = page.locator("#decide-confirmed button[type=submit]")
    expect(confirm).to_be_disabled()
    page.click("#claim")
    expect(page.locator("#lease")).to_contain_text("claimed by rex")
    expect(confirm).to_be_enabled()

    # Keyboard: c focuses the classification (grooming or sextortion only), Ctrl+Enter submits.
    page.keyboard.press("c")
    select = page.locator("#decide-confirmed select[name=classification]")
    expect(select).to_be_focused()
    options = select.locator("option").all_inner_texts()
    assert options[1:] == ["grooming", "sextortion"]
    select.select_option("grooming")
    page.keyboard.press("Control+Enter")
    page.wait_for_url(re.compile(r"/cases\?done="))
    expect(page.locator(".notice.ok")).to_contain_text(f"Case {case_id} confirmed")
    expect(page.locator(f'tr[data-case="{case_id}"]')).to_have_count(0)

    page.goto(f"{server.base}/cases/{case_id}")
    expect(page.locator("#final")).to_contain_text("confirmed")
    expect(page.locator("#final")).to_contain_text("grooming")


def test_not_abusive_names_the_detectors_that_were_wrong(page: Page, server: ConsoleServer) -> None:
    case_id = server.cases["other"]
    login(page, server, "sue")
    page.goto(f"{server.base}/cases/{case_id}")
    page.click("#claim")
    expect(page.locator("#lease")).to_contain_text("claimed by sue")
    boxes = page.locator('#wrong-detectors input[type=checkbox][name="detectors"]')
    fired = boxes.evaluate_all("els => els.map(e => e.value)")
    assert "fanout" in fired and len(fired) >= 3
    for i in range(boxes.count()):  # every fired detector is ticked to start with
        expect(boxes.nth(i)).to_be_checked()

    # Unticking all is refused (review would read it as "every detector was wrong").
    page.keyboard.press("n")
    page.keyboard.type("a youth coach's club season, checked with the platform")
    for i in range(boxes.count()):
        boxes.nth(i).uncheck()
    page.click("#decide-not_abusive button[type=submit]")
    expect(page.locator("#case-error")).to_contain_text("tick the detectors")

    # Keep only two ticked: the finding names exactly those.
    boxes = page.locator('#wrong-detectors input[type=checkbox][name="detectors"]')
    wrong = ["fanout", "cross_country"]
    for i in range(boxes.count()):
        box = boxes.nth(i)
        if box.get_attribute("value") not in wrong:
            box.uncheck()
    page.fill("#decide-not_abusive input[name=reason]", "a club coach, checked")
    page.click("#decide-not_abusive button[type=submit]")
    page.wait_for_url(re.compile(r"/cases\?done="))
    expect(page.locator(".notice.ok")).to_contain_text(f"Case {case_id} closed as not abusive")
    decided = [d for a, t, d in audit(server, "case.decide") if t == f"case:{case_id}"]
    assert len(decided) == 1 and decided[0]["decision"] == "not_abusive", decided
    assert sorted(decided[0]["detectors"]) == sorted(wrong)  # type: ignore[call-overload]
