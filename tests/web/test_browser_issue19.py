"""Issue 19 in a real browser (Playwright, Debian's Chromium, a real `bastion serve`): each test
reproduces one item of the issue. No timed waits: Playwright waits for states."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from bastion.db import Store
from tests.web.server import ConsoleServer, login, watched_page

#: The running server's database, for records a test adds behind its back.
DB: dict[str, str] = {}


def set_policy(path: Path, text: str) -> None:
    """Write the running server's policy file. The server re-reads it at most once a second
    (PolicyHolder.check_interval), so past that its next request is decided under ``text``."""
    path.write_text(text)
    time.sleep(1.2)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, testdata: Path) -> Iterator[ConsoleServer]:
    tmp = tmp_path_factory.mktemp("issue19")
    srv = ConsoleServer(tmp, testdata, soft_limit=50)
    DB["url"] = f"sqlite:///{tmp / 'bastion.db'}"
    DB["policy"] = str(tmp / "policy.yaml")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    with watched_page(browser, allowed=None, viewport=(1280, 900)) as pg:
        yield pg


def test_item2_only_the_claim_holder_reveals_and_closed_cases_need_a_reason(
    page: Page, server: ConsoleServer
) -> None:
    case_id = server.cases["exact"]
    login(page, server, "rex")
    page.goto(f"{server.base}/cases/{case_id}")
    item = page.locator(".item").first
    reveal = item.locator('[data-action="reveal"]')
    expect(reveal).to_be_disabled()
    page.keyboard.press("r")
    expect(item.locator(".tools .state")).to_have_text("claim the case to reveal")
    expect(page.locator("#exposure-count")).to_have_text("0")
    page.click("#claim")
    expect(reveal).to_be_enabled()
    page.fill("#decide-not_abusive input[name=reason]", "benign test photo")
    page.click("#decide-not_abusive button[type=submit]")
    page.wait_for_url(re.compile(r"/cases\?done="))

    # Decided: the match details, no preview; revealing asks for a reason and is not counted.
    page.goto(f"{server.base}/cases/{case_id}")
    expect(item.locator(".closed-note")).to_contain_text("match details only")
    expect(item.locator("img.media")).to_have_count(0)
    expect(page.locator("#matches .match")).to_have_count(1)
    reveal.click()
    expect(item.locator(".tools .state")).to_have_text("state why you need to see it first")
    expect(item.locator(".reveal-reason")).to_be_focused()
    page.keyboard.type("bank owner asked us to check this entry")
    page.keyboard.press("Enter")
    expect(item).to_have_attribute("data-state", "revealed")
    expect(item.locator(".media")).to_have_attribute("src", re.compile(r"^blob:"))
    expect(page.locator("#exposure-count")).to_have_text("0")
    page.keyboard.press("Escape")
    expect(item.locator(".closed-note")).to_be_visible()


def test_item8_search_box_and_whole_target_audit_filter(page: Page, server: ConsoleServer) -> None:
    login(page, server, "rex")
    box = page.locator("#search-box input[name=q]")
    box.fill("content-bridge")
    box.press("Enter")
    page.wait_for_url(re.compile(r"/search\?q=content-bridge"))
    rows = page.locator("#search-results tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("content id")
    rows.first.get_by_role("link").click()
    expect(page.locator("h1")).to_have_text(f"Case #{server.cases['bridge']}")
    # The senior queue's case is not found by a reviewer.
    page.goto(f"{server.base}/search?q=uploader-2")
    expect(page.locator("#no-results")).to_be_visible()

    # A case whose id starts with the same digits must not come up under this case's target.
    wanted = f"case:{server.cases['bridge']}"
    with Store.open(DB["url"]) as store:
        store.record_audit(actor="system", action="test.other", target=f"{wanted}5")
    page.click("header button.link")  # log out
    login(page, server, "aud")
    page.fill("input[name=target]", wanted)
    page.click("form.filters button[type=submit]")
    page.wait_for_url(re.compile(r"target=case"))
    expect(page.locator("#audit tbody tr").first).to_be_visible()
    targets = page.locator("#audit tbody tr td:nth-child(5)").all_inner_texts()
    assert targets and all(t == wanted or t.startswith(wanted + "/") for t in targets), targets


def test_item12_outbox_alert_retry_selected_and_all_and_case_links(
    page: Page, server: ConsoleServer
) -> None:
    from bastion.actions.outbox import Outbox

    case_id = server.cases["video"]
    with Store.open(DB["url"]) as store:
        outbox = Outbox(store, max_attempts=1)
        for n in range(3):
            outbox.enqueue(
                action="remove_content",
                payload={"case_id": case_id},
                idempotency_key=f"browser-{n}",
                case_id=case_id,
            )
        for item in outbox.claim_due("test", 3):
            outbox.mark_failed(item, "test", error="HTTP 503 from the platform", status=503)
    login(page, server, "ada")
    alert = page.locator("#dead-alert")
    expect(alert).to_contain_text("3 webhook deliveries failed for good")
    alert.get_by_role("link").click()
    page.wait_for_url(re.compile(r"/admin/outbox\?state=dead"))
    rows = page.locator("#outbox tbody tr")
    expect(rows).to_have_count(3)
    rows.first.locator("input[type=checkbox]").check()
    page.click("#retry-selected")
    expect(page.locator("#retried")).to_contain_text("1 dead delivery sent back to pending")
    expect(alert).to_contain_text("2 webhook deliveries failed for good")
    page.click("#retry-all")
    expect(page.locator("#retried")).to_contain_text("2 dead deliveries")
    expect(alert).to_have_count(0)
    page.locator("#outbox a.case-link").first.click()
    expect(page.locator("h1")).to_have_text(f"Case #{case_id}")


def _expire_claim(case_id: int) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from bastion.banks.model import utcnow
    from bastion.review.store import cases_t

    with Store.open(DB["url"]) as store, store.engine.begin() as conn:
        conn.execute(
            update(cases_t)
            .where(cases_t.c.id == case_id)
            .values(lease_until=utcnow() - timedelta(seconds=1))
        )


def test_item4_claim_counts_down_renews_while_active_and_a_failed_decision_keeps_the_note(
    browser: Browser, page: Page, server: ConsoleServer
) -> None:
    case_id = server.cases["senior"]
    page.clock.install()
    login(page, server, "sue")
    page.goto(f"{server.base}/cases/{case_id}")
    page.click("#claim")
    left = page.locator("#lease-left")
    expect(left).to_have_text(re.compile(r"^1[45]:\d\d left$"))
    page.clock.run_for("00:05")
    expect(left).to_have_text(re.compile(r"^14:[45]\d left$"))
    # Eight idle minutes: no renewal (nobody is there); then activity renews the claim.
    page.clock.run_for("08:00")
    expect(left).to_have_text(re.compile(r"^[67]:\d\d left$"))
    expect(page.locator("#lease")).not_to_have_attribute("data-renewed", "1")
    page.mouse.move(300, 300)
    page.clock.run_for("00:02")
    expect(page.locator("#lease")).to_have_attribute("data-renewed", "1")
    expect(left).to_have_text(re.compile(r"^1[45]:\d\d left$"))

    # The claim lapses and an admin takes the case; sue's typed note survives the refusal.
    _expire_claim(case_id)
    other = browser.new_context().new_page()
    login(other, server, "ada")
    other.goto(f"{server.base}/cases/{case_id}")
    other.click("#claim")
    expect(other.locator("#lease")).to_contain_text("claimed by ada")
    other.context.close()
    note = "needs a second look at the source list"
    page.fill("#decide-escalate input[name=note]", note)
    page.click("#decide-escalate button[type=submit]")
    expect(page.locator("#case-error")).to_contain_text("now claimed by ada")
    expect(page.locator("#decide-escalate input[name=note]")).to_have_value(note)
    assert page.url == f"{server.base}/cases/{case_id}"


def test_item5_take_a_break_releases_the_claim(page: Page, server: ConsoleServer) -> None:
    case_id = server.cases["bridge"]
    login(page, server, "rex")
    page.goto(f"{server.base}/cases/{case_id}")
    page.click("#claim")
    expect(page.locator("#lease")).to_contain_text("claimed by rex")
    page.evaluate("document.getElementById('break-dialog').showModal()")
    page.click("#break-stop")
    page.wait_for_url(re.compile(rf"/cases\?released={case_id}"))
    expect(page.locator(".notice.ok")).to_contain_text("is released")
    row = page.locator(f'tr[data-case="{case_id}"]')
    expect(row.locator("td.claimed")).to_have_text("-")


def test_item7_first_reviewer_is_not_offered_the_second_review(
    page: Page, server: ConsoleServer
) -> None:
    from tests.web.seed import POLICY

    policy = Path(DB["policy"])
    set_policy(policy, POLICY.replace("four_eyes: false", "four_eyes: true") + "# four-eyes\n")
    try:
        case_id = server.cases["video"]
        login(page, server, "rex")
        page.goto(f"{server.base}/cases/{case_id}")
        page.click("#claim")
        expect(page.locator("#lease")).to_contain_text("claimed by rex")
        page.select_option("#decide-confirmed select[name=classification]", "B2")
        page.locator('.item[data-has-media="1"] [data-action="reveal"]').first.click()
        expect(page.locator("#decide-confirmed button[type=submit]")).to_be_enabled()
        page.click("#decide-confirmed button[type=submit]")
        page.wait_for_url(re.compile(r"event=first_confirm"))
        expect(page.locator(f'tr[data-case="{case_id}"]')).to_have_count(0)
        page.goto(f"{server.base}/cases/{case_id}")
        expect(page.locator("#own-pending")).to_contain_text("not offered to you")
        expect(page.locator("#claim")).to_have_count(0)
    finally:
        set_policy(policy, POLICY)


def test_item1_a_false_positive_blocked_at_scan_is_restored_once(
    page: Page, server: ConsoleServer, testdata: Path
) -> None:
    import json

    import httpx

    from bastion.actions.outbox import Outbox
    from tests.web.seed import POLICY, VIDEO

    block = (
        "rules:\n  - name: exact-block\n    when:\n      banks: [exact]\n      kinds: [video]\n"
        "    verdict: block\n    actions: [remove_content]\n    priority: high\n"
    )
    policy = Path(DB["policy"])
    set_policy(policy, POLICY.replace("rules:\n", block, 1))
    try:
        with Store.open(DB["url"]) as store:
            _, token = store.create_api_key("browser-scanner", {"match"})
        r = httpx.post(
            f"{server.base}/v1/scan",
            headers={"Authorization": f"Bearer {token}"},
            files={"file": ("door.mp4", (testdata / VIDEO).read_bytes())},
            data={"context": json.dumps({"content_id": "door-1", "uploader_id": "uploader-9"})},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        assert r.json()["verdict"]["decision"] == "block"
        case_id = r.json()["verdict"]["case_id"]
    finally:
        set_policy(policy, POLICY)
    with Store.open(DB["url"]) as store:
        outbox = Outbox(store)
        for item in outbox.claim_due("test", 10):
            outbox.mark_delivered(item, status=204, target="default")

    login(page, server, "sue")
    page.goto(f"{server.base}/cases/{case_id}")
    expect(page.locator("#removed-at-scan")).to_have_text("removed at scan")
    sent = page.locator("#sent-actions tbody tr")
    expect(sent).to_have_count(1)
    expect(sent.first).to_have_attribute("data-state", "delivered")
    page.click("#claim")
    expect(page.locator("#lease")).to_contain_text("claimed by sue")
    page.keyboard.press("r")
    expect(page.locator(".item").first).to_have_attribute("data-state", "revealed")
    page.keyboard.press("Escape")
    page.keyboard.press("n")
    page.keyboard.type("a doorknob, not abuse")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/cases\?done="))
    page.goto(f"{server.base}/cases/{case_id}")
    expect(sent).to_have_count(2)
    restore = page.locator('#sent-actions tr[data-action="restore_content"]')
    expect(restore).to_have_attribute("data-state", "pending")
    expect(restore).to_contain_text("undoes remove_content")
    expect(page.locator("#removed-at-scan")).to_be_visible()


def test_item10_decided_case_summary_readable_history_local_times(
    browser: Browser, server: ConsoleServer
) -> None:
    context = browser.new_context(timezone_id="Asia/Tokyo", viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        case_id = server.cases["bridge"]
        login(page, server, "rex")
        page.goto(f"{server.base}/cases/{case_id}")
        expect(page.locator("#due")).to_be_visible()
        page.click("#claim")
        expect(page.locator("#lease")).to_contain_text("claimed by rex")
        page.mouse.move(1200, 300)  # over the side column: leaving an item re-blurs it
        page.keyboard.press("r")
        expect(page.locator(".item").first).to_have_attribute("data-state", "revealed")
        page.keyboard.press("Escape")
        page.keyboard.press("e")
        page.keyboard.type("unsure about the source")
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(r"/cases\?done="))
        page.click("header button.link")
        login(page, server, "ada")
        page.goto(f"{server.base}/cases/{case_id}")
        page.click("#claim")
        expect(page.locator("#lease")).to_contain_text("claimed by ada")
        page.mouse.move(1200, 300)  # over the side column: leaving an item re-blurs it
        page.keyboard.press("r")
        expect(page.locator(".item").first).to_have_attribute("data-state", "revealed")
        page.keyboard.press("Escape")
        page.keyboard.press("n")
        page.keyboard.type("a bridge")
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(r"/cases\?done="))
        page.goto(f"{server.base}/cases/{case_id}")
        expect(page.locator("#due")).to_have_count(0)
        card = page.locator("#decision-summary")
        expect(card).to_contain_text("rex escalated it")
        expect(card).to_contain_text("Note: unsure about the source")
        expect(card).to_contain_text("ada closed it as not abusive")
        expect(card).to_contain_text("Reason: a bridge")
        first = page.locator("#history li time").first
        expect(first).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d Asia/Tokyo$"))
        expect(first).to_have_attribute("title", re.compile(r" UTC$"))
        expect(page.locator("#history")).to_contain_text("escalated it; from queue default")
    finally:
        context.close()


def _scan(server: ConsoleServer, testdata: Path, photo: str, uploader: str) -> int:
    import json

    import httpx

    with Store.open(DB["url"]) as store:
        _, token = store.create_api_key(f"scanner-{uploader}-{Path(photo).stem}", {"match"})
    r = httpx.post(
        f"{server.base}/v1/scan",
        headers={"Authorization": f"Bearer {token}"},
        files={"file": (Path(photo).name, (testdata / photo).read_bytes())},
        data={"context": json.dumps({"content_id": f"c-{uploader}", "uploader_id": uploader})},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    return int(r.json()["verdict"]["case_id"])


def test_item6_escalation_banner_queue_column_and_read_only_outcome(
    page: Page, server: ConsoleServer, testdata: Path
) -> None:
    from tests.web.seed import BRIDGE_SCANNED

    case_id = _scan(server, testdata, BRIDGE_SCANNED, "uploader-6")
    login(page, server, "rex")
    page.goto(f"{server.base}/cases/{case_id}")
    page.click("#claim")
    expect(page.locator("#lease")).to_contain_text("claimed by rex")
    page.keyboard.press("e")
    page.keyboard.type("is this the listed bridge?")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/cases\?done="))
    page.goto(f"{server.base}/cases/{case_id}")
    expect(page.locator("#read-only")).to_be_visible()
    expect(page.locator("#escalation-banner")).to_contain_text("is this the listed bridge?")
    expect(page.locator(".item img.media")).to_have_count(0)
    expect(page.locator("#claim")).to_have_count(0)
    page.click("header button.link")
    login(page, server, "sue")
    page.goto(f"{server.base}/cases?queue=senior")
    row = page.locator(f'tr[data-case="{case_id}"]')
    expect(row.locator("td.escalated")).to_contain_text("rex")
    expect(row.locator("td.escalated")).to_contain_text("is this the listed bridge?")


def test_item9_take_next_keyboard_queue_and_straight_to_the_next_case(
    browser: Browser, server: ConsoleServer, testdata: Path
) -> None:
    from tests.web.seed import BRIDGE_SCANNED

    first = _scan(server, testdata, BRIDGE_SCANNED, "uploader-7")
    second = _scan(server, testdata, BRIDGE_SCANNED, "uploader-8")
    third = _scan(server, testdata, BRIDGE_SCANNED, "uploader-10")
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    page = context.new_page()
    try:
        login(page, server, "rex")
        page.goto(f"{server.base}/cases")
        # j/k move through the queue, Enter opens (no claim yet).
        page.keyboard.press("j")
        expect(page.locator("#queue tbody tr.selected")).to_have_count(1)
        loads: list[str] = []
        page.on("framenavigated", lambda f: loads.append(f.url) if f == page.main_frame else None)
        keys = 0
        page.keyboard.press("t")  # take the next case: claimed and open
        keys += 1
        page.wait_for_url(re.compile(r"/cases/\d+$"))
        taken = [int(page.url.rsplit("/", 1)[1])]
        expect(page.locator("#lease")).to_contain_text("claimed by rex")
        page.check("#then-next")  # remembered from now on
        page.locator("#then-next").blur()  # shortcuts are ignored while a field has focus
        for _ in range(2):
            # The decision panel stays in view at 1280x720 wherever the page is scrolled.
            page.mouse.move(1200, 300)  # over the side column, away from the items
            page.mouse.wheel(0, 2000)
            expect(page.locator("#decide-not_abusive button[type=submit]")).to_be_in_viewport()
            page.keyboard.press("r")
            expect(page.locator(".item").first).to_have_attribute("data-state", "revealed")
            for key in ("Escape", "n"):
                page.keyboard.press(key)
            keys += 3
            page.keyboard.type("a bridge")
            page.keyboard.press("Enter")
            keys += 1
            page.wait_for_url(re.compile(r"/cases/\d+\?done=\d+"))
            expect(page.locator("#case-notice")).to_contain_text("This is the next case")
            expect(page.locator("#lease")).to_contain_text("claimed by rex")
            taken.append(int(page.url.split("?")[0].rsplit("/", 1)[1]))
        assert len(set(taken)) == 3  # three different cases, each taken by rex in turn
        del first, second, third  # opened so the queue has work whatever ran before
        # Per decision: 4 keys (r, Esc, n, Enter) plus the reason, and one page load.
        assert keys == 1 + 2 * 4
        assert len(loads) == 1 + 2, loads
    finally:
        context.close()


def test_item14_a_note_without_deciding(page: Page, server: ConsoleServer) -> None:
    case_id = server.cases["senior"]
    login(page, server, "sue")
    page.goto(f"{server.base}/cases/{case_id}")
    page.fill("#note-form input[name=text]", "asked the bank owner about this entry")
    page.click("#note-form button[type=submit]")
    page.wait_for_url(re.compile(rf"/cases/{case_id}#history$"))
    expect(page.locator("#history li").last).to_contain_text(
        "sue noted: asked the bank owner about this entry"
    )


def test_item13_team_view_for_leads(page: Page, server: ConsoleServer) -> None:
    login(page, server, "sue")
    page.get_by_role("link", name="Team").click()
    page.wait_for_url(re.compile(r"/team$"))
    rex = page.locator('#team tr[data-user="rex"]')
    expect(rex.locator(".exposure-count")).to_have_text(re.compile(r"^[1-9]\d* of 50$"))
    expect(rex.locator(".breaks")).to_have_text("1")  # the break taken in the item 5 test


def test_item13_adjustable_blur_and_reduced_size_reveal(
    page: Page, server: ConsoleServer, testdata: Path
) -> None:
    from tests.web.seed import BRIDGE_SCANNED

    case_id = _scan(server, testdata, BRIDGE_SCANNED, "uploader-11")
    login(page, server, "rex")
    page.goto(f"{server.base}/cases/{case_id}")
    page.click("#claim")
    expect(page.locator("#lease")).to_contain_text("claimed by rex")
    page.locator("#reveal-blur").fill("8")
    page.select_option("#reveal-size", "50")
    expect(page.locator("#reveal-blur-value")).to_have_text("8 px")
    page.keyboard.press("Escape")  # leaves the field, so shortcuts work again
    page.mouse.move(1200, 300)
    page.keyboard.press("r")
    item = page.locator(".item").first
    expect(item).to_have_attribute("data-state", "revealed")
    media = ".item .media-box .media"
    assert page.eval_on_selector(media, "el => getComputedStyle(el).filter") == (
        "grayscale(1) blur(8px)"
    )
    assert page.eval_on_selector(media, "el => el.style.maxWidth") == "50%"
    page.keyboard.press("g")
    assert page.eval_on_selector(media, "el => getComputedStyle(el).filter") == "blur(8px)"
    # Kept in this browser: the next page starts with the same settings.
    page.reload()
    expect(page.locator("#reveal-size")).to_have_value("50")
    expect(page.locator("#reveal-blur")).to_have_value("8")


def test_item11_several_items_show_as_a_thumbnail_grid(
    page: Page, server: ConsoleServer, testdata: Path
) -> None:
    from tests.web.seed import BRIDGE_SCANNED, EXACT_PHOTO

    case_id = _scan(server, testdata, BRIDGE_SCANNED, "uploader-12")
    assert _scan(server, testdata, EXACT_PHOTO, "uploader-12") == case_id  # joins the case
    login(page, server, "ada")
    page.goto(f"{server.base}/cases/{case_id}")
    expect(page.locator("#items.items-grid .item")).to_have_count(2)
    first, second = (page.locator(".item .media-box").nth(i).bounding_box() for i in (0, 1))
    assert first and second
    assert first["y"] == second["y"] and second["x"] > first["x"]  # side by side
    assert first["height"] <= 230  # thumbnails, not full-size previews
