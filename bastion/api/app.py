"""The FastAPI application: wiring of store, live index, auth, metrics and the routers.

``create_app(settings)`` is all a test or ``bastion serve`` needs. Routes are plain functions
run in the thread pool, because hashing and index lookups are CPU-bound native code.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from bastion import __version__
from bastion.actions.outbox import Outbox
from bastion.api import cases, exchanges, feeds, hma, pipeline, problems, reports, v1, vouchers
from bastion.api.auth import KeyCache, Principal, RateLimiter, require
from bastion.api.openapi import state_settings
from bastion.api.problems import BodyTooLarge
from bastion.config import Settings
from bastion.crypto import MasterKey
from bastion.index.live import LiveIndex
from bastion.index.pdq import HASH_BITS
from bastion.index.probing import EntryWatch, ProbeDetector
from bastion.policy import Policy, PolicyHolder
from bastion.review.store import ReviewStore
from bastion.store import Store
from bastion.store.accounts import AccountStore
from bastion.store.exchanges import ExchangeStore
from bastion.store.feeds import FeedStore
from bastion.store.reports import ReportStore
from bastion.vault.store import Vault

log = logging.getLogger("bastion.api")
_any_key = Depends(require(None))


class Metrics:
    """Prometheus metrics in a registry of the app's own, so several apps can live in a process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "bastion_http_requests",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "bastion_http_request_duration_seconds",
            "Request latency",
            ["route"],
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.matches = Counter(
            "bastion_matches", "Matches returned", ["signal_type"], registry=self.registry
        )
        self.index_entries = Gauge(
            "bastion_index_entries", "Entries in the live index", registry=self.registry
        )
        self.index_age = Gauge(
            "bastion_index_age_seconds",
            "Seconds since the index caught up with the store",
            registry=self.registry,
        )
        self.index_revision = Gauge(
            "bastion_index_revision", "Store revision the index reflects", registry=self.registry
        )


class Runtime:
    """Everything a request handler needs, on ``app.state.runtime``."""

    def __init__(self, settings: Settings, store: Store) -> None:
        store.use_settings_audit_keys(settings)
        settings = settings.in_data_dir(store.data_dir)
        self.settings = settings
        self.store = store
        self.index = LiveIndex(store)
        self.keys = KeyCache()
        self.limiter = RateLimiter(settings.rate_limit_per_minute)
        self.probes = ProbeDetector(
            radius=settings.probe_radius,
            limit=settings.probe_limit,
            window=settings.probe_window_seconds,
            memory=settings.probe_memory,
        )
        if not 0 <= settings.match_threshold <= HASH_BITS:
            raise ValueError(f"match_threshold must be 0..{HASH_BITS}")
        self.watch = EntryWatch(
            same_radius=settings.probe_same_radius,
            limit=settings.probe_entry_limit,
            window=settings.probe_entry_window_seconds,
            match_limit=settings.probe_match_limit,
            match_window=settings.probe_match_window_seconds,
            max_pairs=settings.probe_entry_memory,
        )
        self.metrics = Metrics()
        self.started_at = time.time()
        # -- domain services: one line each (review, accounts, outbox, policy, vouchers) --
        self.master_key = MasterKey.load(settings)
        self.policy = PolicyHolder(settings.policy_file)
        self.policy.on_reload = partial(_audit_policy_reload, store, settings.policy_file)
        self.bank_labels = pipeline.BankLabels(store)
        self.review = ReviewStore(store, self.master_key, policy=self.policy.current)
        self.accounts = AccountStore(store)
        self.outbox = Outbox.from_settings(store, settings)
        self.vault = Vault.from_settings(store, self.master_key, settings)
        self.reports = ReportStore(store, self.master_key, settings=settings, vault=self.vault)
        self.vouchers = vouchers.VoucherStore(store, self.master_key, settings)
        self.vouchers.on_open = partial(pipeline.open_voucher_cases, self)
        self.exchanges = ExchangeStore(store, self.master_key, settings)
        # One per app: it caches the unsealed feed signing key.
        self.feeds = FeedStore(store, self.master_key, settings)
        # -- end domain services --

    def verify_key(self, token: str) -> Principal | None:
        key = self.store.verify_api_key(token)
        if key is None:
            return None
        return Principal(
            name=key.name,
            scopes=frozenset(key.scopes),
            user=key.user,
            key_id=key.key_id,
            created_by=key.created_by,
        )

    def audit(
        self, request: Request, principal: Principal, action: str, target: str = "", **detail: Any
    ) -> None:
        """Record who did what to what, from where, before the response goes out."""
        self.store.record_audit(
            actor=f"key:{principal.name}",
            action=action,
            target=target,
            detail=detail or None,
            remote_addr=client_address(request, self.settings),
        )


