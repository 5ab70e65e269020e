"""``bastion policy``: check a policy file, show its rules, and dry-run it over stored scans.

``policy test`` answers "what would this edit change?" before the edit goes live: it replays the
stored scans (newest first) through the file and counts what each rule would have caught, and how
many scans would get a different verdict from the one recorded at scan time.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from bastion.cli._context import CliContext, DbOpt, FormatOpt, err, progress, usage_error
from bastion.policy import (
    DECISIONS,
    Policy,
    PolicyError,
    default_policy,
    load_policy,
    policy_input,
)
from bastion.render import OutputFormat, emit

policy_app = typer.Typer(
    help="Check, show and dry-run policy files: the rules that turn matches into verdicts.",
    no_args_is_help=True,
)

#: Row names in ``policy test`` for verdicts no rule gave.
OTHERWISE = "(otherwise)"
NO_MATCH = "(no match)"
_PAGE = 1000

FileArg = Annotated[Path, typer.Argument(help="Policy file (YAML).")]


def _load(path: Path) -> Policy:
    """The policy in ``path``; a missing file is a usage error (2), an invalid one exit 1 with
    every error on stderr."""
    try:
        return load_policy(path)
    except PolicyError as exc:
        _print_errors(path, exc, err.file)
        raise typer.Exit(1) from exc
    except OSError as exc:
        raise usage_error(f"cannot read {path}: {exc.strerror or exc}") from exc


def _print_errors(path: Path, exc: PolicyError, out: Any) -> None:
    n = len(exc.errors)
    out.write(f"{path}: invalid policy ({n} error{'s' if n != 1 else ''})\n")
    for line, message in exc.errors:
        out.write(f"{path}:{line}: {message}\n" if line is not None else f"{path}: {message}\n")
    out.flush()


@policy_app.command("check")
def policy_check(path: FileArg) -> None:
    """Validate a policy file: exit 0 when valid, 1 with every error and its line otherwise."""
    try:
        policy = load_policy(path)
    except PolicyError as exc:
        _print_errors(path, exc, sys.stdout)
        raise typer.Exit(1) from exc
    except OSError as exc:
        raise usage_error(f"cannot read {path}: {exc.strerror or exc}") from exc
    n = len(policy.rules)
    sys.stdout.write(f"{path}: valid policy, {n} rule{'s' if n != 1 else ''}\n")


@policy_app.command("show")
def policy_show(
    path: Annotated[
        Path | None,
        typer.Argument(help="Policy file (default: the server's policy_file setting)."),
    ] = None,
    fmt: FormatOpt = OutputFormat.TABLE,
) -> None:
    """Summarise a policy: its rules in order, queues, SLAs and review settings."""
    from bastion.config import ConfigError, Settings
    from bastion.store.engine import data_dir

    if path is None:
        try:
            settings = Settings.load()
            path = Path(settings.in_data_dir(data_dir(settings.database_url)).policy_file or "")
        except ConfigError as exc:
            raise usage_error(str(exc)) from exc
    if path.exists():
        policy = _load(path)
        err.print(f"policy {escape(str(path))}")
    else:
        err.print(
            f"{escape(str(path))} does not exist yet: showing the default policy, which the "
            "server writes there on first start"
        )
        policy = default_policy()
    summary = policy.as_dict()
    if fmt is OutputFormat.JSON:
        sys.stdout.write(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        return
    rows = [
        {
            "#": i,
            "rule": r["name"],
            "when": [f"{k}: {_flow(v)}" for k, v in r["when"].items()],
            "verdict": r["verdict"],
            "priority": r.get("priority"),
            "queue": r.get("queue"),
            "actions": r.get("actions", []),
            "view": _view(r),
        }
        for i, r in enumerate(summary["rules"], start=1)
    ]
    other = summary["otherwise"]
    rows.append(
        {
            "#": "",
            "rule": OTHERWISE,
            "when": "matched, no rule above",
            "verdict": other["verdict"],
            "priority": other.get("priority"),
            "queue": other.get("queue"),
            "actions": other.get("actions", []),
            "view": _view(other),
        }
    )
    rows.append({"#": "", "rule": NO_MATCH, "when": "nothing matched", "verdict": "allow"})
    columns = ["#", "rule", "when", "verdict", "priority", "queue", "actions", "view"]
    if fmt is OutputFormat.CSV:
        for row in rows:
            row["when"] = "; ".join(row.get("when") or ())
    emit(rows, fmt, columns, sys.stdout, title="Rules (first that fits wins)")
    if fmt is OutputFormat.TABLE:
        queues = [
            {"queue": k, "senior": "yes" if q["senior"] else "", "description": q["description"]}
            for k, q in summary["queues"].items()
        ]
        emit(queues, fmt, ["queue", "senior", "description"], sys.stdout, title="Queues")
        review = summary["review"]
        sys.stdout.write(
            "SLA: "
            + ", ".join(f"{p} {d}" for p, d in summary["sla"].items())
            + f"\nReview: four_eyes {str(review['four_eyes']).lower()}, lease {review['lease']}, "
            f"escalation to {review['escalation_queue']}, on confirmed: "
            f"{', '.join(review['on_confirmed']) or 'nothing'}\n"
        )


def _view(outcome: dict[str, Any]) -> str:
    if outcome["verdict"] == "allow":
        return ""
    return "yes" if outcome["view_required"] else "no"


def _flow(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


# -- test -------------------------------------------------------------------------------------


@dataclass
class Replay:
    """What a policy would have decided over stored scans. Keys of ``caught`` are rule names,
    :data:`OTHERWISE` and :data:`NO_MATCH`."""

    scans: int = 0
    caught: Counter[str] = field(default_factory=Counter)
    changed_by: Counter[str] = field(default_factory=Counter)
    stored: Counter[str] = field(default_factory=Counter)
    decided: Counter[str] = field(default_factory=Counter)
    transitions: Counter[tuple[str, str]] = field(default_factory=Counter)

    @property
    def changed(self) -> int:
        return sum(self.changed_by.values())


def replay(
    store: Any,
    policy: Policy,
    *,
    limit: int | None = None,
    confirmed: Callable[[str], int] | None = None,
    on_scan: Callable[[], None] | None = None,
) -> Replay:
    """Run ``policy`` over ``store``'s scans, newest first (at most ``limit``).

    ``confirmed(uploader_id)`` gives an uploader's prior confirmed cases (asked once per
    uploader); without it every uploader counts as having none. Bank labels are today's.
    """
    bank_labels = {b.name: tuple(b.labels) for b in store.list_banks()}
    history = lru_cache(maxsize=100_000)(confirmed) if confirmed is not None else None
    out = Replay()
    before: int | None = None
    while limit is None or out.scans < limit:
        want = _PAGE if limit is None else min(_PAGE, limit - out.scans)
        batch = store.iter_scans(want, before_id=before)
        for rec in batch:
            uploader = rec.context.get("uploader_id")
            prior = history(uploader) if history and isinstance(uploader, str) and uploader else 0
            inp = policy_input(rec.content_kind, rec.context, rec.matches, bank_labels, prior)
            verdict = policy.decide(inp)
            key = verdict.rule or (OTHERWISE if inp.matches else NO_MATCH)
            out.scans += 1
            out.caught[key] += 1
            out.stored[rec.verdict] += 1
            out.decided[verdict.decision] += 1
            out.transitions[(rec.verdict, verdict.decision)] += 1
            if rec.verdict != verdict.decision:
                out.changed_by[key] += 1
            if on_scan is not None:
                on_scan()
        if len(batch) < want:
            break
        before = batch[-1].id
    return out


@policy_app.command("test")
def policy_test(
    ctx: typer.Context,
    path: FileArg,
    db: DbOpt = None,
    limit: Annotated[
        int | None,
        typer.Option("--limit", "-n", min=1, help="Replay only the newest N scans."),
    ] = None,
    fmt: FormatOpt = OutputFormat.TABLE,
) -> None:
    """Dry-run a policy over stored scans: how many items each rule would have caught, and how
    many verdicts would differ from those given at scan time. Nothing is changed."""
    policy = _load(path)
    cli = CliContext.of(ctx)  # its --db, if given, is in cli.db
    with cli.open_store() as store, progress("Replaying scans") as bar:
        task = bar.add_task("replay", total=limit)
        result = replay(store, policy, limit=limit, on_scan=lambda: bar.advance(task))
    rules = _rule_rows(policy, result)
    verdicts = [
        {
            "verdict": d,
            "at_scan_time": result.stored[d],
            "with_policy": result.decided[d],
            "difference": result.decided[d] - result.stored[d],
        }
        for d in DECISIONS
    ]
    if fmt is OutputFormat.JSON:
        doc = {
            "policy": str(path),
            "digest": policy.digest,
            "scans": result.scans,
            "changed": result.changed,
            "rules": rules,
            "verdicts": verdicts,
            "transitions": [
                {"from": a, "to": b, "count": n}
                for (a, b), n in sorted(result.transitions.items())
                if a != b
            ],
        }
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        columns = ["rule", "verdict", "priority", "caught", "changed"]
        emit(rules, OutputFormat.TABLE, columns, sys.stdout, title="Rules")
        columns = ["verdict", "at_scan_time", "with_policy", "difference"]
        emit(verdicts, OutputFormat.TABLE, columns, sys.stdout, title="Verdicts")
        changes = ", ".join(
            f"{a} → {b}: {n}" for (a, b), n in sorted(result.transitions.items()) if a != b
        )
        sys.stdout.write(
            f"{result.scans} scans replayed; {result.changed} would get a different verdict"
            + (f" ({changes})" if changes else "")
            + "\n"
        )
    err.print(
        "note: only scans that matched are stored; uploader history is not replayed (every "
        "uploader counts as having no confirmed cases)"
    )


def _rule_rows(policy: Policy, result: Replay) -> list[dict[str, Any]]:
    rows = [
        {
            "rule": r.name,
            "verdict": r.outcome.decision,
            "priority": r.outcome.priority if r.outcome.decision != "allow" else None,
            "caught": result.caught[r.name],
            "changed": result.changed_by[r.name],
        }
        for r in policy.rules
    ]
    other = policy.otherwise
    rows.append(
        {
            "rule": OTHERWISE,
            "verdict": other.decision,
            "priority": other.priority if other.decision != "allow" else None,
            "caught": result.caught[OTHERWISE],
            "changed": result.changed_by[OTHERWISE],
        }
    )
    if result.caught[NO_MATCH]:
        rows.append(
            {
                "rule": NO_MATCH,
                "verdict": "allow",
                "priority": None,
                "caught": result.caught[NO_MATCH],
                "changed": result.changed_by[NO_MATCH],
            }
        )
    return rows
