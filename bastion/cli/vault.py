"""``bastion vault``: check, list and manage preserved evidence from the command line.

Commands act as ``cli:<os user>`` in the audit log and with the admin's rights: whoever runs them
already holds the database and the master key. ``show`` prints metadata and hashes, never
content. ``verify`` exits 0 when every item is intact and 1 otherwise (for cron or monitoring).
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

vault_app = typer.Typer(
    help="Evidence vault: verify integrity, list, show, hold, release, purge.",
    no_args_is_help=True,
)

ReasonOpt = Annotated[str, typer.Option("--reason", "-r", help="Why (recorded in the audit log).")]


@vault_app.callback()
def vault_main(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", envvar="BASTION_CONFIG", help="Config file (retention settings, key)."
        ),
    ] = None,
) -> None:
    CliContext.of(ctx).config = config


@contextmanager
def open_vault(cli: CliContext) -> Iterator[Any]:
    """The vault of the CLI's database, with its master key and retention settings. A missing
    key file is an error here, not created: a new key would open none of the evidence."""
    from bastion.config import ConfigError, Settings
    from bastion.crypto import MasterKey, MasterKeyError
    from bastion.vault import RetentionError, VaultError
    from bastion.vault.store import Vault

    with cli.open_store() as store:
        try:
            settings = Settings.load(cli.config)
            store.use_settings_audit_keys(settings)
            settings = settings.in_data_dir(store.data_dir)
            if not settings.secret_key and not Path(str(settings.secret_key_file)).exists():
                raise usage_error(
                    f"no master key: {settings.secret_key_file} does not exist (set secret_key "
                    "or secret_key_file to the server's key)"
                )
            vault = Vault.from_settings(store, MasterKey.load(settings), settings)
        except (ConfigError, MasterKeyError, RetentionError) as exc:
            raise usage_error(str(exc)) from exc
        try:
            yield vault
        except (VaultError, LookupError, PermissionError) as exc:
            raise usage_error(str(exc)) from exc


def _when(value: Any, table: bool) -> str | None:
    if value is None:
        return None
    return value.strftime("%Y-%m-%d %H:%M") if table else value.isoformat()


@vault_app.command("verify")
def vault_verify(ctx: typer.Context, fmt: FormatOpt = OutputFormat.TABLE) -> None:
    """Decrypt every unpurged item and compare it with its recorded SHA-256 and MD5, and every
    item's metadata with its recorded hash. Exit 0 if all are intact, 1 if not."""
    cli = CliContext.of(ctx)
    with open_vault(cli) as vault:
        report = vault.verify(actor=cli.actor)
    if fmt is OutputFormat.TABLE:
        sys.stdout.write(
            f"evidence {'intact' if report.intact else 'DAMAGED'}: {report.checked} checked, "
            f"{report.ok} ok, {len(report.failures)} failed\n"
        )
        for evidence_id, problem in report.failures:
            sys.stdout.write(f"  evidence {evidence_id}: {problem}\n")
    else:
        rows = [{"id": i, "problem": p} for i, p in report.failures]
        if fmt is OutputFormat.JSON:
            doc = {"checked": report.checked, "ok": report.ok, "failures": rows}
            sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        else:
            emit(rows, fmt, ["id", "problem"], sys.stdout)
    raise typer.Exit(0 if report.intact else 1)


_LIST_COLUMNS = [
    "id",
    "case",
    "item",
    "state",
    "size",
    "sha256",
    "preserved_at",
    "retain_until",
    "reported_at",
    "purged_at",
]


