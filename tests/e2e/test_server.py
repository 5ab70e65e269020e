"""The real server, as `bastion serve` runs it, on a free loopback port; SQLite and PostgreSQL.

Also two replicas on one PostgreSQL database: a change made through one is matched by the other
within seconds, without restarting or rebuilding either.
"""

from __future__ import annotations

import re
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bastion.db import Store
from bastion.demo import DEMO_EDIT
from tests.fixtures.servers import Server
from tests.fixtures.stores import postgres_schema_url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bastion.db'}"
        return
    with postgres_schema_url("t_e2e") as url:
        yield url


def _admin(db_url: str) -> dict[str, str]:
    with Store.open(db_url) as store:
        _, token = store.create_api_key(f"e2e-{uuid.uuid4().hex[:6]}", {"admin"})
    return {"Authorization": f"Bearer {token}"}


def test_serve_scan_over_http(db_url: str, tmp_path: Path, testdata: Path) -> None:
    headers = _admin(db_url)
    server = Server(db_url, tmp_path)
    try:
        base = server.base
        r = httpx.post(f"{base}/v1/banks", headers=headers, json={"name": "bridge"})
        assert r.status_code == 201, r.text
        orig = (testdata / "images/bridge-mods/aaa-orig.jpg").read_bytes()
        scanned = httpx.post(f"{base}/v1/scan", headers=headers, files={"file": ("a.jpg", orig)})
        pdq = next(s for s in scanned.json()["signals"] if s["type"] == "pdq")
        httpx.post(
            f"{base}/v1/banks/bridge/entries",
            headers=headers,
            json={"entries": [{"signal_type": "pdq", "value": pdq["value"]}]},
        )
        edit = (testdata / "images/bridge-mods/shrink-a-lot.jpg").read_bytes()
        r = httpx.post(f"{base}/v1/scan", headers=headers, files={"file": ("e.jpg", edit)})
        assert r.status_code == 200 and r.json()["matches"][0]["bank"] == "bridge"
        bad = httpx.post(f"{base}/v1/scan", headers=headers, content=b"{", timeout=10)
        assert bad.status_code == 415 and bad.headers["content-type"] == "application/problem+json"
        assert httpx.get(f"{base}/v1/banks").status_code == 401
    finally:
        server.stop()
    # Shut down on SIGTERM by itself (uvicorn re-raises the signal once it has finished).
    assert server.proc.returncode in (0, -signal.SIGTERM)


@pytest.mark.postgres
def test_two_replicas_see_each_others_changes(tmp_path: Path) -> None:
    servers: list[Server] = []
    with postgres_schema_url("t_rep") as url:
        try:
            headers = _admin(url)
            servers = [Server(url, tmp_path), Server(url, tmp_path)]
            a, b = (s.base for s in servers)
            httpx.post(f"{a}/v1/banks", headers=headers, json={"name": "shared"})
            value = uuid.uuid4().hex  # an md5-shaped value
            query = {"signals": [{"type": "md5", "value": value}]}

            def b_matches() -> bool:
                r = httpx.post(f"{b}/v1/lookup", headers=headers, json=query)
                return bool(r.json()["results"][0]["matches"])

            assert not b_matches()
            added_at = time.monotonic()
            r = httpx.post(
                f"{a}/v1/banks/shared/entries",
                headers=headers,
                json={"entries": [{"signal_type": "md5", "value": value}]},
            )
            assert r.json()["added"] == 1
            while not b_matches():
                assert time.monotonic() - added_at < 5, "replica B did not see the entry in 5 s"
                time.sleep(0.1)
            seen_after = time.monotonic() - added_at
            httpx.patch(
                f"{b}/v1/banks/shared/entries/{value}", headers=headers, json={"enabled": False}
            )
            disabled_at = time.monotonic()
            while True:
                r = httpx.post(f"{a}/v1/lookup", headers=headers, json=query)
                if not r.json()["results"][0]["matches"]:
                    break
                assert time.monotonic() - disabled_at < 5, "replica A still matches after 5 s"
                time.sleep(0.1)
            assert seen_after < 5
        finally:
            for s in servers:
                s.stop()


def test_make_run_demo_serves_a_labelled_bank_and_prints_a_key(tmp_path: Path) -> None:
    """What `make run` does: `bastion serve --demo` on the embedded default store, with the demo
    photo shipped in the package; the printed curl names the packaged edit, wherever it runs."""
    server = Server(None, tmp_path, "--demo")
    try:
        printed = server.output
        tokens = [ln for ln in printed.splitlines() if ln.startswith("bst_")]
        assert len(tokens) == 1, printed
        headers = {"Authorization": f"Bearer {tokens[0]}"}
        curl = re.search(r"curl .* -F file=@(\S+) ", printed)
        assert curl, printed
        assert (tmp_path / curl.group(1)).resolve() == DEMO_EDIT  # relative to the server's cwd
        photo = DEMO_EDIT.read_bytes()
        r = httpx.post(f"{server.base}/v1/scan", headers=headers, files={"file": ("p.jpg", photo)})
        assert r.status_code == 200, r.text
        assert r.json()["matches"][0]["bank"] == "demo-bridge"
        # The default policy sends a match it has no rule for to review: a case is open.
        verdict = r.json()["verdict"]
        assert verdict["decision"] == "review" and verdict["case_id"] >= 1, verdict
        banks = httpx.get(f"{server.base}/v1/banks", headers=headers).json()
        assert banks[0]["is_demo"] is True and banks[0]["labels"] == ["demo"]
        # The printed console password logs demo-admin in, and the queue shows that case.
        shown = re.search(r"user demo-admin, password for this run: (\S+)", printed)
        assert shown, printed
        password = shown.group(1)
        with httpx.Client(base_url=server.base) as browser:
            page = browser.get("/login")
            token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
            assert token, page.text
            r = browser.post(
                "/login",
                data={"name": "demo-admin", "password": password, "csrf_token": token.group(1)},
            )
            assert r.status_code == 303 and r.headers["location"] == "/cases", r.text
            queue = browser.get("/cases")
            assert queue.status_code == 200 and f"/cases/{verdict['case_id']}" in queue.text
    finally:
        server.stop()
    assert (tmp_path / "bastion-data" / "bastion.db").is_file()
