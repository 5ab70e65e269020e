"""The ``bastion`` command: hash, bank, scan, match and url check.

Exit codes: 0 no match, 1 matches found (scan, match, url check), 2 usage error.
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
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bastion import cli_worker
from bastion.banks import BankFormat, NewEntry
from bastion.banks.formats import PYTX_TO_BASTION, ParseError, iter_lines
from bastion.cli_audit import audit_app
from bastion.cli_exchange import exchange_app
from bastion.cli_feed import feed_app
from bastion.cli_keys import cli_actor, key_app
from bastion.cli_pdata import pdata_app
from bastion.cli_policy import policy_app
from bastion.cli_users import user_app
from bastion.cli_vault import vault_app
from bastion.index.matcher import DEFAULT_PDQ_THRESHOLD, Match, Matcher
from bastion.render import OutputFormat, emit
from bastion.scan import (
    DEFAULT_FILE_TIMEOUT,
    ScanOptions,
    ScanResult,
    hash_paths,
    iter_files,
    scan_paths,
)
from bastion.signals import FileSignals
from bastion.signals.base import DEFAULT_MIN_QUALITY, Signal, SignalType
from bastion.store import BankExists, BankNotFound, EntryNotFound, Store, StoreError

app = typer.Typer(
    name="bastion",
    help="Find and stop child sexual exploitation and abuse: hash, match, review, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bank_app = typer.Typer(help="Manage banks: named hash lists with provenance.", no_args_is_help=True)
url_app = typer.Typer(help="Match URLs against URL banks.", no_args_is_help=True)
app.add_typer(bank_app, name="bank")
app.add_typer(url_app, name="url")
app.add_typer(key_app, name="key")
app.add_typer(user_app, name="user")
app.add_typer(audit_app, name="audit")
app.add_typer(vault_app, name="vault")
app.command("worker")(cli_worker.worker)
app.add_typer(policy_app, name="policy")
app.add_typer(pdata_app, name="pdata")
app.add_typer(exchange_app, name="exchange")
app.add_typer(feed_app, name="feed")

err = Console(stderr=True)
_state: dict[str, Any] = {"db": None}

FormatOpt = Annotated[
    OutputFormat, typer.Option("--format", "-f", help="Output format.", case_sensitive=False)
]
ThresholdOpt = Annotated[
    int,
    typer.Option("--threshold", "-t", min=0, max=256, help="Largest PDQ distance that matches."),
]
WorkersOpt = Annotated[
    int, typer.Option(min=0, max=256, help="Worker processes (0 = one per core).")
]
BankOpt = Annotated[
    list[str] | None, typer.Option("--bank", "-b", help="Only match these banks (repeatable).")
]


@app.callback()
def main(
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            envvar="BASTION_DATABASE_URL",
            help="Database URL (default: SQLite in ./bastion-data/).",
        ),
    ] = None,
) -> None:
    _state["db"] = db


def usage_error(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(2)


@contextmanager
def open_store() -> Iterator[Store]:
    try:
        store = Store.open(_state["db"])
    except StoreError as exc:
        raise usage_error(f"cannot open the store: {exc}") from exc
    try:
        yield store
    except (BankNotFound, BankExists, EntryNotFound, StoreError, ValueError) as exc:
        raise usage_error(str(exc)) from exc
    finally:
        store.close()


def load_matcher(
    store: Store, banks: list[str] | None = None, types: list[SignalType] | None = None
) -> Matcher:
    for name in banks or ():
        store.get_bank(name)  # a typo in --bank is a usage error, not an empty result
    with err.status("Loading banks into the index…"):
        matcher = Matcher.from_entries(
            store.iter_index_entries(banks=banks or None, signal_types=types)
        )
    for entry_id, reason in matcher.rejected[:10]:
        err.print(f"[yellow]warning[/yellow] entry {entry_id} not indexed: {escape(reason)}")
    if len(matcher.rejected) > 10:
        err.print(f"[yellow]warning[/yellow] {len(matcher.rejected)} entries not indexed in all")
    return matcher


def progress(label: str) -> Progress:
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


# -- hash -------------------------------------------------------------------------------------
@app.command("hash")
def hash_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to hash.")],
    fmt: FormatOpt = OutputFormat.TABLE,
    reference: Annotated[
        bool, typer.Option(help="Full-resolution decode without EXIF transposition (slow).")
    ] = False,
    workers: WorkersOpt = 0,
) -> None:
    """Print every signal of each file: pdq (with quality), vpdq, md5, sha256."""
    results = hash_paths(paths, workers=workers, reference=reference)
    if fmt is OutputFormat.JSON:
        rows = (_hash_json(fs) for fs in results)
        emit(rows, fmt, [], sys.stdout)
        return
    columns = ["path", "kind", "type", "value", "quality", "error"]
    emit(_hash_rows(results, full=fmt is OutputFormat.CSV), fmt, columns, sys.stdout)


def _hash_json(fs: FileSignals) -> dict[str, Any]:
    return {
        "path": fs.path,
        "kind": fs.kind,
        "size": fs.size,
        "signals": [_signal_json(s) for s in fs.signals],
        "error": fs.error,
    }


def _signal_json(sig: Signal) -> dict[str, Any]:
    out: dict[str, Any] = {"type": str(sig.type), "value": sig.value}
    if sig.quality is not None:
        out["quality"] = sig.quality
    return out


def _hash_rows(results: Iterator[FileSignals], *, full: bool) -> Iterator[dict[str, Any]]:
    for fs in results:
        if not fs.signals:
            yield {"path": fs.path, "kind": fs.kind, "error": fs.error}
        for i, sig in enumerate(fs.signals):
            value = sig.value
            if sig.type == SignalType.VPDQ and not full:
                value = f"{len(sig.frames)} frames"
            yield {
                "path": fs.path,
                "kind": fs.kind,
                "type": str(sig.type),
                "value": value,
                "quality": sig.quality,
                "error": fs.error if i == 0 else None,
            }


# -- scan -------------------------------------------------------------------------------------
@app.command()
def scan(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to scan.")],
    fmt: FormatOpt = OutputFormat.TABLE,
    threshold: ThresholdOpt = DEFAULT_PDQ_THRESHOLD,
    dihedral: Annotated[
        bool, typer.Option(help="Also try the 8 rotations and flips of each image.")
    ] = False,
    bank: BankOpt = None,
    min_quality: Annotated[
        int, typer.Option(min=0, max=100, help="Ignore PDQ hashes below this quality.")
    ] = DEFAULT_MIN_QUALITY,
    workers: WorkersOpt = 0,
    timeout: Annotated[
        float, typer.Option(min=1, help="Seconds before one file's hashing is stopped.")
    ] = DEFAULT_FILE_TIMEOUT,
) -> None:
    """Hash every file on all cores and match it against every enabled bank.

    Exit code 0 when nothing matched, 1 when something did; per-file errors never stop the scan.
    """
    with open_store() as store:
        matcher = load_matcher(store, bank)
    opts = ScanOptions(
        threshold=threshold,
        min_quality=min_quality,
        dihedral=dihedral,
        banks=tuple(bank) if bank else None,
        workers=workers,
        timeout=timeout,
    )
    # Counting first walks the tree twice: only worth it when a progress bar is shown.
    total = sum(1 for _ in iter_files(paths)) if err.is_terminal else None
    counts = {"matched": 0, "errors": 0, "files": 0}

    def rows() -> Iterator[dict[str, Any]]:
        with progress("Scanning") as bar:
            task = bar.add_task("scan", total=total)
            for result in scan_paths(paths, matcher, opts):
                counts["files"] += 1
                counts["matched"] += bool(result.matches)
                counts["errors"] += result.error is not None
                bar.advance(task)
                yield _scan_row(result, opts, table=fmt is OutputFormat.TABLE)

    columns = ["path", "result", "matches", "note", "error"]
    emit(rows(), fmt, columns, sys.stdout)
    err.print(
        f"{counts['files']} files scanned, {counts['matched']} matched, "
        f"{counts['errors']} could not be hashed"
    )
    raise typer.Exit(1 if counts["matched"] else 0)


def _match_text(m: Match) -> str:
    text = f"{m.bank}#{m.entry_id} {m.signal_type} d={m.distance}"
    if m.score is not None:
        text += f" {m.score:.0f}% of frames"
    if m.variant and m.variant != "original":
        text += f" ({m.variant})"
    return text


def _scan_row(result: ScanResult, opts: ScanOptions, *, table: bool) -> dict[str, Any]:
    if result.matches:
        status = "match"
    elif result.error:
        status = "error"
    else:
        status = "none"
    matches = result.matches
    return {
        "path": result.path,
        "kind": result.kind,
        "result": status,
        "matches": [_match_text(m) if table else m.as_dict() for m in matches],
        "note": _quality_note(result, opts.min_quality),
        "error": result.error,
    }


def _quality_note(result: ScanResult, min_quality: int) -> str | None:
    """Say when a PDQ hash was too weak to match, so "none" is not mistaken for "clean"."""
    for sig in result.signals:
        if sig.type == SignalType.PDQ and sig.quality is not None and sig.quality < min_quality:
            return f"pdq quality {sig.quality} < {min_quality}: not matched"
    return None


# -- match ------------------------------------------------------------------------------------
@app.command()
def match(
    signals: Annotated[
        list[str] | None,
        typer.Argument(help="Signals as TYPE VALUE pairs, e.g. `pdq f8f8f0ce…`."),
    ] = None,
    file: Annotated[
        str | None,
        typer.Option("--file", "-i", help="File of `TYPE VALUE` lines (`-` for stdin)."),
    ] = None,
    fmt: FormatOpt = OutputFormat.TABLE,
    threshold: ThresholdOpt = DEFAULT_PDQ_THRESHOLD,
    bank: BankOpt = None,
) -> None:
    """Look up precomputed signals (python-threatexchange `pdq <hex>` lines) in every bank."""
    queries = _parse_args(signals or [])
    if not queries and file is None:
        raise usage_error("give signals as TYPE VALUE pairs or --file")
    if file not in (None, "-") and not Path(file).is_file():
        raise usage_error(f"no such file: {file}")
    with open_store() as store:
        matcher = load_matcher(store, bank)
    counts = {"matched": 0}

    def lines() -> Iterator[tuple[int, str | ParseError]]:
        yield from enumerate(queries, start=1)
        if file == "-":
            yield from iter_lines(sys.stdin.buffer)
        elif file is not None:
            try:
                with open(file, "rb") as stream:
                    yield from iter_lines(stream)
            except OSError as exc:
                raise usage_error(f"cannot read {file}: {exc.strerror}") from exc

    def rows() -> Iterator[dict[str, Any]]:
        for row in _lookup(lines(), matcher, threshold, bank, table=fmt is OutputFormat.TABLE):
            counts["matched"] += bool(row["matches"])
            yield row

    emit(rows(), fmt, ["line", "type", "value", "matches", "error"], sys.stdout)
    raise typer.Exit(1 if counts["matched"] else 0)


def _parse_args(args: list[str]) -> list[str]:
    """``pdq HEX md5 HEX`` or ``"pdq HEX"`` tokens → ``TYPE VALUE`` lines."""
    out: list[str] = []
    it = iter(args)
    for token in it:
        if " " in token.strip():
            out.append(token.strip())
        else:
            value = next(it, None)
            if value is None:
                raise usage_error(f"signal type {token!r} has no value")
            out.append(f"{token} {value}")
    return out


def _lookup(
    lines: Iterator[tuple[int, str | ParseError]],
    matcher: Matcher,
    threshold: int,
    banks: list[str] | None,
    *,
    table: bool,
    batch: int = 20_000,
) -> Iterator[dict[str, Any]]:
    """Parse and match lines; PDQ lookups go to the index in batches, in input order."""
    from bastion.banks.model import validate_value

    pending: list[dict[str, Any]] = []

    def flush() -> Iterator[dict[str, Any]]:
        pdq_rows = [r for r in pending if r["type"] == "pdq" and r["error"] is None]
        found = matcher.lookup_pdq([r["value"] for r in pdq_rows], threshold=threshold, banks=banks)
        for row, ms in zip(pdq_rows, found, strict=True):
            row["matches"] = ms
        for row in pending:
            ms = row["matches"]
            row["matches"] = [_match_text(m) if table else m.as_dict() for m in ms]
            yield row
        pending.clear()

    for lineno, line in lines:
        row: dict[str, Any] = {"line": lineno, "type": None, "value": None, "matches": []}
        row["error"] = None
        if isinstance(line, ParseError):
            row["error"] = line.message
            pending.append(row)
            continue
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.split(None, 1)
        if len(parts) != 2:
            row["error"] = "expected `TYPE VALUE`"
        else:
            tname, value = parts[0].lower(), parts[1].strip()
            stype = PYTX_TO_BASTION.get(tname) or _our_type(tname)
            row["type"], row["value"] = (str(stype) if stype else _clip(tname)), _clip(value)
            if stype is None:
                row["error"] = f"unknown signal type {tname!r}"
            else:
                try:
                    row["value"] = validate_value(stype, value)
                except ValueError as exc:
                    row["error"] = str(exc)
                    row["value"] = _clip(value)
                else:
                    if stype is not SignalType.PDQ:
                        sig = Signal(type=stype, value=row["value"])
                        row["matches"] = matcher.match([sig], threshold=threshold, banks=banks)
        pending.append(row)
        if len(pending) >= batch:
            yield from flush()
    yield from flush()


def _clip(text: str, limit: int = 80) -> str:
    """Echo bad input back short: a 30 MB junk line must not come back in full."""
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} chars)"


def _our_type(name: str) -> SignalType | None:
    try:
        return SignalType(name)
    except ValueError:
        return None


# -- url check --------------------------------------------------------------------------------
@url_app.command("check")
def url_check(
    urls: Annotated[list[str], typer.Argument(help="URLs to check.")],
    fmt: FormatOpt = OutputFormat.TABLE,
    bank: BankOpt = None,
) -> None:
    """Match URLs against URL banks (whole-URL, path-prefix and domain entries)."""
    from bastion.signals.url import normalize_url

    with open_store() as store:
        matcher = load_matcher(store, bank, [SignalType.URL])
    any_match = False
    rows = []
    for url in urls:
        row: dict[str, Any] = {"url": url, "normalized": None, "matches": [], "error": None}
        try:
            row["normalized"] = normalize_url(url)
        except ValueError as exc:
            row["error"] = str(exc)
        else:
            ms = matcher.match([Signal(type=SignalType.URL, value=row["normalized"])], banks=bank)
            any_match = any_match or bool(ms)
            table = fmt is OutputFormat.TABLE
            row["matches"] = [
                f"{m.bank}#{m.entry_id} ({m.url_match})" if table else m.as_dict() for m in ms
            ]
        rows.append(row)
    emit(rows, fmt, ["url", "normalized", "matches", "error"], sys.stdout)
    raise typer.Exit(1 if any_match else 0)


# -- bank -------------------------------------------------------------------------------------
@bank_app.command("create")
def bank_create(
    name: str,
    label: Annotated[
        list[str] | None, typer.Option("--label", "-l", help="Label, e.g. csam (repeatable).")
    ] = None,
    source: Annotated[str, typer.Option(help="Organisation the list comes from.")] = "",
    description: Annotated[str, typer.Option(help="What the bank holds.")] = "",
    demo: Annotated[bool, typer.Option(help="Mark as demo data (never real hashes).")] = False,
) -> None:
    """Create an empty bank."""
    with open_store() as store:
        bank = store.create_bank(
            name,
            description=description,
            labels=label or [],
            source=source,
            is_demo=demo,
            actor=cli_actor(),
        )
    err.print(f"created bank [bold]{escape(bank.name)}[/bold]")


@bank_app.command("list")
def bank_list(fmt: FormatOpt = OutputFormat.TABLE) -> None:
    """List banks with their entry counts."""
    with open_store() as store:
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
        }
        for b in banks
    ]
    columns = ["name", "labels", "source", "entries", "enabled", "demo", "version"]
    emit(rows, fmt, columns, sys.stdout)


@bank_app.command("import")
def bank_import(
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
    with open_store() as store:
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
                report = store.add_entries(name, rows, actor=cli_actor())
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
    name: str,
    file_format: Annotated[
        BankFormat, typer.Option("--format", "-f", help="File format.", case_sensitive=False)
    ] = BankFormat.JSONL,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
) -> None:
    """Export a bank's enabled entries (audited as `bank.export`)."""
    with open_store() as store:
        store.get_bank(name)
        if output is None:
            store.export(name, file_format, sys.stdout, actor=cli_actor())
            return
        # Write beside the target and rename: a failed export never leaves a half file or
        # empties an existing one.
        try:
            fd, tmp = tempfile.mkstemp(prefix=".bastion-export-", dir=output.parent)
        except OSError as exc:
            raise usage_error(f"cannot write {output}: {exc.strerror}") from exc
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
                store.export(name, file_format, out, actor=cli_actor())
            os.replace(tmp, output)
        except OSError as exc:
            raise usage_error(f"cannot write {output}: {exc.strerror}") from exc
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


