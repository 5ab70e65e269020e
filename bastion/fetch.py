"""Fetch a URL on a caller's behalf without becoming a proxy into our own network (SSRF).

A scan request may name a URL for Bastion to download. Left naive, that lets any API caller make
the server talk to its loopback, its cloud metadata service or the intranet behind it. So every
hop is checked before a byte is sent:

* the URL is parsed strictly (http/https only, no userinfo, no whitespace, no percent-encoded or
  numeric-trick hosts such as ``0x7f.1`` or ``2130706433``, which are decoded as browsers and libc
  do and then judged as the address they really are);
* the host is resolved once, every address is classified, and only permitted addresses are used;
* the connection goes to the address we validated (no second DNS lookup, so DNS rebinding cannot
  swap it), while the Host header and TLS SNI/certificate check still use the name;
* redirects are followed by hand, each hop re-checked, at most ``max_redirects``;
* the body is capped while streaming, the whole fetch has one deadline, and the bytes must sniff
  as an image or video, because that is all the scan endpoint can hash.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import httpcore
import idna

from bastion.signals.content import SNIFF_BYTES, describe_bytes, sniff

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

__all__ = [
    "FetchError",
    "FetchPolicy",
    "Fetched",
    "Streamed",
    "Target",
    "blocked_reason",
    "check_url",
    "fetch",
    "open_stream",
]

_USER_AGENT = "Bastion-fetch/0.1"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_MIME = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "gif": "image/gif",
    "webp": "image/webp",
    "bmp": "image/bmp",
    "tiff": "image/tiff",
    "heif": "image/heif",
    "avif": "image/avif",
    "avi": "video/x-msvideo",
    "webm": "video/webm",
    "matroska": "video/x-matroska",
    "mp4": "video/mp4",
    "mov": "video/quicktime",
}


@dataclass(frozen=True)
class FetchPolicy:
    """What a fetch may touch and how much it may take.

    ``allow_hosts`` and ``allow_networks`` exist for intranet media stores and for tests; anything
    not allow-listed must resolve only to globally routable unicast addresses.
    """

    max_bytes: int = 50 * 2**20
    #: Wall-clock cap on the whole fetch: DNS, connects, TLS, every redirect hop and the body.
    timeout: float = 10.0
    connect_timeout: float = 5.0
    max_redirects: int = 5
    #: Host names (lower-case, no trailing dot) allowed even if they resolve to private addresses.
    allow_hosts: frozenset[str] = frozenset()
    allow_networks: tuple[IPNetwork, ...] = ()
    schemes: frozenset[str] = frozenset({"http", "https"})
    #: Permitted destination ports; None allows any.
    ports: frozenset[int] | None = None
    #: TLS settings for https; None uses certifi's CA bundle (or the system's if it is missing).
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        if self.timeout <= 0 or self.connect_timeout <= 0:
            raise ValueError("timeout and connect_timeout must be positive")
        if self.max_redirects < 0:
            raise ValueError("max_redirects must be >= 0")
        unknown = set(self.schemes) - set(_DEFAULT_PORTS)
        if unknown:
            raise ValueError(f"unsupported schemes {sorted(unknown)}; only http and https")
        # Normalise so callers may pass strings or lists without surprises.
        nets = tuple(ipaddress.ip_network(n) for n in self.allow_networks)
        object.__setattr__(self, "allow_networks", nets)
        hosts = frozenset(h.lower().rstrip(".") for h in self.allow_hosts)
        object.__setattr__(self, "allow_hosts", hosts)


class FetchError(Exception):
    """A fetch refused or failed; ``status`` is the HTTP status the API should answer with.

    Codes: ``bad-url``, ``blocked-address``, ``blocked-port``, ``dns-error`` (400);
    ``too-large`` (413); ``unsupported-content`` (422); ``upstream-status``, ``upstream-error``,
    ``too-many-redirects`` (502); ``timeout`` (504).
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"FetchError({self.status}, {self.code!r}, {self.message!r})"


