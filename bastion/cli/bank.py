"""``bastion bank``: create, list, import, export, add to, disable, enable and delete banks.

Changes are audited with the operating-system user as actor (``cli:<user>``).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from bastion.banks import BankFormat, NewEntry
from bastion.cli._context import CliContext, FormatOpt, err, usage_error
from bastion.cli.scan import WorkersOpt
from bastion.render import OutputFormat, emit
from bastion.scan import hash_paths
from bastion.signals import FileSignals
from bastion.signals.base import DEFAULT_MIN_QUALITY, Signal, SignalType

bank_app = typer.Typer(help="Manage banks: named hash lists with provenance.", no_args_is_help=True)


KindOpt = Annotated[
    str,
    typer.Option(
        help="block: a list of what to find; allow: known benign items whose matches suppress "
        "other banks' matches of the same content."
    ),
]
ThresholdOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--threshold",
        help="TYPE=DISTANCE, e.g. pdq=16: the largest distance that counts as a match of this "
        "bank (pdq, vpdq; repeatable).",
    ),
]
RateOpt = Annotated[
    int | None,
    typer.Option(
        help="Matches per entry and hour past which an entry is quarantined from automatic "
        "actions (flood protection)."
    ),
]


def _thresholds(items: list[str] | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items or ():
        kind, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit():
            raise usage_error(f"--threshold takes TYPE=DISTANCE (e.g. pdq=16), not {item!r}")
        out[kind.strip().lower()] = int(value)
    return out


@bank_app.command("create")
def bank_create(
    ctx: typer.Context,
    name: str,
    label: Annotated[
        list[str] | None, typer.Option("--label", "-l", help="Label, e.g. csam (repeatable).")
    ] = None,
    source: Annotated[str, typer.Option(help="Organisation the list comes from.")] = "",
    description: Annotated[str, typer.Option(help="What the bank holds.")] = "",
    demo: Annotated[bool, typer.Option(help="Mark as demo data (never real hashes).")] = False,
    kind: KindOpt = "block",
    threshold: ThresholdOpt = None,
    expected_rate: RateOpt = None,
) -> None:
    """Create an empty bank."""
    cli = CliContext.of(ctx)
    with cli.open_store() as store:
        bank = store.create_bank(
            name,
            description=description,
            labels=label or [],
            source=source,
            is_demo=demo,
            kind=kind,
            thresholds=_thresholds(threshold),
            expected_rate=expected_rate,
            actor=cli.actor,
        )
    err.print(f"created bank [bold]{escape(bank.name)}[/bold]")


@bank_app.command("set")
def bank_set(
    ctx: typer.Context,
    name: str,
    kind: Annotated[str | None, typer.Option(help="block or allow.")] = None,
    threshold: ThresholdOpt = None,
    clear_thresholds: Annotated[
        bool,
        typer.Option("--clear-thresholds", help="Use the scan's threshold for every type again."),
    ] = False,
    expected_rate: RateOpt = None,
    no_expected_rate: Annotated[
        bool, typer.Option("--no-expected-rate", help="Turn flood protection off.")
    ] = False,
) -> None:
    """Change a bank's hygiene settings: kind, thresholds per signal type, expected rate."""
    fields: dict[str, Any] = {}
    if kind is not None:
        fields["kind"] = kind
    if threshold or clear_thresholds:
        fields["thresholds"] = _thresholds(threshold)
    if expected_rate is not None and no_expected_rate:
        raise usage_error("give --expected-rate or --no-expected-rate, not both")
    if expected_rate is not None or no_expected_rate:
        fields["expected_rate"] = expected_rate
    if not fields:
        raise usage_error("nothing to change: give --kind, --threshold or --expected-rate")
    cli = CliContext.of(ctx)
    with cli.open_store() as store:
        bank = store.update_bank(name, actor=cli.actor, **fields)
    limits = ", ".join(f"{k}={v}" for k, v in sorted(bank.thresholds.items())) or "the scan's"
    rate = bank.expected_rate if bank.expected_rate is not None else "no limit"
    err.print(
        f"bank [bold]{escape(bank.name)}[/bold]: {bank.kind}, thresholds {escape(limits)}, "
        f"expected rate {rate} an hour"
    )


