"""``bastion exchange``: connect banks to outside hash lists, sync them, and see how they fare.

Commands act as ``cli:<os user>`` in the audit log. Secrets go in with ``--credentials-file``
(a JSON object) or ``--credentials-env PREFIX`` (``PREFIX_FIELD`` variables); ``--credential
key=value`` works too but leaves the secret in shell history and in ``ps``, so it warns. Stored
credentials are sealed with the master key and never printed again.

Exit codes: 0 done, 1 a sync ran and failed (the error is recorded; the worker retries on its
schedule), 2 usage error (unknown exchange, bad setting, no master key, a sync already running).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import types
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Union, get_args, get_origin

import typer
from rich.markup import escape

from bastion.cli._context import CliContext, FormatOpt, err, progress, usage_error
from bastion.render import OutputFormat, emit

if TYPE_CHECKING:
    from pydantic import BaseModel

    from bastion.exchanges.store import ExchangeStore

exchange_app = typer.Typer(
    help="Hash-list exchanges: keep a bank in sync with NCMEC, StopNCII, ThreatExchange, "
    "list files or another Bastion.",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="Exchange name.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="A config setting as key=value (repeatable).", metavar="K=V"),
]
CredOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--credential",
        help="A secret as key=value (repeatable; lands in shell history: prefer the two below).",
        metavar="K=V",
    ),
]
CredFileOpt = Annotated[
    Path | None,
    typer.Option("--credentials-file", help="JSON object of credential fields.", metavar="FILE"),
]
CredEnvOpt = Annotated[
    str | None,
    typer.Option(
        "--credentials-env",
        help="Read credential FIELD from the variable PREFIX_FIELD (upper case).",
        metavar="PREFIX",
    ),
]
IntervalOpt = Annotated[
    float | None,
    typer.Option("--interval", min=1.0, help="Seconds between scheduled syncs."),
]
OnDeleteOpt = Annotated[
    str | None,
    typer.Option(
        "--on-delete", help="What an upstream deletion does here: disable (default) or remove."
    ),
]
LimitOpt = Annotated[int, typer.Option("--limit", "-n", min=1, max=10_000, help="Rows to show.")]
_ERROR_COLUMNS = ["id", "at", "kind", "checkpoint", "key", "error", "raw"]
#: What fits a terminal; --format json has every field.
_TABLE_COLUMNS = {
    "errors": ["at", "kind", "key", "error"],
    "runs": ["started_at", "state", "pages", "added", "updated", "removed", "poisoned", "error"],
    "attestations": ["at", "version", "count", "agrees", "root", "computed"],
}
_ON_DELETE = ("disable", "remove")


@exchange_app.callback()
def exchange_main(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", envvar="BASTION_CONFIG", help="Config file (fetch limits, master key)."
        ),
    ] = None,
) -> None:
    CliContext.of(ctx).config = config


def _usage(message: str) -> typer.Exit:
    return usage_error(message)


@contextmanager
def open_exchanges(cli: CliContext, *, create_key: bool = False) -> Iterator[ExchangeStore]:
    """The exchanges of the CLI's database, with the master key the server uses.

    The key is created only when new credentials are about to be sealed (``create_key``), as the
    server would create it on start; reading commands and syncs never leave a stray key file.
    """
    from bastion.config import ConfigError, Settings
    from bastion.crypto import MasterKey, MasterKeyError
    from bastion.exchanges import ExchangeError
    from bastion.exchanges.store import ExchangeStore

    with cli.open_store() as store:
        try:
            settings = Settings.load(cli.config)
            store.use_settings_audit_keys(settings)
            settings = settings.in_data_dir(store.data_dir)
            key: MasterKey | None = None
            if create_key or settings.secret_key or Path(str(settings.secret_key_file)).exists():
                key = MasterKey.load(settings)
        except (ConfigError, MasterKeyError, OSError) as exc:
            raise _usage(str(exc)) from exc
        try:
            yield ExchangeStore(store, key, settings)
        except (ExchangeError, MasterKeyError, LookupError) as exc:
            # Store errors (unknown or existing exchange, invalid settings, a sync in progress)
            # are StoreErrors, which open_store turns into usage errors already.
            raise _usage(str(exc)) from exc


# -- settings from the command line ----------------------------------------------------------


def _accepts_str(annotation: Any) -> bool:
    """Whether a pydantic field takes text as is (so ``--set name=123`` stays the string)."""
    if annotation is str:
        return True
    origin = get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        return any(_accepts_str(a) for a in get_args(annotation))
    if origin is Annotated:
        return _accepts_str(get_args(annotation)[0])
    name = getattr(annotation, "__name__", "")
    return name in ("SecretStr", "HttpUrl", "AnyUrl", "AnyHttpUrl")


def _pairs(items: list[str] | None, model: type[BaseModel] | None, what: str) -> dict[str, Any]:
    """``key=value`` options → a dict. A value goes in as text when its field takes text, else
    it is read as JSON (numbers, true/false, lists) when it parses, and as text when not."""
    fields = model.model_fields if model is not None else {}
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise _usage(f"{what} {item.split('=')[0]!r}: expected key=value")
        field = fields.get(key)
        if field is not None and _accepts_str(field.annotation):
            out[key] = value
            continue
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def _credentials(
    kind_cls: Any,
    pairs: list[str] | None,
    file: Path | None,
    env_prefix: str | None,
) -> dict[str, Any] | None:
    """The credentials given, merged from the file, then the environment, then the command
    line (later wins); None when none were given."""
    if not pairs and file is None and env_prefix is None:
        return None
    model = kind_cls.Credentials
    if model is None:
        raise _usage(f"{kind_cls.kind} exchanges take no credentials")
    creds: dict[str, Any] = {}
    if file is not None:
        try:
            doc = json.loads(file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise _usage(f"cannot read {file}: {exc.strerror}") from exc
        except ValueError as exc:
            # The message of a JSON error quotes no content, only where it broke.
            raise _usage(f"{file} is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise _usage(f"{file} must hold a JSON object of credential fields")
        creds.update(doc)
    if env_prefix is not None:
        prefix = env_prefix.rstrip("_").upper() + "_"
        found = {
            name: os.environ[prefix + name.upper()]
            for name in model.model_fields
            if prefix + name.upper() in os.environ
        }
        if not found:
            expected = ", ".join(prefix + n.upper() for n in model.model_fields)
            raise _usage(f"--credentials-env {env_prefix}: none of {expected} is set")
        creds.update(found)
    if pairs:
        err.print(
            "[yellow]warning[/yellow] --credential puts secrets in your shell history and in "
            "the process list; prefer --credentials-file or --credentials-env"
        )
        creds.update(_pairs(pairs, model, "--credential"))
    return creds


def _checked(model: type[BaseModel] | None, data: dict[str, Any], what: str) -> dict[str, Any]:
    """Refuse bad settings before anything is stored, one message per field, and never echo a
    value back (a credential typed into the wrong field is still a secret)."""
    from pydantic import ValidationError

    if model is None:
        return data
    try:
        model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or what}: {e['msg']}" for e in exc.errors()
        )
        raise _usage(f"invalid {what}: {problems}") from None
    return data


def _on_delete(value: str | None) -> str | None:
    if value is not None and value not in _ON_DELETE:
        raise _usage(f"--on-delete must be one of: {', '.join(_ON_DELETE)}")
    return value


def _kind(name: str) -> Any:
    from bastion.exchanges import exchange_type

    try:
        return exchange_type(name)
    except ValueError as exc:
        raise _usage(str(exc)) from None


# -- output helpers --------------------------------------------------------------------------


def _when(value: datetime | None, table: bool) -> str | None:
    if value is None:
        return None
    return value.strftime("%Y-%m-%d %H:%M:%S") if table else value.isoformat()


def _record(obj: Any, table: bool) -> dict[str, Any]:
    """A store record (dataclass) as a plain dict, times as text."""
    from dataclasses import asdict, is_dataclass

    doc = asdict(obj) if is_dataclass(obj) and not isinstance(obj, type) else dict(vars(obj))
    return {k: _when(v, table) if isinstance(v, datetime) else v for k, v in doc.items()}


def _info_doc(info: Any, table: bool) -> dict[str, Any]:
    """What an exchange is and how it fares; never its credentials (only whether it has some)."""
    return {
        "name": info.name,
        "kind": info.kind,
        "bank": info.bank,
        "enabled": info.enabled,
        "state": info.state,
        "config": info.config,
        "has_credentials": info.has_credentials,
        "interval_seconds": info.interval_seconds,
        "on_delete": info.on_delete,
        "vouch_group": info.vouch_group,
        "min_vouchers": info.min_vouchers,
        "send_feedback": info.send_feedback,
        "checkpoint": info.checkpoint,
        "last_sync_at": _when(info.last_sync_at, table),
        "last_success_at": _when(info.last_success_at, table),
        "next_sync_at": _when(info.next_sync_at, table),
        "last_error": info.last_error,
        "failures": info.failures,
        "totals": dict(info.totals),
        "created_at": _when(info.created_at, table),
        "updated_at": _when(info.updated_at, table),
    }


def _type_name(annotation: Any) -> str:
    """``int``, ``str | None``, ``tuple[str, ...]``, ``Literal['auto', 'csv']``."""
    if get_origin(annotation) is None and hasattr(annotation, "__name__"):
        return str(annotation.__name__)
    return str(annotation).replace("typing.", "")


def _field_text(name: str, field: Any) -> str:
    kind = _type_name(field.annotation)
    if field.is_required():
        return f"{name} ({kind}, required)"
    default = field.get_default(call_default_factory=True)
    return f"{name} ({kind}, default {default!r})"


def _fields_doc(model: type[BaseModel] | None, *, secret: bool) -> list[dict[str, Any]]:
    if model is None:
        return []
    out = []
    for name, field in model.model_fields.items():
        doc: dict[str, Any] = {
            "name": name,
            "type": _type_name(field.annotation),
            "required": field.is_required(),
            "description": field.description or "",
        }
        if not secret and not field.is_required():
            doc["default"] = field.get_default(call_default_factory=True)
        out.append(doc)
    return out


def _feedback_counts(records: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        key = f"{getattr(r, 'verdict', '?')}:{getattr(r, 'state', '?')}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


# -- commands --------------------------------------------------------------------------------


@exchange_app.command("types")
def exchange_types_cmd(fmt: FormatOpt = OutputFormat.TABLE) -> None:
    """The kinds of exchange this Bastion knows, with their settings and credential fields."""
    from bastion.exchanges import exchange_types

    rows: list[dict[str, Any]] = []
    table = fmt is not OutputFormat.JSON
    for kind, cls in exchange_types().items():
        doc = (cls.__doc__ or "").strip().splitlines()
        config_model = cls.Config
        cred_model = cls.Credentials
        rows.append(
            {
                "kind": kind,
                "about": doc[0] if doc else "",
                "config": [_field_text(n, f) for n, f in config_model.model_fields.items()]
                if table
                else _fields_doc(config_model, secret=False),
                "credentials": [
                    _field_text(n, f)
                    for n, f in (cred_model.model_fields if cred_model else {}).items()
                ]
                if table
                else _fields_doc(cred_model, secret=True),
                "feedback": sorted(str(v) for v in cls.feedback),
                "on_delete": str(cls.on_delete),
                "interval": cls.default_interval,
            }
        )
    if fmt is not OutputFormat.TABLE:
        columns = ["kind", "about", "config", "credentials", "feedback", "on_delete", "interval"]
        emit(rows, fmt, columns, sys.stdout)
        return
    # One block per kind: seven columns of field lists do not fit a terminal.
    for row in rows:
        out = [f"{row['kind']}: {row['about']}".rstrip(": ")]
        for title in ("config", "credentials"):
            for i, text in enumerate(row[title] or ["none"]):
                out.append(f"  {title if i == 0 else '':<12} {text}")
        feedback = ", ".join(row["feedback"]) or "none"
        out.append(
            f"  {'feedback':<12} {feedback}; on delete: {row['on_delete']}; "
            f"interval: {row['interval']:g} s"
        )
        sys.stdout.write("\n".join(out) + "\n\n")


@exchange_app.command("add")
def exchange_add(
    ctx: typer.Context,
    name: NameArg,
    kind: Annotated[str, typer.Option("--type", "-t", help="Kind (see `bastion exchange types`).")],
    bank: Annotated[
        str | None, typer.Option("--bank", "-b", help="Bank to feed (default: the name).")
    ] = None,
    setting: SetOpt = None,
    credential: CredOpt = None,
    credentials_file: CredFileOpt = None,
    credentials_env: CredEnvOpt = None,
    interval: IntervalOpt = None,
    on_delete: OnDeleteOpt = None,
    vouch_group: Annotated[
        str | None,
        typer.Option("--vouch-group", help="Entries match only when vouched for in this group."),
    ] = None,
    min_vouchers: Annotated[
        int,
        typer.Option(
            "--min-vouchers", min=1, max=100, help="Exchanges of the group that must agree."
        ),
    ] = 1,
    no_feedback: Annotated[
        bool, typer.Option("--no-feedback", help="Never send reviewers' findings upstream.")
    ] = False,
    label: Annotated[
        list[str] | None,
        typer.Option(
            "--label", "-l", help="Label of a newly created bank, e.g. csam (repeatable)."
        ),
    ] = None,
    disabled: Annotated[
        bool, typer.Option("--disabled", help="Add it disabled (no scheduled syncs yet).")
    ] = False,
) -> None:
    """Connect a bank to an outside hash list.

    The bank is created when missing. The first sync runs on the worker's next pass, or now
    with `bastion exchange sync NAME`."""
    cli = CliContext.of(ctx)
    cls = _kind(kind)
    if min_vouchers > 1 and not vouch_group:
        raise _usage("--min-vouchers needs --vouch-group")
    config = _checked(cls.Config, _pairs(setting, cls.Config, "--set"), "settings")
    creds = _credentials(cls, credential, credentials_file, credentials_env)
    if creds is not None:
        _checked(cls.Credentials, creds, "credentials")
    with open_exchanges(cli, create_key=creds is not None) as xs:
        info = xs.add(
            name,
            kind,
            bank=bank,
            config=config,
            credentials=creds,
            interval=interval,
            on_delete=_on_delete(on_delete),
            vouch_group=vouch_group,
            min_vouchers=min_vouchers,
            send_feedback=not no_feedback,
            enabled=not disabled,
            labels=label or (),
            actor=cli.actor,
        )
    err.print(
        f"added exchange [bold]{escape(info.name)}[/bold] ({escape(info.kind)}) feeding bank "
        f"[bold]{escape(info.bank)}[/bold]"
        + ("" if info.enabled else " (disabled)")
        + ("; credentials sealed" if info.has_credentials else "")
    )
    if cls.Credentials is not None and not info.has_credentials:
        required = [n for n, f in cls.Credentials.model_fields.items() if f.is_required()]
        if required:
            err.print(
                f"[yellow]warning[/yellow] no credentials yet ({', '.join(required)}): set them "
                f"with `bastion exchange set-credentials {escape(info.name)}`"
            )


@exchange_app.command("list")
def exchange_list(ctx: typer.Context, fmt: FormatOpt = OutputFormat.TABLE) -> None:
    """Every exchange: its kind, bank, state and last sync."""
    cli = CliContext.of(ctx)
    table = fmt is OutputFormat.TABLE
    with open_exchanges(cli) as xs:
        infos = xs.list()
    rows = [
        {
            "name": i.name,
            "kind": i.kind,
            "bank": i.bank,
            "enabled": i.enabled,
            "state": i.state,
            "last_success_at": _when(i.last_success_at, table),
            "next_sync_at": _when(i.next_sync_at, table),
            "failures": i.failures,
            "last_error": i.last_error,
            "totals": dict(i.totals),
        }
        for i in infos
    ]
    columns = [
        "name",
        "kind",
        "bank",
        "enabled",
        "state",
        "last_success_at",
        "next_sync_at",
        "failures",
        "last_error",
    ]
    if fmt is not OutputFormat.TABLE:
        columns.append("totals")
    emit(rows, fmt, columns, sys.stdout)


def status_doc(xs: Any, name: str, *, table: bool, limit: int = 10) -> dict[str, Any]:
    """Everything ``status`` shows (shared with nothing secret: no credentials)."""
    info = xs.get(name)
    feedback = xs.feedback(name, limit=1000)
    return {
        **_info_doc(info, table),
        "runs": [_record(r, table) for r in xs.runs(name, limit=limit)],
        "errors": [_record(e, table) for e in xs.errors(name, limit=limit)],
        "attestations": [_record(a, table) for a in xs.attestations(name, limit=limit)],
        "feedback": _feedback_counts(feedback),
    }


@exchange_app.command("status")
def exchange_status(
    ctx: typer.Context,
    name: NameArg,
    fmt: Annotated[
        OutputFormat,
        typer.Option("--format", "-f", help="table or json.", case_sensitive=False),
    ] = OutputFormat.TABLE,
    limit: LimitOpt = 10,
) -> None:
    """One exchange in full (never its credentials).

    State, checkpoint, last error, totals, recent runs, poisoned records, attestations and
    feedback counts."""
    cli = CliContext.of(ctx)
    if fmt is OutputFormat.CSV:
        raise _usage("status is a document: use --format table or json")
    table = fmt is OutputFormat.TABLE
    with open_exchanges(cli) as xs:
        doc = status_doc(xs, name, table=table, limit=limit)
    if not table:
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n")
        return
    _print_status(doc)


def _print_status(doc: dict[str, Any]) -> None:
    from rich.console import Console

    out = Console(file=sys.stdout, soft_wrap=True, highlight=False)

    def line(key: str, value: Any) -> None:
        text = json.dumps(value, default=str) if isinstance(value, dict | list) else value
        out.print(f"{key:>17}: {escape('' if text is None else str(text))}")

    out.print(f"[bold]{escape(doc['name'])}[/bold] ({escape(doc['kind'])})")
    for key in (
        "bank",
        "enabled",
        "state",
        "config",
        "has_credentials",
        "interval_seconds",
        "on_delete",
        "vouch_group",
        "min_vouchers",
        "send_feedback",
        "checkpoint",
        "last_sync_at",
        "last_success_at",
        "next_sync_at",
        "failures",
        "last_error",
        "totals",
        "feedback",
    ):
        line(key, doc[key])
    for title in ("runs", "errors", "attestations"):
        rows = doc[title]
        if not rows:
            out.print(f"{title:>17}: none")
            continue
        emit(rows, OutputFormat.TABLE, _TABLE_COLUMNS[title], sys.stdout, title=title)


@exchange_app.command("errors")
def exchange_errors(
    ctx: typer.Context, name: NameArg, fmt: FormatOpt = OutputFormat.TABLE, limit: LimitOpt = 50
) -> None:
    """Poisoned records and pages, newest first.

    Where (checkpoint, key), what, and an excerpt (in --format json)."""
    cli = CliContext.of(ctx)
    table = fmt is OutputFormat.TABLE
    with open_exchanges(cli) as xs:
        rows = [_record(e, table) for e in xs.errors(name, limit=limit)]
    columns = _TABLE_COLUMNS["errors"] if table else _ERROR_COLUMNS
    emit(rows, fmt, columns, sys.stdout)


@exchange_app.command("sync")
def exchange_sync(
    ctx: typer.Context,
    name: NameArg,
    max_pages: Annotated[
        int | None, typer.Option("--max-pages", min=1, help="Stop after this many pages.")
    ] = None,
    fmt: FormatOpt = OutputFormat.TABLE,
) -> None:
    """Sync now, in this process, with a progress bar.

    Ctrl-C stops after the current page (its changes and checkpoint are committed together, so
    the next sync resumes there). Exit code 1 when the sync failed, 3 when our copy does not
    match an attestation the partner signed (listed as ``attestation_mismatches``)."""
    cli = CliContext.of(ctx)
    stop = threading.Event()
    previous = None

    def on_sigint(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        err.print("stopping after this page (Ctrl-C again to abort it)")

    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        with open_exchanges(cli) as xs, progress(f"Syncing {escape(name)}") as bar:
            task = bar.add_task("sync", total=None)

            def tick(p: Any) -> None:
                done, total = _progress_numbers(p)
                bar.update(task, completed=done, total=total)

            # Audited as this user's request (the sync's own record names the worker).
            xs.request_sync(name, actor=cli.actor)
            seen = max((a.id for a in xs.attestations(name, limit=1)), default=0)
            result = xs.sync(
                name, worker_id=f"{cli.actor}:sync", stop=stop, max_pages=max_pages, progress=tick
            )
            # The partner's attestations this sync checked (a feed's signed roots).
            attested = sorted(
                (a for a in xs.attestations(name, limit=1000) if a.id > seen), key=lambda a: a.id
            )
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    counts: dict[str, Any] = {
        "exchange": result.exchange,
        "pages": result.pages,
        "added": result.added,
        "updated": result.updated,
        "removed": result.removed,
        "disabled": result.disabled,
        "poisoned": result.poisoned,
        "skipped_pages": result.skipped_pages,
        "complete": result.complete,
        "error": result.error,
        "checkpoint": result.checkpoint,
        "attestations": len(attested),
        "attestation_mismatches": [
            {"version": a.version, "root": a.root, "computed": a.computed}
            for a in attested
            if not a.agrees
        ],
    }
    if fmt is OutputFormat.TABLE:
        err.print(
            f"{result.pages} pages: {result.added} added, {result.updated} updated, "
            f"{result.removed} removed, {result.disabled} disabled, {result.poisoned} poisoned "
            f"records, {result.skipped_pages} pages skipped"
        )
    else:
        emit([counts], fmt, list(counts), sys.stdout)
    if result.error:
        err.print(f"[red]error:[/red] sync of {escape(name)} failed: {escape(result.error)}")
        raise typer.Exit(1)
    if counts["attestation_mismatches"]:
        versions = ", ".join(str(m["version"]) for m in counts["attestation_mismatches"])
        err.print(
            f"[red]error:[/red] our copy of {escape(name)} does not match the partner's signed "
            f"root for version(s) {versions}; see `bastion exchange status {escape(name)}`"
        )
        raise typer.Exit(3)
    if result.poisoned or result.skipped_pages:
        err.print(f"see `bastion exchange errors {escape(name)}` for the poisoned records")
    if not result.complete:
        why = "stopped" if stop.is_set() else "--max-pages reached"
        err.print(f"{why}: more remains; the next sync resumes from the checkpoint")


def _progress_numbers(p: Any) -> tuple[float | None, float | None]:
    """(done, total) from the engine's progress report, whatever it counts in."""
    for done_name, total_name in (("done", "total"), ("items", "total_items")):
        done = getattr(p, done_name, None)
        if done is not None:
            return done, getattr(p, total_name, None)
    pages = getattr(p, "pages", None)
    return pages, None