@dataclass
class Fetched:
    """A downloaded media file. ``content_type`` is sniffed from the bytes, never trusted."""

    url: str
    data: bytes
    content_type: str
    declared_type: str | None
    #: Every URL visited before ``url``, for the audit trail.
    redirects: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        """``"image"`` or ``"video"``."""
        return self.content_type.split("/", 1)[0]


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (``addresses``) and what to call it (``host``)."""

    url: str
    scheme: str
    host: str  # IDNA/ASCII name or unbracketed IP literal
    port: int
    target: str  # request-target: path and query, percent-encoded
    addresses: tuple[IPAddress, ...]

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


# --------------------------------------------------------------------------- address policy

_BLOCKED_V4 = [
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches localhost on Linux
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, cloud metadata
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",  # reserved, includes 255.255.255.255
    )
]
_BLOCKED_V6 = [
    ipaddress.IPv6Network(n)
    for n in (
        "::/96",  # unspecified, loopback, deprecated IPv4-compatible
        "::ffff:0:0:0/96",  # IPv4-translated
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard
        "2001::/23",  # IETF protocol assignments, incl. Teredo (can tunnel anywhere)
        "2001:db8::/32",
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # deprecated site-local
        "ff00::/8",  # multicast
    )
]
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def blocked_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` must not be contacted, or None if it is a globally routable unicast address.

    IPv6 forms that embed an IPv4 address (mapped, NAT64, 6to4) are judged by the embedded one,
    so ``::ffff:127.0.0.1`` or ``64:ff9b::a00:1`` are no way round the IPv4 rules.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        embedded: ipaddress.IPv4Address | None = None
        if ip.ipv4_mapped is not None:
            embedded = ip.ipv4_mapped
        elif ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        elif ip.sixtofour is not None:
            embedded = ip.sixtofour
        if embedded is not None:
            inner = blocked_reason(embedded)
            return f"embeds {embedded}, which is {inner}" if inner else None
        if ip.scope_id:
            return "a scoped (zone) address"
    for flag, reason in (
        ("is_loopback", "loopback"),
        ("is_unspecified", "unspecified"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
        ("is_private", "private"),
        ("is_reserved", "reserved"),
    ):
        if getattr(ip, flag):
            return reason
    nets: Iterable[IPNetwork] = _BLOCKED_V4 if ip.version == 4 else _BLOCKED_V6
    for net in nets:
        if ip in net:
            return f"in special-purpose range {net}"
    if not ip.is_global:
        return "not globally routable"
    return None


def _allowed_by_network(ip: IPAddress, policy: FetchPolicy) -> bool:
    forms: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        forms.append(ip.ipv4_mapped)
    return any(f in net for f in forms for net in policy.allow_networks if f.version == net.version)


# --------------------------------------------------------------------------- URL parsing


def _parse_ipv4_number(part: str) -> int | None:
    """One dotted part as inet_aton / WHATWG read it: 0x.. hex, 0.. octal, else decimal."""
    if part[:2].lower() == "0x":
        digits, base = part[2:], 16
        if digits == "":
            return 0
    elif len(part) > 1 and part[0] == "0":
        digits, base = part[1:], 8
    else:
        digits, base = part, 10
    try:
        return int(digits, base) if digits.isascii() and digits.isalnum() else None
    except ValueError:
        return None


def _ends_in_number(host: str) -> bool:
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()
    last = parts[-1]
    if last.isascii() and last.isdigit():
        return True
    return last[:2].lower() == "0x" and all(c in "0123456789abcdefABCDEF" for c in last[2:])


def _parse_ipv4_host(host: str) -> ipaddress.IPv4Address:
    """Decode a host that ends in a number the way browsers and libc do, or refuse it."""
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()
    bad = FetchError(400, "bad-url", f"host {host!r} looks numeric but is not a valid IPv4 address")
    if not 1 <= len(parts) <= 4 or any(p == "" for p in parts):
        raise bad
    numbers = [_parse_ipv4_number(p) for p in parts]
    if any(n is None for n in numbers):
        raise bad
    nums = [n for n in numbers if n is not None]
    if any(n > 255 for n in nums[:-1]) or nums[-1] >= 256 ** (5 - len(nums)):
        raise bad
    value = nums[-1]
    for i, n in enumerate(nums[:-1]):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def _split_authority(netloc: str, url: str) -> tuple[str, str]:
    if "@" in netloc:
        raise FetchError(400, "bad-url", "URLs with credentials (user:pass@) are not accepted")
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise FetchError(400, "bad-url", f"unterminated IPv6 literal in {url!r}")
        host, rest = netloc[1:end], netloc[end + 1 :]
        if rest and not rest.startswith(":"):
            raise FetchError(400, "bad-url", f"junk after IPv6 literal in {url!r}")
        return host, rest[1:] if rest else ""
    if netloc.count(":") > 1:
        raise FetchError(400, "bad-url", f"malformed host:port in {url!r}")
    host, _, port = netloc.partition(":")
    return host, port


def _normalise_host(raw: str, url: str) -> tuple[str, IPAddress | None]:
    """Return ``(ascii host, literal IP or None)``."""
    if raw == "":
        raise FetchError(400, "bad-url", f"no host in {url!r}")
    if ":" in raw:  # only reachable from a bracketed literal
        if "%" in raw:
            raise FetchError(400, "bad-url", "IPv6 zone identifiers are not accepted")
        try:
            ip6 = ipaddress.IPv6Address(raw)
        except ValueError:
            raise FetchError(400, "bad-url", f"invalid IPv6 literal [{raw}]") from None
        return str(ip6), ip6
    if "%" in raw:
        # Hosts are percent-decoded by browsers (%31%32%37.0.0.1); refuse rather than guess.
        raise FetchError(400, "bad-url", f"percent-encoded host {raw!r} is not accepted")
    if raw.isascii():
        host = raw.lower()
    else:
        try:
            host = idna.encode(raw, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise FetchError(400, "bad-url", f"invalid international host {raw!r}: {exc}") from None
    if _ends_in_number(host):
        ip4 = _parse_ipv4_host(host)
        return str(ip4), ip4
    host = host.rstrip(".")
    labels = host.split(".")
    if any(
        not label or len(label) > 63 or not all(c.isalnum() or c in "-_" for c in label)
        for label in labels
    ):
        raise FetchError(400, "bad-url", f"invalid host name {raw!r}")
    return host, None


def _parse(url: str, policy: FetchPolicy) -> tuple[str, str, int, str, IPAddress | None]:
    if not isinstance(url, str) or not url:
        raise FetchError(400, "bad-url", "URL must be a non-empty string")
    if len(url) > 8192:
        raise FetchError(400, "bad-url", "URL longer than 8192 characters")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F or c == "\\" for c in url):
        raise FetchError(400, "bad-url", "URL contains whitespace, control characters or '\\'")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise FetchError(400, "bad-url", f"unparseable URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in policy.schemes:
        allowed = ", ".join(sorted(policy.schemes))
        raise FetchError(400, "bad-url", f"scheme {scheme or '(none)'!r} not allowed ({allowed})")
    host_raw, port_raw = _split_authority(parts.netloc, url)
    host, literal = _normalise_host(host_raw, url)
    if port_raw:
        if not (port_raw.isascii() and port_raw.isdigit()) or not 0 < int(port_raw) < 65536:
            raise FetchError(400, "bad-url", f"invalid port {port_raw!r}")
        port = int(port_raw)
    else:
        port = _DEFAULT_PORTS[scheme]
    if policy.ports is not None and port not in policy.ports:
        raise FetchError(400, "blocked-port", f"port {port} is not allowed")
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    query = quote(parts.query, safe="/?%:@!$&'()*+,;=-._~")
    return scheme, host, port, path + (f"?{query}" if query else ""), literal


# --------------------------------------------------------------------------- resolution


def _getaddrinfo(host: str, port: int) -> list[str]:
    """Seam for tests: the addresses ``host`` resolves to, as strings."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _resolve(host: str, port: int, deadline: float) -> list[IPAddress]:
    # getaddrinfo has no timeout of its own, so it runs in a daemon thread we stop waiting for.
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["ok"] = _getaddrinfo(host, port)
        except Exception as exc:  # reported to the caller below
            box["err"] = exc

    thread = threading.Thread(target=work, name=f"resolve {host}", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    if thread.is_alive():
        raise FetchError(504, "timeout", f"resolving {host!r} took too long")
    if "err" in box:
        raise FetchError(400, "dns-error", f"cannot resolve {host!r}: {box['err']}")
    out: list[IPAddress] = []
    for text in box["ok"]:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
        if ip not in out:
            out.append(ip)
    if not out:
        raise FetchError(400, "dns-error", f"{host!r} has no addresses")
    return out


def check_url(
    url: str, policy: FetchPolicy | None = None, *, deadline: float | None = None
) -> Target:
    """Parse ``url``, resolve its host and keep only the addresses the policy permits.

    Raises FetchError before any connection is made if the URL is malformed or every address is
    refused. Exposed so an API can reject a URL up front; :func:`fetch` calls it for every hop.
    """
    policy = policy or FetchPolicy()
    if deadline is None:
        deadline = time.monotonic() + policy.timeout
    scheme, host, port, target, literal = _parse(url, policy)
    addresses = [literal] if literal is not None else _resolve(host, port, deadline)
    if host in policy.allow_hosts:
        permitted = addresses
    else:
        permitted = []
        refusals = []
        for ip in addresses:
            reason = None if _allowed_by_network(ip, policy) else blocked_reason(ip)
            if reason is None:
                permitted.append(ip)
            else:
                refusals.append(f"{ip} ({reason})")
        if not permitted:
            raise FetchError(
                400, "blocked-address", f"{host!r} is not a public address: {', '.join(refusals)}"
            )
    # Connect to IPv4 form of mapped addresses: same host, and no dual-stack socket needed.
    final: list[IPAddress] = []
    for ip in permitted:
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        final.append(mapped or ip)
    return Target(url, scheme, host, port, target, tuple(final))


# --------------------------------------------------------------------------- transport


class _DeadlineStream(httpcore.NetworkStream):
    """Clamps every socket wait to the fetch's overall deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: float) -> None:
        self._inner = inner
        self._deadline = deadline

    def _clamp(self, timeout: float | None, exc: type[Exception]) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise exc("fetch deadline passed")
        return left if timeout is None else min(timeout, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        t = self._clamp(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(
            self._inner.start_tls(ssl_context, server_hostname, t), self._deadline
        )

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


def _connect(ip: str, port: int, timeout: float) -> httpcore.NetworkStream:
    """Seam for tests: open a TCP connection to an already validated address."""
    return httpcore.SyncBackend().connect_tcp(ip, port, timeout=timeout, socket_options=[])


class _PinnedBackend(httpcore.NetworkBackend):
    """Ignores the host name httpcore asks for and dials only the validated addresses."""

    def __init__(self, target: Target, deadline: float, connect_timeout: float) -> None:
        self._target = target
        self._deadline = deadline
        self._connect_timeout = connect_timeout

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        if port != self._target.port:  # never happens: one pool per validated hop
            raise httpcore.ConnectError(f"unexpected port {port}")
        last: Exception | None = None
        for ip in self._target.addresses:
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise httpcore.ConnectTimeout("fetch deadline passed")
            try:
                stream = _connect(str(ip), port, min(left, self._connect_timeout))
            except httpcore.ConnectError as exc:
                last = exc
                continue
            return _DeadlineStream(stream, self._deadline)
        raise last or httpcore.ConnectError("no address to connect to")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def _default_ssl_context() -> ssl.SSLContext:
    try:
        import certifi
    except ImportError:  # pragma: no cover - certifi ships with httpx
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


_ssl_lock = threading.Lock()
_ssl_default: ssl.SSLContext | None = None


def _ssl(policy: FetchPolicy) -> ssl.SSLContext:
    global _ssl_default
    if policy.ssl_context is not None:
        return policy.ssl_context
    with _ssl_lock:
        if _ssl_default is None:
            _ssl_default = _default_ssl_context()
        return _ssl_default


# --------------------------------------------------------------------------- fetching


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None


def _media_type(head: bytes, url: str) -> str:
    kind, fmt = sniff(head)
    if kind in ("image", "video") and fmt in _MIME:
        return _MIME[fmt]
    raise FetchError(
        422,
        "unsupported-content",
        f"{url} is not an image or video Bastion can hash (starts with {describe_bytes(head)})",
    )


def _hop(target: Target, policy: FetchPolicy, deadline: float) -> tuple[str | None, Fetched | None]:
    """One request. Returns ``(redirect location, None)`` or ``(None, result)``."""
    backend = _PinnedBackend(target, deadline, policy.connect_timeout)
    left = max(0.001, deadline - time.monotonic())
    timeouts = {"connect": min(left, policy.connect_timeout), "read": left, "write": left}
    headers = [
        (b"Host", target.host_header.encode("ascii")),
        (b"User-Agent", _USER_AGENT.encode()),
        (b"Accept", b"image/*, video/*;q=0.9, */*;q=0.1"),
        (b"Accept-Encoding", b"identity"),
        (b"Connection", b"close"),
    ]
    url = httpcore.URL(
        scheme=target.scheme.encode(),
        host=target.host.encode("ascii"),
        port=target.port,
        target=target.target.encode("ascii"),
    )
    with (
        httpcore.ConnectionPool(
            ssl_context=_ssl(policy) if target.scheme == "https" else None,
            max_connections=1,
            network_backend=backend,
        ) as pool,
        pool.stream("GET", url, headers=headers, extensions={"timeout": timeouts}) as response,
    ):
        status = response.status
        if status in _REDIRECT_STATUSES:
            location = _header(response.headers, b"location")
            if not location:
                raise FetchError(
                    502, "upstream-status", f"{target.url} sent {status} with no Location"
                )
            return location, None
        if not 200 <= status < 300:
            raise FetchError(502, "upstream-status", f"{target.url} answered HTTP {status}")
        encoding = _header(response.headers, b"content-encoding")
        if encoding and encoding.lower() != "identity":
            raise FetchError(
                502, "upstream-error", f"{target.url} sent Content-Encoding {encoding!r} unasked"
            )
        length = _header(response.headers, b"content-length")
        if length is not None and length.isdigit() and int(length) > policy.max_bytes:
            raise FetchError(
                413, "too-large", f"{target.url} is {length} bytes; the limit is {policy.max_bytes}"
            )
        header_type = (_header(response.headers, b"content-type") or "").split(";", 1)[0]
        declared = header_type.strip().lower() or None
        body = bytearray()
        content_type: str | None = None
        for chunk in response.iter_stream():
            body += chunk
            if len(body) > policy.max_bytes:
                raise FetchError(
                    413, "too-large", f"{target.url} exceeds the limit of {policy.max_bytes} bytes"
                )
            if content_type is None and len(body) >= SNIFF_BYTES:
                # Refuse non-media at once instead of downloading up to the cap first.
                content_type = _media_type(bytes(body[:SNIFF_BYTES]), target.url)
            if time.monotonic() > deadline:
                raise httpcore.ReadTimeout("fetch deadline passed")
        if content_type is None:
            content_type = _media_type(bytes(body), target.url)
        return None, Fetched(target.url, bytes(body), content_type, declared)


def fetch(url: str, policy: FetchPolicy | None = None) -> Fetched:
    """Download an image or video from ``url`` under ``policy``; raise FetchError otherwise.

    Synchronous and blocking: call it from a worker thread in async code.
    """
    policy = policy or FetchPolicy()
    deadline = time.monotonic() + policy.timeout
    visited: list[str] = []
    current = url
    while True:
        target = check_url(current, policy, deadline=deadline)
        try:
            location, result = _hop(target, policy, deadline)
        except httpcore.TimeoutException:
            raise FetchError(
                504, "timeout", f"fetching {url} took longer than {policy.timeout:g} s"
            ) from None
        except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
            raise FetchError(
                502, "upstream-error", f"{target.url}: {type(exc).__name__}: {exc or 'failed'}"
            ) from None
        if result is not None:
            result.redirects = tuple(visited)
            return result
        visited.append(current)
        if len(visited) > policy.max_redirects:
            raise FetchError(
                502,
                "too-many-redirects",
                f"{url} redirected more than {policy.max_redirects} times",
            )
        assert location is not None
        current = urljoin(current, location)


# --------------------------------------------------------------------------- streaming downloads


@dataclass
class Streamed:
    """An open download (see :func:`open_stream`): headers now, the body as it arrives.

    ``status`` is 200 (read :meth:`iter_bytes`) or 304 (the caller's validators still hold;
    there is no body). ``etag`` and ``last_modified`` are the validators to send next time.
    """

    url: str
    status: int
    etag: str | None
    last_modified: str | None
    content_length: int | None
    declared_type: str | None
    redirects: tuple[str, ...]
    _chunks: Iterator[bytes] = field(default_factory=lambda: iter(()), repr=False)

    @property
    def not_modified(self) -> bool:
        return self.status == 304

    def iter_bytes(self) -> Iterator[bytes]:
        """The body in chunks, at most the policy's ``max_bytes`` in all, within its deadline;
        raises FetchError (413, 502, 504) past either or when the connection fails."""
        return self._chunks


def _body(response: Any, target: Target, policy: FetchPolicy, deadline: float) -> Iterator[bytes]:
    total = 0
    try:
        for chunk in response.iter_stream():
            total += len(chunk)
            if total > policy.max_bytes:
                raise FetchError(
                    413, "too-large", f"{target.url} exceeds the limit of {policy.max_bytes} bytes"
                )
            if time.monotonic() > deadline:
                raise httpcore.ReadTimeout("fetch deadline passed")
            yield chunk
    except httpcore.TimeoutException:
        raise FetchError(
            504, "timeout", f"downloading {target.url} took longer than {policy.timeout:g} s"
        ) from None
    except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
        raise FetchError(
            502, "upstream-error", f"{target.url}: {type(exc).__name__}: {exc or 'failed'}"
        ) from None


@contextmanager
def open_stream(
    url: str,
    policy: FetchPolicy | None = None,
    *,
    if_none_match: str | None = None,
    if_modified_since: str | None = None,
    accept: str = "*/*",
    user_agent: str = _USER_AGENT,
) -> Iterator[Streamed]:
    """Open ``url`` for streaming under ``policy``, with the same checks as :func:`fetch`.

    For large text downloads such as hash lists: every hop is checked and pinned as in
    :func:`fetch`, redirects are re-checked, the body is capped at ``policy.max_bytes`` while it
    streams and the whole download (body included) must end within ``policy.timeout``; nothing
    is sniffed or held in memory. ``if_none_match`` / ``if_modified_since`` make the request
    conditional: a 304 answer comes back as ``Streamed.status == 304``. The connection closes
    when the ``with`` block ends. Raises FetchError as :func:`fetch` does.
    """
    policy = policy or FetchPolicy()
    deadline = time.monotonic() + policy.timeout
    extra: list[tuple[bytes, bytes]] = [(b"Accept", _header_value(accept))]
    if if_none_match:
        extra.append((b"If-None-Match", _header_value(if_none_match)))
    if if_modified_since:
        extra.append((b"If-Modified-Since", _header_value(if_modified_since)))
    visited: list[str] = []
    current = url
    while True:
        target = check_url(current, policy, deadline=deadline)
        with ExitStack() as stack:
            try:
                response = _open_hop(target, policy, deadline, extra, user_agent, stack)
            except httpcore.TimeoutException:
                raise FetchError(
                    504, "timeout", f"fetching {url} took longer than {policy.timeout:g} s"
                ) from None
            except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
                raise FetchError(
                    502, "upstream-error", f"{target.url}: {type(exc).__name__}: {exc or 'failed'}"
                ) from None
            status = response.status
            if status not in _REDIRECT_STATUSES:
                yield _streamed(response, target, policy, deadline, tuple(visited))
                return
            location = _header(response.headers, b"location")
        if not location:
            raise FetchError(502, "upstream-status", f"{target.url} sent {status} with no Location")
        visited.append(current)
        if len(visited) > policy.max_redirects:
            raise FetchError(
                502,
                "too-many-redirects",
                f"{url} redirected more than {policy.max_redirects} times",
            )
        current = urljoin(current, location)


def _header_value(text: str) -> bytes:
    if any(c in text for c in "\r\n\x00"):
        raise ValueError("header values may not contain line breaks")
    return text.encode("latin-1")


def _open_hop(
    target: Target,
    policy: FetchPolicy,
    deadline: float,
    extra: list[tuple[bytes, bytes]],
    user_agent: str,
    stack: ExitStack,
) -> Any:
    """Send one request over a connection pinned to the checked addresses; the response stays
    open until ``stack`` closes."""
    backend = _PinnedBackend(target, deadline, policy.connect_timeout)
    left = max(0.001, deadline - time.monotonic())
    timeouts = {"connect": min(left, policy.connect_timeout), "read": left, "write": left}
    headers = [
        (b"Host", target.host_header.encode("ascii")),
        (b"User-Agent", _header_value(user_agent)),
        *extra,
        (b"Accept-Encoding", b"identity"),
        (b"Connection", b"close"),
    ]
    url = httpcore.URL(
        scheme=target.scheme.encode(),
        host=target.host.encode("ascii"),
        port=target.port,
        target=target.target.encode("ascii"),
    )
    pool = stack.enter_context(
        httpcore.ConnectionPool(
            ssl_context=_ssl(policy) if target.scheme == "https" else None,
            max_connections=1,
            network_backend=backend,
        )
    )
    return stack.enter_context(
        pool.stream("GET", url, headers=headers, extensions={"timeout": timeouts})
    )


def _streamed(
    response: Any, target: Target, policy: FetchPolicy, deadline: float, redirects: tuple[str, ...]
) -> Streamed:
    status = response.status
    etag = _header(response.headers, b"etag")
    modified = _header(response.headers, b"last-modified")
    if status == 304:
        return Streamed(target.url, 304, etag, modified, None, None, redirects)
    if not 200 <= status < 300 or status == 206:
        error = FetchError(502, "upstream-status", f"{target.url} answered HTTP {status}")
        # For callers that retry: what the server said, and when it asked to be tried again.
        error.upstream_status = status  # type: ignore[attr-defined]
        retry = _header(response.headers, b"retry-after")
        error.retry_after = (  # type: ignore[attr-defined]
            float(retry) if retry is not None and retry.isdigit() else None
        )
        raise error
    encoding = _header(response.headers, b"content-encoding")
    if encoding and encoding.lower() != "identity":
        raise FetchError(
            502, "upstream-error", f"{target.url} sent Content-Encoding {encoding!r} unasked"
        )
    length_text = _header(response.headers, b"content-length")
    length = int(length_text) if length_text is not None and length_text.isdigit() else None
    if length is not None and length > policy.max_bytes:
        raise FetchError(
            413, "too-large", f"{target.url} is {length} bytes; the limit is {policy.max_bytes}"
        )
    declared = (_header(response.headers, b"content-type") or "").split(";", 1)[0]
    return Streamed(
        target.url,
        status,
        etag,
        modified,
        length,
        declared.strip().lower() or None,
        redirects,
        _body(response, target, policy, deadline),
    )
