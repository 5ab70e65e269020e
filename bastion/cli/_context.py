"""What every ``bastion`` command shares, kept in one :class:`CliContext` in ``ctx.obj``: the
database URL (the global ``--db``, or a command's own), opening the store, printing errors with
their exit codes, progress bars and the actor the audit log records (``cli:<os user>``).

Exit code 2 is a usage error: bad input, an unknown name, a store that cannot be opened.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bastion.db import Store
from bastion.render import OutputFormat
from bastion.store import BankExists, BankNotFound, EntryNotFound, StoreError

#: Messages, warnings and progress go to stderr; stdout is for results only.
err = Console(stderr=True)


def usage_error(message: str) -> typer.Exit:
    """Print ``error: message`` on stderr; raise the returned exit (code 2)."""
    err.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(2)


def progress(label: str) -> Progress:
    """A progress bar on stderr, shown only on a terminal and gone when done."""
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


def cli_actor() -> str:
    """``cli:<os user>`` for the audit log; the uid when the user has no name."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return f"cli:{user}"


@dataclass
class CliContext:
    """The state of one ``bastion`` invocation (``ctx.obj``, shared by the app and every group
    and command under it)."""

    #: Database URL: the global ``--db`` (or BASTION_DATABASE_URL), or a command's own ``--db``.
    db: str | None = None
    #: The ``--config`` file a command group (exchange, feed, vault) was given.
    config: Path | None = None

    @classmethod
    def of(cls, ctx: typer.Context) -> CliContext:
        """The invocation's context, made on first use."""
        return ctx.ensure_object(cls)

    @property
    def err(self) -> Console:
        return err

    @property
    def actor(self) -> str:
        """Who the audit log says acted: ``cli:<os user>``."""
        return cli_actor()

    def usage_error(self, message: str) -> typer.Exit:
        return usage_error(message)

    def progress(self, label: str) -> Progress:
        return progress(label)

    @contextmanager
    def open_store(self) -> Iterator[Store]:
        """The store of :attr:`db`; store errors inside the block become usage errors."""
        try:
            store = Store.open(self.db)
        except StoreError as exc:
            raise usage_error(f"cannot open the store: {exc}") from exc
        try:
            yield store
        except (BankNotFound, BankExists, EntryNotFound, StoreError, ValueError) as exc:
            raise usage_error(str(exc)) from exc
        finally:
            store.close()


def _use_db(ctx: typer.Context, param: typer.CallbackParam, value: str | None) -> str | None:
    """``--db`` before the command sets the database; a command's own ``--db`` overrides it when
    given on its command line (not when only read from BASTION_DATABASE_URL again)."""
    cli = CliContext.of(ctx)
    source = ctx.get_parameter_source(param.name) if param.name else None
    if value is not None and (ctx.parent is None or getattr(source, "name", "") == "COMMANDLINE"):
        cli.db = value
    return value


#: The one ``--db`` option: the app's, and the commands' that take their own.
DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar="BASTION_DATABASE_URL",
        help="Database URL (default: SQLite in ./bastion-data/).",
        callback=_use_db,
    ),
]
FormatOpt = Annotated[
    OutputFormat, typer.Option("--format", "-f", help="Output format.", case_sensitive=False)
]
