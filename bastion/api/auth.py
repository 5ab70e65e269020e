"""Bearer API keys with scopes on every endpoint, and a per-key rate limit.

Keys are verified against salted hashes in the store (``Store.verify_api_key``); a verified key
is cached briefly so a busy client costs one dictionary lookup per request, not a query.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from bastion.api.problems import Problem
from bastion.keys import SCOPES

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


def _token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Problem(
            401,
            "Unauthorized",
            detail="send an API key as 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": 'Bearer realm="bastion"'},
        )
    return token.strip()


def _bound_user_refusal(rt: Any, request: Request, principal: Principal) -> str | None:
    """Why a key bound to a console user is refused (the user is gone or disabled), audited as
    ``access.denied``; None while the user is enabled. A bound key is that person's, on every
    route: it stops when they do."""
    from bastion.store import StoreError
    from bastion.store.accounts import UserNotFound

    try:
        if not rt.accounts.get_user(principal.user).disabled:
            return None
        why = f"the console user {principal.user!r} this key is bound to is disabled"
    except UserNotFound:
        why = f"the console user {principal.user!r} this key is bound to does not exist"
    # The refusal stands whether or not it could be recorded.
    with contextlib.suppress(StoreError, SQLAlchemyError):
        rt.audit(request, principal, "access.denied", request.url.path[:2000], why=why)
    return why


def require(scope: str | None) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the caller's key must be valid and hold ``scope`` (None: any valid key)."""
    if scope is not None and scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    # async so FastAPI runs it on the event loop: a cached key is a dict lookup, and a thread
    # hop per request would cost more than the check itself. A miss reads (and may write) the
    # store, so that one goes to the thread pool.
    async def dependency(request: Request) -> Principal:
        rt = request.app.state.runtime
        token = _token(request)
        hit, principal = rt.keys.lookup(token)
        if not hit:
            principal = await run_in_threadpool(rt.verify_key, token)
            rt.keys.put(token, principal)
        if principal is None:
            raise Problem(
                401,
                "Unauthorized",
                detail="the API key is unknown, revoked or expired",
                headers={"WWW-Authenticate": 'Bearer realm="bastion", error="invalid_token"'},
            )
        if principal.user is not None:
            # Read on every request, not cached with the key: a user disabled a moment ago
            # must not keep exporting banks or reading reports through their keys.
            why = await run_in_threadpool(_bound_user_refusal, rt, request, principal)
            if why is not None:
                raise Problem(403, "Forbidden", detail=why, code="user_disabled")
        if not principal.allows(scope):
            raise Problem(403, "Forbidden", detail=f"this API key lacks the {scope!r} scope")
        wait = rt.limiter.allow(principal.name)
        if wait:
            raise Problem(
                429,
                "Too Many Requests",
                detail=f"rate limit of {rt.settings.rate_limit_per_minute} requests a minute",
                headers={"Retry-After": str(max(1, round(wait)))},
            )
        request.state.principal = principal
        return principal

    # FastAPI parses a JSON body before it runs dependencies; the error handlers look for this
    # mark to check the key first, so a caller without one hears 401, not what is wrong with
    # its body (see problems.key_problem).
    dependency.checks_api_key = True  # type: ignore[attr-defined]
    return dependency
