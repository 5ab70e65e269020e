"""Screenshots of the console for docs/console.md, from a real `bastion serve` over seeded
test data (benign ThreatExchange photos only), in Debian's Chromium.

    .venv/bin/python -m tests.web.screenshots [OUTPUT_DIR]     # default: docs/screenshots
"""

from __future__ import annotations

import io
import sys
import tempfile
from pathlib import Path

from PIL import Image
from playwright.sync_api import Page, sync_playwright

from bastion.actions.outbox import Outbox
from bastion.db import Store
from tests.conftest import REPO, TESTDATA
from tests.web.accounts import open_account_case
from tests.web.seed import PASSWORD
from tests.web.server import ConsoleServer, launch_chromium

#: Each PNG is kept under this size (palette-quantised when a full-colour one is larger).
MAX_BYTES = 300_000


def save(page: Page, out: Path, name: str) -> None:
    png = page.screenshot(full_page=False)
    if len(png) > MAX_BYTES:
        image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=128)
        buf = io.BytesIO()
        image.save(buf, "PNG", optimize=True)
        png = buf.getvalue()
    (out / f"{name}.png").write_bytes(png)
    print(f"{name}.png {len(png) // 1024} KB")


def login(page: Page, base: str, name: str) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("header .user")


def dead_letter(db_url: str) -> None:
    """One delivery that failed for good, so the outbox page shows a retry."""
    with Store.open(db_url) as store:
        outbox = Outbox(store, max_attempts=1)
        outbox.enqueue(
            action="restrict_account",
            payload={"case_id": 0, "uploader_id": "uploader-9"},
            idempotency_key="restrict_account:example",
        )
        (item,) = outbox.claim_due("screenshots")
        outbox.mark_failed(item, "screenshots", error="HTTP 503 from the platform", status=503)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        server = ConsoleServer(Path(tmp), TESTDATA, soft_limit=60)
        base = server.base
        try:
            dead_letter(f"sqlite:///{Path(tmp) / 'bastion.db'}")
            with Store.open(f"sqlite:///{Path(tmp) / 'bastion.db'}") as store:
                account_case = open_account_case(store)
            with sync_playwright() as p:
                browser = launch_chromium(p)
                page = browser.new_context(viewport={"width": 1280, "height": 820}).new_page()
                page.goto(f"{base}/login")
                save(page, out, "login")
                login(page, base, "ada")
                # A decided case puts its confirmation actions in the outbox.
                page.goto(f"{base}/cases/{server.cases['exact']}")
                page.click("#claim")
                page.select_option("#decide-confirmed select[name=classification]", "B2")
                page.click("#decide-confirmed button[type=submit]")
                page.wait_for_url("**/cases?done=*")
                page.goto(f"{base}/cases")
                save(page, out, "queue")
                page.goto(f"{base}/cases/{server.cases['exact']}")
                save(page, out, "case-decided")
                page.goto(f"{base}/search?q=uploader-1")
                save(page, out, "search")
                page.goto(f"{base}/cases/{server.cases['bridge']}")
                page.click("#claim")
                page.wait_for_selector("#release")
                save(page, out, "case-blurred")
                item = page.locator(".item").first
                item.locator('[data-action="reveal"]').click()
                page.wait_for_selector('.item[data-state="revealed"]')
                page.wait_for_function("document.querySelector('.item .media').complete")
                save(page, out, "case-revealed")
                page.mouse.move(2, 2)
                # An account case: signals and metadata, no content.
                page.goto(f"{base}/cases/{account_case}")
                page.click("#claim")
                page.wait_for_selector("#release")
                save(page, out, "account-case")
                for name, path in [
                    ("admin-users", "/admin/users"),
                    ("admin-policy", "/admin/policy"),
                    ("admin-outbox", "/admin/outbox"),
                    ("admin-banks", "/admin/banks"),
                ]:
                    page.goto(f"{base}{path}")
                    save(page, out, name)
                page.click("header button.link")  # log out
                login(page, base, "aud")
                page.goto(f"{base}/audit?verify=1")
                save(page, out, "audit")
                browser.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "screenshots")
