"""RFC 9457 problem details for every error, so clients get a 4xx that says what is wrong.

Unhandled exceptions still become a 500 problem (never an HTML page or a stack trace); the tests
fuzz the API to keep those at zero.
"""

from __future__ import annotations

import inspect
import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from bastion.api.openapi import allowed_methods, hoist_defs
from bastion.errors import PROBLEM_JSON, STORE_DOWN, detail, http_error
from bastion.store import StoreUnavailable

log = logging.getLogger("bastion.api")


class Problem(Exception):
    """Raise from a route to answer with a problem document."""

    def __init__(
        self,
        status: int,
        title: str | None = None,
        *,
        detail: str | None = None,
        type: str = "about:blank",
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title or HTTPStatus(status).phrase
        self.detail = detail
        self.type = type
        self.headers = headers
        self.extra = extra

    def body(self, instance: str | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {"type": self.type, "title": self.title, "status": self.status}
        if self.detail:
            doc["detail"] = self.detail
        if instance:
            doc["instance"] = instance
        doc.update(self.extra)
        return doc


class BodyTooLarge(StarletteHTTPException):
    """A streamed request body went over its route's limit (raised from the wrapped receive).

    An HTTPException, so FastAPI's body parsing passes it on instead of calling it a 400.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is over the limit of {limit} bytes")
        self.limit = limit


#: JSON Schema of a problem document, published once as ``components/schemas/Problem``.
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "RFC 9457 problem details. Some errors add members, e.g. `errors` (a list "
    "of validation errors), `code` (why a URL fetch failed) or `message` (HMA routes).",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
    },
    "additionalProperties": True,
}

_DESCRIPTIONS = {
    400: "Bad request: the input is malformed (problem details say where)",
    401: "No API key, or an unknown, revoked or expired one",
    403: "The API key lacks the scope this operation needs",
    404: "No such bank, entry or content",
    409: "Conflict with the current state (e.g. the name is taken)",
    413: "The body or the fetched content is over the size limit",
    415: "Unsupported request content type",
    422: "The request is well-formed but invalid",
    429: "Rate limit exceeded; retry after `Retry-After` seconds",
    501: "A feature Bastion deliberately does not implement",
    502: "The remote server failed or answered with an error",
    503: "The store is unavailable",
    504: "Fetching the URL took too long",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` documenting these statuses as problem+json, for routes to declare
    every error they can answer with (clients and the fuzz tests rely on the list)."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        doc: dict[str, Any] = {
            "description": _DESCRIPTIONS.get(status, HTTPStatus(status).phrase),
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        if status == 429:
            doc["headers"] = {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}}
        if status == 401:
            doc["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
        out[status] = doc
    return out


#: What any route behind an API key can answer: no key, wrong scope, rate limited.
AUTH_RESPONSES = problem_responses(401, 403, 429)


def problem_for(exc: BaseException, *, codes: bool = False) -> Problem:
    """The answer to a domain error a route caught, from its row of the one table
    (:data:`bastion.errors.ERRORS`); ``codes`` adds the row's ``code`` (the cases API's). An error
    without a row is the caller's invalid input if it is a ValueError (422), else the store's
    failure (503)."""
    row = http_error(exc)
    if row is None:
        if isinstance(exc, ValueError):
            return Problem(422, "Invalid request", detail=str(exc))
        return Problem(503, "Store unavailable", detail=STORE_DOWN)
    extra: dict[str, Any] = {"code": row.code} if codes and row.code else {}
    if row.extra is not None:
        extra.update(row.extra(exc))
    return Problem(row.status, row.title, detail=detail(exc, row), **extra)


def problem_response(problem: Problem, request: Request | None = None) -> JSONResponse:
    return JSONResponse(
        problem.body(request.url.path if request else None),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=problem.headers,
    )


async def key_problem(request: Request) -> Problem | None:
    """The 401/403/429 a request's route would have answered, had it got to checking the key.

    FastAPI reads and parses a route's body before it runs the route's dependencies, so a body
    error would otherwise reach a caller who never showed a valid key. The API key dependency is
    marked ``checks_api_key``; it sets ``request.state.principal`` once it has passed.
    """
    if getattr(request.state, "principal", None) is not None:
        return None
    dependant = getattr(request.scope.get("route"), "dependant", None)
    for dep in getattr(dependant, "dependencies", ()):
        if getattr(dep.call, "checks_api_key", False):
            try:
                result = dep.call(request)
                if inspect.isawaitable(result):
                    await result
            except Problem as problem:
                return problem
            return None
    return None


def install(app: FastAPI) -> None:
    _publish_schema(app)

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        denied = await key_problem(request)
        if denied is not None:
            return problem_response(denied, request)
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"])
        # A body that is not JSON at all is malformed (400); JSON against the schema, invalid.
        status, title = (
            (400, "Malformed JSON") if first["type"] == "json_invalid" else (422, "Invalid request")
        )
        return problem_response(
            Problem(status, title, detail=f"{where}: {first['msg']}", errors=errors), request
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        denied = await key_problem(request) if exc.status_code < 500 else None
        if denied is not None:
            return problem_response(denied, request)
        detail = exc.detail if isinstance(exc.detail, str) else None
        title = HTTPStatus(exc.status_code).phrase
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return problem_response(
            Problem(exc.status_code, title, detail=detail, headers=headers or None), request
        )

    @app.exception_handler(SQLAlchemyError)
    @app.exception_handler(StoreUnavailable)
    async def _store_down(request: Request, exc: Exception) -> JSONResponse:
        # The message may name hosts or SQL; it goes to the log, not to the caller.
        log.error("store unavailable on %s %s: %s", request.method, request.url.path, exc)
        return problem_response(
            Problem(503, "Store unavailable", detail=STORE_DOWN),
            request,
        )

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(Problem(500, detail="internal error; it has been logged"), request)


def _publish_schema(app: FastAPI) -> None:
    """Complete the OpenAPI document: the Problem schema the error responses refer to, and the
    Bearer key scheme on every operation that can answer 401 (the key is checked by a plain
    dependency, which FastAPI cannot see as a security scheme)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = generate()
            components = doc.setdefault("components", {})
            components.setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
            components.setdefault("securitySchemes", {})["apiKey"] = {
                "type": "http",
                "scheme": "bearer",
                "description": "An API key from `bastion key create`, with the scope the "
                "operation needs: hash, match (scan, lookup), curate, export, review, media, "
                "report, vouchers, exchange or feed; admin implies all (README, API keys).",
            }
            for item in doc.get("paths", {}).values():
                for op in item.values():
                    if isinstance(op, dict) and "401" in op.get("responses", {}):
                        op.setdefault("security", [{"apiKey": []}])
            hoist_defs(doc)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
