"""URL normalisation for matching against URL lists (e.g. IWF/Ofcom CSAM URL lists).

Lists are scheme-less, so the canonical form is ``host[:port]/path?query``: scheme, userinfo,
fragment, default ports (80 and 443, whatever the scheme), a leading ``www.`` label, trailing
dots on the host and a trailing slash on the path are dropped; the host is lowercased and
IDNA-encoded (punycode, IDNA 2003 via the standard library), IPv4 written as four decimals and
IPv6 compressed in brackets; percent-encoding is normalised (unreserved characters decoded, other
escapes upper-cased, stray characters encoded as UTF-8); ``.``/``..`` segments are resolved and
repeated slashes collapsed. Backslashes count as slashes, as browsers treat them in http(s) URLs.
The path and query keep their case: servers may treat them case-sensitively.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

import idna

UrlEntryKind = Literal["url", "prefix", "domain"]
URL_ENTRY_KINDS: tuple[UrlEntryKind, ...] = ("url", "prefix", "domain")

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*):")
_ALLOWED_SCHEMES = frozenset({"http", "https"})
_DEFAULT_PORTS = frozenset({80, 443})
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# RFC 3986 pchar minus pct-encoded: unreserved, sub-delims, ":" and "@"; "/" separates segments.
_PATH_SAFE = _UNRESERVED | frozenset(b"!$&'()*+,;=:@/")
_QUERY_SAFE = _PATH_SAFE | frozenset(b"?")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_HOST_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$")
_MAX_URL_LENGTH = 8192


@dataclass(frozen=True, slots=True)
class UrlKeys:
    """The keys a URL can match a list entry on.

    ``url`` is the normalised URL; ``prefixes`` are ``host[:port]`` followed by each leading run of
    whole path segments, shortest first (``example.com``, ``example.com/a``, ``example.com/a/b``);
    ``domains`` are the host and each parent domain, longest first, without the port.
    """

    url: str
    host: str
    prefixes: tuple[str, ...]
    domains: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Parts:
    host: str
    port: int | None
    path: str
    query: str

    @property
    def authority(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return self.authority + self.path + (f"?{self.query}" if self.query else "")


def normalize_url(url: str) -> str:
    """The canonical scheme-less form of ``url``; ValueError if it is not a usable web URL."""
    return str(_parse(url))


def url_entry_kind(kind: str) -> UrlEntryKind:
    """``kind`` as one of :data:`URL_ENTRY_KINDS`; ValueError for anything else."""
    for known in URL_ENTRY_KINDS:
        if known == kind:
            return known
    raise ValueError(f"unknown URL entry kind {_short(kind)} (expected url, prefix or domain)")


def normalize_url_entry(kind: str, pattern: str) -> str:
    """The canonical pattern of a URL list entry of ``kind``; ValueError for junk or a misfit.

    The one rule for what a URL entry may be: the bank store keeps this result as the entry's
    value and :class:`bastion.index.url.UrlIndex` keys the entry by it, so whatever a bank accepts
    also loads into the index. Idempotent. ``url`` entries are any web URL; ``prefix`` entries
    may not carry a query (a prefix is a path); ``domain`` entries are a bare host, where a
    leading ``*.`` is accepted and dropped since a domain entry covers its subdomains anyway.
    """
    if kind == "url":
        return normalize_url(pattern)
    if kind == "prefix":
        parts = _parse(pattern)
        if parts.query:
            raise ValueError(f"prefix entry must not contain a query: {_short(pattern)}")
        return str(parts)
    if kind == "domain":
        if not isinstance(pattern, str):
            raise ValueError(f"URL must be a string, got {type(pattern).__name__}")
        parts = _parse(pattern.strip().removeprefix("*."))
        if parts.port is not None or parts.path or parts.query:
            raise ValueError(
                f"domain entry must be a bare host, without port, path or query: {_short(pattern)}"
            )
        return parts.host
    raise ValueError(f"unknown URL entry kind {_short(kind)} (expected url, prefix or domain)")


def _short(value: object, limit: int = 80) -> str:
    text = str(value)
    return repr(text if len(text) <= limit else text[:limit] + "…")


def url_keys(url: str) -> UrlKeys:
    """Everything :class:`bastion.index.url.UrlIndex` looks up for one URL."""
    parts = _parse(url)
    authority = parts.authority
    prefixes = [authority]
    acc = authority
    for segment in parts.path.split("/")[1:]:
        acc = f"{acc}/{segment}"
        prefixes.append(acc)
    return UrlKeys(str(parts), parts.host, tuple(prefixes), _parent_domains(parts.host))


def _parent_domains(host: str) -> tuple[str, ...]:
    if host.startswith("[") or _is_ipv4(host):
        return (host,)
    labels = host.split(".")
    return tuple(".".join(labels[i:]) for i in range(len(labels)))


def _parse(url: str) -> _Parts:
    if not isinstance(url, str):
        raise ValueError(f"URL must be a string, got {type(url).__name__}")
    text = url.strip()
    if not text:
        raise ValueError("empty URL")
    if len(text) > _MAX_URL_LENGTH:
        raise ValueError(f"URL longer than {_MAX_URL_LENGTH} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ValueError(f"URL contains control characters: {url!r}")
    text = text.replace("\\", "/")
    match = _SCHEME.match(text)
    if match and text[match.end() : match.end() + 2] == "//":
        scheme = match.group(1).lower()
        if scheme not in _ALLOWED_SCHEMES:
            raise ValueError(f"unsupported URL scheme {scheme!r} (only http and https)")
        text = text[match.end() + 2 :]
    elif match and not _looks_like_host_port(text):
        raise ValueError(f"unsupported URL scheme {match.group(1).lower()!r} in {url!r}")
    else:
        text = text.removeprefix("//")
    text = text.split("#", 1)[0]
    end = min((i for i in (text.find("/"), text.find("?")) if i >= 0), default=len(text))
    authority, rest = text[:end], text[end:]
    path, _, query = rest.partition("?")
    host, port = _parse_authority(authority, url)
    return _Parts(host, port, _normalize_path(path), _normalize_escapes(query, _QUERY_SAFE))


def _looks_like_host_port(text: str) -> bool:
    """``example.com:8080/x`` has no scheme; ``javascript:alert(1)`` does."""
    return re.match(r"^[^:/?#]+:\d*(?:[/?#]|$)", text) is not None


def _parse_authority(authority: str, url: str) -> tuple[str, int | None]:
    authority = authority.rpartition("@")[2]  # drop user:password@
    if not authority:
        raise ValueError(f"URL has no host: {url!r}")
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0:
            raise ValueError(f"unterminated IPv6 address in {url!r}")
        host_text, port_text = authority[: close + 1], authority[close + 1 :]
        if port_text and not port_text.startswith(":"):
            raise ValueError(f"junk after IPv6 address in {url!r}")
        port_text = port_text[1:]
    else:
        host_text, _, port_text = authority.partition(":")
    port: int | None = None
    if port_text:
        if not port_text.isascii() or not port_text.isdigit() or int(port_text) > 65535:
            raise ValueError(f"invalid port {port_text!r} in {url!r}")
        port = int(port_text)
        if port in _DEFAULT_PORTS:
            port = None
    return _normalize_host(host_text, url), port


def _normalize_host(host: str, url: str) -> str:
    if host.startswith("["):
        try:
            address = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"invalid IPv6 address {host!r} in {url!r}") from None
        return f"[{address.compressed}]"
    host = _percent_decode(host).lower().rstrip(".")
    if not host:
        raise ValueError(f"URL has no host: {url!r}")
    ipv4 = _parse_ipv4(host)
    if ipv4 is not None:
        return ipv4
    labels = []
    for label in host.split("."):
        if not label:
            raise ValueError(f"empty label in host {host!r}")
        if not label.isascii():
            try:
                # UTS 46 (IDNA 2008), as browsers resolve it: "faß" stays distinct from "fass".
                label = idna.encode(label, uts46=True, transitional=False).decode("ascii")
            except (idna.IDNAError, UnicodeError):
                raise ValueError(f"host label {label!r} is not a valid IDN") from None
        if not _HOST_LABEL.match(label) or len(label) > 63:
            raise ValueError(f"invalid host label {label!r} in {url!r}")
        labels.append(label)
    if labels[0] == "www" and len(labels) > 2:
        labels = labels[1:]
    return ".".join(labels)


def _parse_ipv4(host: str) -> str | None:
    """WHATWG IPv4 parsing (``0x7f.1``, ``2130706433`` and ``127.000.0.1`` all mean 127.0.0.1),
    so numeric spellings of one address share a key. None if ``host`` is a name."""
    parts = host.split(".")
    if not parts[-1] or not _is_ipv4_number(parts[-1]):
        return None
    if len(parts) > 4 or not all(_is_ipv4_number(p) for p in parts):
        raise ValueError(f"invalid IPv4 address {host!r}")
    numbers = [_ipv4_number(p) for p in parts]
    if any(n > 255 for n in numbers[:-1]) or numbers[-1] >= 256 ** (5 - len(numbers)):
        raise ValueError(f"IPv4 address out of range: {host!r}")
    value = numbers[-1]
    for i, n in enumerate(numbers[:-1]):
        value += n << (8 * (3 - i))
    return str(ipaddress.IPv4Address(value))


def _is_ipv4_number(part: str) -> bool:
    return re.fullmatch(r"0[xX][0-9a-fA-F]*|[0-9]+", part) is not None


def _ipv4_number(part: str) -> int:
    if part[:2].lower() == "0x":
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        if not set(part) <= set("01234567"):
            raise ValueError(f"invalid octal IPv4 part {part!r}")
        return int(part, 8)
    return int(part)


def _is_ipv4(host: str) -> bool:
    return re.fullmatch(r"\d{1,3}(?:\.\d{1,3}){3}", host) is not None


def _normalize_path(path: str) -> str:
    path = _normalize_escapes(path, _PATH_SAFE)
    out: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    return "".join(f"/{s}" for s in out)


def _normalize_escapes(text: str, safe: frozenset[int]) -> str:
    """Decode escaped unreserved bytes, upper-case other escapes, escape everything unsafe."""
    raw = text.encode("utf-8")
    out = bytearray()
    i = 0
    while i < len(raw):
        b = raw[i]
        if b == 0x25 and i + 2 < len(raw) and raw[i + 1] in _HEX and raw[i + 2] in _HEX:
            value = int(raw[i + 1 : i + 3], 16)
            if value in _UNRESERVED:
                out.append(value)
            else:
                out += b"%" + raw[i + 1 : i + 3].upper()
            i += 3
            continue
        if b in safe:
            out.append(b)
        else:
            out += f"%{b:02X}".encode()
        i += 1
    return out.decode("ascii")


def _percent_decode(text: str) -> str:
    def repl(m: re.Match[str]) -> str:
        return chr(int(m.group(1), 16)) if int(m.group(1), 16) < 0x80 else m.group(0)

    decoded = re.sub(r"%([0-9a-fA-F]{2})", repl, text)
    if "%" in decoded:
        raise ValueError(f"host contains non-ASCII percent-escapes or a stray '%': {text!r}")
    return decoded
