"""``bastion worker``: the command around :func:`bastion.worker.run_worker` (the loops, and
the child process ``bastion serve`` runs, are in :mod:`bastion.worker`).

Exit codes: 0 stopped normally, 2 bad configuration or unreachable database.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from bastion.cli._context import CliContext, DbOpt, err, usage_error
from bastion.config import ConfigError, Settings


def worker(
    ctx: typer.Context,
    db: DbOpt = None,
    config: Annotated[
        Path | None, typer.Option(help="TOML config file (also BASTION_CONFIG).")
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Deliver what is due now, then exit.")
    ] = False,
    log_level: Annotated[str, typer.Option(help="Log level (debug, info, warning).")] = "info",
    exit_with_parent: Annotated[
        bool, typer.Option("--exit-with-parent", hidden=True, help="Stop when the parent dies.")
    ] = False,
) -> None:
    """Deliver queued actions (signed webhooks), build requested pdata tables and open queued
    safety vouchers until stopped.

    Runs beside `bastion serve` (which starts one unless --no-worker) or on its own; several
    workers may share a database. SIGTERM or Ctrl-C lets deliveries in flight finish first.
    """
    from bastion.actions.targets import load_targets
    from bastion.actions.worker import WorkerConfig
    from bastion.db import Store
    from bastion.store import StoreError
    from bastion.worker import run_worker

    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("alembic", "httpx", "httpcore"):  # one line per request is the worker's job
        logging.getLogger(noisy).setLevel(logging.WARNING)
    cli = CliContext.of(ctx)  # its --db, if given, is in cli.db
    try:
        settings = Settings.load(config, database_url=cli.db)
        targets = load_targets(settings)
        wconfig = WorkerConfig.from_settings(settings, targets)
    except ConfigError as exc:
        raise usage_error(str(exc)) from exc
    try:
        store = Store.open(settings.database_url)
    except StoreError as exc:
        raise usage_error(f"cannot open the store: {exc}") from exc
    parent = os.getppid() if exit_with_parent else None
    try:
        run_worker(store, settings, targets, wconfig, once=once, parent_pid=parent, say=err.print)
    finally:
        store.close()
