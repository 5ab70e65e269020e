"""Bank file formats: Bastion CSV, Bastion JSON lines, and python-threatexchange hash lines.

Everything streams line by line: a file is never held in memory, a line over ``MAX_LINE`` bytes is
rejected without being read whole, and a bad line yields a :class:`ParseError` while the lines
after it are still parsed. CSV fields may not contain newlines, so one broken quote cannot swallow
the rest of the file and line numbers always match what an editor shows. See docs/formats.md.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from itertools import chain
from pathlib import Path
from typing import IO, Any, Protocol

from bastion.banks.model import NewEntry, normalize_entry, parse_signal_type
from bastion.signals.base import SignalType

MAX_LINE = 1_000_000
_READ_CHUNK = 64 * 1024


class BankFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"
    PYTX = "pytx"


CSV_COLUMNS = (
    "signal_type",
    "value",
    "quality",
    "url_match",
    "external_id",
    "source",
    "list",
    "added_at",
    "labels",
    "metadata",
)
_REQUIRED = ("signal_type", "value")

#: python-threatexchange signal names (``SignalType.get_name()``) → ours. pytx calls its file MD5
#: and SHA-256 types ``video_md5``/``video_sha256`` though they hash any file.
PYTX_TO_BASTION: dict[str, SignalType] = {
    "pdq": SignalType.PDQ,
    "vpdq": SignalType.VPDQ,
    "video_md5": SignalType.MD5,
    "md5": SignalType.MD5,
    "video_sha256": SignalType.SHA256,
    "sha256": SignalType.SHA256,
    "url": SignalType.URL,
}
BASTION_TO_PYTX: dict[SignalType, str] = {
    SignalType.PDQ: "pdq",
    SignalType.VPDQ: "vpdq",
    SignalType.MD5: "video_md5",
    SignalType.SHA256: "video_sha256",
    SignalType.URL: "url",
}


@dataclass(frozen=True, slots=True)
class ParseError:
    """One line that could not be turned into an entry; parsing carries on after it."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class EntryLike(Protocol):
    """What :func:`write` needs: both :class:`NewEntry` and ``BankEntry`` have these fields."""

    signal_type: SignalType
    value: str
    quality: int | None
    url_match: str | None
    external_id: str | None
    source: str
    list_name: str
    added_at: datetime | None
    labels: list[str]
    metadata: dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Lines


def iter_lines(stream: IO[str] | IO[bytes]) -> Iterator[tuple[int, str | ParseError]]:
    """Yield ``(line_number, text)`` per physical line, or a ParseError for an oversized line or
    one that is not UTF-8. Accepts text or binary streams; strips the line ending and a BOM."""
    number = 0
    while True:
        chunk = stream.readline(MAX_LINE + 1)
        if not chunk:
            return
        number += 1
        newline = "\n" if isinstance(chunk, str) else b"\n"
        if len(chunk) > MAX_LINE and not chunk.endswith(newline):  # type: ignore[arg-type]
            while True:  # skip the rest of the line without holding it
                rest = stream.readline(_READ_CHUNK)
                if not rest or rest.endswith(newline):  # type: ignore[arg-type]
                    break
            yield number, ParseError(number, f"line is longer than {MAX_LINE} bytes")
            continue
        if isinstance(chunk, bytes):
            try:
                text = chunk.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield number, ParseError(number, f"not valid UTF-8 ({exc.reason} at {exc.start})")
                continue
        else:
            text = chunk
        if number == 1:
            text = text.removeprefix("\ufeff")
        yield number, text.rstrip("\r\n")


def _first_content_line(
    lines: Iterator[tuple[int, str | ParseError]],
) -> tuple[str | None, list[tuple[int, str | ParseError]]]:
    """Read ahead to the first meaningful line; return it and everything read, for replay."""
    seen: list[tuple[int, str | ParseError]] = []
    for item in lines:
        seen.append(item)
        _, text = item
        if isinstance(text, str) and text.strip() and not text.lstrip().startswith("#"):
            return text, seen
        if len(seen) > 1000:  # a file of only comments/garbage: let the parser report it
            break
    return None, seen


# ---------------------------------------------------------------------------------------------
# Detection


