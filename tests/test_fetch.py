"""SSRF-safe fetching, against throwaway HTTP servers on 127.0.0.1.

Only loopback is ever contacted: every connection goes through ``bastion.fetch._connect``, which a
fixture wraps to fail the test on any non-loopback address, and refusal tests also forbid
``socket.connect`` outright, so a refusal that came too late would show up as a failure.
"""

from __future__ import annotations

import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest

from bastion import fetch as fetch_mod
from bastion.fetch import FetchError, FetchPolicy, blocked_reason, check_url, fetch

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
JPEG_HEAD = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 60


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    image: bytes = b""
    video: bytes = b""
    seen_hosts: ClassVar[list[str]] = []

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        type(self).seen_hosts.append(self.headers.get("Host", ""))
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        with suppress(BrokenPipeError, ConnectionResetError):  # client hung up on purpose
            self._route(parts.path, query)

    def _route(self, path: str, query: dict[str, list[str]]) -> None:
        if path == "/image.jpg":
            self._send(200, self.image, "image/jpeg; charset=binary")
        elif path == "/clip":
            self._send(200, self.video, "application/octet-stream")
        elif path == "/mislabelled":
            self._send(200, self.image, "text/plain")
        elif path == "/redirect":
            self._send(302, b"", "text/plain", {"Location": query["to"][0]})
        elif path.startswith("/loop/"):
            n = int(path.rsplit("/", 1)[1])
            self._send(302, b"", "text/plain", {"Location": f"/loop/{n + 1}"})
        elif path == "/html":
            self._send(
                200, b"<!doctype html><html><body>" + b"x" * 500 + b"</body></html>", "text/html"
            )
        elif path == "/missing":
            self._send(404, b"not here", "text/plain")
        elif path == "/big-length":
            # Announce a large body and send only its start: the client must refuse on the header.
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(10 * 2**20))
            self.end_headers()
            self.wfile.write(JPEG_HEAD)
        elif path == "/big-chunked":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(200):  # up to ~3 MB; the client stops long before
                chunk = (JPEG_HEAD if i == 0 else b"") + b"\x00" * 16384
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/big-close":
            # No length, no chunking: the body runs until the connection closes.
            self.close_connection = True
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(JPEG_HEAD)
            for _ in range(200):
                self.wfile.write(b"\x00" * 16384)
        elif path == "/slow":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(JPEG_HEAD) + 100))
            self.end_headers()
            self.wfile.write(JPEG_HEAD)
            self.wfile.flush()
            for _ in range(100):  # 100 bytes over ~10 s; each byte well within any read timeout
                time.sleep(0.1)
                self.wfile.write(b"\x00")
                self.wfile.flush()
        elif path == "/gzip":
            self._send(200, self.image, "image/jpeg", {"Content-Encoding": "gzip"})
        else:
            self._send(404, b"", "text/plain")


def _serve(server: ThreadingHTTPServer) -> Iterator[str]:
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{server.server_address[0]}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def image_bytes(testdata: Path) -> bytes:
    return (testdata / "images" / "reg-test-input" / "dih" / "bridge-1-original.jpg").read_bytes()


@pytest.fixture(scope="module")
def server(image_bytes: bytes) -> Iterator[str]:
    """``127.0.0.1:port`` of a plain HTTP server."""
    _Handler.image = image_bytes
    yield from _serve(ThreadingHTTPServer(("127.0.0.1", 0), _Handler))


