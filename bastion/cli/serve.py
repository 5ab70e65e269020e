"""``bastion serve``: the HTTP API (v1, the HMA-compatible surface and the console) under
uvicorn, with the outbox worker as a child process.

Exit codes: 0 stopped, 2 bad configuration.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from bastion.cli._context import CliContext, usage_error


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    config: Annotated[
        Path | None, typer.Option(help="TOML config file (also BASTION_CONFIG).")
    ] = None,
    demo: Annotated[
        bool,
        typer.Option(help="Set up the labelled demo bank and print a fresh local admin key."),
    ] = False,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    workers: Annotated[
        int,
        typer.Option(min=1, max=64, help="Worker processes, each with its own copy of the index."),
    ] = 1,
    no_worker: Annotated[
        bool,
        typer.Option("--no-worker", help="Do not start the outbox worker (run `bastion worker`)."),
    ] = False,
) -> None:
    """Serve the HTTP API (v1 and the HMA-compatible surface) with uvicorn.

    Also starts `bastion worker` as a child process (unless --no-worker) to deliver webhooks.
    """
    import uvicorn

    from bastion.config import ConfigError, Settings
    from bastion.server import create_app
    from bastion.worker import check_worker_settings, worker_child

    cli = CliContext.of(ctx)
    try:
        settings = Settings.load(config, database_url=cli.db, host=host, port=port)
        if not no_worker:
            check_worker_settings(settings)
    except ConfigError as exc:
        raise usage_error(str(exc)) from exc
    if demo:
        from bastion.demo import prepare_server_demo

        with cli.open_store() as store:
            token, password = prepare_server_demo(store, actor=cli.actor)
        _print_demo_banner(token, password, settings.host, settings.port)
    with worker_child(settings, config=config, log_level=log_level, enabled=not no_worker):
        if workers == 1:
            uvicorn.run(
                create_app(settings),
                host=settings.host,
                port=settings.port,
                log_level=log_level,
                proxy_headers=False,
            )
            return
        # Worker processes build their app from the environment, so hand the settings over
        # (the bind address too: whether cookies are Secure follows it).
        os.environ["BASTION_HOST"] = settings.host
        if cli.db:
            os.environ["BASTION_DATABASE_URL"] = cli.db
        if config is not None:
            os.environ["BASTION_CONFIG"] = str(config)
        uvicorn.run(
            "bastion.server:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            log_level=log_level,
            proxy_headers=False,
            workers=workers,
        )


def _print_demo_banner(token: str, password: str, host: str, port: int) -> None:
    import shlex

    from bastion.demo import DEMO_EDIT, DEMO_USER

    base = f"http://{host}:{port}"
    # The packaged edit of the demo photo: relative in a checkout (as in the README), absolute
    # when Bastion runs from an installed wheel.
    photo = DEMO_EDIT.relative_to(Path.cwd()) if DEMO_EDIT.is_relative_to(Path.cwd()) else DEMO_EDIT
    console = Console()
    console.rule("Bastion (demo bank: a benign test photo, labelled as demo data)")
    console.print("Admin API key for this run (shown once; `bastion key create` makes more):")
    print(token, flush=True)  # alone on its line, unwrapped, so it can be copied or grepped
    console.print("Scan an image (a match opens a case in the review queue):")
    print(
        f"  curl -s -H 'Authorization: Bearer {token}' -F file=@{shlex.quote(str(photo))} "
        f'-F \'context={{"uploader_id":"demo-user"}}\' {base}/v1/scan',
        flush=True,
    )
    console.print(f"Reviewer console: {base}/login")
    print(f"  user {DEMO_USER}, password for this run: {password}", flush=True)
    console.print(f"API docs: {base}/docs")
    console.rule()
