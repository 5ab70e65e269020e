"""Log in, log out, the root redirect and the console's static files."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request, Response

from bastion.runtime import RuntimeDep
from bastion.vocab import ROLES
from bastion.web.base import (
    COOKIE,
    CSRF_FIELD,
    HERE,
    LOGIN_COOKIE,
    ConsoleRoute,
    Ctx,
    PageError,
    action,
    check_origin,
    home_for,
    new_token,
    optional_session,
    redirect,
    remote_addr,
    render,
    safe_next,
    secure_transport,
    tokens_equal,
)

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

#: Longer input is refused before hashing: argon2 of a megabyte is a cheap way to burn CPU.
MAX_PASSWORD = 1024
LOGIN_FAILED = "Login failed. Check the name and password, or wait a few minutes and retry."


@router.get("/")
def root(request: Request) -> Response:
    ctx = optional_session(request)
    return redirect(home_for(ctx.role) if ctx else "/login")


def _login_page(
    request: Request, *, error: str = "", status: int = 200, next_url: str = "", name: str = ""
) -> Response:
    token = new_token()
    response = render(
        "login.html",
        None,
        request=request,
        status=status,
        login_csrf=token,
        error=error,
        next_url=safe_next(next_url) or "",
        name=name,
    )
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=secure_transport(request),
        path="/login",
        max_age=3600,
    )
    return response


@router.get("/login")
def login_form(request: Request, next: str = "") -> Response:
    ctx = optional_session(request)
    if ctx is not None:
        return redirect(safe_next(next) or home_for(ctx.role))
    return _login_page(request, next_url=next)


@router.post("/login")
def login(
    request: Request,
    rt: RuntimeDep,
    name: Annotated[str, Form(max_length=200)] = "",
    password: Annotated[str, Form(max_length=MAX_PASSWORD)] = "",
    csrf_token: Annotated[str, Form(alias=CSRF_FIELD, max_length=200)] = "",
    next: Annotated[str, Form(max_length=600)] = "",
) -> Response:
    from bastion.accounts.model import LoginFailed, LoginThrottled

    check_origin(request)
    if not tokens_equal(request.cookies.get(LOGIN_COOKIE, ""), csrf_token):
        return _login_page(
            request,
            error="The login form expired. Please try again.",
            status=403,
            next_url=next,
            name=name,
        )
    try:
        user = rt.accounts.authenticate(name, password, remote_addr=remote_addr(request))
    except LoginThrottled as exc:
        # Refused before any password was hashed; the same answer whatever name was tried.
        wait = exc.retry_after(datetime.now(UTC))
        error = f"Too many failed logins from your address. Try again in {wait} seconds."
        response = _login_page(request, error=error, status=429, next_url=next, name=name)
        response.headers["Retry-After"] = str(wait)
        return response
    except LoginFailed:
        return _login_page(request, error=LOGIN_FAILED, status=401, next_url=next, name=name)
    if user.role not in ROLES:
        raise PageError(403, "Not allowed", "This account has no console role.")
    old = request.cookies.get(COOKIE)
    if old and len(old) <= 512:
        rt.accounts.end_session(old, remote_addr=remote_addr(request))
    token, _csrf = rt.accounts.create_session(
        user,
        remote_addr=remote_addr(request),
        hours=rt.settings.session_hours,
        idle_minutes=rt.settings.session_idle_minutes,
    )
    response = redirect(safe_next(next) or home_for(user.role))
    secure = secure_transport(request)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=secure, path="/")
    response.delete_cookie(LOGIN_COOKIE, path="/login", secure=secure)
    return response


@router.post("/logout")
def logout(ctx: Annotated[Ctx, Depends(action(*ROLES))]) -> Response:
    ctx.rt.accounts.end_session(ctx.token, remote_addr=ctx.remote_addr)
    response = redirect("/login")
    response.delete_cookie(
        COOKIE, path="/", httponly=True, samesite="strict", secure=secure_transport(ctx.request)
    )
    return response


# -- static files -------------------------------------------------------------------------------

_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


def _load_static() -> dict[str, tuple[bytes, str, str]]:
    files: dict[str, tuple[bytes, str, str]] = {}
    for path in sorted((HERE / "static").iterdir()):
        if path.is_file() and path.suffix in _TYPES:
            data = path.read_bytes()
            etag = '"' + hashlib.sha256(data).hexdigest()[:20] + '"'
            files[path.name] = (data, _TYPES[path.suffix], etag)
    return files


_STATIC = _load_static()


@router.get("/static/{name}")
def static(name: str, request: Request) -> Response:
    """Only the files shipped in bastion/web/static, by exact name (no paths)."""
    found = _STATIC.get(name)
    if found is None:
        raise PageError(404, "Not found")
    data, media_type, etag = found
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=media_type, headers=headers)