@pytest.fixture
def port(server: str) -> int:
    return int(server.rsplit(":", 1)[1])


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every address fetch dials; fail on anything but loopback."""
    dialled: list[str] = []
    real = fetch_mod._connect

    def guarded(ip: str, port: int, timeout: float):
        if not ipaddress.ip_address(ip).is_loopback:
            raise AssertionError(f"fetch tried to connect to non-loopback {ip}")
        dialled.append(ip)
        return real(ip, port, timeout)

    monkeypatch.setattr(fetch_mod, "_connect", guarded)
    return dialled


@pytest.fixture
def no_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection fails the test."""

    def refuse(self: socket.socket, address: object) -> None:
        raise AssertionError(f"connection attempted to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def fake_dns(monkeypatch: pytest.MonkeyPatch, table: dict[str, list[str]]) -> list[str]:
    """Answer lookups for invented names from ``table``; never touch the real resolver for them."""
    asked: list[str] = []
    real = fetch_mod._getaddrinfo

    def lookup(host: str, port: int) -> list[str]:
        asked.append(host)
        if host in table:
            return table[host]
        if host == "localhost":
            return real(host, port)
        raise socket.gaierror(f"unknown test host {host}")

    monkeypatch.setattr(fetch_mod, "_getaddrinfo", lookup)
    return asked


POLICY = FetchPolicy(allow_networks=LOOPBACK, timeout=5.0)


def err(url: str, policy: FetchPolicy = POLICY) -> FetchError:
    with pytest.raises(FetchError) as info:
        fetch(url, policy)
    return info.value


# --------------------------------------------------------------------------- success


def test_fetches_image_with_sniffed_type(server: str, image_bytes: bytes) -> None:
    got = fetch(f"http://{server}/image.jpg", POLICY)
    assert got.data == image_bytes
    assert got.content_type == "image/jpeg"
    assert got.kind == "image"
    assert got.declared_type == "image/jpeg"
    assert got.url == f"http://{server}/image.jpg"
    assert got.redirects == ()


def test_fetches_video(server: str, testdata: Path) -> None:
    _Handler.video = (testdata / "videos" / "pattern-sd-grey-bar.mp4").read_bytes()
    got = fetch(f"http://{server}/clip", POLICY)
    assert (got.content_type, got.kind) == ("video/mp4", "video")
    assert got.data == _Handler.video


def test_type_comes_from_bytes_not_header(server: str) -> None:
    got = fetch(f"http://{server}/mislabelled", POLICY)
    assert (got.content_type, got.declared_type) == ("image/jpeg", "text/plain")


def test_localhost_name_resolves_and_host_header_is_the_name(port: int) -> None:
    _Handler.seen_hosts.clear()
    got = fetch(f"http://localhost:{port}/image.jpg", POLICY)
    assert got.content_type == "image/jpeg"
    assert _Handler.seen_hosts == [f"localhost:{port}"]


def test_allow_hosts_admits_a_name_without_network_allowlist(port: int) -> None:
    policy = FetchPolicy(allow_hosts=frozenset({"LOCALHOST."}), timeout=5.0)
    assert fetch(f"http://localhost:{port}/image.jpg", policy).content_type == "image/jpeg"
    with pytest.raises(FetchError) as info:
        fetch(f"http://127.0.0.1:{port}/image.jpg", policy)  # the literal is not the allowed name
    assert info.value.code == "blocked-address"


def test_connects_to_validated_address_without_second_lookup(
    monkeypatch: pytest.MonkeyPatch, port: int, loopback_only: list[str]
) -> None:
    # "media.test" exists only in our fake resolver, so success proves the connection used the
    # address we validated rather than a fresh lookup (the DNS-rebinding hole).
    asked = fake_dns(monkeypatch, {"media.test": ["127.0.0.1"]})
    _Handler.seen_hosts.clear()
    got = fetch(f"http://Media.Test:{port}/image.jpg", POLICY)
    assert got.content_type == "image/jpeg"
    assert asked == ["media.test"]
    assert loopback_only == ["127.0.0.1"]
    assert _Handler.seen_hosts == [f"media.test:{port}"]


def test_mixed_answer_uses_only_permitted_addresses(
    monkeypatch: pytest.MonkeyPatch, port: int, loopback_only: list[str]
) -> None:
    fake_dns(monkeypatch, {"mixed.test": ["10.0.0.1", "169.254.169.254", "127.0.0.1"]})
    target = check_url(f"http://mixed.test:{port}/", POLICY)
    assert target.addresses == (ipaddress.ip_address("127.0.0.1"),)
    assert fetch(f"http://mixed.test:{port}/image.jpg", POLICY).content_type == "image/jpeg"
    assert loopback_only == ["127.0.0.1"]


def test_follows_relative_redirect(server: str) -> None:
    got = fetch(f"http://{server}/redirect?to=/image.jpg", POLICY)
    assert got.url == f"http://{server}/image.jpg"
    assert got.redirects == (f"http://{server}/redirect?to=/image.jpg",)


def test_ipv6_literal_when_allowed(image_bytes: bytes) -> None:
    class Server6(ThreadingHTTPServer):
        address_family = socket.AF_INET6

    httpd = Server6(("::1", 0), _Handler)  # this machine kind has IPv6 loopback
    _Handler.image = image_bytes
    port = httpd.server_address[1]
    for _ in _serve(httpd):
        _Handler.seen_hosts.clear()
        policy = FetchPolicy(allow_networks=(ipaddress.ip_network("::1/128"),))
        got = fetch(f"http://[0:0::1]:{port}/image.jpg", policy)
        assert got.data == image_bytes
        assert _Handler.seen_hosts == [f"[::1]:{port}"]


def test_mapped_address_connects_as_ipv4(loopback_only: list[str], server: str) -> None:
    port = server.rsplit(":", 1)[1]
    assert fetch(f"http://[::ffff:127.0.0.1]:{port}/image.jpg", POLICY).kind == "image"
    assert loopback_only == ["127.0.0.1"]


def test_numeric_trick_decodes_to_real_address_when_allowed() -> None:
    for url in ("http://0x7f.1/", "http://2130706433/", "http://0177.0.0.01/", "http://127.1/"):
        target = check_url(url, POLICY)
        assert target.addresses == (ipaddress.ip_address("127.0.0.1"),), url
        assert target.host == "127.0.0.1"


# --------------------------------------------------------------------------- refusals


BLOCKED = [
    "http://127.0.0.1/",
    "http://localhost/",
    "http://LOCALHOST./",
    "http://[::1]/",
    "http://0x7f.1/",
    "http://2130706433/",
    "http://017700000001/",
    "http://127.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/",
    "http://172.16.5.4/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://0.0.0.0/",
    "http://0/",
    "http://224.0.0.1/",
    "http://240.0.0.1/",
    "http://255.255.255.255/",
    "http://[::]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::127.0.0.1]/",
    "http://[64:ff9b::10.0.0.1]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[2002:a00:1::]/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://[fd12:3456::1]/",
    "http://[ff02::1]/",
    "https://127.0.0.1:8443/",
]


@pytest.mark.parametrize("url", BLOCKED)
def test_private_and_special_addresses_refused_before_connecting(
    url: str, no_sockets: None
) -> None:
    e = err(url, FetchPolicy())
    assert (e.status, e.code) == (400, "blocked-address"), e


@pytest.mark.parametrize(
    "ip",
    ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"],
)
def test_public_addresses_pass_the_classifier(ip: str) -> None:
    assert blocked_reason(ipaddress.ip_address(ip)) is None


def test_resolved_private_name_refused(monkeypatch: pytest.MonkeyPatch, no_sockets: None) -> None:
    fake_dns(monkeypatch, {"rebind.test": ["10.1.2.3", "fd00::1"]})
    e = err("http://rebind.test/", FetchPolicy())
    assert e.code == "blocked-address"
    assert "10.1.2.3" in str(e) and "fd00::1" in str(e)


def test_allow_networks_does_not_leak_to_other_private_ranges(no_sockets: None) -> None:
    assert err("http://10.0.0.1/", POLICY).code == "blocked-address"
    assert err("http://[::1]/", POLICY).code == "blocked-address"


def test_redirect_to_blocked_address_refused(server: str, loopback_only: list[str]) -> None:
    for to in ("http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/", "http://[::1]/"):
        loopback_only.clear()
        e = err(f"http://{server}/redirect?to={to}")
        assert e.code == "blocked-address", to
        assert loopback_only == ["127.0.0.1"]  # only the first hop was dialled


def test_redirect_to_other_scheme_refused(server: str) -> None:
    assert err(f"http://{server}/redirect?to=file:///etc/passwd").code == "bad-url"


def test_too_many_redirects(server: str, loopback_only: list[str]) -> None:
    e = err(f"http://{server}/loop/0", FetchPolicy(allow_networks=LOOPBACK, max_redirects=3))
    assert (e.status, e.code) == (502, "too-many-redirects")
    assert len(loopback_only) == 4  # the first request and three redirects


def test_redirects_within_limit_succeed(server: str) -> None:
    policy = FetchPolicy(allow_networks=LOOPBACK, max_redirects=1)
    assert fetch(f"http://{server}/redirect?to=/image.jpg", policy).kind == "image"


@pytest.mark.parametrize("path", ["/big-length", "/big-chunked", "/big-close"])
def test_body_over_cap_refused(server: str, path: str) -> None:
    e = err(f"http://{server}{path}", FetchPolicy(allow_networks=LOOPBACK, max_bytes=100_000))
    assert (e.status, e.code) == (413, "too-large")


def test_body_at_cap_accepted(server: str, image_bytes: bytes) -> None:
    policy = FetchPolicy(allow_networks=LOOPBACK, max_bytes=len(image_bytes))
    assert len(fetch(f"http://{server}/image.jpg", policy).data) == len(image_bytes)
    policy = FetchPolicy(allow_networks=LOOPBACK, max_bytes=len(image_bytes) - 1)
    assert err(f"http://{server}/image.jpg", policy).code == "too-large"


def test_slow_server_hits_total_timeout(server: str) -> None:
    started = time.monotonic()
    e = err(f"http://{server}/slow", FetchPolicy(allow_networks=LOOPBACK, timeout=1.0))
    assert (e.status, e.code) == (504, "timeout")
    # The server would take ~10 s; a per-read timeout alone would never fire.
    assert time.monotonic() - started < 8


def test_html_is_unsupported_content(server: str) -> None:
    e = err(f"http://{server}/html")
    assert (e.status, e.code) == (422, "unsupported-content")


def test_unrequested_compression_refused(server: str) -> None:
    assert err(f"http://{server}/gzip").code == "upstream-error"


def test_upstream_404(server: str) -> None:
    e = err(f"http://{server}/missing")
    assert (e.status, e.code) == (502, "upstream-status")
    assert "404" in str(e)


def test_connection_refused_is_upstream_error() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    e = err(f"http://127.0.0.1:{free}/")
    assert (e.status, e.code) == (502, "upstream-error")


@pytest.mark.parametrize(
    "url",
    [
        "http://user:pass@example.com/",
        "http://user@127.0.0.1/",
        "http://example.com@127.0.0.1/",
        "http://@127.0.0.1/",
    ],
)
def test_userinfo_refused(url: str, no_sockets: None) -> None:
    e = err(url)
    assert (e.status, e.code) == (400, "bad-url")
    assert "credentials" in str(e)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://127.0.0.1/x.jpg",
        "gopher://127.0.0.1:25/",
        "javascript:alert(1)",
        "//127.0.0.1/x",
        "127.0.0.1/x.jpg",
    ],
)
def test_non_http_scheme_refused(url: str, no_sockets: None) -> None:
    e = err(url)
    assert (e.status, e.code) == (400, "bad-url")
    assert "scheme" in str(e)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "http:///x",
        "http://exa mple.com/",
        "http://example.com/\r\nX-Injected: 1",
        "http://example.com\\@127.0.0.1/",
        "http://%31%32%37.0.0.1/",
        "http://1.2.3.256/",
        "http://1.2.3.4.5/",
        "http://0x1g.0.0.1/",
        "http://foo.123/",
        "http://[::1%25eth0]/",
        "http://[::1/",
        "http://example.com:0/",
        "http://example.com:99999/",
        "http://example.com:8o/",
        "http://a:b:c/",
    ],
)
def test_malformed_urls_refused(url: str, no_sockets: None) -> None:
    assert err(url).code == "bad-url"


