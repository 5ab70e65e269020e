"""Issue 12, finding 14, over HTTP: the login throttle and the transport defaults.

- Failed logins used to lock the *account* for 15 minutes, so anyone could lock any user out;
  now they slow the address they come from, and the real user logs in from theirs.
- Each login cost a 64 MiB argon2 check with no per-address limit; a waiting address is now
  answered 429 with Retry-After before any password is hashed (a spy counts the checks).
- Cookies were never Secure and no HSTS was sent unless configured; now both follow the bind
  address (and HTTPS as a trusted proxy reports it), with the explicit setting still winning.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bastion.accounts.model import PasswordHasher
from bastion.server import create_app
from tests.web.conftest import Console, console_settings, login_form_token
from tests.web.seed import PASSWORD

ATTACKER = ("198.51.100.7", 40000)
REVIEWER = ("203.0.113.20", 40001)


class SpyHasher(PasswordHasher):
    """The console's hasher, counting every argon2 verification it runs."""

    def __init__(self, inner: PasswordHasher) -> None:
        self.inner = inner
        self.checks = 0

    def verify(self, stored: str | None, password: str) -> bool:
        self.checks += 1
        return self.inner.verify(stored, password)

    def needs_rehash(self, stored: str) -> bool:
        return self.inner.needs_rehash(stored)

    def hash(self, password: str) -> str:
        return self.inner.hash(password)


@pytest.fixture
def spy(console: Console) -> Iterator[SpyHasher]:
    accounts = console.rt.accounts
    real = accounts.hasher
    accounts.hasher = SpyHasher(real)
    yield accounts.hasher
    accounts.hasher = real


def _attempt(client: TestClient, name: str, password: str):  # type: ignore[no-untyped-def]
    token = login_form_token(client.get("/login").text)
    return client.post("/login", data={"name": name, "password": password, "csrf_token": token})


def test_an_attacker_slows_only_their_own_address(console: Console, spy: SpyHasher) -> None:
    attacker = TestClient(console.app, follow_redirects=False, client=ATTACKER)
    reviewer = TestClient(console.app, follow_redirects=False, client=REVIEWER)
    for _ in range(5):
        assert _attempt(attacker, "rex", "not the password at all").status_code == 401
    assert spy.checks == 5
    # The real user, from their own address, logs in at once: the account is not locked.
    r = _attempt(reviewer, "rex", PASSWORD)
    assert r.status_code == 303 and "bastion_session" in reviewer.cookies
    assert spy.checks == 6
    # The attacker's next try, even with the right password, is refused without hashing.
    r = _attempt(attacker, "rex", PASSWORD)
    assert r.status_code == 429 and spy.checks == 6
    assert 1 <= int(r.headers["retry-after"]) <= 15
    message = re.search(r'<p class="error" role="alert">([^<]*)</p>', r.text)
    assert message and "Too many failed logins from your address" in message.group(1)
    assert "bastion_session" not in attacker.cookies
    # Another name from the same address: the same answer, still no hashing.
    assert _attempt(attacker, "someone-else", "whatever it is").status_code == 429
    assert spy.checks == 6
    throttled = [e for e in console.store.iter_audit() if e.action == "login.throttled"]
    assert [(e.target, e.remote_addr) for e in throttled] == [(ATTACKER[0], ATTACKER[0])]


def _cookies(response) -> dict[str, set[str]]:  # type: ignore[no-untyped-def]
    out = {}
    for header in response.headers.get_list("set-cookie"):
        name = header.split("=", 1)[0]
        out[name] = {a.strip().lower() for a in header.split(";")[1:]}
    return out


def _login(app, base_url="http://testserver", client=("testclient", 50000), **headers):  # type: ignore[no-untyped-def]
    with TestClient(
        app, base_url=base_url, follow_redirects=False, headers=headers, client=client
    ) as c:
        page = c.get("/login")
        token = login_form_token(page.text)
        r = c.post("/login", data={"name": "rex", "password": PASSWORD, "csrf_token": token})
        assert r.status_code == 303, r.text
        return page, r


def test_cookies_are_secure_and_hsts_is_sent_off_loopback(console: Console, tmp_path: Path) -> None:
    public = create_app(console_settings(tmp_path, host="0.0.0.0"), store=console.store)
    page, r = _login(public, base_url="https://testserver")
    for response in (page, r):
        assert response.headers["strict-transport-security"] == "max-age=31536000"
    assert "secure" in _cookies(page)["bastion_login_csrf"]
    assert "secure" in _cookies(r)["bastion_session"]
    # On loopback (as `make run` serves) plain HTTP works: no Secure, no HSTS.
    page, r = _login(console.app)
    assert "secure" not in _cookies(r)["bastion_session"]
    assert "strict-transport-security" not in page.headers
    assert "strict-transport-security" not in r.headers
    # The explicit setting wins over the bind address.
    opted_out = create_app(
        console_settings(tmp_path, host="0.0.0.0", cookie_secure=False), store=console.store
    )
    page, r = _login(opted_out)
    assert "secure" not in _cookies(r)["bastion_session"]
    assert "strict-transport-security" not in r.headers


def test_https_reported_by_a_trusted_proxy_makes_cookies_secure(
    console: Console, tmp_path: Path
) -> None:
    """Behind a TLS terminator on this host Bastion serves on loopback over plain HTTP; the
    proxy's X-Forwarded-Proto says the browser used HTTPS, believed from trusted proxies only."""
    proxy = ("127.0.0.1", 45000)
    proxied = create_app(
        console_settings(tmp_path, trusted_proxies=("127.0.0.1/32",)), store=console.store
    )
    https = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.30"}
    for app, secure in ((proxied, True), (console.app, False)):
        with TestClient(app, follow_redirects=False, client=proxy, headers=https) as c:
            page = c.get("/login")
        assert page.status_code == 200
        assert ("secure" in _cookies(page)["bastion_login_csrf"]) is secure
        assert ("strict-transport-security" in page.headers) is secure