@bank_app.command("quarantine")
def bank_quarantine(
    ctx: typer.Context,
    fmt: FormatOpt = OutputFormat.TABLE,
    every: Annotated[bool, typer.Option("--all", help="Released and disputed too.")] = False,
) -> None:
    """Entries quarantined for matching more than their bank's expected rate."""
    cli = CliContext.of(ctx)
    with cli.open_store() as store:
        held = store.quarantined(state=None if every else "quarantined")
    rows = [
        {
            "entry": q.entry_id,
            "bank": q.bank,
            "state": q.state,
            "matches": q.matches,
            "expected_rate": q.expected_rate,
            "quarantined_at": q.quarantined_at.isoformat(timespec="seconds"),
        }
        for q in held
    ]
    emit(
        rows,
        fmt,
        ["entry", "bank", "state", "matches", "expected_rate", "quarantined_at"],
        sys.stdout,
    )


@bank_app.command("dispute")
def bank_dispute(
    ctx: typer.Context,
    entry: Annotated[int, typer.Argument(help="The quarantined entry's id.")],
    reason: Annotated[str, typer.Option(help="Why, for the record.")] = "",
) -> None:
    """End a quarantine as wrong for the list (a colliding or poisoned hash): the entry is
    disabled."""
    cli = CliContext.of(ctx)
    with cli.open_store() as store:
        store.resolve_quarantine(entry, "disputed", actor=cli.actor, reason=reason)
    err.print(f"entry {entry} disputed and disabled")


@bank_app.command("release")
def bank_release(
    ctx: typer.Context,
    entry: Annotated[int, typer.Argument(help="The quarantined entry's id.")],
    reason: Annotated[str, typer.Option(help="Why, for the record.")] = "",
) -> None:
    """End a quarantine as a real burst: the entry acts again and its count starts over."""
    cli = CliContext.of(ctx)
    with cli.open_store() as store:
        store.resolve_quarantine(entry, "released", actor=cli.actor, reason=reason)
    err.print(f"entry {entry} released")


@bank_app.command("list")
def bank_list(ctx: typer.Context, fmt: FormatOpt = OutputFormat.TABLE) -> None:
    """List banks with their entry counts."""
    cli = CliContext.of(ctx)
    with cli.open_store() as store:
        banks = store.list_banks()
    rows = [
        {
            "name": b.name,
            "labels": list(b.labels),
            "source": b.source,
            "entries": b.entry_count,
            "enabled": b.enabled,
            "demo": b.is_demo,
            "version": b.version,
            "kind": b.kind,
            "thresholds": ",".join(f"{k}={v}" for k, v in sorted(b.thresholds.items())),
            "expected_rate": b.expected_rate,
        }
        for b in banks
    ]
    columns = ["name", "labels", "source", "entries", "enabled", "demo", "version", "kind"]
    columns += ["thresholds", "expected_rate"]
    emit(rows, fmt, columns, sys.stdout)


@bank_app.command("import")
def bank_import(
    ctx: typer.Context,
    name: str,
    file: Annotated[str, typer.Argument(help="Hash list file (`-` for stdin).")],
    file_format: Annotated[
        str | None,
        typer.Option(
            "--format", "-f", help="csv, jsonl, pytx or iwf (IWF-style list) (default: detect)."
        ),
    ] = None,
) -> None:
    """Import a hash list: Bastion CSV or JSON lines, python-threatexchange hash files, or an
    IWF-style list (``--format iwf``).

    Streams the file (any size, constant memory) with a progress bar of bytes read and rows per
    second on a terminal. Bad lines are reported one by one and the rest is imported. Exit code 0
    when every line was taken, 1 when some were rejected, 2 for a usage error.
    """
    from bastion.banks.formats import IWF, parse

    fmt = file_format.strip().lower() if file_format else None
    known = [f.value for f in BankFormat] + [IWF]
    if fmt is not None and fmt not in known:
        raise usage_error(f"unknown format {file_format!r} (expected one of: {', '.join(known)})")
    if file != "-" and not Path(file).is_file():
        raise usage_error(f"no such file: {file}")
    cli = CliContext.of(ctx)
    with cli.open_store() as store:
        store.get_bank(name)  # fail before reading anything
        try:
            fh = sys.stdin.buffer if file == "-" else open(file, "rb")  # noqa: SIM115
        except OSError as exc:
            raise usage_error(f"cannot read {file}: {exc.strerror}") from exc
        try:
            total = None if file == "-" else os.fstat(fh.fileno()).st_size
            reader = _CountingReader(fh)
            with _import_progress(total) as (bar, task):
                rows = _counted(parse(reader, fmt), reader, bar, task)
                report = store.add_entries(name, rows, actor=cli.actor)
        finally:
            if fh is not sys.stdin.buffer:
                fh.close()
    err.print(
        f"{report.added} added, {report.duplicates} duplicates skipped, "
        f"{report.error_count} lines rejected"
    )
    for message in report.errors:
        err.print(f"  {escape(message)}")
    if report.error_count > len(report.errors):
        err.print(f"  … and {report.error_count - len(report.errors)} more")
    raise typer.Exit(1 if report.error_count else 0)


