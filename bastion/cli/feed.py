"""``bastion feed``: publish banks to other Bastions as signed feeds.

``feed key`` prints this instance's public key and fingerprint: give both to subscribers out of
band (they pin the key; comparing the fingerprint over the phone defeats a swapped key). Then
``feed create NAME --bank B`` publishes a bank, and a ``feed``-scoped API key granted the feed
(``bastion key create NAME --scopes feed --feed FEED``, or ``feed grant KEY FEED`` later) lets a
subscriber read it; a feed key reads only the feeds granted to it. The worker signs a new
version within seconds of any change; ``feed publish`` does it at once. Subscribing is ``bastion
exchange add NAME --type bastion``. Commands act as ``cli:<os user>`` in the audit log.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from bastion.cli._context import CliContext, FormatOpt, err, usage_error
from bastion.render import OutputFormat, emit

feed_app = typer.Typer(
    help="Publish banks to other Bastions as signed feeds: key, create, list, publish, "
    "versions, disputes, grant, revoke, grants, remove.",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="Feed name.")]


@feed_app.callback()
def feed_main(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", envvar="BASTION_CONFIG", help="Config file (master key)."),
    ] = None,
) -> None:
    CliContext.of(ctx).config = config


@contextmanager
def open_feeds(cli: CliContext, *, signing: bool = False) -> Iterator[Any]:
    """The feed store of the CLI's database. ``signing``: load the master key. On a fresh
    instance (no feed key yet) it is created if missing, as the server and the exchange
    commands do; once a feed key exists it must be that key's (a new one could not open it)."""
    from bastion.config import ConfigError, Settings
    from bastion.crypto import MasterKey, MasterKeyError
    from bastion.feeds import KeyFormatError
    from bastion.feeds.store import FeedStore

    with cli.open_store() as store:
        try:
            settings = Settings.load(cli.config)
            store.use_settings_audit_keys(settings)
            settings = settings.in_data_dir(store.data_dir)
            key = None
            if signing:
                missing = (
                    not settings.secret_key and not Path(str(settings.secret_key_file)).exists()
                )
                if missing and FeedStore(store, None, settings).has_signing_key():
                    raise usage_error(
                        f"no master key: {settings.secret_key_file} does not exist, and this "
                        "instance's feed key is sealed under one (set secret_key or "
                        "secret_key_file to the server's key)"
                    )
                key = MasterKey.load(settings)  # made here on a fresh instance
        except (ConfigError, MasterKeyError) as exc:
            raise usage_error(str(exc)) from exc
        try:
            yield FeedStore(store, key, settings, actor=cli.actor)
        except KeyFormatError as exc:
            raise usage_error(str(exc)) from exc


def _when(value: Any) -> str | None:
    return None if value is None else value.isoformat()


@feed_app.command("key")
def feed_key(ctx: typer.Context, fmt: FormatOpt = OutputFormat.TABLE) -> None:
    """Print this instance's feed signing key (public half) and its fingerprint; made on first
    use. Give both to subscribers out of band: they pin the key."""
    cli = CliContext.of(ctx)
    with open_feeds(cli, signing=True) as feeds:
        public = feeds.public_key()
    if fmt is OutputFormat.TABLE:
        sys.stdout.write(f"public key:  {public.text}\nfingerprint: {public.fingerprint}\n")
    else:
        emit(
            [{"public_key": public.text, "fingerprint": public.fingerprint}],
            fmt,
            ["public_key", "fingerprint"],
            sys.stdout,
        )


@feed_app.command("create")
def feed_create(
    ctx: typer.Context,
    name: NameArg,
    bank: Annotated[list[str], typer.Option("--bank", "-b", help="A bank to publish (repeat).")],
    description: Annotated[str, typer.Option("--description", help="What the feed holds.")] = "",
    organisation: Annotated[
        str | None,
        typer.Option(
            "--organisation", help="Publisher name in the records (default: feed_organisation)."
        ),
    ] = None,
) -> None:
    """Publish banks as a feed. Do not rename a published bank: the feed names banks."""
    cli = CliContext.of(ctx)
    with open_feeds(cli) as feeds:
        feed = feeds.create(
            name, bank, description=description, organisation=organisation, actor=cli.actor
        )
    sys.stdout.write(
        f"feed {feed.name} created: banks {', '.join(feed.banks)}, publisher "
        f"{feed.organisation!r}. The worker signs its first version within seconds; "
        f"`bastion feed publish {feed.name}` does it now.\n"
    )


@feed_app.command("list")
def feed_list(ctx: typer.Context, fmt: FormatOpt = OutputFormat.TABLE) -> None:
    """Published feeds with their latest version."""
    cli = CliContext.of(ctx)
    with open_feeds(cli) as feeds:
        rows = []
        for f in feeds.list():
            latest = feeds.latest_version(f.name)
            rows.append(
                {
                    "name": f.name,
                    "publisher": f.organisation,
                    "banks": ",".join(f.banks),
                    "version": None if latest is None else latest.version,
                    "count": None if latest is None else latest.count,
                    "root": None if latest is None else latest.root,
                    "description": f.description,
                }
            )
    emit(rows, fmt, ["name", "publisher", "banks", "version", "count", "root", "description"],
         sys.stdout)  # fmt: skip


def _version_row(v: Any) -> dict[str, Any]:
    return {
        "version": v.version,
        "revision": v.revision,
        "count": v.count,
        "root": v.root,
        "created_at": _when(v.created_at),
        "key_fingerprint": v.key_fingerprint,
    }


