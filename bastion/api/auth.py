"""Bearer API keys with scopes on every endpoint, and a per-key rate limit.

Keys are verified against salted hashes in the store (``Store.verify_api_key``); a verified key
is cached briefly so a busy client costs one dictionary lookup per request, not a query.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

from fastapi import Request
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from bastion.api.problems import Problem
from bastion.http_auth import Principal
from bastion.keys import SCOPES
from bastion.runtime import Runtime, runtime


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


def _bound_user_refusal(rt: Runtime, request: Request, principal: Principal) -> str | None:
    """Why a key bound to a console user is refused (the user is gone or disabled), audited as
    ``access.denied``; None while the user is enabled. A bound key is that person's, on every
    route: it stops when they do."""
    from bastion.accounts.store import UserNotFound
    from bastion.store import StoreError

    if principal.user is None:
        return None
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
        rt = runtime(request)
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
