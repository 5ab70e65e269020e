"""My API keys: a console user's own keys for ``/v1/cases`` (scopes ``review`` and ``media``).

A key bound to a user acts as that user: its claims, reveals and decisions are recorded as theirs
and count as theirs under four-eyes. So only the user themself makes one, here, logged in with
their own password (or an operator on the host with ``bastion key create --user``); an admin's
key form binds no key to anyone. The keys are named ``<user>@<label>``, limited to the two
scopes a person's review tooling needs, and their creation and revocation are audited with the
user as actor.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Response

from bastion.keys import USER_SEPARATOR
from bastion.store import InvalidInput, KeyNotFound
from bastion.web.base import REVIEWERS, ConsoleRoute, Ctx, action, page, redirect, render

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

#: What a person's own key may do: work their cases, and with ``media`` read what they reveal.
SELF_SCOPES = ("review", "media")

Reviewer = Annotated[Ctx, Depends(page(*REVIEWERS))]
ReviewerAction = Annotated[Ctx, Depends(action(*REVIEWERS))]


def _page(ctx: Ctx, *, status: int = 200, **values: Any) -> Response:
    values.setdefault("created", None)
    values.setdefault("token", None)
    return render(
        "account_keys.html",
        ctx,
        status=status,
        keys=ctx.rt.store.list_api_keys(user=ctx.name),
        scopes=SELF_SCOPES,
        prefix=f"{ctx.name}{USER_SEPARATOR}",
        now=datetime.now(UTC),
        **values,
    )


@router.get("/account/keys")
def my_keys(ctx: Reviewer) -> Response:
    return _page(ctx)


@router.post("/account/keys")
def create_my_key(
    ctx: ReviewerAction,
    label: Annotated[str, Form(min_length=1, max_length=63)],
    scopes: Annotated[list[str], Form()],
    expires_days: Annotated[int, Form(ge=0, le=3650)] = 0,
) -> Response:
    """A key acting as the logged-in user; its token is shown on this response only."""
    wanted = {s.strip().lower() for s in scopes if s.strip()}
    if not wanted <= set(SELF_SCOPES) or "review" not in wanted:
        raise InvalidInput(
            f"your own keys hold 'review' and optionally 'media', not {sorted(wanted)}"
        )
    expires = datetime.now(UTC) + timedelta(days=expires_days) if expires_days else None
    key, token = ctx.rt.store.create_api_key(
        f"{ctx.name}{USER_SEPARATOR}{label}",
        wanted,
        expires_at=expires,
        actor=ctx.actor,
        remote_addr=ctx.remote_addr,
        user=ctx.name,
    )
    return _page(ctx, created=key, token=token)


@router.post("/account/keys/{name}/revoke")
def revoke_my_key(ctx: ReviewerAction, name: str) -> Response:
    """Revoke one of the user's own keys (another's answers as a missing one)."""
    if name.lower() not in {k.name for k in ctx.rt.store.list_api_keys(user=ctx.name)}:
        raise KeyNotFound(f"no API key of yours named {name!r}")
    ctx.rt.store.revoke_api_key(name, actor=ctx.actor, remote_addr=ctx.remote_addr)
    return redirect("/account/keys")
