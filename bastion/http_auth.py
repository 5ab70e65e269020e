"""The HTTP edges' shared pieces of who is calling: API key principals, the verified-key cache,
the per-key rate limit, and the caller's address behind trusted proxies.

Both edges read these (the API for keys, the console for cookies and audit addresses), so they
live beside neither: ``bastion.api`` and ``bastion.web`` never import each other.
"""

from __future__ import annotations

import hashlib
import ipaddress
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.requests import Request

    from bastion.config import Settings

_CACHE_SECONDS = 10.0
#: An unknown token is re-checked after this long (it may have just been created).
_FAILURE_SECONDS = 1.0


@dataclass(frozen=True)
class Principal:
    """Who is calling: the API key's name and scopes, the console user the key is bound to
    (None for a key of the platform itself), its public id and who created it."""

    name: str
    scopes: frozenset[str]
    user: str | None = None
    key_id: str | None = None
    created_by: str | None = None

    def allows(self, scope: str | None) -> bool:
        return scope is None or "admin" in self.scopes or scope in self.scopes


class KeyCache:
    """Verified keys by token digest, for a few seconds (a revoked key stops within that).

    Failures are kept only briefly, and the oldest entries are evicted first, so a flood of
    random tokens can neither hammer the store nor push valid keys out all at once.
    """

    def __init__(
        self,
        max_items: int = 10_000,
        ttl: float = _CACHE_SECONDS,
        failure_ttl: float = _FAILURE_SECONDS,
    ) -> None:
        self.max_items = max_items
        self.ttl = ttl
        self.failure_ttl = failure_ttl
        self._items: OrderedDict[bytes, tuple[float, Principal | None]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _digest(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def lookup(self, token: str) -> tuple[bool, Principal | None]:
        """(True, principal or None) on a fresh cache hit, (False, None) on a miss."""
        digest = self._digest(token)
        now = time.monotonic()
        with self._lock:
            hit = self._items.get(digest)
            if hit is None:
                return False, None
            ttl = self.ttl if hit[1] is not None else self.failure_ttl
            if now - hit[0] >= ttl:
                del self._items[digest]
                return False, None
            self._items.move_to_end(digest)
            return True, hit[1]

    def put(self, token: str, principal: Principal | None) -> None:
        digest = self._digest(token)
        with self._lock:
            self._items[digest] = (time.monotonic(), principal)
            self._items.move_to_end(digest)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)

    def get(self, token: str, verify: Callable[[str], Principal | None]) -> Principal | None:
        """The cached answer, or ``verify(token)`` (cached) on a miss."""
        hit, principal = self.lookup(token)
        if hit:
            return principal
        principal = verify(token)
        self.put(token, principal)
        return principal


class RateLimiter:
    """A token bucket per key: ``per_minute`` requests, with bursts up to a tenth of that."""

    def __init__(self, per_minute: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = max(1.0, per_minute / 10.0)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> float:
        """0 if the request may go ahead, else the seconds to wait."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate


def trusted(address: str, proxies: tuple[str, ...]) -> bool:
    """Whether ``address`` is one of ``proxies`` (addresses or networks)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address in proxies
    for proxy in proxies:
        try:
            if ip in ipaddress.ip_network(proxy, strict=False):
                return True
        except ValueError:
            continue
    return False


def client_address(request: Request, settings: Settings) -> str | None:
    """The caller's address. Behind trusted proxies, X-Forwarded-For is read from the right:
    each proxy appends the address it saw, and only entries added by trusted proxies can be
    believed, so the first untrusted one from the right is the client (the leftmost is whatever
    the client chose to send)."""
    peer = request.client.host if request.client else None
    if peer is None or not trusted(peer, settings.trusted_proxies):
        return peer
    hops = [
        h.strip()
        for header in request.headers.getlist("x-forwarded-for")
        for h in header.split(",")
        if h.strip()
    ]
    address = peer
    for hop in reversed(hops):
        address = hop
        if not trusted(hop, settings.trusted_proxies):
            break
    return address