def detect_format(path_or_first_line: str | os.PathLike[str] | bytes) -> BankFormat:
    """Guess the format from a file (its first meaningful line, then its suffix) or from a line.

    A ``str`` naming an existing file is read as a path; any other ``str`` is taken as a line.
    Raises ValueError when nothing fits.
    """
    arg = path_or_first_line
    if isinstance(arg, os.PathLike) or (isinstance(arg, str) and "\n" not in arg and _is_file(arg)):
        path = Path(arg)
        with path.open("rb") as fh:
            first, _ = _first_content_line(iter_lines(fh))
        if first is not None:
            try:
                return _detect_line(first)
            except ValueError:
                pass
        by_suffix = {".csv": BankFormat.CSV, ".jsonl": BankFormat.JSONL}
        by_suffix[".ndjson"] = BankFormat.JSONL
        if path.suffix.lower() in by_suffix:
            return by_suffix[path.suffix.lower()]
        raise ValueError(f"cannot tell the format of {path}: give it explicitly (csv, jsonl, pytx)")
    line = arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)
    return _detect_line(line.splitlines()[0] if line.strip() else line)


def _is_file(text: str) -> bool:
    try:
        return len(text) < 4096 and os.path.isfile(text)
    except (OSError, ValueError):
        return False


def _detect_line(line: str) -> BankFormat:
    text = line.removeprefix("\ufeff").strip()
    if text.startswith("{"):
        return BankFormat.JSONL
    first_word = text.split(None, 1)[0].lower() if text else ""
    if first_word in PYTX_TO_BASTION:
        return BankFormat.PYTX
    cells = [c.strip().strip('"').lower() for c in text.split(",")]
    if "signal_type" in cells:
        return BankFormat.CSV
    raise ValueError(
        f"unrecognised bank file line {text[:60]!r}: expected a CSV header naming "
        "'signal_type', a JSON object, or '<signal_type> <value>'"
    )


# ---------------------------------------------------------------------------------------------
# Parsing


def parse(
    stream: IO[str] | IO[bytes], fmt: BankFormat | str | None = None
) -> Iterator[NewEntry | ParseError]:
    """Yield a canonical :class:`NewEntry` per good line and a :class:`ParseError` per bad one.

    ``fmt`` None means detect from the first meaningful line. Blank lines are skipped in every
    format and ``#`` comments in the pytx format.
    """
    lines = iter_lines(stream)
    if fmt is None:
        first, seen = _first_content_line(lines)
        lines = chain(seen, lines)
        if first is None:
            for _, item in seen:
                if isinstance(item, ParseError):
                    yield item
            return
        try:
            fmt = _detect_line(first)
        except ValueError as exc:
            yield ParseError(next(n for n, t in seen if t == first), str(exc))
            return
    fmt = BankFormat(fmt)
    if fmt is BankFormat.CSV:
        yield from _parse_csv(lines)
    elif fmt is BankFormat.JSONL:
        yield from _parse_jsonl(lines)
    else:
        yield from _parse_pytx(lines)


def _entry(number: int, fields: dict[str, Any]) -> NewEntry | ParseError:
    try:
        raw_type = fields.get("signal_type")
        if raw_type in (None, ""):
            raise ValueError("signal_type is missing")
        value = fields.get("value")
        if value in (None, ""):
            raise ValueError("value is missing")
        return normalize_entry(
            NewEntry(
                signal_type=parse_signal_type(raw_type),
                value=value,
                quality=fields.get("quality"),
                url_match=fields.get("url_match"),
                source=fields.get("source") or "",
                list_name=fields.get("list") or "",
                external_id=fields.get("external_id"),
                added_at=fields.get("added_at"),
                labels=fields.get("labels") or [],
                metadata=fields.get("metadata") or {},
            )
        )
    except ValueError as exc:
        return ParseError(number, str(exc))


def _parse_csv(lines: Iterable[tuple[int, str | ParseError]]) -> Iterator[NewEntry | ParseError]:
    columns: list[str] | None = None
    for number, text in lines:
        if isinstance(text, ParseError):
            yield text
            continue
        if not text.strip():
            continue
        try:
            cells = next(csv.reader([text], strict=True))
        except csv.Error as exc:
            yield ParseError(number, f"malformed CSV: {exc}")
            continue
        if columns is None:
            header = [c.strip().lower() for c in cells]
            problem = _check_header(header)
            if problem:
                yield ParseError(number, problem)
                return  # every following row would be misread
            columns = header
            continue
        if len(cells) != len(columns):
            yield ParseError(number, f"expected {len(columns)} fields, found {len(cells)}")
            continue
        row = dict(zip(columns, cells, strict=True))
        try:
            fields: dict[str, Any] = {k: (v.strip() or None) for k, v in row.items()}
            if row.get("value"):
                fields["value"] = row["value"]  # url values keep their own spacing rules
            if fields.get("quality") is not None:
                try:
                    fields["quality"] = int(fields["quality"])
                except ValueError:
                    raise ValueError(f"quality is not an integer: {fields['quality']!r}") from None
            if fields.get("labels"):
                fields["labels"] = [p for p in (s.strip() for s in row["labels"].split(";")) if p]
            if fields.get("metadata"):
                try:
                    fields["metadata"] = json.loads(row["metadata"])
                except json.JSONDecodeError as exc:
                    raise ValueError(f"metadata is not valid JSON: {exc}") from None
        except ValueError as exc:
            yield ParseError(number, str(exc))
            continue
        yield _entry(number, fields)


