"""``bastion pdata``: build the E2EE matching table (pdata) in the foreground, with a progress
bar. ``POST /v1/pdata`` records a build for the worker instead; this command is for operators
(a first table before the service starts, a rebuild after a large bank import) and tests. Both
go through the same build job, audited with the operating-system user as actor."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from bastion.cli._context import CliContext, DbOpt, err, progress, usage_error

pdata_app = typer.Typer(
    help="Private matching for E2EE messaging: build pdata tables.", no_args_is_help=True
)


@pdata_app.command("build")
def pdata_build(
    ctx: typer.Context,
    bank: Annotated[
        list[str] | None,
        typer.Option("--bank", "-b", help="Build from these banks (repeatable; default: all)."),
    ] = None,
    db: DbOpt = None,
    config: Annotated[
        Path | None, typer.Option(help="TOML config file (also BASTION_CONFIG).")
    ] = None,
) -> None:
    """Build and publish a new table now, and print its root on stdout."""
    from bastion.config import ConfigError, Settings
    from bastion.crypto import MasterKey, MasterKeyError
    from bastion.db import Store
    from bastion.psi.store import VoucherStore
    from bastion.store import BankNotFound, StoreError

    cli = CliContext.of(ctx)  # its --db, if given, is in cli.db
    try:
        settings = Settings.load(config, database_url=cli.db)
    except ConfigError as exc:
        raise usage_error(str(exc)) from exc
    try:
        store = Store.open(settings.database_url)
    except StoreError as exc:
        raise usage_error(f"cannot open the store: {exc}") from exc
    store.use_settings_audit_keys(settings)
    settings = settings.in_data_dir(store.data_dir)
    try:
        key = MasterKey.load(settings)
    except (MasterKeyError, OSError) as exc:
        store.close()
        raise usage_error(str(exc)) from exc
    try:
        vouchers = VoucherStore(store, key, settings)
        actor = cli.actor
        job = vouchers.request_build(actor=actor, banks=bank or None)
        owner = f"{actor}:pdata-build"
        claimed = vouchers.claim_build(owner, job_id=job.id)
        if claimed is None:  # a worker took it first: it builds it
            err.print(f"pdata build {job.id} was taken by a worker; follow it there")
            return
        with progress("Blinding table slots") as bar:
            task = bar.add_task("slots", total=None)

            def tick(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            done = vouchers.run_build(claimed, owner, progress=tick)
        table = vouchers.current_table()
    except (BankNotFound, StoreError, ValueError) as exc:
        raise usage_error(str(exc)) from exc
    finally:
        store.close()
    if done.state != "done":
        err.print(
            f"[red]error:[/red] pdata build {done.id} {done.state}: {escape(str(done.error))}"
        )
        raise typer.Exit(1)
    table = vouchers.current_table()
    stats = table.stats if table else {}
    err.print(
        f"pdata build {done.id} done: {stats.get('entries', '?')} entries, "
        f"{stats.get('bytes', '?')} bytes, {stats.get('seconds', '?')} s"
    )
    print(done.root)