@vault_app.command("list")
def vault_list(
    ctx: typer.Context,
    case: Annotated[int | None, typer.Option("--case", help="Only this case's evidence.")] = None,
    state: Annotated[
        str | None,
        typer.Option("--state", help="Only evidence in this state: active, held, expired, purged."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10_000)] = 100,
    after: Annotated[int | None, typer.Option("--after", help="Ids after this one.")] = None,
    fmt: FormatOpt = OutputFormat.TABLE,
) -> None:
    """Preserved items: ids, hashes, retention and state (no content, no metadata)."""
    cli = CliContext.of(ctx)
    with open_vault(cli) as vault:
        rows = vault.list(case_id=case, state=state, limit=limit, after=after)
    table = fmt is OutputFormat.TABLE
    emit(
        (
            {
                "id": r.id,
                "case": r.case_id,
                "item": r.item_id,
                "state": r.state,
                "size": r.size,
                "sha256": (r.sha256 or "")[:16] + "…" if table and r.sha256 else r.sha256,
                "preserved_at": _when(r.preserved_at, table),
                "retain_until": _when(r.retain_until, table),
                "reported_at": _when(r.reported_at, table),
                "purged_at": _when(r.purged_at, table),
            }
            for r in rows
        ),
        fmt,
        _LIST_COLUMNS,
        sys.stdout,
    )


@vault_app.command("show")
def vault_show(
    ctx: typer.Context,
    evidence_id: Annotated[int, typer.Argument(help="Evidence id.")],
) -> None:
    """One item's metadata, hashes and retention as JSON (never its content). Audited."""
    cli = CliContext.of(ctx)
    with open_vault(cli) as vault:
        m = vault.show(cli.actor, "admin", evidence_id)
    doc = {
        "id": m.id,
        "case_id": m.case_id,
        "item_id": m.item_id,
        "state": m.state,
        "content_id": m.content_id,
        "uploader_id": m.uploader_id,
        "conversation_id": m.conversation_id,
        "media_type": m.media_type,
        "size": m.size,
        "sha256": m.sha256,
        "md5": m.md5,
        "has_content": m.has_content,
        "metadata_sha256": m.metadata_sha256,
        "jurisdictions": list(m.jurisdictions),
        "preserved_at": _when(m.preserved_at, False),
        "preserved_by": m.preserved_by,
        "reason": m.reason,
        "retain_until": _when(m.retain_until, False),
        "reported_at": _when(m.reported_at, False),
        "reports": list(m.reports),
        "legal_hold": m.legal_hold,
        "hold_reason": m.hold_reason,
        "held_at": _when(m.held_at, False),
        "purged_at": _when(m.purged_at, False),
        "metadata": m.metadata,
    }
    sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


@vault_app.command("hold")
def vault_hold(
    ctx: typer.Context,
    evidence_id: Annotated[int, typer.Argument(help="Evidence id.")],
    reason: ReasonOpt,
) -> None:
    """Put an item on legal hold: it is not purged and its retention clock stops."""
    cli = CliContext.of(ctx)
    with open_vault(cli) as vault:
        m = vault.hold(evidence_id, actor=cli.actor, reason=reason)
    err.print(f"evidence {m.id} (case {m.case_id}) is on legal hold")


@vault_app.command("release")
def vault_release(
    ctx: typer.Context,
    evidence_id: Annotated[int, typer.Argument(help="Evidence id.")],
    reason: ReasonOpt,
) -> None:
    """End an item's legal hold; the time held is added to its retention."""
    cli = CliContext.of(ctx)
    with open_vault(cli) as vault:
        m = vault.release(evidence_id, actor=cli.actor, reason=reason)
    err.print(
        f"evidence {m.id} released from legal hold; retained until "
        f"{m.retain_until.isoformat(timespec='seconds')}"
    )


@vault_app.command("purge")
def vault_purge(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be purged; change nothing.")
    ] = False,
) -> None:
    """Delete the content of items past their retention and not on hold (hashes and metadata
    stay; each purge is audited). The worker does this periodically too."""
    cli = CliContext.of(ctx)
    with open_vault(cli) as vault:
        if dry_run:
            due = vault.expired()
            for r in due:
                sys.stdout.write(
                    f"{r.id}\tcase {r.case_id}\titem {r.item_id}\tretained until "
                    f"{r.retain_until.isoformat(timespec='seconds')}\n"
                )
            err.print(f"{len(due)} item(s) would be purged (dry run: nothing changed)")
            return
        n = vault.purge_expired(actor=cli.actor)
    err.print(f"purged the content of {n} item(s)")