def _check_header(header: list[str]) -> str | None:
    unknown = [c for c in header if c not in CSV_COLUMNS]
    if unknown:
        return (
            f"unknown CSV column(s) {', '.join(repr(c) for c in unknown)}; "
            f"allowed: {', '.join(CSV_COLUMNS)}"
        )
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        return f"duplicate CSV column(s): {', '.join(dupes)}"
    missing = [c for c in _REQUIRED if c not in header]
    if missing:
        return f"CSV header lacks required column(s): {', '.join(missing)}"
    return None


def _parse_jsonl(lines: Iterable[tuple[int, str | ParseError]]) -> Iterator[NewEntry | ParseError]:
    for number, text in lines:
        if isinstance(text, ParseError):
            yield text
            continue
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            yield ParseError(number, f"not valid JSON: {exc}")
            continue
        if not isinstance(obj, dict):
            yield ParseError(number, f"expected a JSON object, got {type(obj).__name__}")
            continue
        unknown = sorted(set(obj) - set(CSV_COLUMNS))
        if unknown:
            yield ParseError(
                number,
                f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: "
                f"{', '.join(CSV_COLUMNS)}",
            )
            continue
        problem = next(
            (
                f"{k} must be a string"
                for k in ("signal_type", "value", "url_match", "source", "list", "added_at")
                if obj.get(k) is not None and not isinstance(obj[k], str)
            ),
            None,
        )
        if problem:
            yield ParseError(number, problem)
            continue
        if isinstance(obj.get("external_id"), int | float) and not isinstance(
            obj["external_id"], bool
        ):
            obj["external_id"] = str(obj["external_id"])
        yield _entry(number, obj)


def _parse_pytx(lines: Iterable[tuple[int, str | ParseError]]) -> Iterator[NewEntry | ParseError]:
    for number, text in lines:
        if isinstance(text, ParseError):
            yield text
            continue
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = stripped.split(None, 1)
        if len(parts) != 2:
            yield ParseError(number, "expected '<signal_type> <value>'")
            continue
        name, value = parts[0].lower(), parts[1]
        st = PYTX_TO_BASTION.get(name)
        if st is None:
            known = ", ".join(PYTX_TO_BASTION)
            yield ParseError(number, f"unsupported signal type {name!r} (supported: {known})")
            continue
        yield _entry(number, {"signal_type": st, "value": value})


# ---------------------------------------------------------------------------------------------
# Writing


def write(entries: Iterable[EntryLike], fmt: BankFormat | str, out: IO[str]) -> int:
    """Stream ``entries`` to the text stream ``out`` in ``fmt``; return how many were written.

    The pytx format carries only type and value; the others carry all provenance fields.
    """
    fmt = BankFormat(fmt)
    count = 0
    if fmt is BankFormat.CSV:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for e in entries:
            row = _fields(e)
            writer.writerow(
                [
                    row["signal_type"],
                    row["value"],
                    "" if row["quality"] is None else row["quality"],
                    row["url_match"] or "",
                    row["external_id"] or "",
                    row["source"],
                    row["list"],
                    row["added_at"] or "",
                    ";".join(row["labels"]),
                    _json(row["metadata"]) if row["metadata"] else "",
                ]
            )
            count += 1
    elif fmt is BankFormat.JSONL:
        for e in entries:
            row = {k: v for k, v in _fields(e).items() if v not in (None, "", [], {})}
            out.write(_json(row) + "\n")
            count += 1
    else:
        for e in entries:
            value = e.value
            if "\n" in value or "\r" in value:
                raise ValueError(f"{e.signal_type} value contains a newline; cannot write it")
            out.write(f"{BASTION_TO_PYTX[SignalType(e.signal_type)]} {value}\n")
            count += 1
    return count


def _fields(e: EntryLike) -> dict[str, Any]:
    return {
        "signal_type": str(SignalType(e.signal_type)),
        "value": e.value,
        "quality": e.quality,
        "url_match": e.url_match,
        "external_id": e.external_id,
        "source": e.source or "",
        "list": e.list_name or "",
        "added_at": e.added_at.isoformat() if e.added_at else None,
        "labels": list(e.labels or []),
        "metadata": dict(e.metadata or {}),
    }


def _json(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def write_string(entries: Iterable[EntryLike], fmt: BankFormat | str) -> str:
    """Convenience for small exports and tests."""
    buf = io.StringIO()
    write(entries, fmt, buf)
    return buf.getvalue()