def test_port_allowlist(server: str, no_sockets: None) -> None:
    policy = FetchPolicy(allow_networks=LOOPBACK, ports=frozenset({443}))
    e = err(f"http://{server}/image.jpg", policy)
    assert (e.status, e.code) == (400, "blocked-port")


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        FetchPolicy(max_bytes=0)
    with pytest.raises(ValueError):
        FetchPolicy(schemes=frozenset({"ftp"}))
    assert FetchPolicy(allow_networks=("127.0.0.0/8",)).allow_networks == LOOPBACK  # type: ignore[arg-type]


# --------------------------------------------------------------------------- https


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory, image_bytes: bytes) -> Iterator[tuple]:
    """An https server whose self-signed certificate names ``localhost`` only."""
    assert shutil.which("openssl"), "openssl (Debian's package) makes the test certificate"
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost"),
        ],
        check=True,
        capture_output=True,
    )
    _Handler.image = image_bytes
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    client = ssl.create_default_context(cafile=str(cert))
    for address in _serve(httpd):
        yield int(address.rsplit(":", 1)[1]), client


def test_https_uses_name_for_sni_and_certificate(
    tls_server: tuple, monkeypatch: pytest.MonkeyPatch, loopback_only: list[str]
) -> None:
    port, client = tls_server
    policy = FetchPolicy(allow_networks=LOOPBACK, ssl_context=client)
    fake_dns(monkeypatch, {"evil.test": ["127.0.0.1"]})
    got = fetch(f"https://localhost:{port}/image.jpg", policy)
    assert got.content_type == "image/jpeg"
    assert loopback_only == ["127.0.0.1"]
    # Same address, wrong name: the certificate check must still be made against the name.
    e = err(f"https://evil.test:{port}/image.jpg", policy)
    assert e.code == "upstream-error"
    assert "CERTIFICATE_VERIFY_FAILED" in str(e) or "certificate" in str(e).lower()