_VERSION_COLUMNS = ["version", "revision", "count", "root", "created_at", "key_fingerprint"]


@feed_app.command("publish")
def feed_publish(
    ctx: typer.Context,
    name: NameArg,
    force: Annotated[
        bool, typer.Option("--force", help="Sign a new version even if nothing changed.")
    ] = False,
    fmt: FormatOpt = OutputFormat.TABLE,
) -> None:
    """Sign a new version now if the feed's banks changed since the last one."""
    cli = CliContext.of(ctx)
    with open_feeds(cli, signing=True) as feeds:
        made = feeds.publish(name, force=force, actor=cli.actor)
        latest = made or feeds.latest_version(name)
    if fmt is not OutputFormat.TABLE:
        emit([_version_row(latest)] if latest else [], fmt, _VERSION_COLUMNS, sys.stdout)
    elif made is None:
        version = latest.version if latest else "none"
        sys.stdout.write(f"feed {name}: unchanged since version {version}\n")
    else:
        sys.stdout.write(
            f"feed {name}: version {made.version}, {made.count} records, root {made.root}\n"
        )


@feed_app.command("versions")
def feed_versions(
    ctx: typer.Context,
    name: NameArg,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10_000)] = 20,
    fmt: FormatOpt = OutputFormat.TABLE,
) -> None:
    """Signed versions of a feed, newest first, with their Merkle roots."""
    cli = CliContext.of(ctx)
    with open_feeds(cli) as feeds:
        rows = [_version_row(v) for v in feeds.versions(name, limit=limit)]
    emit(rows, fmt, _VERSION_COLUMNS, sys.stdout)


@feed_app.command("disputes")
def feed_disputes(
    ctx: typer.Context,
    name: NameArg,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10_000)] = 100,
    fmt: FormatOpt = OutputFormat.TABLE,
) -> None:
    """Disputes and confirmations subscribers sent, newest first. The key is the entry id:
    ``bastion bank`` commands take it to disable an entry found wrong."""
    cli = CliContext.of(ctx)
    with open_feeds(cli) as feeds:
        rows = [
            {
                "id": r.id,
                "key": r.key,
                "kind": r.kind,
                "subscriber": r.subscriber,
                "reason": r.reason,
                "at": _when(r.created_at),
            }
            for r in feeds.feedback_rows(name, limit=limit)
        ]
    if fmt is OutputFormat.JSON:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    emit(rows, fmt, ["id", "key", "kind", "subscriber", "reason", "at"], sys.stdout)


@feed_app.command("remove")
def feed_remove(ctx: typer.Context, name: NameArg) -> None:
    """Stop publishing a feed (its versions and disputes go; the banks stay)."""
    cli = CliContext.of(ctx)
    with open_feeds(cli) as feeds:
        feeds.remove(name, actor=cli.actor)
    sys.stdout.write(f"feed {name} removed\n")


KeyArg = Annotated[str, typer.Argument(help="Name of a feed-scoped API key (`bastion key list`).")]
FeedsArg = Annotated[list[str], typer.Argument(help="Feed names.")]


@feed_app.command("grant")
def feed_grant(ctx: typer.Context, key: KeyArg, feeds: FeedsArg) -> None:
    """Let a feed-scoped API key read feeds (and dispute their records). Audited."""
    cli = CliContext.of(ctx)
    with open_feeds(cli) as store:
        made = store.grant(key, feeds, actor=cli.actor)
    held = sorted({f.lower() for f in feeds} - set(made))
    for name in made:
        sys.stdout.write(f"granted feed {name} to key {key.lower()}\n")
    if held:
        sys.stdout.write(f"key {key.lower()} already reads {', '.join(held)}\n")


@feed_app.command("revoke")
def feed_revoke(ctx: typer.Context, key: KeyArg, feeds: FeedsArg) -> None:
    """Take feeds away from an API key: it gets 404 for them from its next request. Audited."""
    cli = CliContext.of(ctx)
    with open_feeds(cli) as store:
        gone = store.revoke_grant(key, feeds, actor=cli.actor)
    for name in gone:
        sys.stdout.write(f"key {key.lower()} no longer reads feed {name}\n")
    rest = sorted({f.lower() for f in feeds} - set(gone))
    if rest:
        sys.stdout.write(f"key {key.lower()} was not granted {', '.join(rest)}\n")


@feed_app.command("grants")
def feed_grants(
    ctx: typer.Context,
    feed: Annotated[str | None, typer.Option("--feed", help="Only this feed.")] = None,
    key: Annotated[str | None, typer.Option("--key", help="Only this API key.")] = None,
    fmt: FormatOpt = OutputFormat.TABLE,
) -> None:
    """Which API keys read which feeds (admin keys read every feed). Warns about feed keys that
    read none, such as keys made before grants existed."""
    cli = CliContext.of(ctx)
    with open_feeds(cli) as store:
        rows = [
            {
                "feed": g.feed,
                "key": g.key,
                "key_id": g.key_id,
                "granted_by": g.granted_by,
                "granted_at": _when(g.granted_at),
            }
            for g in store.grants(key=key, feed=feed)
        ]
        idle = store.ungranted_keys() if feed is None and key is None else []
    emit(rows, fmt, ["feed", "key", "key_id", "granted_by", "granted_at"], sys.stdout)
    if idle:
        err.print(
            f"[yellow]warning[/yellow] feed keys with no grant read no feed: {', '.join(idle)} "
            "(`bastion feed grant KEY FEED`)"
        )