class _CountingReader:
    """Counts the bytes the parser has read, for the progress bar (``readline`` is all the
    parsers use, so the count needs no seeking and works on pipes)."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self.read_bytes = 0

    def readline(self, limit: int = -1) -> bytes:
        chunk: bytes = self._raw.readline(limit)
        self.read_bytes += len(chunk)
        return chunk


@contextmanager
def _import_progress(total: int | None) -> Iterator[tuple[Progress, Any]]:
    from rich.progress import DownloadColumn, TransferSpeedColumn

    bar = Progress(
        TextColumn("Importing"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TextColumn("{task.fields[rows]:,} rows, {task.fields[rate]:,.0f} rows/s"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
    with bar:
        yield bar, bar.add_task("import", total=total, rows=0, rate=0.0)


def _counted(
    items: Iterator[Any], reader: _CountingReader, bar: Progress, task: Any
) -> Iterator[Any]:
    """Pass ``items`` through, updating the bar every few thousand rows (cheap enough for
    millions)."""
    import time

    start = time.monotonic()
    rows = 0
    for item in items:
        rows += 1
        if rows % 4096 == 0:
            elapsed = max(time.monotonic() - start, 1e-9)
            bar.update(task, completed=reader.read_bytes, rows=rows, rate=rows / elapsed)
        yield item
    elapsed = max(time.monotonic() - start, 1e-9)
    bar.update(task, completed=reader.read_bytes, rows=rows, rate=rows / elapsed)


@bank_app.command("export")
def bank_export(
    ctx: typer.Context,
    name: str,
    file_format: Annotated[
        BankFormat, typer.Option("--format", "-f", help="File format.", case_sensitive=False)
    ] = BankFormat.JSONL,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
) -> None:
    """Export a bank's enabled entries (audited as `bank.export`)."""
    cli = CliContext.of(ctx)
    with cli.open_store() as store:
        store.get_bank(name)
        if output is None:
            store.export(name, file_format, sys.stdout, actor=cli.actor)
            return
        # Write beside the target and rename: a failed export never leaves a half file or
        # empties an existing one.
        try:
            fd, tmp = tempfile.mkstemp(prefix=".bastion-export-", dir=output.parent)
        except OSError as exc:
            raise usage_error(f"cannot write {output}: {exc.strerror}") from exc
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
                store.export(name, file_format, out, actor=cli.actor)
            os.replace(tmp, output)
        except OSError as exc:
            raise usage_error(f"cannot write {output}: {exc.strerror}") from exc
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


@bank_app.command("add")
def bank_add(
    ctx: typer.Context,
    name: str,
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to hash and add.")],
    label: Annotated[
        list[str] | None, typer.Option("--label", "-l", help="Label for the new entries.")
    ] = None,
    keep_exact: Annotated[
        bool,
        typer.Option(help="Add the MD5/SHA-256 of files that could not be decoded as media."),
    ] = False,
    min_quality: Annotated[
        int, typer.Option(min=0, max=100, help="Skip PDQ hashes below this quality.")
    ] = DEFAULT_MIN_QUALITY,
    workers: WorkersOpt = 0,
) -> None:
    """Hash files and add their signals to a bank.

    Files that fail to decode are skipped (their exact hashes only with --keep-exact); empty
    files are never added; PDQ hashes too weak to match reliably are left out, with a warning.
    """
    skipped = 0
    cli = CliContext.of(ctx)
    with cli.open_store() as store:
        bank = store.get_bank(name)

        def entries() -> Iterator[NewEntry]:
            nonlocal skipped
            for fs in hash_paths(paths, workers=workers):
                sigs = _signals_to_add(fs, keep_exact=keep_exact, min_quality=min_quality)
                if len(sigs) < len(fs.signals) or not sigs:
                    skipped += 1
                for sig in sigs:
                    yield NewEntry(
                        signal_type=sig.type,
                        value=sig.value,
                        quality=sig.quality,
                        source=bank.source,
                        labels=list(label or []),
                        metadata={"filename": Path(fs.path).name, "kind": fs.kind},
                    )

        report = store.add_entries(name, entries(), actor=cli.actor)
    err.print(f"{report.added} entries added, {report.duplicates} duplicates skipped")
    if skipped:
        err.print(f"{skipped} files were skipped in whole or in part (see warnings)")


