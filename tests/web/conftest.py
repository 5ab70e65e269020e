"""Console fixtures: the real app over a real store (SQLite file, or a fresh PostgreSQL schema),
seeded with users and banks, and cases opened by scanning benign photos through /v1/scan."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from bastion.config import Settings
from bastion.db import Store
from bastion.server import create_app
from tests.web.seed import PASSWORD, POLICY, scan_cases, seed_store

SOFT_LIMIT = 3


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium under Playwright, one per browser-test module."""
    from playwright.sync_api import sync_playwright

    from tests.web.server import launch_chromium

    with sync_playwright() as p:
        b = launch_chromium(p)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def web_store(store: Store) -> Store:
    """The shared ``store`` fixture (SQLite and PostgreSQL, tests/fixtures/stores.py)."""
    return store


def csrf_of(html: str) -> str:
    found = re.search(r'<meta name="csrf-token" content="([^"]*)"', html)
    assert found, "page has no CSRF meta tag"
    return found.group(1)


def login_form_token(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "login page has no form token"
    return found.group(1)


class User(TestClient):
    """A browser-like client logged in as one console user; ``csrf`` is its session's token."""

    csrf: str = ""

    def post_form(self, path: str, data: dict[str, str] | None = None, **kw: object):  # type: ignore[no-untyped-def]
        return self.post(path, data={"csrf_token": self.csrf, **(data or {})}, **kw)  # type: ignore[arg-type]


@dataclass
class Console:
    app: FastAPI
    store: Store
    settings: Settings
    cases: dict[str, int]
    main: TestClient

    @property
    def rt(self):  # type: ignore[no-untyped-def]
        return self.app.state.runtime

    def anonymous(self) -> User:
        return User(self.app, follow_redirects=False)

    def login(self, name: str, password: str = PASSWORD) -> User:
        client = self.anonymous()
        page = client.get("/login")
        r = client.post(
            "/login",
            data={"name": name, "password": password, "csrf_token": login_form_token(page.text)},
        )
        assert r.status_code == 303, r.text
        client.csrf = csrf_of(client.get(r.headers["location"]).text)
        return client

    def audit_actions(self, prefix: str = "") -> list[str]:
        return [e.action for e in self.store.recent_audit(1000, action=prefix or None)]


def console_settings(tmp_path: Path, **overrides: object) -> Settings:
    policy = tmp_path / "policy.yaml"
    if not policy.exists():
        policy.write_text(POLICY)
    values: dict[str, object] = {
        "rate_limit_per_minute": 0,
        "index_poll_seconds": 0.2,
        "secret_key": base64.b64encode(b"k" * 32).decode(),
        "policy_file": str(policy),
        "exposure_soft_limit": SOFT_LIMIT,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def console(web_store: Store, tmp_path: Path, testdata: Path) -> Iterator[Console]:
    token = seed_store(web_store, testdata)
    settings = console_settings(tmp_path)
    app = create_app(settings, store=web_store)
    with TestClient(app, follow_redirects=False) as main:
        cases = scan_cases(main.post, testdata, token)
        yield Console(app=app, store=web_store, settings=settings, cases=cases, main=main)