def _audit_policy_reload(store: Store, path: str | None, policy: Policy) -> None:
    """An edit of the policy file made on disk, picked up by this process."""
    store.record_audit(
        actor="system",
        action="policy.reload",
        target=str(path),
        detail={"digest": policy.digest, "rules": len(policy.rules)},
    )


class MetricsMiddleware:
    """Request counts and latency per route template, as plain ASGI (no per-request task)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_status(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            rt: Runtime | None = getattr(scope["app"].state, "runtime", None)
            if rt is not None:
                path = getattr(scope.get("route"), "path", "unmatched")
                rt.metrics.requests.labels(scope["method"], path, str(status[0])).inc()
                rt.metrics.latency.labels(path).observe(time.perf_counter() - start)


_UPLOAD_ROUTES = re.compile(r"^/(v1/scan|h/hash|m/lookup|c/bank/[^/]+/content)/?$")
_IMPORT_ROUTES = re.compile(r"^/v1/banks/[^/]+/import/?$")
#: Room for multipart boundaries and headers around an upload of the full allowed size.
MULTIPART_OVERHEAD = 64 * 1024


def body_limit(settings: Settings, method: str, path: str) -> int:
    """The largest body a request to ``path`` may send."""
    if method == "POST" and _UPLOAD_ROUTES.match(path):
        return settings.max_upload_bytes + MULTIPART_OVERHEAD
    if method == "POST" and _IMPORT_ROUTES.match(path):
        return settings.max_import_bytes
    return settings.max_json_bytes


class BodyLimitMiddleware:
    """Refuse bodies over the route's limit before anything reads them: by Content-Length up
    front, and by counting the bytes of a chunked (or lying) body as the route reads it."""

    def __init__(self, app: Any, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = body_limit(self.settings, scope["method"], scope["path"])
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                if value.strip().isdigit() and int(value) > limit:
                    await _send_too_large(scope, send, limit)
                    return
                break
        received = 0
        started = False

        async def limited_receive() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await _send_too_large(scope, send, limit)


async def _send_too_large(scope: Any, send: Any, limit: int) -> None:
    problem = problems.Problem(413, detail=f"the request body is over the limit of {limit} bytes")
    payload = json.dumps(problem.body(scope.get("path"))).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", problems.PROBLEM_JSON.encode()),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def _trusted(address: str, proxies: tuple[str, ...]) -> bool:
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
    if peer is None or not _trusted(peer, settings.trusted_proxies):
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
        if not _trusted(hop, settings.trusted_proxies):
            break
    return address


def create_app(settings: Settings | None = None, *, store: Store | None = None) -> FastAPI:
    settings = settings or Settings.load()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = store is None
        st = store or Store.open(settings.database_url)
        rt = Runtime(settings, st)
        app.state.runtime = rt
        rt.index.load()
        rt.index.start(settings.index_poll_seconds)
        try:
            yield
        finally:
            rt.index.stop()
            if own:
                st.close()

    app = FastAPI(
        title="Bastion",
        version=__version__,
        summary="Find and stop child sexual exploitation and abuse: hash, match, review, report.",
        lifespan=lifespan,
    )
    problems.install(app)
    state_settings(app, settings)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return problems.problem_response(problems.Problem(413, detail=exc.detail), request)

    app.add_middleware(BodyLimitMiddleware, settings=settings)
    app.add_middleware(MetricsMiddleware)

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, str]:
        """Liveness: the process answers. No key needed, and it says nothing about content."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], responses={503: {"description": "not ready"}})
    def readyz(request: Request) -> JSONResponse:
        """Readiness: the index is loaded and caught up with the store within a few polls."""
        rt: Runtime = request.app.state.runtime
        lag = max(5.0, 3 * settings.index_poll_seconds)
        ready = rt.index.is_current(lag)
        body = {"status": "ready" if ready else "not ready", "index_loaded": rt.index.loaded}
        if rt.index.last_error:
            body["index_error"] = rt.index.last_error
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get(
        "/metrics",
        tags=["operations"],
        response_class=Response,
        responses=problems.problem_responses(401, 429),
    )
    def metrics(request: Request, _: Principal = _any_key) -> Response:
        """Prometheus metrics (any valid API key)."""
        rt: Runtime = request.app.state.runtime
        rt.metrics.index_entries.set(rt.index.size())
        rt.metrics.index_revision.set(rt.index.revision)
        if rt.index.refreshed_at:
            rt.metrics.index_age.set(time.time() - rt.index.refreshed_at)
        return Response(generate_latest(rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(v1.router)
    app.include_router(hma.router)
    # -- more routers (console, vouchers) --
    from bastion.web import router as console_router  # imports the API's modules itself

    app.include_router(console_router)
    app.include_router(vouchers.router)
    app.include_router(reports.router)
    app.include_router(cases.router)
    # -- exchange and feed routers --
    app.include_router(exchanges.router)
    app.include_router(feeds.router)
    # -- end exchange and feed routers --
    # -- end routers --
    return app
