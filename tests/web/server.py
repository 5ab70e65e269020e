"""A real `bastion serve` on a free loopback port over a seeded SQLite file, for the browser
tests and the screenshot script, and the Chromium they drive (Debian's, never a downloaded one).
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from bastion.db import Store
from tests.fixtures.servers import Server
from tests.web.seed import PASSWORD, POLICY, SCANS, scan_cases, seed_store

CHROMIUM = "/usr/bin/chromium"


class ConsoleServer(Server):
    """Seeds ``tmp/bastion.db`` (users, banks), starts the server, scans the test photos so
    cases open through the real pipeline; ``cases`` maps names to case ids."""

    def __init__(self, tmp: Path, testdata: Path, *, soft_limit: int = 3) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        db_url = f"sqlite:///{tmp / 'bastion.db'}"
        with Store.open(db_url) as store:
            token = seed_store(store, testdata)
        (tmp / "policy.yaml").write_text(POLICY)
        env = {
            "BASTION_POLICY_FILE": str(tmp / "policy.yaml"),
            "BASTION_SECRET_KEY": base64.b64encode(os.urandom(32)).decode(),
            "BASTION_EXPOSURE_SOFT_LIMIT": str(soft_limit),
        }
        super().__init__(db_url, tmp, "--no-worker", env=env)
        try:
            with httpx.Client(base_url=self.base, timeout=30) as client:
                self.cases = scan_cases(client.post, testdata, token, tuple(SCANS))
        except BaseException:
            self.stop()
            raise


def launch_chromium(playwright):  # type: ignore[no-untyped-def]
    """Debian's Chromium (``apt-get install chromium``). Missing, it is a failure, not a skip:
    the console's wellbeing features are only proven in a real browser."""
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} not found: install Debian's chromium (make sysdeps)")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])


@contextmanager
def watched_page(
    browser: Any,
    *,
    allowed: str | None,
    viewport: tuple[int, int] = (1400, 1000),
) -> Iterator[Any]:
    """A fresh page whose script errors fail the test: a CSP violation or a script error would
    silently disable the console's wellbeing features. ``allowed`` is a regex of HTTP statuses
    the test provokes on purpose (logged by Chromium as failed loads); with ``None`` console
    messages are not watched, only uncaught page errors."""
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    page = context.new_page()
    errors: list[str] = []
    if allowed is not None:
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield page
    finally:
        context.close()
    if allowed is not None:
        errors = [e for e in errors if not re.search(rf"status of ({allowed})\b", e)]
    assert not errors, errors


def login(page: Any, server: Server, name: str) -> None:
    """Sign in through the login form as a seeded user (every seeded user has PASSWORD)."""
    from playwright.sync_api import expect

    page.goto(f"{server.base}/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("header .user")).to_contain_text(name)