@bank_app.command("add")
def bank_add(
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
    with open_store() as store:
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

        report = store.add_entries(name, entries(), actor=cli_actor())
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
    name: str,
    entry: Annotated[
        str | None, typer.Argument(help="Entry id, external id, or hash value.")
    ] = None,
    external_id: ExternalIdOpt = None,
    reason: Annotated[str, typer.Option(help="Why, for the record.")] = "",
) -> None:
    """Disable an entry, or with --external-id every signal of an item (withdrawing a photo
    from a feed): it stops matching at once and stays on record."""
    with open_store() as store:
        ref = _entry_ref(store, name, entry, external_id)
        done = store.disable_entry(name, ref, reason=reason, actor=cli_actor())
    err.print(f"disabled {_entries(len(done))} ({escape(ref)}) in {escape(name)}")


@bank_app.command("enable")
def bank_enable(
    name: str,
    entry: Annotated[
        str | None, typer.Argument(help="Entry id, external id, or hash value.")
    ] = None,
    external_id: ExternalIdOpt = None,
) -> None:
    """Re-enable a disabled entry (or every entry with --external-id)."""
    with open_store() as store:
        ref = _entry_ref(store, name, entry, external_id)
        done = store.enable_entry(name, ref, actor=cli_actor())
    err.print(f"enabled {_entries(len(done))} ({escape(ref)}) in {escape(name)}")