@exchange_app.command("update")
def exchange_update(
    ctx: typer.Context,
    name: NameArg,
    setting: SetOpt = None,
    unset: Annotated[
        list[str] | None,
        typer.Option("--unset", help="Drop a config setting (back to its default; repeatable)."),
    ] = None,
    interval: IntervalOpt = None,
    on_delete: OnDeleteOpt = None,
    vouch_group: Annotated[
        str | None, typer.Option("--vouch-group", help="Join this vouch group.")
    ] = None,
    no_vouch_group: Annotated[
        bool, typer.Option("--no-vouch-group", help="Leave its vouch group.")
    ] = False,
    min_vouchers: Annotated[
        int | None, typer.Option("--min-vouchers", min=1, max=100, help="Vouchers needed.")
    ] = None,
    feedback: Annotated[
        bool | None,
        typer.Option("--feedback/--no-feedback", help="Send reviewers' findings upstream."),
    ] = None,
    reset_checkpoint: Annotated[
        bool,
        typer.Option("--reset-checkpoint", help="Start again from the beginning of the list."),
    ] = False,
) -> None:
    """Change an exchange's settings; `--set` merges into its config, `--unset` drops keys."""
    from bastion.exchanges import exchange_type

    cli = CliContext.of(ctx)
    if vouch_group and no_vouch_group:
        raise _usage("--vouch-group and --no-vouch-group contradict each other")
    with open_exchanges(cli) as xs:
        info = xs.get(name)
        fields: dict[str, Any] = {}
        if setting or unset:
            try:
                model = exchange_type(info.kind).Config
            except ValueError:
                model = None
            config = dict(info.config)
            for key in unset or ():
                if key not in config:
                    raise _usage(f"--unset {key}: {name} has no such setting")
                del config[key]
            config.update(_pairs(setting, model, "--set"))
            fields["config"] = _checked(model, config, "settings")
        if interval is not None:
            fields["interval"] = interval
        if on_delete is not None:
            fields["on_delete"] = _on_delete(on_delete)
        if vouch_group is not None or no_vouch_group:
            fields["vouch_group"] = None if no_vouch_group else vouch_group
        if min_vouchers is not None:
            fields["min_vouchers"] = min_vouchers
        if feedback is not None:
            fields["send_feedback"] = feedback
        if reset_checkpoint:
            fields["checkpoint"] = None
        if not fields:
            raise _usage("nothing to change: give --set, --unset, --interval, ... (see --help)")
        info = xs.update(name, actor=cli.actor, **fields)
    err.print(f"updated exchange [bold]{escape(info.name)}[/bold]: {', '.join(sorted(fields))}")


