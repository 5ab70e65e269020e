"""``bastion key``: create, list and revoke API keys. Creation and revocation are audited with the
operating-system user as actor (``cli:<user>``)."""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import Annotated, Any

import typer

from bastion.banks.model import utcnow
from bastion.cli._context import CliContext, FormatOpt, err, usage_error
from bastion.keys import ADMIN, SCOPES, ApiKey, key_user, parse_scopes
from bastion.render import OutputFormat, emit

key_app = typer.Typer(
    help=f"Manage API keys (scopes: {', '.join(SCOPES)}; admin implies all).",
    no_args_is_help=True,
)


def _status(key: ApiKey) -> str:
    if key.revoked_at is not None:
        return "revoked"
    if not key.is_active(utcnow()):
        return "expired"
    return "active"


def _iso(value: Any) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


def _when(value: Any) -> str | None:
    """Minutes are enough in a table, and keep it narrow."""
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else None


@key_app.command("create")
def key_create(
    ctx: typer.Context,
    name: Annotated[
        str,
        typer.Argument(
            help="Unique key name, e.g. the client it is for. USER@LABEL is short for "
            "LABEL-style naming with --user USER."
        ),
    ],
    scopes: Annotated[
        list[str],
        typer.Option(
            "--scopes",
            "-s",
            help=f"Comma-separated scopes from: {', '.join(SCOPES)} (repeatable).",
        ),
    ],
    expires_in: Annotated[
        int | None,
        typer.Option("--expires-in", min=1, max=36_500, help="Days until the key expires."),
    ] = None,
    feeds: Annotated[
        list[str] | None,
        typer.Option(
            "--feed",
            help="With the feed scope: a published feed the key may read (repeat). A feed key "
            "reads no feed until granted one (here or with `bastion feed grant`).",
        ),
    ] = None,
    user: Annotated[
        str | None,
        typer.Option(
            "--user",
            help="Bind the key to this console user: it acts as them on /v1/cases (scopes "
            "review, media). Only an operator on the host (here) or the user themself (the "
            "console's My API keys page) may bind a key to a user.",
        ),
    ] = None,
) -> None:
    """Create a key and print its token alone on the last line of stdout (shown only once)."""
    from bastion.feeds.store import FEED_SCOPE, FeedStore
    from bastion.store import StoreError

    cli = CliContext.of(ctx)
    try:
        scope_set = parse_scopes(scopes)
    except ValueError as exc:
        raise usage_error(str(exc)) from exc
    if feeds and FEED_SCOPE not in scope_set:
        raise usage_error(f"--feed grants feeds to a key with the {FEED_SCOPE!r} scope")
    expires_at = utcnow() + timedelta(days=expires_in) if expires_in else None
    failed = None
    with cli.open_store() as store:
        grants = FeedStore(store, None)
        for feed in feeds or ():
            grants.get(feed)  # a typo is a usage error before any key exists
        key, token = store.create_api_key(
            name,
            scope_set,
            expires_at=expires_at,
            actor=cli.actor,
            user=user if user is not None else key_user(name),
        )
        if feeds:
            try:
                grants.grant(key.name, feeds, actor=cli.actor)
            except StoreError as exc:  # a feed removed meanwhile: the key reads nothing
                failed = str(exc)
    until = f", expires {_iso(key.expires_at)}" if key.expires_at else ""
    until += f", acts as console user {key.user}" if key.user else ""
    reads = f", reads feeds {','.join(sorted({f.lower() for f in feeds}))}" if feeds else ""
    reads = "" if failed else reads
    err.print(
        f"created API key [bold]{key.name}[/bold] (id {key.key_id}, scopes "
        f"{','.join(sorted(key.scopes))}{until}{reads}). Store the token now: it is not shown "
        "again."
    )
    if failed or (FEED_SCOPE in key.scopes and ADMIN not in key.scopes and not feeds):
        why = f" (granting its feeds failed: {failed})" if failed else ""
        err.print(
            f"[yellow]warning[/yellow] the key reads no feed until granted one{why}: "
            f"`bastion feed grant {key.name} FEED`"
        )
    sys.stdout.write(token + "\n")
    sys.stdout.flush()
    if failed:
        raise typer.Exit(1)


@key_app.command("list")
def key_list(ctx: typer.Context, fmt: FormatOpt = OutputFormat.TABLE) -> None:
    """List keys (never their secrets), revoked and expired ones included."""
    with CliContext.of(ctx).open_store() as store:
        keys = store.list_api_keys()
    when = _iso if fmt is not OutputFormat.TABLE else _when
    rows = [
        {
            "name": k.name,
            "key_id": k.key_id,
            "scopes": sorted(k.scopes),
            "user": k.user,
            "status": _status(k),
            "created_at": when(k.created_at),
            "last_used_at": when(k.last_used_at),
            "expires_at": when(k.expires_at),
            "revoked_at": when(k.revoked_at),
        }
        for k in keys
    ]
    columns = [
        "name",
        "key_id",
        "scopes",
        *(["user"] if fmt is not OutputFormat.TABLE or any(k.user for k in keys) else []),
        "status",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    ]
    emit(rows, fmt, columns, sys.stdout)


@key_app.command("revoke")
def key_revoke(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Name of the key to revoke.")],
) -> None:
    """Revoke a key at once; its row stays for the record."""
    cli = CliContext.of(ctx)
    with cli.open_store() as store:
        key = store.revoke_api_key(name, actor=cli.actor)
    err.print(f"revoked API key [bold]{key.name}[/bold] (id {key.key_id})")
