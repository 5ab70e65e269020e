"""A real `bastion serve` on a free loopback port over a seeded SQLite file, for the browser
tests and the screenshot script, and the Chromium they drive (Debian's, never a downloaded one).
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bastion.store import Store
from tests.web.seed import POLICY, SCANS, scan_cases, seed_store

BASTION = str(Path(sys.executable).with_name("bastion"))
CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ConsoleServer:
    """Seeds ``tmp/bastion.db`` (users, banks), starts the server, scans the test photos so
    cases open through the real pipeline; ``cases`` maps names to case ids."""

    def __init__(self, tmp: Path, testdata: Path, *, soft_limit: int = 3) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        db_url = f"sqlite:///{tmp / 'bastion.db'}"
        with Store.open(db_url) as store:
            token = seed_store(store, testdata)
        (tmp / "policy.yaml").write_text(POLICY)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "BASTION_DATABASE_URL": db_url,
            "BASTION_POLICY_FILE": str(tmp / "policy.yaml"),
            "BASTION_SECRET_KEY": base64.b64encode(os.urandom(32)).decode(),
            "BASTION_EXPOSURE_SOFT_LIMIT": str(soft_limit),
            "BASTION_INDEX_POLL_SECONDS": "0.5",
        }
        self.log = (tmp / f"server-{self.port}.log").open("w")
        self.proc = subprocess.Popen(
            [BASTION, "serve", "--port", str(self.port), "--log-level", "warning", "--no-worker"],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=tmp,
        )
        try:
            self._wait_ready()
            with httpx.Client(base_url=self.base, timeout=30) as client:
                self.cases = scan_cases(client.post, testdata, token, tuple(SCANS))
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {Path(self.log.name).read_text()}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not become ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def launch_chromium(playwright):  # type: ignore[no-untyped-def]
    """Debian's Chromium (``apt-get install chromium``). Missing, it is a failure, not a skip:
    the console's wellbeing features are only proven in a real browser."""
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} not found: install Debian's chromium (make sysdeps)")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