@exchange_app.command("set-credentials")
def exchange_set_credentials(
    ctx: typer.Context,
    name: NameArg,
    credential: CredOpt = None,
    credentials_file: CredFileOpt = None,
    credentials_env: CredEnvOpt = None,
) -> None:
    """Replace an exchange's credentials (sealed with the master key, never shown again)."""
    cli = CliContext.of(ctx)
    with open_exchanges(cli) as xs:
        info = xs.get(name)
    cls = _kind(info.kind)
    creds = _credentials(cls, credential, credentials_file, credentials_env)
    if creds is None:
        raise _usage("give --credentials-file, --credentials-env or --credential")
    _checked(cls.Credentials, creds, "credentials")
    with open_exchanges(cli, create_key=True) as xs:
        xs.set_credentials(name, creds, actor=cli.actor)
    err.print(f"credentials of [bold]{escape(name)}[/bold] replaced ({', '.join(sorted(creds))})")


@exchange_app.command("enable")
def exchange_enable(ctx: typer.Context, name: NameArg) -> None:
    """Resume scheduled syncs."""
    cli = CliContext.of(ctx)
    with open_exchanges(cli) as xs:
        xs.update(name, actor=cli.actor, enabled=True)
    err.print(f"enabled exchange [bold]{escape(name)}[/bold]")


@exchange_app.command("disable")
def exchange_disable(ctx: typer.Context, name: NameArg) -> None:
    """Stop scheduled syncs (the bank keeps matching what it holds)."""
    cli = CliContext.of(ctx)
    with open_exchanges(cli) as xs:
        xs.update(name, actor=cli.actor, enabled=False)
    err.print(f"disabled exchange [bold]{escape(name)}[/bold]")


@exchange_app.command("remove")
def exchange_remove(
    ctx: typer.Context,
    name: NameArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Delete an exchange and its credentials; its bank and entries stay.

    `bastion bank rm` deletes the bank."""
    cli = CliContext.of(ctx)
    with open_exchanges(cli) as xs:
        info = xs.get(name)
        if not yes:
            if not sys.stdin.isatty():
                raise _usage("removing an exchange needs --yes when not run interactively")
            typer.confirm(f"Remove exchange {info.name} (bank {info.bank} stays)?", abort=True)
        xs.remove(name, actor=cli.actor)
    err.print(f"removed exchange {escape(name)}; bank {escape(info.bank)} keeps its entries")
