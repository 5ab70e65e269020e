"""``bastion audit``: check the keyed, hash-chained audit log, read its latest events, rotate
its key and sign checkpoints of its head (docs/audit.md).

``verify`` exits 0 when the log is intact and 1 when it is not, naming the record and what was
done to it (edited, deleted, reordered, cut off the end, rewritten before a checkpoint), so it
can run from cron or monitoring.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bastion.cli._context import CliContext, DbOpt, FormatOpt, err, usage_error
from bastion.render import OutputFormat, emit

if TYPE_CHECKING:
    from bastion.audit_keys import CheckpointKey
    from bastion.config import Settings
    from bastion.db import Store
    from bastion.signing import VerifyKey

audit_app = typer.Typer(help="Check and read the audit log.", no_args_is_help=True)


def _records(n: int) -> str:
    return f"{n} record" if n == 1 else f"{n} records"


def _settings(store: Store) -> Settings:
    """The settings the server would use for this database (for the checkpoint key's file)."""
    from bastion.config import ConfigError, Settings

    try:
        return Settings.load().in_data_dir(store.data_dir)
    except ConfigError as exc:
        raise usage_error(str(exc)) from exc


def _checkpoint_key(store: Store, *, create: bool) -> CheckpointKey | None:
    from bastion.audit_keys import AuditKeyError, CheckpointKey

    path = str(_settings(store).audit_signing_key_file)
    try:
        return CheckpointKey.load_or_create(path) if create else CheckpointKey.read(path)
    except AuditKeyError as exc:
        raise usage_error(str(exc)) from exc


def _trusted_key(store: Store, given: str | None) -> VerifyKey:
    """The public key checkpoints must be signed with: ``--public-key`` (the key itself or a
    file holding it), else this instance's own checkpoint key."""
    from bastion.audit_keys import CheckpointError, public_key

    if given is None:
        own = _checkpoint_key(store, create=False)
        if own is None:
            raise usage_error(
                "no checkpoint key here to check signatures with: pass --public-key (printed by "
                "`bastion audit public-key` where the checkpoints were made)"
            )
        return own.public
    text = given
    path = Path(given).expanduser()
    if path.is_file():
        text = path.read_text(encoding="utf-8", errors="replace")
    try:
        return public_key(text)
    except CheckpointError as exc:
        raise usage_error(str(exc)) from exc


def _check_checkpoints(store: Store, files: list[Path], trusted: VerifyKey) -> list[dict[str, Any]]:
    """One result per checkpoint file: does the log still hold its head, hash for hash?"""
    from bastion.audit_keys import CheckpointError, checkpoint_problem, read_checkpoint

    results = []
    for path in files:
        row: dict[str, Any] = {"file": str(path), "record_id": None, "at": None, "ok": False}
        try:
            cp = read_checkpoint(path.read_bytes(), trusted)
        except OSError as exc:
            row["problem"] = f"cannot read it: {exc.strerror or exc}"
        except CheckpointError as exc:
            row["problem"] = str(exc)
        else:
            row.update(record_id=cp.record_id, at=cp.at)
            problem = checkpoint_problem(cp, store.audit_record_hash(cp.record_id))
            row.update(ok=problem is None, problem=problem)
        results.append(row)
    return results


@audit_app.command("verify")
def audit_verify(
    ctx: typer.Context,
    db: DbOpt = None,
    fmt: FormatOpt = OutputFormat.TABLE,
    checkpoints: Annotated[
        list[Path] | None,
        typer.Option(
            "--checkpoint",
            "-c",
            help="A checkpoint from `bastion audit checkpoint` (repeatable): the log must still "
            "hold its head, so history before it cannot have been rewritten, not even by "
            "someone holding the audit key.",
        ),
    ] = None,
    public_key: Annotated[
        str | None,
        typer.Option(
            "--public-key",
            help="The checkpoint signing key (base64, or a file holding it) to trust; default: "
            "this instance's checkpoint key.",
        ),
    ] = None,
) -> None:
    """Recompute the whole chain (HMAC under the audit keys; legacy records with the old hash)
    and check it against checkpoints. Exit 0 if intact, 1 if not (saying where and how)."""

    cli = CliContext.of(ctx)  # its --db, if given, is in cli.db
    with cli.open_store() as store:
        trusted = _trusted_key(store, public_key) if checkpoints else None
        check = store.check_audit_chain()
        cps = _check_checkpoints(store, checkpoints or [], trusted) if trusted else []
    ok = check.ok and all(c["ok"] for c in cps)
    if fmt is OutputFormat.TABLE:
        if check.ok:
            line = (
                f"audit log intact: {_records(check.checked)}, head {check.head_hash[:16]}"
                if check.checked
                else "audit log intact: 0 records (empty)"
            )
            if check.legacy:
                keyed = check.checked - check.legacy
                line += (
                    f"\n  {_records(check.legacy)} legacy (chained without a key before the "
                    f"upgrade, ending where the audit key file recorded), {keyed} keyed"
                )
        else:
            line = (
                f"audit log BROKEN ({check.kind}): {check.problem}. "
                f"{_records(check.checked)} before it verified."
            )
        for c in cps:
            if c["ok"]:
                line += (
                    f"\ncheckpoint {c['file']}: record {c['record_id']} (taken {c['at']}) "
                    "is still in the log"
                )
            else:
                line += f"\ncheckpoint {c['file']} FAILED: {c['problem']}"
        sys.stdout.write(line + "\n")
    else:
        row = {
            "ok": ok,
            "records": check.checked,
            "head_id": check.head_id,
            "head_hash": check.head_hash,
            "kind": check.kind,
            "record_id": check.record_id,
            "missing": list(check.missing) if check.missing else None,
            "problem": check.problem,
            "legacy": check.legacy,
            "key_id": check.key_id,
            "checkpoints": cps,
        }
        if fmt is OutputFormat.JSON:
            sys.stdout.write(json.dumps(row, indent=2) + "\n")
        else:
            emit([row], fmt, list(row), sys.stdout)
    raise typer.Exit(0 if ok else 1)


@audit_app.command("checkpoint")
def audit_checkpoint(
    ctx: typer.Context,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write the checkpoint here (default: stdout)."),
    ] = None,
    db: DbOpt = None,
) -> None:
    """Sign the head of the verified log (record id, chain hash, key id, time) with the
    checkpoint key; keep the checkpoint somewhere the database's holders cannot write."""
    from bastion.audit_keys import Checkpoint, sign_checkpoint

    cli = CliContext.of(ctx)  # its --db, if given, is in cli.db
    with cli.open_store() as store:
        check = store.check_audit_chain()
        if not check.ok:
            err.print(
                f"[red]error:[/red] the audit log is broken ({check.kind}): {check.problem}. "
                "Not signing a checkpoint of it."
            )
            raise typer.Exit(1)
        key = _checkpoint_key(store, create=True)
    assert key is not None
    cp = Checkpoint(
        record_id=check.head_id,
        hash=check.head_hash,
        key_id=check.key_id,
        at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    text = json.dumps(sign_checkpoint(cp, key), indent=2) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        try:
            out.write_text(text, encoding="utf-8")
        except OSError as exc:
            err.print(f"[red]error:[/red] cannot write {out}: {exc.strerror or exc}")
            raise typer.Exit(2) from exc
    err.print(
        f"checkpoint of record {cp.record_id} (hash {cp.hash[:16]}) signed by checkpoint key "
        f"{key.public.fingerprint[:16]}; public key {key.public.text}"
    )


@audit_app.command("public-key")
def audit_public_key(
    ctx: typer.Context,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write the public key here (default: stdout)."),
    ] = None,
    db: DbOpt = None,
) -> None:
    """Print the checkpoint signing key's public half (creating the key if there is none), to
    keep beside the checkpoints and pass to `verify --public-key`."""

    cli = CliContext.of(ctx)  # its --db, if given, is in cli.db
    with cli.open_store() as store:
        key = _checkpoint_key(store, create=True)
    assert key is not None
    if out is None:
        sys.stdout.write(key.public.text + "\n")
    else:
        out.write_text(key.public.text + "\n", encoding="utf-8")
    err.print(f"checkpoint key fingerprint {key.public.fingerprint}")


@audit_app.command("rotate-key")
def audit_rotate_key(ctx: typer.Context, db: DbOpt = None) -> None:
    """Start a new audit key: later records are chained under it; old keys stay in the key
    file so earlier records still verify. The rotation is itself an audit record."""

    cli = CliContext.of(ctx)  # its --db, if given, is in cli.db
    with cli.open_store() as store:
        old, new = store.rotate_audit_key(actor=cli.actor)
        path = store.audit_key_file
    err.print(
        f"audit key rotated: {old or 'none'} -> {new}. The key file {path} keeps the old keys; "
        "copy it to every server that shares this database."
    )
    sys.stdout.write(new + "\n")


@audit_app.command("tail")
def audit_tail(
    ctx: typer.Context,
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

    cli = CliContext.of(ctx)  # its --db, if given, is in cli.db
    with cli.open_store() as store:
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
