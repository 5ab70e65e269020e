"""Admin pages for hash-list exchanges: what each one last did, what went wrong, and a way to
ask the worker for a sync now. Adding an exchange and its credentials stays on the CLI
(`bastion exchange add`), where secrets never pass through a browser form."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Response

from bastion.web.base import (
    ADMINS,
    ConsoleRoute,
    Ctx,
    PageError,
    action,
    page,
    redirect,
    render,
)

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

Admin = Annotated[Ctx, Depends(page(*ADMINS))]
AdminAction = Annotated[Ctx, Depends(action(*ADMINS))]


@router.get("/admin/exchanges")
def exchanges(ctx: Admin, saved: str = "") -> Response:
    listed = ctx.rt.exchanges.list()
    # Only a real exchange's name is echoed, so a crafted link cannot put words on the page.
    saved = saved if saved in {x.name for x in listed} else ""
    return render("admin/exchanges.html", ctx, exchanges=listed, saved=saved)


@router.get("/admin/exchanges/{name}")
def exchange(ctx: Admin, name: str) -> Response:
    store = ctx.rt.exchanges
    info = store.get(name)
    return render(
        "admin/exchange.html",
        ctx,
        x=info,
        runs=store.runs(info.name, limit=20),
        errors=store.errors(info.name, limit=50),
        attestations=store.attestations(info.name, limit=10),
        feedback=store.feedback(info.name, limit=50),
    )


@router.post("/admin/exchanges/{name}/sync")
def sync_now(ctx: AdminAction, name: str) -> Response:
    if not ctx.rt.exchanges.get(name).enabled:
        raise PageError(409, "Exchange disabled", "Enable the exchange before asking for a sync.")
    info = ctx.rt.exchanges.request_sync(name, actor=ctx.actor)
    return redirect(f"/admin/exchanges?saved={info.name}")


@router.post("/admin/exchanges/{name}/enabled")
def enabled(ctx: AdminAction, name: str, enabled: Annotated[str, Form()]) -> Response:
    if enabled not in ("0", "1"):
        raise PageError(400, "Invalid form", "expected 0 or 1")
    info = ctx.rt.exchanges.update(name, enabled=enabled == "1", actor=ctx.actor)
    return redirect(f"/admin/exchanges?saved={info.name}")
