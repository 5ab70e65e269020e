"""Issue 19 in a real browser (Playwright, Debian's Chromium, a real `bastion serve`): each test
reproduces one item of the issue. No timed waits: Playwright waits for states."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.web.seed import PASSWORD
from tests.web.server import ConsoleServer, launch_chromium


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, testdata: Path) -> Iterator[ConsoleServer]:
    srv = ConsoleServer(tmp_path_factory.mktemp("issue19"), testdata, soft_limit=50)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = launch_chromium(p)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield pg
    finally:
        context.close()
    assert not errors, errors


def login(page: Page, server: ConsoleServer, name: str) -> None:
    page.goto(f"{server.base}/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("header .user")).to_contain_text(name)


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
