"""``bastion user``: console users, their roles, queues and passwords. Every change is audited
with the operating-system user as actor (``cli:<user>``), as ``bastion key`` does.

Passwords are read from a hidden prompt (asked twice) or, with ``--password-stdin``, from the
first line of standard input; never from the command line, where ``ps`` and shell history would
keep them.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.markup import escape

from bastion.accounts.model import (
    DEFAULT_QUEUES,
    ROLES,
    check_password,
    validate_queues,
    validate_role,
    validate_user_name,
)
from bastion.accounts.store import AccountStore, UserNotFound
from bastion.cli._context import CliContext, FormatOpt, err, usage_error
from bastion.render import OutputFormat, emit

user_app = typer.Typer(
    help=f"Manage console users (roles: {', '.join(ROLES)}).",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="User name.")]
PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin", help="Read the password from the first line of standard input."
    ),
]


def _usage(message: str) -> typer.Exit:
    return usage_error(message)


def _checked(check: Any, value: Any) -> Any:
    try:
        return check(value)
    except ValueError as exc:
        raise _usage(str(exc)) from None


def _read_password(name: str, from_stdin: bool) -> str:
    """The new password, checked against the rules before anything is stored."""
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise _usage("--password-stdin given but standard input is empty")
        password = line.rstrip("\r\n")
    else:
        password = typer.prompt(f"New password for {name}", hide_input=True)
        try:
            check_password(password, name=name)
        except ValueError as exc:  # say so before asking again
            raise _usage(str(exc)) from None
        if typer.prompt("Repeat the password", hide_input=True) != password:
            raise _usage("the two passwords differ; nothing was changed")
    try:
        return check_password(password, name=name)
    except ValueError as exc:
        raise _usage(str(exc)) from None


def _existing(accounts: AccountStore, name: str) -> None:
    """Fail before prompting for a password that could not be used."""
    try:
        accounts.get_user(name)
    except UserNotFound as exc:
        raise _usage(str(exc)) from None


@user_app.command("create")
def user_create(
    ctx: typer.Context,
    name: NameArg,
    role: Annotated[str, typer.Option("--role", "-r", help=f"One of: {', '.join(ROLES)}.")],
    queue: Annotated[
        list[str] | None,
        typer.Option(
            "--queue", "-q", help="A review queue a reviewer works (repeatable; default: default)."
        ),
    ] = None,
    password_stdin: PasswordStdin = False,
) -> None:
    """Create a user. The password is asked for twice (hidden) unless --password-stdin."""
    cli = CliContext.of(ctx)
    name = _checked(validate_user_name, name)
    role = _checked(validate_role, role)
    queues = _checked(validate_queues, queue) if queue else DEFAULT_QUEUES
    with cli.open_store() as store:
        accounts = AccountStore(store)
        try:
            accounts.get_user(name)
        except UserNotFound:
            pass
        else:
            raise _usage(f"a user named {name!r} already exists")
        password = _read_password(name, password_stdin)
        user = accounts.create_user(name, role, password, queues, actor=cli.actor)
    err.print(
        f"created user [bold]{escape(user.name)}[/bold] (role {user.role}, "
        f"queues {escape(','.join(user.queues))})"
    )


@user_app.command("list")
def user_list(
    ctx: typer.Context,
    fmt: FormatOpt = OutputFormat.TABLE,
) -> None:
    """List users (never their password hashes), disabled ones included."""
    cli = CliContext.of(ctx)
    with cli.open_store() as store:
        users = AccountStore(store).list_users()
    if fmt is OutputFormat.TABLE:

        def when(value: Any) -> str | None:
            return value.strftime("%Y-%m-%d %H:%M") if value is not None else None
    else:

        def when(value: Any) -> str | None:
            return value.isoformat(timespec="seconds") if value is not None else None

    rows = [
        {
            "name": u.name,
            "role": u.role,
            "queues": list(u.queues),
            "status": "disabled" if u.disabled else "active",
            "created_at": when(u.created_at),
            "last_login_at": when(u.last_login_at),
        }
        for u in users
    ]
    columns = ["name", "role", "queues", "status", "created_at", "last_login_at"]
    emit(rows, fmt, columns, sys.stdout)


@user_app.command("passwd")
def user_passwd(ctx: typer.Context, name: NameArg, password_stdin: PasswordStdin = False) -> None:
    """Set a user's password; their sessions end."""
    cli = CliContext.of(ctx)
    name = _checked(validate_user_name, name)
    with cli.open_store() as store:
        accounts = AccountStore(store)
        _existing(accounts, name)
        password = _read_password(name, password_stdin)
        accounts.set_password(name, password, actor=cli.actor)
    err.print(f"changed the password of [bold]{escape(name)}[/bold]; their sessions ended")


