"""Admin pages (banks, API keys, users, policy, outbox) and the audit log.

Admins only, except the outbox and the audit log, which auditors read too (nothing there
carries content). Every change is a CSRF-checked POST and is audited: by the store call itself
where it takes an actor, else here right after it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Response

from bastion import pipeline
from bastion.accounts.store import UserExists
from bastion.feeds.store import FEED_SCOPE
from bastion.keys import SCOPES, parse_scopes
from bastion.policy import PolicyError
from bastion.store import InvalidInput, StoreError
from bastion.vocab import ROLES
from bastion.web.base import (
    ADMINS,
    AUDITORS,
    REVIEWERS,
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
Auditor = Annotated[Ctx, Depends(page(*AUDITORS))]
Name = Annotated[str, Form(min_length=1, max_length=64)]


def _audit(ctx: Ctx, action_name: str, target: str, **detail: Any) -> None:
    ctx.rt.store.record_audit(
        actor=ctx.actor,
        action=action_name,
        target=target,
        detail=detail or None,
        remote_addr=ctx.remote_addr,
    )


def _flag(value: str) -> bool:
    if value not in ("0", "1"):
        raise PageError(400, "Invalid form", "expected 0 or 1")
    return value == "1"


# -- banks --------------------------------------------------------------------------------------


@router.get("/admin/banks")
def banks(ctx: Admin, saved: str = "") -> Response:
    listed = ctx.rt.store.list_banks()
    # Only a real bank's name is echoed, so a crafted link cannot put words on the page.
    saved = saved if saved in {b.name for b in listed} else ""
    held = ctx.rt.store.quarantined()
    return render("admin/banks.html", ctx, banks=listed, saved=saved, quarantined=held)


@router.post("/admin/quarantine/{entry}/{outcome}")
def resolve_quarantine(
    ctx: AdminAction,
    entry: int,
    outcome: str,
    reason: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """One click ends a flood quarantine: ``dispute`` disables the entry (a colliding or
    poisoned hash), ``release`` lets it act again. Audited by the store in the same
    transaction."""
    if outcome not in ("dispute", "release"):
        raise PageError(404, "Not found", "no such action")
    done = pipeline.resolve_quarantine(
        ctx.rt,
        entry,
        "disputed" if outcome == "dispute" else "released",
        actor=ctx.actor,
        reason=reason,
        remote_addr=ctx.remote_addr,
    )
    return redirect(f"/admin/banks?saved={done.bank}")


@router.post("/admin/banks/{name}/enabled")
def bank_enabled(ctx: AdminAction, name: str, enabled: Annotated[str, Form()]) -> Response:
    on = _flag(enabled)
    bank = ctx.rt.store.set_bank_enabled(name, on)
    # Store.update_bank takes no actor: the audit record follows the change.
    _audit(ctx, "bank.enable" if on else "bank.disable", f"bank:{bank.name}")
    return redirect(f"/admin/banks?saved={bank.name}")


# -- API keys -----------------------------------------------------------------------------------


def _keys_page(ctx: Ctx, *, status: int = 200, **values: Any) -> Response:
    values.setdefault("created", None)
    values.setdefault("token", None)
    values.setdefault("error", "")
    granted: dict[str, list[str]] = {}
    for g in ctx.rt.feeds.grants():
        granted.setdefault(g.key, []).append(g.feed)
    return render(
        "admin/keys.html",
        ctx,
        status=status,
        keys=ctx.rt.store.list_api_keys(),
        scopes=SCOPES,
        feeds=[f.name for f in ctx.rt.feeds.list()],
        granted=granted,
        now=datetime.now(UTC),
        **values,
    )


@router.get("/admin/keys")
def keys(ctx: Admin) -> Response:
    return _keys_page(ctx)


@router.post("/admin/keys")
def create_key(
    ctx: AdminAction,
    name: Name,
    scopes: Annotated[list[str], Form()],
    expires_days: Annotated[int, Form(ge=0, le=3650)] = 0,
    feeds: Annotated[list[str] | None, Form()] = None,
) -> Response:
    """The token is shown on this response only (never in a URL, never stored). A key with the
    ``feed`` scope reads only the ``feeds`` ticked here (grants, audited)."""
    wanted = sorted({f.lower() for f in feeds or ()})
    if wanted:
        try:
            feed_key = FEED_SCOPE in parse_scopes(scopes)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        if not feed_key:
            raise InvalidInput(f"feeds are granted to keys with the {FEED_SCOPE!r} scope")
        unknown = sorted(set(wanted) - {f.name for f in ctx.rt.feeds.list()})
        if unknown:
            raise InvalidInput(f"no feed named {', '.join(map(repr, unknown))}")
    expires = datetime.now(UTC) + timedelta(days=expires_days) if expires_days else None
    key, token = ctx.rt.store.create_api_key(
        name, scopes, expires_at=expires, actor=ctx.actor, remote_addr=ctx.remote_addr
    )
    error = ""
    if wanted:
        try:
            ctx.rt.feeds.grant(key.name, wanted, actor=ctx.actor, remote_addr=ctx.remote_addr)
        except StoreError as exc:  # a feed removed meanwhile: the key reads nothing
            error = f"The key was created, but granting its feeds failed: {exc}"
    return _keys_page(ctx, created=key, token=token, error=error)


@router.post("/admin/keys/{name}/revoke")
def revoke_key(ctx: AdminAction, name: str) -> Response:
    ctx.rt.store.revoke_api_key(name, actor=ctx.actor, remote_addr=ctx.remote_addr)
    return redirect("/admin/keys")


# -- users --------------------------------------------------------------------------------------


def _users_page(ctx: Ctx, *, status: int = 200, error: str = "", saved: str = "") -> Response:
    listed = ctx.rt.accounts.list_users()
    saved = saved if saved in {u.name for u in listed} else ""
    return render(
        "admin/users.html",
        ctx,
        status=status,
        users=listed,
        roles=ROLES,
        error=error,
        notice=f"Saved {saved}." if saved else "",
    )


@router.get("/admin/users")
def users(ctx: Admin, saved: str = "") -> Response:
    return _users_page(ctx, saved=saved)


def _queues(text: str) -> tuple[str, ...]:
    return tuple(q.strip() for q in text.replace("\n", ",").split(",") if q.strip())


@router.post("/admin/users")
def create_user(
    ctx: AdminAction,
    name: Name,
    role: Annotated[str, Form(max_length=32)],
    password: Annotated[str, Form(max_length=1024)],
    queues: Annotated[str, Form(max_length=4000)] = "default",
) -> Response:
    try:
        ctx.rt.accounts.create_user(
            name,
            role,
            password,
            _queues(queues) or ("default",),
            actor=ctx.actor,
            remote_addr=ctx.remote_addr,
        )
    except (ValueError, UserExists) as exc:  # bad name, role, queue, weak password, taken
        return _users_page(ctx, status=400, error=str(exc))
    return redirect(f"/admin/users?saved={name.lower()}")


@router.post("/admin/users/{name}/role")
def set_role(ctx: AdminAction, name: str, role: Annotated[str, Form(max_length=32)]) -> Response:
    if name.lower() == ctx.name and role != ctx.role:
        return _users_page(ctx, status=400, error="You cannot change your own role.")
    try:
        ctx.rt.accounts.set_role(name, role, actor=ctx.actor, remote_addr=ctx.remote_addr)
    except ValueError as exc:
        return _users_page(ctx, status=400, error=str(exc))
    return redirect(f"/admin/users?saved={name}")


@router.post("/admin/users/{name}/queues")
def set_queues(
    ctx: AdminAction, name: str, queues: Annotated[str, Form(max_length=4000)]
) -> Response:
    try:
        ctx.rt.accounts.set_queues(
            name, _queues(queues), actor=ctx.actor, remote_addr=ctx.remote_addr
        )
    except ValueError as exc:
        return _users_page(ctx, status=400, error=str(exc))
    return redirect(f"/admin/users?saved={name}")


@router.post("/admin/users/{name}/disabled")
def set_disabled(ctx: AdminAction, name: str, disabled: Annotated[str, Form()]) -> Response:
    off = _flag(disabled)
    if name.lower() == ctx.name and off:
        return _users_page(ctx, status=400, error="You cannot disable your own account.")
    try:
        ctx.rt.accounts.set_disabled(name, off, actor=ctx.actor, remote_addr=ctx.remote_addr)
    except ValueError as exc:  # the last active admin
        return _users_page(ctx, status=400, error=str(exc))
    return redirect(f"/admin/users?saved={name}")


@router.post("/admin/users/{name}/password")
def set_password(
    ctx: AdminAction, name: str, password: Annotated[str, Form(max_length=1024)]
) -> Response:
    try:
        ctx.rt.accounts.set_password(name, password, actor=ctx.actor, remote_addr=ctx.remote_addr)
    except ValueError as exc:
        return _users_page(ctx, status=400, error=str(exc))
    return redirect(f"/admin/users?saved={name}")


# -- policy -------------------------------------------------------------------------------------


def _policy_page(
    ctx: Ctx,
    *,
    status: int = 200,
    text: str | None = None,
    errors: list[tuple[int | None, str]] | None = None,
    saved: bool = False,
) -> Response:
    holder = ctx.rt.policy
    policy = holder.current()
    return render(
        "admin/policy.html",
        ctx,
        status=status,
        policy=policy,
        policy_path=str(holder.path),
        last_error=holder.last_error,
        text=policy.text if text is None else text,
        errors=errors or [],
        saved=saved,
        # How each risk detector held up in review, beside its parameters (counts only).
        records={p.detector: p for p in ctx.rt.review.detector_precision()},
    )


@router.get("/admin/policy")
def policy(ctx: Admin, saved: int = 0) -> Response:
    return _policy_page(ctx, saved=bool(saved))


@router.post("/admin/policy")
def save_policy(ctx: AdminAction, text: Annotated[str, Form(max_length=1_000_000)]) -> Response:
    # Browsers send a textarea's line breaks as CRLF; the file keeps the operator's LF.
    text = text.replace("\r\n", "\n")
    try:
        saved = ctx.rt.policy.save(text, ctx.actor)
    except PolicyError as exc:
        return _policy_page(ctx, status=400, text=text, errors=list(exc.errors))
    _audit(
        ctx,
        "policy.save",
        f"policy:{ctx.rt.policy.path}",
        digest=saved.digest,
        rules=len(saved.rules),
    )
    return redirect("/admin/policy?saved=1")


# -- outbox -------------------------------------------------------------------------------------


OUTBOX_STATES = ("pending", "delivering", "dead", "delivered")


@router.get("/admin/outbox")
def outbox(
    ctx: Auditor,
    state: Annotated[str, Query(max_length=16)] = "",
    before: Annotated[int, Query(ge=0)] = 0,
    retried: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> Response:
    if state and state not in OUTBOX_STATES:
        raise PageError(400, "Invalid filter", f"unknown outbox state {state!r}")
    limit = 100
    rows = ctx.rt.outbox.list(state=state or None, limit=limit + 1, before=before or None)
    more = len(rows) > limit
    rows = rows[:limit]
    return render(
        "admin/outbox.html",
        ctx,
        rows=rows,
        stats=ctx.rt.outbox.stats(),
        state=state,
        states=OUTBOX_STATES,
        next_before=rows[-1].id if more and rows else None,
        can_retry=ctx.can(*ADMINS),
        can_open_cases=ctx.can(*REVIEWERS),
        retried=retried,
    )


@router.post("/admin/outbox/retry")
def retry_many(
    ctx: AdminAction,
    ids: Annotated[list[int] | None, Form(max_length=1000)] = None,
    all_dead: Annotated[str, Form(alias="all", max_length=8)] = "",
) -> Response:
    """Retry the ticked dead deliveries, or every dead one (``all=1``); each is audited."""
    if not all_dead and not ids:
        raise PageError(400, "Nothing chosen", "Tick the dead deliveries to retry.")
    if ids and any(not 0 < i < 2**63 for i in ids):
        raise PageError(404, "Not found")
    done = ctx.rt.outbox.retry_dead(
        None if all_dead else ids, actor=ctx.actor, remote_addr=ctx.remote_addr
    )
    return redirect(f"/admin/outbox?state=pending&retried={len(done)}")


@router.post("/admin/outbox/{item_id}/retry")
def retry(ctx: AdminAction, item_id: int) -> Response:
    if not 0 < item_id < 2**63:
        raise PageError(404, "Not found")
    ctx.rt.outbox.retry(item_id, actor=ctx.actor, remote_addr=ctx.remote_addr)
    return redirect("/admin/outbox?state=pending")


# -- audit log ----------------------------------------------------------------------------------

#: Filtering by actor or target reads this many records back at most per page.
AUDIT_SCAN = 5000


def whole_target(wanted: str, target: str) -> bool:
    """Whether an audit record's ``target`` is ``wanted`` or a part of it: ``case:1`` finds
    ``case:1`` and ``case:1/item:3``, never ``case:15``. Empty finds everything."""
    wanted = wanted.strip()
    return not wanted or target == wanted or target.startswith(wanted + "/")


@router.get("/audit")
def audit(
    ctx: Auditor,
    action_: Annotated[str, Query(alias="action", max_length=64)] = "",
    actor: Annotated[str, Query(max_length=255)] = "",
    target: Annotated[str, Query(max_length=255)] = "",
    before: Annotated[int, Query(ge=0)] = 0,
    verify: Annotated[int, Query(ge=0, le=1)] = 0,
) -> Response:
    """Newest first. ``action`` is a prefix (``login`` → login.*); actor matches a substring,
    target a whole target (:func:`whole_target`), of the records read (at most AUDIT_SCAN per
    page)."""
    limit = 50
    store = ctx.rt.store
    prefix = action_.strip() or None
    cursor = before or None
    if not (actor or target):
        events = store.recent_audit(limit + 1, action=prefix, before_id=cursor)
        next_before = events[limit - 1].id if len(events) > limit else None
        scanned = None
    else:
        events, scanned = [], 0
        while len(events) <= limit and scanned < AUDIT_SCAN:
            batch = store.recent_audit(500, action=prefix, before_id=cursor)
            if not batch:
                cursor = None
                break
            scanned += len(batch)
            cursor = batch[-1].id
            events += [e for e in batch if actor in e.actor and whole_target(target, e.target)]
            if len(batch) < 500:  # the start of the log
                cursor = None
                break
        # More matches found: continue after the last one shown; scan budget spent: continue
        # where the scan stopped.
        next_before = events[limit - 1].id if len(events) > limit else cursor
    events = events[:limit]
    check = store.check_audit_chain() if verify else None
    return render(
        "audit.html",
        ctx,
        events=events,
        action=action_,
        actor=actor,
        target=target,
        next_before=next_before,
        check=check,
        scanned=scanned,
    )
