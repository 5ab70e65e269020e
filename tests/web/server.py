"""A real `bastion serve` on a free loopback port over a seeded SQLite file, for the browser
tests and the screenshot script, and the Chromium they drive (Debian's, never a downloaded one).
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import httpx

from bastion.db import Store
from tests.fixtures.servers import Server
from tests.web.seed import POLICY, SCANS, scan_cases, seed_store

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
