"""HTTP helpers shared by the exchange connectors.

Pure helpers (no database, web or pydantic imports): base-URL validation, ``Retry-After``
parsing, safe short excerpts of records, and a response read under a byte cap that maps
transport failures to :class:`~bastion.exchanges.base.TransientError`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from bastion.exchanges.base import TransientError

#: Hosts plain http may be used with (tests, a local proxy).
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
#: Default length of an excerpt of a body or record.
EXCERPT = 2000
_TOO_DEEP = "(not shown: too deeply nested)"


def https_base(value: str, field: str = "base_url") -> str:
    """``value`` stripped of blanks and trailing slashes, if it is an https URL, or a plain http
    one to a :data:`LOOPBACK` host; no query, fragment or user info. Credentials sent to it
    must never cross a network in clear. ``ValueError`` (naming ``field``) otherwise."""
    value = value.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{field} must be an http(s) URL")
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(f"{field} may not carry a query, fragment or user info")
    if parts.scheme != "https" and parts.hostname not in LOOPBACK:
        raise ValueError(f"{field} must use https (plain http only on loopback)")
    return value


def retry_after(raw: str | None, *, now: datetime | None = None, most: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: a number of seconds or an HTTP date
    (relative to ``now``, default the current UTC time). Clamped to ``[0, most]``; ``None``
    when absent, unreadable or NaN."""
    raw = (raw or "").strip()
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), most)


def short_raw(record: Any, limit: int = EXCERPT) -> str:
    """At most ``limit`` characters showing ``record`` (JSON, else ``repr``), never raising
    on a record too deeply nested to show."""
    try:
        return json.dumps(record, ensure_ascii=False, default=str)[:limit]
    except (TypeError, ValueError):
        try:
            return repr(record)[:limit]
        except (RecursionError, MemoryError):
            return _TOO_DEEP
    except (RecursionError, MemoryError):
        return _TOO_DEEP


@dataclass(frozen=True)
class Answer:
    """A response read under a byte cap: ``too_big`` when the body went past it."""

    status_code: int
    headers: httpx.Headers
    body: bytes
    too_big: bool

    def excerpt(self, limit: int = EXCERPT) -> str:
        """The first ``limit`` bytes of the body as text."""
        return self.body[:limit].decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON; ``ValueError`` also for JSON too deeply nested to decode."""
        try:
            return json.loads(self.body)
        except (RecursionError, MemoryError) as exc:
            raise ValueError(f"JSON too deeply nested to read ({type(exc).__name__})") from None


def read_capped(
    client: httpx.Client,
    method: str,
    url: str | httpx.URL,
    *,
    limit: int,
    error_limit: int,
    excerpt: int = EXCERPT,
    partner: str,
    what: str,
    scrub: Callable[[str], str] | None = None,
    **kwargs: Any,
) -> Answer:
    """Send a request and read at most ``limit`` bytes of a success body (at most
    ``min(limit, error_limit)`` of an error body, status >= 400): a hostile or broken server
    cannot make us buffer without bound. A declared (uncompressed) Content-Length past the cap
    is refused up front: only ``excerpt`` bytes are read and the answer is ``too_big``.

    Timeouts and transport errors become :class:`TransientError` ("<partner> <what> timed
    out" / "<partner> <what> failed: <error type>"; the latter passed through ``scrub``)."""
    try:
        with client.stream(method, url, **kwargs) as r:
            cap = limit if r.status_code < 400 else min(limit, error_limit)
            chunks: list[bytes] = []
            size, too_big = 0, False
            declared = r.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > cap and not r.headers.get("Content-Encoding"):
                too_big, cap = True, min(cap, excerpt)  # refused; read an excerpt only
            for chunk in r.iter_bytes():
                if size + len(chunk) > cap:
                    too_big = True
                    chunks.append(chunk[: cap - size])
                    break
                size += len(chunk)
                chunks.append(chunk)
            return Answer(r.status_code, r.headers, b"".join(chunks), too_big)
    except httpx.TimeoutException:
        raise TransientError(f"{partner} {what} timed out") from None
    except httpx.HTTPError as exc:
        message = f"{partner} {what} failed: {type(exc).__name__}"
        raise TransientError(scrub(message) if scrub else message) from None


__all__ = ["EXCERPT", "LOOPBACK", "Answer", "https_base", "read_capped", "retry_after", "short_raw"]
