"""``bastion hash``, ``scan`` and ``match``: hash files, and match files or precomputed signals
against every enabled bank.

Exit codes: 0 no match, 1 matches found (scan, match), 2 usage error.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from bastion.banks.formats import PYTX_TO_BASTION, ParseError, iter_lines
from bastion.cli._context import CliContext, FormatOpt, err, progress, usage_error
from bastion.db import Store
from bastion.index.matcher import DEFAULT_PDQ_THRESHOLD, Match, Matcher, TextMatch
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


# -- hash -------------------------------------------------------------------------------------
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
def scan(
    ctx: typer.Context,
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Files or folders to scan.", show_default=False)
    ] = None,
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
    text: Annotated[
        list[Path] | None,
        typer.Option(
            "--text",
            help="Match this UTF-8 text file against the keyword entries instead of hashing "
            "it (repeatable; `-` for stdin).",
        ),
    ] = None,
    per_line: Annotated[
        bool, typer.Option(help="With --text: each line is a text of its own (usernames, ...).")
    ] = False,
) -> None:
    """Hash every file on all cores and match it against every enabled bank; or, with --text,
    match text against every keyword entry (docs/text-signals.md).

    Exit code 0 when nothing matched, 1 when something did; per-file errors never stop the scan.
    """
    if text:
        if paths:
            raise usage_error("give files to hash or --text files, not both")
        _scan_texts(ctx, text, per_line, bank, fmt)
    if not paths:
        raise usage_error("give files or folders to scan, or --text FILE")
    with CliContext.of(ctx).open_store() as store:
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


def _scan_texts(
    ctx: typer.Context, files: list[Path], per_line: bool, bank: list[str] | None, fmt: OutputFormat
) -> None:
    """``scan --text``: each file (or line) matched as text; exits 1 when any matched."""
    with CliContext.of(ctx).open_store() as store:
        matcher = load_matcher(store, bank, [SignalType.TEXT])
    counts = {"matched": 0, "texts": 0, "errors": 0}

    def texts() -> Iterator[tuple[str, str | None, str | None]]:
        for path in files:
            name = str(path)
            try:
                raw = sys.stdin.buffer.read() if name == "-" else path.read_bytes()
                body = raw.decode("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                yield name, None, f"cannot read as UTF-8 text: {exc}"
                continue
            if not per_line:
                yield name, body, None
                continue
            for i, line in enumerate(body.splitlines(), start=1):
                if line.strip():
                    yield f"{name}:{i}", line, None

    def rows() -> Iterator[dict[str, Any]]:
        for where, body, error in texts():
            counts["texts"] += 1
            if body is None:
                counts["errors"] += 1
                yield {"path": where, "result": "error", "matches": [], "error": error}
                continue
            ms = matcher.match([Signal(SignalType.TEXT, body)], banks=bank)
            counts["matched"] += bool(ms)
            yield {
                "path": where,
                "result": "match" if ms else "none",
                "matches": [
                    _match_text(m) if fmt is OutputFormat.TABLE else m.as_dict() for m in ms
                ],
                "error": None,
            }

    emit(rows(), fmt, ["path", "result", "matches", "error"], sys.stdout)
    err.print(
        f"{counts['texts']} texts scanned, {counts['matched']} matched, "
        f"{counts['errors']} could not be read"
    )
    raise typer.Exit(1 if counts["matched"] else 0)


def _match_text(m: Match) -> str:
    text = f"{m.bank}#{m.entry_id} {m.signal_type} d={m.distance}"
    if isinstance(m, TextMatch):
        spans = ",".join(f"{a}-{b}" for a, b in m.spans)
        text = f"{m.bank}#{m.entry_id} text at {spans}"
        if m.normalisations:
            text += f" ({', '.join(m.normalisations)})"
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
def match(
    ctx: typer.Context,
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
    text: Annotated[
        list[str] | None,
        typer.Option("--text", help="Text to match against the keyword entries (repeatable)."),
    ] = None,
) -> None:
    """Look up precomputed signals (python-threatexchange `pdq <hex>` lines) in every bank;
    `text VALUE` lines and --text match text against the keyword entries."""
    queries = _parse_args(signals or [])
    queries += [f"text {t}" for t in text or ()]
    if not queries and file is None:
        raise usage_error("give signals as TYPE VALUE pairs, --text or --file")
    if file not in (None, "-") and not Path(file).is_file():
        raise usage_error(f"no such file: {file}")
    with CliContext.of(ctx).open_store() as store:
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
            elif stype is SignalType.TEXT:
                # Text to match (not a keyword): echoed short, matched as it is.
                sig = Signal(type=stype, value=value)
                row["matches"] = matcher.match([sig], banks=banks)
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
