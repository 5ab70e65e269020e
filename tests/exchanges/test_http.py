"""The HTTP helpers shared by the exchange connectors (bastion/exchanges/http.py)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from bastion.exchanges import TransientError
from bastion.exchanges.http import (
    LOOPBACK,
    Answer,
    https_base,
    read_capped,
    retry_after,
    short_raw,
)

# -- https_base ----------------------------------------------------------------------------------


def test_https_base_accepts_https_and_strips() -> None:
    assert https_base("  https://api.example.org/v1/ ") == "https://api.example.org/v1"


@pytest.mark.parametrize("host", sorted(LOOPBACK))
def test_https_base_allows_plain_http_on_loopback_only(host: str) -> None:
    netloc = f"[{host}]" if ":" in host else host
    assert https_base(f"http://{netloc}:8080") == f"http://{netloc}:8080"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("http://api.example.org", "must use https"),
        ("http://10.0.0.1", "must use https"),
        ("http://127.0.0.2", "must use https"),  # only the listed loopback names
        ("ftp://api.example.org", "http(s) URL"),
        ("https://", "http(s) URL"),
        ("api.example.org", "http(s) URL"),
        ("https://api.example.org/?k=v", "query, fragment or user info"),
        ("https://api.example.org/#f", "query, fragment or user info"),
        ("https://user:pw@api.example.org", "query, fragment or user info"),
    ],
)
def test_https_base_refuses(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        https_base(value)


def test_https_base_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"^url must use https"):
        https_base("http://example.org", field="url")


# -- retry_after ---------------------------------------------------------------------------------

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("30", 30.0),
        (" 1.5 ", 1.5),
        ("0", 0.0),
        ("-5", 0.0),  # negative: no wait
        ("nan", None),
        ("NaN", None),
        ("inf", 100.0),  # capped
        ("99999", 100.0),  # capped
        ("soon", None),
        ("Mon, 32 Foo 2026 99:99:99 GMT", None),
    ],
)
def test_retry_after_seconds(raw: str | None, expected: float | None) -> None:
    assert retry_after(raw, now=NOW, most=100.0) == expected


def test_retry_after_http_date() -> None:
    later = format_datetime(NOW + timedelta(seconds=42), usegmt=True)
    assert retry_after(later, now=NOW, most=100.0) == 42.0
    earlier = format_datetime(NOW - timedelta(hours=1), usegmt=True)
    assert retry_after(earlier, now=NOW, most=100.0) == 0.0
    much_later = format_datetime(NOW + timedelta(days=3), usegmt=True)
    assert retry_after(much_later, now=NOW, most=100.0) == 100.0
    # A date without a zone is read as UTC.
    assert retry_after("Fri, 02 Jan 2026 03:05:05 -0000", now=NOW, most=100.0) == 60.0


def test_retry_after_http_date_defaults_to_the_current_time() -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=600), usegmt=True)
    wait = retry_after(later, most=86_400.0)
    assert wait is not None and 590 <= wait <= 600


# -- short_raw -----------------------------------------------------------------------------------


def test_short_raw_json_and_limit() -> None:
    assert short_raw({"a": "é"}) == '{"a": "é"}'
    assert short_raw({"a": "x" * 100}, 10) == '{"a": "xxx'
    assert short_raw({"when": NOW}) == '{"when": "2026-01-02 03:04:05+00:00"}'


def test_short_raw_falls_back_to_repr() -> None:
    assert short_raw({1.5: float("nan"), (1, 2): 3}, 2000).startswith("{1.5: nan")


def test_short_raw_too_deep() -> None:
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    assert short_raw(deep) == "(not shown: too deeply nested)"


# -- Answer --------------------------------------------------------------------------------------


def test_answer_json_and_excerpt() -> None:
    answer = Answer(200, httpx.Headers(), b'{"a": [1, 2]}', False)
    assert answer.json() == {"a": [1, 2]}
    assert answer.excerpt(5) == '{"a":'
    with pytest.raises(ValueError, match="too deeply nested"):
        Answer(200, httpx.Headers(), b"[" * 200_000 + b"]" * 200_000, False).json()
    with pytest.raises(ValueError):
        Answer(200, httpx.Headers(), b"not json", False).json()


# -- read_capped against a real loopback server -------------------------------------------------

BODY = bytes(range(256)) * 40  # 10240 bytes


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # without Content-Length the body runs to the close

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/slow":
            time.sleep(1.0)
        status = 500 if path == "/error" else 200
        self.send_response(status)
        if path != "/no-length":
            self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the client may stop reading
            self.wfile.write(BODY)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as c:
        yield c


def _read(client: httpx.Client, url: str, **kw: object) -> Answer:
    args: dict[str, object] = {
        "limit": 100_000,
        "error_limit": 1000,
        "excerpt": 50,
        "partner": "Partner",
        "what": "Fetch",
    }
    args.update(kw)
    return read_capped(client, "GET", url, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize("path", ["/ok", "/no-length"])
def test_read_capped_whole_body_under_the_cap(server: str, client: httpx.Client, path: str) -> None:
    answer = _read(client, server + path, params={"q": "1"})
    assert (answer.status_code, answer.body, answer.too_big) == (200, BODY, False)


def test_read_capped_refuses_a_declared_length_past_the_cap(
    server: str, client: httpx.Client
) -> None:
    answer = _read(client, server + "/ok", limit=1000)
    assert answer.too_big
    assert answer.body == BODY[:50]  # only an excerpt is read


def test_read_capped_stops_an_undeclared_body_at_the_cap(server: str, client: httpx.Client) -> None:
    answer = _read(client, server + "/no-length", limit=1000)
    assert answer.too_big
    assert answer.body == BODY[:1000]


def test_read_capped_exact_cap_is_not_too_big(server: str, client: httpx.Client) -> None:
    answer = _read(client, server + "/no-length", limit=len(BODY))
    assert (answer.body, answer.too_big) == (BODY, False)


def test_read_capped_error_body_uses_the_error_limit(server: str, client: httpx.Client) -> None:
    answer = _read(client, server + "/error", excerpt=2000)
    assert answer.status_code == 500
    assert answer.too_big
    assert answer.body == BODY[:1000]


def test_read_capped_timeout_is_transient(server: str) -> None:
    with (
        httpx.Client(timeout=0.2) as slow,
        pytest.raises(TransientError, match=r"^Partner Fetch timed out$"),
    ):
        _read(slow, server + "/slow")


def test_read_capped_transport_error_is_transient_and_scrubbed(client: httpx.Client) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(TransientError, match=r"^PARTNER FETCH FAILED: CONNECTERROR$"):
        _read(client, f"http://127.0.0.1:{port}/", scrub=str.upper)
    with pytest.raises(TransientError, match=r"^Partner Fetch failed: ConnectError$"):
        _read(client, f"http://127.0.0.1:{port}/")
