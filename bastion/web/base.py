"""The console's frame: templates, the session cookie, CSRF, role checks and security headers.

Pages are server-rendered Jinja2 (autoescaped). Every console route uses ``ConsoleRoute``, which
turns the console's own errors (and the domain stores') into an HTML page or a JSON problem and
puts the security headers on every response, redirects and errors included: a page that shows
abuse material must never be framed, cached, sniffed or fed a script from anywhere but us.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import jinja2
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from markupsafe import Markup
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from bastion.errors import PROBLEM_JSON, http_error
from bastion.http_auth import client_address, trusted
from bastion.runtime import Runtime, runtime
from bastion.store import StoreError
from bastion.vocab import ADMIN, AUDITOR, REVIEWER, SENIOR_REVIEWER
from bastion.web.events import describe as describe_event

log = logging.getLogger("bastion.web")

HERE = Path(__file__).parent
COOKIE = "bastion_session"
LOGIN_COOKIE = "bastion_login_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"

#: Who may use each part of the console.
REVIEWERS = (ADMIN, SENIOR_REVIEWER, REVIEWER)
ADMINS = (ADMIN,)
AUDITORS = (ADMIN, AUDITOR)

CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        "media-src 'self' blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
#: Sent whenever cookies are Secure: a browser that reached the console over HTTPS keeps to it.
HSTS = "max-age=31536000"
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
}


# -- templates ----------------------------------------------------------------------------------


def _when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _ago(value: datetime | None, now: datetime | None = None) -> str:
    """'in 3 h' / '2 h ago': SLA and lease times read faster as distances than as clock times."""
    if value is None:
        return "-"
    now = now or datetime.now(UTC)
    seconds = (value - now).total_seconds()
    span = abs(seconds)
    if span < 90:
        text = f"{int(span)} s"
    elif span < 90 * 60:
        text = f"{round(span / 60)} min"
    elif span < 48 * 3600:
        text = f"{round(span / 3600)} h"
    else:
        text = f"{round(span / 86400)} d"
    return f"in {text}" if seconds >= 0 else f"{text} ago"


templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _ts(value: datetime | None) -> Markup:
    """A time the page shows in the reader's own time zone (console.js), UTC on hover."""
    if value is None:
        return Markup("-")
    utc = value.astimezone(UTC)
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        utc.isoformat(timespec="seconds"), _when(utc), _when(utc)
    )


templates.filters["when"] = _when
templates.filters["ago"] = _ago
templates.filters["ts"] = _ts
templates.filters["describe"] = describe_event


# -- errors -------------------------------------------------------------------------------------


class LoginRequired(Exception):
    """No valid session: pages redirect to /login, media and JSON answer 401."""


class PageError(Exception):
    """An error shown to the console user as a page (or a JSON problem on JSON routes)."""

    def __init__(self, status: int, title: str, message: str = "") -> None:
        super().__init__(message or title)
        self.status = status
        self.title = title
        self.message = message


def forbidden(message: str = "Your role does not allow this page.") -> PageError:
    return PageError(403, "Not allowed", message)


def not_found(message: str = "There is nothing here, or it is not yours to see.") -> PageError:
    return PageError(404, "Not found", message)


def page_error(exc: BaseException) -> PageError | None:
    if isinstance(exc, PageError):
        return exc
    row = http_error(exc)
    if row is not None and row.private:
        log.error("store unavailable: %s", exc)
        return PageError(503, "Store unavailable", "The database is unavailable; retry later.")
    if row is not None:
        return PageError(row.page_status, row.page_title, str(exc))
    if isinstance(exc, RequestValidationError):
        fields = sorted({str(e.get("loc", ("", "?"))[-1]) for e in exc.errors()})
        return PageError(400, "Invalid form", f"Check the field(s): {', '.join(fields)}.")
    if isinstance(exc, StarletteHTTPException) and exc.status_code < 500:
        return PageError(exc.status_code, "Error", str(exc.detail or ""))
    return None


# -- route class --------------------------------------------------------------------------------


