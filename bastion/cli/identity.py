"""``bastion identity``: sharing groups for identity signals, and identifiers into banks as keyed
hashes (docs/identity-signals.md). Every change and every key export is audited as
``cli:<user>``; identifiers are never stored, printed or logged, only their keyed hashes."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from bastion.banks import NewEntry
from bastion.cli._context import CliContext, FormatOpt, err, usage_error
from bastion.db import Store
from bastion.identity.model import Identifier, IdentifierError, identity_type
from bastion.identity.store import IdentityGroups, group_name, parse_key
from bastion.render import OutputFormat, emit

identity_app = typer.Typer(
    help="Identity signals: sharing groups and their keys, identifiers into banks as keyed hashes.",
    no_args_is_help=True,
)


@contextmanager
def open_groups(cli: CliContext) -> Iterator[tuple[IdentityGroups, Store]]:
    """The groups of the CLI's database, under the master key the server uses."""
    from bastion.config import ConfigError, Settings
    from bastion.crypto import MasterKey, MasterKeyError

    with cli.open_store() as store:
        try:
            settings = Settings.load(cli.config)
            store.use_settings_audit_keys(settings)
            key = MasterKey.load(settings.in_data_dir(store.data_dir))
        except (ConfigError, MasterKeyError, OSError) as exc:
            raise usage_error(str(exc)) from exc
        yield IdentityGroups(store, key), store


@identity_app.command("create")
def create(
    ctx: typer.Context,
    name: str,
    key_file: Annotated[
        Path | None,
        typer.Option(
            help="Join a group: a file holding the base64 key a member shared (never pass a key "
            "on the command line: shells keep history)."
        ),
    ] = None,
) -> None:
    """Make a sharing group with a fresh random key, or join one with --key-file."""
    cli = CliContext.of(ctx)
    key = None
    if key_file is not None:
        try:
            key = parse_key(key_file.read_text(encoding="ascii"))
        except (OSError, UnicodeError) as exc:
            raise usage_error(f"cannot read {str(key_file)!r}: {exc}") from exc
    with open_groups(cli) as (groups, _):
        group = groups.create(name, key=key, actor=cli.actor)
    err.print(f"identity group [bold]{escape(group.name)}[/bold], key id {group.key_id}")


@identity_app.command("list")
def list_groups(ctx: typer.Context, fmt: FormatOpt = OutputFormat.TABLE) -> None:
    """Sharing groups with their keys' public ids (compare them with partners)."""
    cli = CliContext.of(ctx)
    with open_groups(cli) as (groups, _):
        rows = [
            {
                "name": g.name,
                "key_id": g.key_id,
                "created_at": g.created_at.isoformat(timespec="seconds"),
                "created_by": g.created_by,
            }
            for g in groups.list()
        ]
    emit(rows, fmt, ["name", "key_id", "created_at", "created_by"], sys.stdout)


@identity_app.command("export-key")
def export_key(
    ctx: typer.Context,
    name: str,
    out: Annotated[Path, typer.Option(help="New file to write the base64 key to (mode 0600).")],
) -> None:
    """Write a group's key to a new private file, to hand to a partner joining the group over
    a safe channel. Audited (identity.group.key.export)."""
    from bastion.crypto import create_private_file

    cli = CliContext.of(ctx)
    if out.exists():
        raise usage_error(f"{str(out)!r} exists: give a new file")
    with open_groups(cli) as (groups, _):
        key = groups.export_key(name, actor=cli.actor)
    create_private_file(out, key.encode("ascii") + b"\n", "identity group key")
    err.print(f"wrote the key of {escape(group_name(name))} to {escape(str(out))}")


@identity_app.command("add")
def add(
    ctx: typer.Context,
    bank: str,
    group: Annotated[str, typer.Option(help="The sharing group whose key hashes them.")],
    kind: Annotated[str, typer.Option("--type", help="email, username, phone or ip.")],
    source: Annotated[Path, typer.Argument(help="File of identifiers, one a line (- for stdin).")],
    platform: Annotated[
        str | None, typer.Option(help="For usernames: the platform they are on.")
    ] = None,
    region: Annotated[
        str | None, typer.Option(help="For national phone numbers: their country (GB).")
    ] = None,
    label: Annotated[
        list[str] | None, typer.Option("--label", "-l", help="Label (repeatable).")
    ] = None,
) -> None:
    """Add identifiers to a bank as keyed hashes. A bad line is reported by its number (never
    its text) and skipped; the file itself is never copied anywhere."""
    cli = CliContext.of(ctx)
    try:
        st = identity_type(kind)
    except IdentifierError as exc:
        raise usage_error(str(exc)) from exc
    try:
        text = sys.stdin.read() if str(source) == "-" else source.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as exc:
        raise usage_error(f"cannot read {str(source)!r}: {exc}") from exc
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    idents = [Identifier(st, value, platform, region) for _, value in lines]
    with open_groups(cli) as (groups, store):
        digests = groups.hash(group, idents)
        entries, bad = [], 0
        for (n, _), value in zip(lines, digests, strict=True):
            if isinstance(value, IdentifierError):
                bad += 1
                err.print(f"line {n}: {escape(str(value))}")
                continue
            entries.append(
                NewEntry(
                    signal_type=st,
                    value=value,
                    labels=list(label or []),
                    metadata={"identity_group": group_name(group)},
                )
            )
        report = store.add_entries(bank, entries, actor=cli.actor)
    err.print(
        f"added {report.added} {st} hashes to {escape(bank)} "
        f"({report.duplicates} already there, {bad} refused)"
    )
    if bad:
        raise typer.Exit(1)