@bank_app.command("rm")
def bank_rm(
    name: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Delete a bank and all its entries."""
    with open_store() as store:
        bank = store.get_bank(name)
        if not yes:
            if not sys.stdin.isatty():
                raise usage_error("deleting a bank needs --yes when not run interactively")
            typer.confirm(f"Delete bank {bank.name} and its entries?", abort=True)
        store.delete_bank(name, actor=cli_actor())
    err.print(f"deleted bank {escape(name)}")


# -- serve ------------------------------------------------------------------------------------
@app.command()
def serve(
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

    from bastion.api.app import create_app
    from bastion.config import ConfigError, Settings
    from bastion.worker import check_worker_settings, worker_child

    try:
        settings = Settings.load(config, database_url=_state["db"], host=host, port=port)
        if not no_worker:
            check_worker_settings(settings)
    except ConfigError as exc:
        raise usage_error(str(exc)) from exc
    if demo:
        from bastion.demo import prepare_server_demo

        with open_store() as store:
            token, password = prepare_server_demo(store, actor=cli_actor())
        _print_demo_banner(token, password, settings.host, settings.port)
    with worker_child(
        settings, config=config, log_level=log_level, enabled=not no_worker
    ):
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
        if _state["db"]:
            os.environ["BASTION_DATABASE_URL"] = _state["db"]
        if config is not None:
            os.environ["BASTION_CONFIG"] = str(config)
        uvicorn.run(
            "bastion.api.app:create_app",
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


if __name__ == "__main__":  # pragma: no cover
    app()
