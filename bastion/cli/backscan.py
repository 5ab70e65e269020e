"""``bastion backscan``: hash and match an archive into a resumable Parquet dataset, and
``bastion backscan status`` to see how far one has got (docs/backscan.md).

Exit codes: 0 done (nothing matched), 1 done with matches, 2 usage error. A run stopped
part-way (Ctrl-C, a crash, SIGKILL) is finished by running it again with the same --out.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from typer.core import TyperGroup

from bastion.cli._context import CliContext, DbOpt, err, usage_error
from bastion.cli.scan import BankOpt, ThresholdOpt, load_matcher
from bastion.index.matcher import DEFAULT_PDQ_THRESHOLD
from bastion.scan import DEFAULT_FILE_TIMEOUT
from bastion.signals.base import DEFAULT_MIN_QUALITY


class _RunByDefault(TyperGroup):
    """``bastion backscan SOURCE ...`` runs a back-scan; ``bastion backscan status DIR`` is
    the one subcommand. A first word that names no subcommand is the source."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # click.Context
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


backscan_app = typer.Typer(
    cls=_RunByDefault,
    help="Back-scan an archive (folder, manifest or s3:// prefix) into a Parquet dataset.",
    no_args_is_help=True,
)


def _human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def _progress() -> Progress:
    return Progress(
        TextColumn("Back-scan"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rates]}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


