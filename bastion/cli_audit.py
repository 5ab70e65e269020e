"""``bastion audit``: check the hash-chained audit log and read its latest events.

``verify`` exits 0 when the log is intact and 1 when it is not, naming the record and what was
done to it (edited, deleted, reordered, cut off the end), so it can run from cron or monitoring.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from bastion.render import OutputFormat, emit

audit_app = typer.Typer(help="Check and read the audit log.", no_args_is_help=True)

DbOpt = Annotated[
    str | None,
    typer.Option("--db", help="Database URL (overrides the global --db and BASTION_DATABASE_URL)."),
]
FormatOpt = Annotated[
    OutputFormat, typer.Option("--format", "-f", help="Output format.", case_sensitive=False)
]


def _use_db(db: str | None) -> None:
    from bastion.cli import _state

    if db:
        _state["db"] = db


def _records(n: int) -> str:
    return f"{n} record" if n == 1 else f"{n} records"


@audit_app.command("verify")
def audit_verify(db: DbOpt = None, fmt: FormatOpt = OutputFormat.TABLE) -> None:
    """Recompute the whole hash chain. Exit 0 if intact, 1 if not (saying where and how)."""
    from bastion.cli import open_store

    _use_db(db)
    with open_store() as store:
        check = store.check_audit_chain()
    if fmt is OutputFormat.TABLE:
        if check.ok:
            line = (
                f"audit log intact: {_records(check.checked)}, head {check.head_hash[:16]}"
                if check.checked
                else "audit log intact: 0 records (empty)"
            )
        else:
            line = (
                f"audit log BROKEN ({check.kind}): {check.problem}. "
                f"{_records(check.checked)} before it verified."
            )
        sys.stdout.write(line + "\n")
    else:
        row = {
            "ok": check.ok,
            "records": check.checked,
            "head_id": check.head_id,
            "head_hash": check.head_hash,
            "kind": check.kind,
            "record_id": check.record_id,
            "missing": list(check.missing) if check.missing else None,
            "problem": check.problem,
        }
        if fmt is OutputFormat.JSON:
            sys.stdout.write(json.dumps(row, indent=2) + "\n")
        else:
            emit([row], fmt, list(row), sys.stdout)
    raise typer.Exit(0 if check.ok else 1)


@audit_app.command("tail")
def audit_tail(
    lines: Annotated[
        int, typer.Option("--lines", "-n", min=1, max=10_000, help="How many events.")
    ] = 50,
    action: Annotated[
        str | None,
        typer.Option(
            "--action",
            "-a",
            help="Only this action and those under it, e.g. `login.` or `user.role`.",
        ),
    ] = None,
    db: DbOpt = None,
    fmt: FormatOpt = OutputFormat.TABLE,
) -> None:
    """The latest events, oldest first: who did what to what, when and from where (details,
    which may hold case metadata, stay in the log)."""
    from bastion.cli import open_store

    _use_db(db)
    with open_store() as store:
        events = store.recent_audit(lines, action=action)
    table = fmt is OutputFormat.TABLE

    def when(value: Any) -> str:
        return value.strftime("%Y-%m-%d %H:%M:%S") if table else value.isoformat()

    rows = [
        {
            "id": e.id,
            "at": when(e.at),
            "actor": e.actor,
            "action": e.action,
            "target": e.target,
            "remote_addr": e.remote_addr,
        }
        for e in reversed(events)
    ]
    emit(rows, fmt, ["id", "at", "actor", "action", "target", "remote_addr"], sys.stdout)