@user_app.command("role")
def user_role(
    ctx: typer.Context,
    name: NameArg,
    role: Annotated[str, typer.Argument(help=f"One of: {', '.join(ROLES)}.")],
) -> None:
    """Change a user's role (in force at their next request)."""
    cli = CliContext.of(ctx)
    role = _checked(validate_role, role)
    with cli.open_store() as store:
        user = AccountStore(store).set_role(name, role, actor=cli.actor)
    err.print(f"[bold]{escape(user.name)}[/bold] is now {user.role}")


@user_app.command("queues")
def user_queues(
    ctx: typer.Context,
    name: NameArg,
    queues: Annotated[list[str], typer.Argument(help="The queues the user works, in full.")],
) -> None:
    """Replace the review queues a reviewer works."""
    cli = CliContext.of(ctx)
    queue_list = _checked(validate_queues, queues)
    with cli.open_store() as store:
        user = AccountStore(store).set_queues(name, queue_list, actor=cli.actor)
    err.print(f"[bold]{escape(user.name)}[/bold] works queues {escape(', '.join(user.queues))}")


@user_app.command("disable")
def user_disable(ctx: typer.Context, name: NameArg) -> None:
    """Disable a user: they cannot log in, and their sessions end at once."""
    cli = CliContext.of(ctx)
    with cli.open_store() as store:
        user = AccountStore(store).set_disabled(name, True, actor=cli.actor)
    err.print(f"disabled [bold]{escape(user.name)}[/bold]; their sessions ended")


@user_app.command("enable")
def user_enable(ctx: typer.Context, name: NameArg) -> None:
    """Re-enable a disabled user."""
    cli = CliContext.of(ctx)
    with cli.open_store() as store:
        user = AccountStore(store).set_disabled(name, False, actor=cli.actor)
    err.print(f"enabled [bold]{escape(user.name)}[/bold]")


@user_app.command("throttled")
def user_throttled(
    ctx: typer.Context,
    fmt: FormatOpt = OutputFormat.TABLE,
) -> None:
    """Client addresses that must wait before their next login, after too many failures.
    Accounts are never locked: a wait holds back one address (IPv6: its /64), not a user."""
    cli = CliContext.of(ctx)
    with cli.open_store() as store:
        waiting = AccountStore(store).throttled()
    rows = [
        {"address": a, "until": until.isoformat(timespec="seconds")} for a, until in waiting.items()
    ]
    emit(rows, fmt, ["address", "until"], sys.stdout)


@user_app.command("unthrottle")
def user_unthrottle(
    ctx: typer.Context,
    address: Annotated[str, typer.Argument(help="Client address (as `user throttled` lists it).")],
) -> None:
    """Let an address try to log in again at once (forgets its failed logins; audited)."""
    cli = CliContext.of(ctx)
    with cli.open_store() as store:
        waiting = AccountStore(store).unthrottle(address, actor=cli.actor)
    state = "cleared" if waiting else "was not waiting; cleared its failed logins:"
    err.print(f"{state} [bold]{escape(address)}[/bold]")


@user_app.command("logout")
def user_logout(ctx: typer.Context, name: NameArg) -> None:
    """End every session of a user (they must log in again)."""
    cli = CliContext.of(ctx)
    with cli.open_store() as store:
        ended = AccountStore(store).end_user_sessions(name, actor=cli.actor)
    err.print(f"ended {ended} session(s) of [bold]{escape(name.lower())}[/bold]")