@backscan_app.command("run")
def run_cmd(
    ctx: typer.Context,
    source: Annotated[
        str,
        typer.Argument(help="A folder, a manifest (.csv, .jsonl, .parquet) or s3://bucket/prefix."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Dataset directory (resumable).")],
    db: DbOpt = None,
    engine: Annotated[
        str, typer.Option(help="local (a process pool) or ray (Ray Data).", case_sensitive=False)
    ] = "local",
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (ray://host:10001 or host:6379).")
    ] = None,
    workers: Annotated[
        int, typer.Option(min=0, max=1024, help="Local worker processes (0 = one per core).")
    ] = 0,
    endpoint_url: Annotated[
        str | None,
        typer.Option(
            envvar="AWS_ENDPOINT_URL_S3", help="S3-compatible endpoint (MinIO, Ceph, R2...)."
        ),
    ] = None,
    threshold: ThresholdOpt = DEFAULT_PDQ_THRESHOLD,
    dihedral: Annotated[
        bool, typer.Option(help="Also try the 8 rotations and flips of each image.")
    ] = False,
    bank: BankOpt = None,
    min_quality: Annotated[
        int, typer.Option(min=0, max=100, help="Ignore PDQ hashes below this quality.")
    ] = DEFAULT_MIN_QUALITY,
    shard_size: Annotated[
        int, typer.Option(min=1, max=1_000_000, help="Objects per shard (the unit of resume).")
    ] = 256,
    timeout: Annotated[
        float, typer.Option(min=1, help="Seconds before one object's hashing is stopped.")
    ] = DEFAULT_FILE_TIMEOUT,
    max_object_bytes: Annotated[
        int, typer.Option(min=1, help="Larger objects are not downloaded (a row says so).")
    ] = 4 * 1024**3,
    config: Annotated[
        Path | None, typer.Option(help="TOML config file (also BASTION_CONFIG).")
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Only write the dataset and say what policy would do; open no case."
        ),
    ] = False,
) -> None:
    """Hash every object with the same code as `bastion scan`, match it against the banks and
    write one Parquet row per object under --out. Killed and started again with the same --out,
    it redoes only the shards that had not finished; every object is in the dataset once."""
    from bastion.backscan.dataset import Dataset, DatasetError
    from bastion.backscan.engine import RunOptions
    from bastion.backscan.model import Tally
    from bastion.backscan.run import Request, execute, plan
    from bastion.backscan.sources import SourceError

    engine = engine.lower()
    if engine not in ("local", "ray"):
        raise usage_error(f"--engine must be local or ray, not {engine!r}")
    if address and engine != "ray":
        raise usage_error("--address is for --engine ray")
    opts = RunOptions(
        engine=engine,  # type: ignore[arg-type]
        workers=workers,
        address=address,
        threshold=threshold,
        min_quality=min_quality,
        timeout=timeout,
        banks=tuple(bank) if bank else None,
    )
    req = Request(
        source=source,
        out=out,
        run=opts,
        dihedral=dihedral,
        endpoint_url=endpoint_url,
        shard_size=shard_size,
        max_object_bytes=max_object_bytes,
    )
    cli = CliContext.of(ctx)
    ds = Dataset(out)
    try:
        ds.lock()
    except DatasetError as exc:
        raise usage_error(str(exc)) from exc
    try:
        ds.clean()
        with err.status("Listing the source…"):
            try:
                run = plan(ds, req)
            except (SourceError, DatasetError) as exc:
                raise usage_error(str(exc)) from exc
        with cli.open_store() as store:
            rt = _runtime(cli, store, config)
            revision = store.current_revision()
            matcher = load_matcher(store, bank)
            done_before = ds.tally() if ds.done() else Tally()
            with _progress() as bar:
                task = bar.add_task("backscan", total=int(run["objects"]), rates="")
                bar.update(task, completed=done_before.objects)
                t0 = time.monotonic()

                def show(t: Tally) -> None:
                    dt = max(time.monotonic() - t0, 1e-9)
                    rates = (
                        f"{t.objects / dt:,.1f} obj/s  {_human_bytes(t.bytes / dt)}/s  "
                        f"{t.matched} matched ({t.matched / dt:.2f}/s)  "
                        f"{t.errors} errors ({t.errors / dt:.2f}/s)"
                    )
                    bar.update(task, completed=done_before.objects + t.objects, rates=rates)

                summary = execute(ds, req, matcher, revision, on_progress=show)
            summary["review"] = _to_review(rt, ds, summary, dry_run=dry_run)
            ds.write_summary(summary)
            store.record_audit(
                actor=cli.actor,
                action="backscan.run",
                target=f"backscan:{ds.root.resolve()}",
                detail=_audit_detail(summary),
            )
    finally:
        ds.unlock()
    _print_summary(summary)
    raise typer.Exit(1 if summary["total"]["matched"] else 0)


def _runtime(cli: CliContext, store: Any, config: Path | None) -> Any:
    """The services a scan request has (policy, review, outbox), over the CLI's store."""
    from bastion.config import ConfigError, Settings
    from bastion.runtime import build_runtime

    try:
        settings = Settings.load(config, database_url=cli.db)
        return build_runtime(settings, store)
    except (ConfigError, OSError, ValueError) as exc:
        raise usage_error(f"cannot load the settings, key or policy: {exc}") from exc


def matched_rows(ds: Any) -> Iterator[dict[str, Any]]:
    """The dataset's rows that matched something (usually few), shard by shard."""
    for batch in ds.iter_rows():
        for row in batch.to_pylist():
            if row["matched"]:
                yield row


def _to_review(rt: Any, ds: Any, summary: dict[str, Any], *, dry_run: bool) -> dict[str, Any]:
    """Findings into the backlog and the first cases the rate allows (none with --dry-run);
    a complete dataset is registered for re-matching when banks grow."""
    from bastion.backscan.intake import drain, enqueue
    from bastion.backscan.store import BackscanStore

    label = f"backscan:{ds.root.resolve()}"
    review = enqueue(rt, matched_rows(ds), origin="backscan", label=label, dry_run=dry_run)
    if dry_run:
        return review
    if summary["complete"]:
        BackscanStore(rt.store).register_dataset(
            str(ds.root.resolve()),
            summary["source"],
            summary["total"]["objects"],
            summary["lowest_bank_revision"],
        )
    review["opened_now"] = drain(rt)
    per_hour = rt.settings.backscan_cases_per_hour
    review["backlog"] = [asdict(b) for b in BackscanStore(rt.store).backlog(per_hour)]
    return review


def _audit_detail(summary: dict[str, Any]) -> dict[str, Any]:
    """What the audit log keeps of a run: counts and revision, never hashes or uris."""
    total, this = summary["total"], summary["this_run"]
    return {
        "source": summary["source"][:500],
        "complete": summary["complete"],
        "shards": summary["shards"],
        "objects": total["objects"],
        "matched": total["matched"],
        "errors": total["errors"],
        "this_run_objects": this["objects"],
        "this_run_seconds": this["seconds"],
        "bank_revision": summary["bank_revision"],
        "engine": summary["engine"],
        "review": summary.get("review"),
    }


def _print_summary(summary: dict[str, Any]) -> None:
    total, this = summary["total"], summary["this_run"]
    err.print(
        f"{total['objects']} objects in {summary['shards']} shards "
        f"({this['objects']} this run in {this['seconds']:.1f}s, "
        f"{this['shards_already_done']} shards already done): "
        f"{total['matched']} matched, {total['errors']} with errors"
    )
    review = summary.get("review") or {}
    if review.get("dry_run"):
        would = escape(json.dumps(review.get("would")))
        err.print(f"dry run: no case opened; policy would: {would}")
    json.dump(summary, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


@backscan_app.command("status")
def status_cmd(
    ctx: typer.Context,
    out: Annotated[Path, typer.Argument(help="The back-scan's dataset directory.")],
    backlog: Annotated[
        bool,
        typer.Option(
            "--backlog", help="Also show the review backlog per queue (reads the database)."
        ),
    ] = False,
    db: DbOpt = None,
    config: Annotated[
        Path | None, typer.Option(help="TOML config file (also BASTION_CONFIG).")
    ] = None,
) -> None:
    """Shards done, objects, matches, errors and throughput of a back-scan directory (running
    or not), and with --backlog the findings waiting for review per queue, with their ETA."""
    from bastion.backscan.dataset import Dataset

    ds = Dataset(out)
    run = ds.run()
    if run is None:
        raise usage_error(f"{out} holds no planned back-scan")
    total = ds.tally()
    last = ds.summary() or {}
    doc = {
        "source": run["source"],
        "shards": int(run["shards"]),
        "shards_done": total.shards,
        "objects_planned": int(run["objects"]),
        **total.as_dict(),
        "complete": total.shards == int(run["shards"]),
        "last_run": last.get("this_run"),
        "review": last.get("review"),
    }
    if backlog:
        from bastion.backscan.store import BackscanStore
        from bastion.config import ConfigError, Settings

        cli = CliContext.of(ctx)
        try:
            per_hour = Settings.load(config, database_url=cli.db).backscan_cases_per_hour
        except ConfigError as exc:
            raise usage_error(str(exc)) from exc
        with cli.open_store() as store:
            doc["backlog"] = [asdict(b) for b in BackscanStore(store).backlog(per_hour)]
    json.dump(doc, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def rematch_cmd(
    ctx: typer.Context,
    since: Annotated[
        int | None,
        typer.Option(
            "--since",
            min=0,
            help="Re-match against entries changed after this bank revision (default: the "
            "oldest revision any stored signal set is matched up to).",
        ),
    ] = None,
    db: DbOpt = None,
    config: Annotated[
        Path | None, typer.Option(help="TOML config file (also BASTION_CONFIG).")
    ] = None,
    threshold: ThresholdOpt = DEFAULT_PDQ_THRESHOLD,
    min_quality: Annotated[
        int, typer.Option(min=0, max=100, help="Ignore PDQ hashes below this quality.")
    ] = DEFAULT_MIN_QUALITY,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what would match; open no case.")
    ] = False,
) -> None:
    """Re-match the stored signals (back-scan datasets and the scans table) against only the
    bank entries added since a revision; new matches go to review as retroactive, labelled with
    the bank revision that produced them. Removed or disputed entries open nothing. The worker
    does this by itself every rematch_interval_seconds.

    Exit code 0 when nothing new matched, 1 when something did."""
    from bastion.backscan.intake import drain
    from bastion.backscan.rematch import RematchOptions, rematch

    cli = CliContext.of(ctx)
    with cli.open_store() as store:
        rt = _runtime(cli, store, config)
        opts = RematchOptions(threshold=threshold, min_quality=min_quality)
        report = rematch(rt, since, opts=opts, dry_run=dry_run)
        if not dry_run:
            report.review["opened_now"] = drain(rt)
        doc = report.as_dict()
        store.record_audit(
            actor=cli.actor,
            action="backscan.rematch",
            target=f"revision:{report.since}..{report.upto}",
            detail={k: doc[k] for k in ("new_entries", "signals", "matched", "seconds", "review")},
        )
    err.print(
        f"{report.signals} stored signals re-matched against {report.new_entries} new entries "
        f"(revisions {report.since}..{report.upto}): {report.matched} new matches"
    )
    json.dump(doc, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    raise typer.Exit(1 if report.matched else 0)