def secure(response: Response) -> Response:
    """The security headers, and no caching unless the route chose otherwise (static files)."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("Cache-Control", "no-store")
    return response


class ConsoleRoute(APIRoute):
    """Answers errors as HTML pages and adds the security headers to every response."""

    json_errors = False

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        json_errors = self.json_errors

        async def console_handler(request: Request) -> Response:
            try:
                response = await handler(request)
            except LoginRequired:
                if json_errors:
                    response = _problem(401, "Unauthorized", "log in to the console first")
                else:
                    target = request.url.path
                    if request.method == "GET" and request.url.query:
                        target += "?" + request.url.query
                    response = RedirectResponse(f"/login?next={quote(target)}", status_code=303)
            except Exception as exc:
                error = page_error(exc)
                if error is None:
                    log.exception("unhandled console error on %s %s", request.method, request.url)
                    error = PageError(500, "Error", "Something went wrong; it has been logged.")
                if json_errors:
                    response = _problem(error.status, error.title, error.message)
                else:
                    response = await run_in_threadpool(render_error, request, error)
            if secure_transport(request):
                response.headers.setdefault("Strict-Transport-Security", HSTS)
            return secure(response)

        return console_handler


class ConsoleJsonRoute(ConsoleRoute):
    """Media and fetch() endpoints: errors as JSON problems, 401 instead of a redirect."""

    json_errors = True


def _problem(status: int, title: str, detail: str) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


# -- session context ----------------------------------------------------------------------------


@dataclass
class Ctx:
    """The logged-in console user of one request."""

    request: Request
    rt: Runtime
    user: Any  # bastion.accounts.store.User
    session: Any  # bastion.accounts.store.Session
    token: str

    @property
    def name(self) -> str:
        return str(self.user.name)

    @property
    def role(self) -> str:
        return str(self.user.role)

    @property
    def actor(self) -> str:
        return f"user:{self.user.name}"

    @property
    def csrf(self) -> str:
        return str(self.session.csrf_token)

    @property
    def viewer(self) -> Any:
        from bastion.review import Viewer

        return Viewer(name=self.user.name, role=self.user.role, queues=tuple(self.user.queues))

    @property
    def remote_addr(self) -> str | None:
        return remote_addr(self.request)

    def can(self, *roles: str) -> bool:
        return self.role in roles


def secure_transport(request: Request) -> bool:
    """Whether the console's cookies are ``Secure`` and its answers carry HSTS: the
    ``cookie_secure`` setting when given; else yes unless Bastion serves on a loopback address
    (``Settings.secure_cookies``), and yes for a request that came over HTTPS, directly or as
    a trusted proxy's ``X-Forwarded-Proto`` says."""

    settings = runtime(request).settings
    if settings.cookie_secure is not None or settings.secure_cookies:
        return settings.secure_cookies
    if request.url.scheme == "https":
        return True
    peer = request.client.host if request.client else None
    if peer is None or not trusted(peer, settings.trusted_proxies):
        return False
    proto = request.headers.get("x-forwarded-proto", "").split(",")[-1]
    return proto.strip().lower() == "https"


def remote_addr(request: Request) -> str | None:

    return client_address(request, runtime(request).settings)


async def _session(request: Request) -> Ctx:
    token = request.cookies.get(COOKIE, "")
    if not token or len(token) > 512:
        raise LoginRequired()
    rt = runtime(request)
    session = await run_in_threadpool(rt.accounts.get_session, token)
    if session is None:
        raise LoginRequired()
    return Ctx(request=request, rt=rt, user=session.user, session=session, token=token)