def _signals_to_add(fs: FileSignals, *, keep_exact: bool, min_quality: int) -> list[Signal]:
    def warn(message: str) -> None:
        err.print(f"[yellow]warning[/yellow] {escape(fs.path)}: {escape(message)}")

    if fs.size == 0:
        warn("empty file: not added (every empty file would match)")
        return []
    if fs.error and not keep_exact:
        warn(f"{fs.error}: not added (--keep-exact adds its MD5/SHA-256)")
        return []
    kept = []
    for sig in fs.signals:
        if sig.type == SignalType.PDQ and (sig.quality or 0) < min_quality:
            warn(f"pdq quality {sig.quality} < {min_quality}: pdq not added")
            continue
        kept.append(sig)
    return kept


ExternalIdOpt = Annotated[
    str | None,
    typer.Option(
        "--external-id",
        help="Every entry with this external id (all the signals of one item, e.g. a photo's "
        "PDQ, MD5 and SHA-256), in one audited change.",
    ),
]


def _entries(n: int) -> str:
    return f"{n} entry" if n == 1 else f"{n} entries"


def _entry_ref(store: Any, name: str, entry: str | None, external_id: str | None) -> str:
    """The entry reference to act on: ``entry``, or ``--external-id`` (which must name at
    least one entry, and is never read as an id or a hash)."""
    if (entry is None) == (external_id is None):
        raise usage_error("give an entry (id, external id or hash) or --external-id, not both")
    if external_id is not None:
        if not store.find_entries(name, external_id=external_id):
            raise usage_error(f"bank {name!r} has no entry with external id {external_id!r}")
        return external_id
    return str(entry)


@bank_app.command("disable")
def bank_disable(
    ctx: typer.Context,
    name: str,
    entry: Annotated[
        str | None, typer.Argument(help="Entry id, external id, or hash value.")
    ] = None,
    external_id: ExternalIdOpt = None,
    reason: Annotated[str, typer.Option(help="Why, for the record.")] = "",
) -> None:
    """Disable an entry, or with --external-id every signal of an item (withdrawing a photo
    from a feed): it stops matching at once and stays on record."""
    cli = CliContext.of(ctx)
    with cli.open_store() as store:
        ref = _entry_ref(store, name, entry, external_id)
        done = store.disable_entry(name, ref, reason=reason, actor=cli.actor)
    err.print(f"disabled {_entries(len(done))} ({escape(ref)}) in {escape(name)}")


@bank_app.command("enable")
def bank_enable(
    ctx: typer.Context,
    name: str,
    entry: Annotated[
        str | None, typer.Argument(help="Entry id, external id, or hash value.")
    ] = None,
    external_id: ExternalIdOpt = None,
) -> None:
    """Re-enable a disabled entry (or every entry with --external-id)."""
    cli = CliContext.of(ctx)
    with cli.open_store() as store:
        ref = _entry_ref(store, name, entry, external_id)
        done = store.enable_entry(name, ref, actor=cli.actor)
    err.print(f"enabled {_entries(len(done))} ({escape(ref)}) in {escape(name)}")


@bank_app.command("rm")
def bank_rm(
    ctx: typer.Context,
    name: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Delete a bank and all its entries."""
    cli = CliContext.of(ctx)
    with cli.open_store() as store:
        bank = store.get_bank(name)
        if not yes:
            if not sys.stdin.isatty():
                raise usage_error("deleting a bank needs --yes when not run interactively")
            typer.confirm(f"Delete bank {bank.name} and its entries?", abort=True)
        store.delete_bank(name, actor=cli.actor)
    err.print(f"deleted bank {escape(name)}")
