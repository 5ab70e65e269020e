"""The API's FastAPI application: the runtime's lifespan, the middleware (body limits,
metrics), the operations routes and the API's routers.

:func:`bastion.server.create_app` adds the console to it. Routes are plain functions run in the
thread pool, because hashing and index lookups are CPU-bound native code.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bastion import __version__
from bastion.api import (
    cases,
    contact,
    contact_events,
    exchanges,
    feeds,
    hma,
    identity,
    problems,
    quarantine,
    reports,
    v1,
    vouchers,
)
from bastion.api.auth import require
from bastion.api.openapi import state_settings
from bastion.api.problems import BodyTooLarge
from bastion.config import Settings
from bastion.db import Store
from bastion.http_auth import Principal
from bastion.runtime import Runtime, RuntimeDep, build_runtime

log = logging.getLogger("bastion.api")
_any_key = Depends(require(None))


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


def create_api_app(settings: Settings | None = None, *, store: Store | None = None) -> FastAPI:
    """The API over ``store`` (or the store ``settings`` name, opened with the app)."""
    settings = settings or Settings.load()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = store is None
        st = store or Store.open(settings.database_url)
        rt = build_runtime(settings, st)
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
    def readyz(rt: RuntimeDep) -> JSONResponse:
        """Readiness: the index is loaded and caught up with the store within a few polls."""
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
    def metrics(rt: RuntimeDep, _: Principal = _any_key) -> Response:
        """Prometheus metrics (any valid API key)."""
        rt.metrics.index_entries.set(rt.index.size())
        rt.metrics.index_revision.set(rt.index.revision)
        if rt.index.refreshed_at:
            rt.metrics.index_age.set(time.time() - rt.index.refreshed_at)
        return Response(generate_latest(rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # contact first: it sits on the platforms' send path, and routes are matched in order.
    for module in (
        contact,
        v1,
        quarantine,
        identity,
        hma,
        vouchers,
        reports,
        cases,
        exchanges,
        feeds,
        contact_events,
    ):
        app.include_router(module.router)
    return app