def check_origin(request: Request) -> None:
    """Refuse cross-site posts the browser tells us about, on top of the CSRF token and the
    SameSite=Strict cookie. ``Sec-Fetch-Site`` (set by the browser, not by page scripts) decides
    when present; it also survives a proxy that rewrites ``Host``. Older browsers send only
    ``Origin``, compared with ``Host``. Under Referrer-Policy: no-referrer browsers send
    ``Origin: null`` with form posts, ours included, so that value proves nothing either way."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        if site not in ("same-origin", "none"):
            raise PageError(403, "Refused", "Cross-site requests are not accepted.")
        return
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        host = request.headers.get("host", "")
        if urlsplit(origin).netloc.lower() != host.lower():
            raise PageError(403, "Refused", "Cross-origin requests are not accepted.")


async def submitted_token(request: Request) -> str:
    header = request.headers.get(CSRF_HEADER)
    if header is not None:
        return header
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        return value if isinstance(value, str) else ""
    return ""


def tokens_equal(a: str, b: str) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(a.encode(), b.encode())


def _denied(ctx: Ctx) -> PageError:
    """Refuse a role, recording the attempt (``access.denied``) like the stores do theirs."""
    # The refusal stands whether or not it could be recorded.
    with contextlib.suppress(StoreError, SQLAlchemyError):
        ctx.rt.store.record_audit(
            actor=ctx.actor,
            action="access.denied",
            target=ctx.request.url.path[:2000],
            detail={"attempted": ctx.request.method, "role": ctx.role},
            remote_addr=ctx.remote_addr,
        )
    return forbidden()


def page(*roles: str) -> Callable[[Request], Awaitable[Ctx]]:
    """A dependency: a logged-in user whose role is one of ``roles`` (GET pages)."""

    async def dependency(request: Request) -> Ctx:
        ctx = await _session(request)
        if ctx.role not in roles:
            raise await run_in_threadpool(_denied, ctx)
        return ctx

    return dependency


def action(*roles: str) -> Callable[[Request], Awaitable[Ctx]]:
    """A dependency for state changes: ``page(*roles)`` plus the session's CSRF token (form
    field or X-CSRF-Token header) and a same-origin request."""

    async def dependency(request: Request) -> Ctx:
        ctx = await _session(request)
        check_origin(request)
        if not tokens_equal(await submitted_token(request), ctx.csrf):
            raise PageError(403, "Refused", "The form has expired or did not come from here.")
        if ctx.role not in roles:
            raise await run_in_threadpool(_denied, ctx)
        return ctx

    return dependency


def optional_session(request: Request) -> Ctx | None:
    """The session if there is one (login page, root redirect); never raises for a bad one."""
    token = request.cookies.get(COOKIE, "")
    if not token or len(token) > 512:
        return None
    rt = runtime(request)
    session = rt.accounts.get_session(token)
    if session is None:
        return None
    return Ctx(request=request, rt=rt, user=session.user, session=session, token=token)


def home_for(role: str) -> str:
    return "/audit" if role == "auditor" else "/cases"


# -- rendering ----------------------------------------------------------------------------------


def nav_for(ctx: Ctx | None) -> list[tuple[str, str]]:
    if ctx is None:
        return []
    links: list[tuple[str, str]] = []
    if ctx.can(*REVIEWERS):
        links.append(("/cases", "Queue"))
        links.append(("/account/keys", "My API keys"))
    if ctx.can("admin", "senior_reviewer"):
        links.append(("/reports", "Reports"))
        links.append(("/team", "Team"))
    if ctx.can(*ADMINS):
        links += [
            ("/admin/banks", "Banks"),
            ("/admin/keys", "Keys"),
            ("/admin/users", "Users"),
            ("/admin/policy", "Policy"),
            ("/admin/exchanges", "Exchanges"),
            ("/admin/ncmec", "NCMEC"),
        ]
    if ctx.can(*AUDITORS):
        links += [("/admin/outbox", "Outbox"), ("/audit", "Audit log")]
    return links


def exposure(ctx: Ctx) -> dict[str, int] | None:
    if not ctx.can(*REVIEWERS):
        return None
    return {
        "count": int(ctx.rt.accounts.exposure_today(ctx.name)),
        "limit": int(ctx.rt.settings.exposure_soft_limit),
    }


def dead_deliveries(ctx: Ctx) -> int:
    """Dead outbox rows, for the header alert of those who see the outbox: an action the
    platform never received (a removal, a restriction) must not wait unnoticed."""
    if not ctx.can(*AUDITORS):
        return 0
    try:
        return int(ctx.rt.outbox.stats().counts.get("dead", 0))
    except (StoreError, SQLAlchemyError):
        return 0


def render(
    template: str,
    ctx: Ctx | None,
    /,
    *,
    status: int = 200,
    request: Request | None = None,
    **values: Any,
) -> HTMLResponse:
    """Render a page with the frame's values: user, nav, CSRF token, exposure counter."""
    request = request or (ctx.request if ctx else None)
    html = templates.get_template(template).render(
        ctx=ctx,
        user=ctx.user if ctx else None,
        csrf=ctx.csrf if ctx else "",
        nav=nav_for(ctx),
        path=request.url.path if request else "",
        exposure=exposure(ctx) if ctx else None,
        dead_deliveries=dead_deliveries(ctx) if ctx else 0,
        **values,
    )
    return HTMLResponse(html, status_code=status)


def render_error(request: Request, error: PageError) -> HTMLResponse:
    try:
        ctx = optional_session(request)
    except Exception:  # the store may be what failed
        ctx = None
    try:
        return render(
            "error.html",
            ctx,
            status=error.status,
            request=request,
            error=error,
        )
    except Exception:
        log.exception("could not render the error page")
        return HTMLResponse(
            f"<!doctype html><title>{error.status}</title><h1>{error.status}</h1>",
            status_code=error.status,
        )


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def safe_next(value: str | None) -> str | None:
    """A local path to go to after login; anything else (another host, //x, \\x) is ignored."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return None
    if any(c in value for c in "\r\n\\") or len(value) > 512:
        return None
    return value


def new_token() -> str:
    return secrets.token_urlsafe(32)
