"""The console in a real browser: Playwright driving Debian's Chromium against a real
`bastion serve`. Log in, claim, reveal (blurred → clear → re-blurred), decide by keyboard, the
break prompt, video safety, and the role limits. No timed waits: Playwright waits for states."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.web.seed import PASSWORD
from tests.web.server import ConsoleServer, login, watched_page

SOFT_LIMIT = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, testdata: Path) -> Iterator[ConsoleServer]:
    srv = ConsoleServer(tmp_path_factory.mktemp("console"), testdata, soft_limit=SOFT_LIMIT)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    # Refusals the tests provoke on purpose are logged as failed loads; nothing else may be.
    with watched_page(browser, allowed="401|403|404|409") as pg:
        yield pg


def computed_filter(page: Page, selector: str) -> str:
    return str(page.eval_on_selector(selector, "el => getComputedStyle(el).filter"))


def test_reviewer_claims_reveals_rebluring_and_decides_by_keyboard(
    page: Page, server: ConsoleServer
) -> None:
    case_id = server.cases["bridge"]
    login(page, server, "rex")
    assert page.url == f"{server.base}/cases"
    row = page.locator(f'tr[data-case="{case_id}"]')
    expect(row).to_be_visible()
    row.get_by_role("link").click()
    expect(page.locator("h1")).to_have_text(f"Case #{case_id}")

    # Deciding needs a claim; after claiming, still a reveal (view_required).
    not_abusive = page.locator("#decide-not_abusive button[type=submit]")
    expect(not_abusive).to_be_disabled()
    page.click("#claim")
    expect(page.locator("#lease")).to_contain_text("claimed by rex")
    expect(not_abusive).to_be_disabled()

    item = page.locator(".item").first
    img = item.locator(".media-box .media")
    preview = img.get_attribute("src")
    assert preview and preview.endswith("/media")
    expect(item).to_have_attribute("data-state", "blurred")

    item.locator('[data-action="reveal"]').click()
    expect(item).to_have_attribute("data-state", "revealed")
    expect(img).to_have_attribute("src", re.compile(r"^blob:"))
    assert page.eval_on_selector(".item .media", "el => el.complete && el.naturalWidth > 0")
    assert "grayscale(1)" in computed_filter(page, ".item .media")
    expect(page.locator("#exposure-count")).to_have_text("1")
    expect(not_abusive).to_be_enabled()

    # Leaving the item re-blurs it: the clear image is gone, the preview is back.
    page.mouse.move(2, 2)
    expect(item).to_have_attribute("data-state", "blurred")
    expect(img).to_have_attribute("src", preview)

    # Keyboard: r reveals (the next item), g shows colour, Esc re-blurs.
    page.keyboard.press("r")
    expect(item).to_have_attribute("data-state", "revealed")
    expect(page.locator("#exposure-count")).to_have_text("2")
    assert "grayscale(1)" in computed_filter(page, ".item .media")
    page.keyboard.press("g")
    expect(item.locator(".tools .state")).to_have_text("revealed (colour)")
    assert computed_filter(page, ".item .media") == "none"
    page.keyboard.press("Escape")
    expect(item).to_have_attribute("data-state", "blurred")
    assert "grayscale(1)" in computed_filter(page, ".item .media")
    # Switching away from the window re-blurs too (the pointer is not over the item now).
    page.keyboard.press("r")
    expect(item).to_have_attribute("data-state", "revealed")
    page.evaluate("window.dispatchEvent(new Event('blur'))")
    expect(item).to_have_attribute("data-state", "blurred")

    # Decide with the shortcut: n focuses the reason, Enter submits.
    page.keyboard.press("n")
    expect(page.locator("#decide-not_abusive input[name=reason]")).to_be_focused()
    page.keyboard.type("benign test photo of a bridge")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/cases\?done="))
    expect(page.locator(".notice.ok")).to_contain_text(f"Case {case_id} closed as not abusive")
    expect(page.locator(f'tr[data-case="{case_id}"]')).to_have_count(0)


def test_video_is_muted_paused_and_never_autoplays(page: Page, server: ConsoleServer) -> None:
    login(page, server, "ada")
    page.goto(f"{server.base}/cases/{server.cases['video']}")
    page.click("#claim")  # only the claim holder reveals
    expect(page.locator("#lease")).to_contain_text("claimed by ada")
    item = page.locator('.item[data-kind="video"]')
    expect(item.locator("img.media")).to_be_visible()  # a blurred still until revealed
    item.locator('[data-action="reveal"]').click()
    video = item.locator("video.media")
    expect(video).to_have_attribute("src", re.compile(r"^blob:"))
    state = video.evaluate(
        "v => ({muted: v.muted, paused: v.paused, autoplay: v.autoplay, controls: v.controls})"
    )
    assert state == {"muted": True, "paused": True, "autoplay": False, "controls": True}
    page.keyboard.press("Escape")
    expect(item.locator("video")).to_have_count(0)
    expect(item).to_have_attribute("data-state", "blurred")


def test_break_prompt_before_reveals_past_the_soft_limit(page: Page, server: ConsoleServer) -> None:
    login(page, server, "sue")
    page.goto(f"{server.base}/cases/{server.cases['senior']}")
    page.click("#claim")
    expect(page.locator("#lease")).to_contain_text("claimed by sue")
    item = page.locator(".item").first
    for n in range(1, SOFT_LIMIT + 1):
        page.keyboard.press("r")
        expect(page.locator("#exposure-count")).to_have_text(str(n))
        expect(item).to_have_attribute("data-state", "revealed")
        page.keyboard.press("Escape")
    expect(page.locator("#exposure")).to_have_class(re.compile(r"\bover\b"))
    page.keyboard.press("r")
    dialog = page.locator("#break-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(f"revealed {SOFT_LIMIT} items today")
    expect(item).to_have_attribute("data-state", "blurred")
    page.click("#break-continue")
    expect(dialog).to_be_hidden()
    expect(item).to_have_attribute("data-state", "revealed")
    expect(page.locator("#exposure-count")).to_have_text(str(SOFT_LIMIT + 1))


def test_reviewer_is_refused_admin_pages_and_senior_cases(
    page: Page, server: ConsoleServer
) -> None:
    login(page, server, "rex")
    nav = page.locator("header nav")
    expect(nav).not_to_contain_text("Users")
    response = page.goto(f"{server.base}/admin/users")
    assert response is not None and response.status == 403
    expect(page.locator("h1")).to_contain_text("Not allowed")
    response = page.goto(f"{server.base}/cases/{server.cases['senior']}")
    assert response is not None and response.status == 403
    page.goto(f"{server.base}/cases")
    expect(page.locator(f'tr[data-case="{server.cases["senior"]}"]')).to_have_count(0)


def test_auditor_sees_the_audit_log_and_no_cases(page: Page, server: ConsoleServer) -> None:
    login(page, server, "aud")
    assert page.url == f"{server.base}/audit"
    expect(page.locator("#audit tbody tr").first).to_be_visible()
    expect(page.locator("header nav")).not_to_contain_text("Queue")
    page.click("#verify-chain")
    expect(page.locator("#chain-result")).to_contain_text("Chain intact")
    response = page.goto(f"{server.base}/cases")
    assert response is not None and response.status == 403
    response = page.goto(f"{server.base}/cases/{server.cases['bridge']}/items/1/media")
    assert response is not None and response.status == 403


def test_logged_out_pages_go_to_login_and_back(page: Page, server: ConsoleServer) -> None:
    page.goto(f"{server.base}/admin/policy")
    assert page.url.startswith(f"{server.base}/login?next=")
    page.fill("input[name=name]", "ada")
    page.fill("input[name=password]", "wrong password here")
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_contain_text("Login failed")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.base}/admin/policy")
    expect(page.locator("#rule-names")).to_contain_text("exact-known")
    page.click("header button.link")  # log out
    page.wait_for_url(f"{server.base}/login")
    page.goto(f"{server.base}/cases")
    assert "/login" in page.url
