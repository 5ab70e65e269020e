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
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from itertools import chain
from pathlib import Path
from typing import IO, Any, Protocol

from bastion.banks.model import NewEntry, normalize_entry, parse_signal_type
from bastion.signals.base import SignalType
from bastion.text.query import parse_keyword, query_json

#: Longest line read, in bytes. Above the longest line :func:`write` can produce (about 1.3 MB:
#: a vPDQ value of ``MAX_VALUE`` characters with its quotes escaped, plus the largest metadata,
#: labels and text fields in 4-byte UTF-8), so every export re-imports; a test checks the bound.
MAX_LINE = 1_500_000
_READ_CHUNK = 64 * 1024

# The csv module rejects fields over 131 072 characters by default, less than a long vPDQ value.
# The limit is process-wide, so it is only ever raised, once, here.
if csv.field_size_limit() < MAX_LINE:
    csv.field_size_limit(MAX_LINE)


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
#: python-threatexchange's text types, read and written by the pytx line format only (the HMA
#: surface, which shares the names above, matches no text): a trend query is written as its JSON,
#: a term as a query of one group of one term.
PYTX_TEXT_TYPES: dict[str, SignalType] = {
    "trend_query": SignalType.TEXT,
    "raw_text": SignalType.TEXT,
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
    #: The record's own id (external id) when the line named one, so a consumer can tell which
    #: record is broken; never part of the message.
    key: str | None = None

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class LineStream(Protocol):
    """What the parsers read from: ``readline`` alone (a text or binary file, or a wrapper that
    counts what was read)."""

    def readline(self, limit: int = -1, /) -> str | bytes: ...


class EntryLike(Protocol):
    """What :func:`write` reads: both :class:`NewEntry` and ``BankEntry`` have these fields
    (read-only here, so ``BankEntry``'s always-set ``added_at`` fits too)."""

    @property
    def signal_type(self) -> SignalType: ...
    @property
    def value(self) -> str: ...
    @property
    def quality(self) -> int | None: ...
    @property
    def url_match(self) -> str | None: ...
    @property
    def external_id(self) -> str | None: ...
    @property
    def source(self) -> str: ...
    @property
    def list_name(self) -> str: ...
    @property
    def added_at(self) -> datetime | None: ...
    @property
    def labels(self) -> list[str]: ...
    @property
    def metadata(self) -> dict[str, Any]: ...


# ---------------------------------------------------------------------------------------------
# Lines


def iter_lines(stream: LineStream) -> Iterator[tuple[int, str | ParseError]]:
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
    if first_word in PYTX_TO_BASTION or first_word in PYTX_TEXT_TYPES:
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
    stream: LineStream,
    fmt: BankFormat | str | None = None,
    *,
    skipped: Counter[str] | None = None,
) -> Iterator[NewEntry | ParseError]:
    """Yield a canonical :class:`NewEntry` per good line and a :class:`ParseError` per bad one.

    ``fmt`` None means detect from the first meaningful line (the bank formats; ``"iwf"``, the
    IWF-style list, is read only when named). Blank lines are skipped in every format and ``#``
    comments in the pytx format. ``skipped`` counts hashes of types Bastion does not match
    (``sha1``, ``photodna`` in an IWF-style list), which are not errors.
    """
    lines = iter_lines(stream)
    if fmt is not None and str(fmt).strip().lower() == IWF:
        yield from _parse_iwf(lines, skipped if skipped is not None else Counter())
        return
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
    except (ValueError, TypeError) as exc:
        return ParseError(number, str(exc), _key_of(fields.get("external_id")))


def _key_of(external_id: object) -> str | None:
    """A line's external id as a record key, when it is a usable one."""
    if isinstance(external_id, int | float) and not isinstance(external_id, bool):
        external_id = str(external_id)
    if not isinstance(external_id, str):
        return None
    key = external_id.strip()
    return key if 0 < len(key) <= 255 and _storable_text(key) else None


def _storable_text(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _guarded(
    lines: Iterable[tuple[int, str | ParseError]],
    parse_line: Callable[[int, str], NewEntry | ParseError | None],
) -> Iterator[NewEntry | ParseError]:
    """Run ``parse_line`` on each line, turning whatever one line raises into its ParseError.

    A line must never end an import: an exception escaping here would stop the caller's loop and
    lose the entries it had not yet committed. The expected failures have precise messages in
    the parsers; this is the backstop for the rest (deep nesting, overflow, library surprises).
    """
    for number, text in lines:
        if isinstance(text, ParseError):
            yield text
            continue
        try:
            result = parse_line(number, text)
        except RecursionError:
            result = ParseError(number, "nested too deeply")
        except Exception as exc:  # the per-line backstop, see the docstring
            detail = str(exc)
            detail = detail if len(detail) <= 200 else detail[:200] + "…"
            result = ParseError(number, f"cannot read line: {type(exc).__name__}: {detail}")
        if result is not None:
            yield result


def _parse_csv(lines: Iterable[tuple[int, str | ParseError]]) -> Iterator[NewEntry | ParseError]:
    columns: list[str] | None = None
    bad_header = False

    def parse_line(number: int, text: str) -> NewEntry | ParseError | None:
        nonlocal columns, bad_header
        if not text.strip():
            return None
        try:
            cells = next(csv.reader([text], strict=True))
        except csv.Error as exc:
            return ParseError(number, f"malformed CSV: {exc}")
        if columns is None:
            header = [c.strip().lower() for c in cells]
            problem = _check_header(header)
            if problem:
                bad_header = True
                return ParseError(number, problem)
            columns = header
            return None
        if len(cells) != len(columns):
            return ParseError(number, f"expected {len(columns)} fields, found {len(cells)}")
        try:
            fields = _csv_fields(dict(zip(columns, cells, strict=True)))
        except ValueError as exc:
            return ParseError(number, str(exc))
        return _entry(number, fields)

    for item in _guarded(lines, parse_line):
        yield item
        if bad_header:
            return  # every following row would be misread


def _csv_fields(row: dict[str, str]) -> dict[str, Any]:
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
        fields["metadata"] = _json_loads(row["metadata"], "metadata is not valid JSON")
    return fields


def _json_loads(text: str, what: str) -> Any:
    """json.loads with every failure a ValueError: deep nesting raises RecursionError."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what}: {exc}") from None
    except RecursionError:
        raise ValueError(f"{what}: nested too deeply") from None


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
    return _guarded(lines, _jsonl_line)


def _jsonl_line(number: int, text: str) -> NewEntry | ParseError | None:
    if not text.strip():
        return None
    try:
        obj = _json_loads(text, "not valid JSON")
    except ValueError as exc:
        return ParseError(number, str(exc))
    if not isinstance(obj, dict):
        return ParseError(number, f"expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(CSV_COLUMNS))
    if unknown:
        return ParseError(
            number,
            f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(CSV_COLUMNS)}",
        )
    problem = next(
        (
            f"{k} must be a string"
            for k in ("signal_type", "value", "url_match", "source", "list", "added_at")
            if obj.get(k) is not None and not isinstance(obj[k], str)
        ),
        None,
    )
    if problem:
        return ParseError(number, problem)
    if isinstance(obj.get("external_id"), int | float) and not isinstance(obj["external_id"], bool):
        obj["external_id"] = str(obj["external_id"])
    return _entry(number, obj)


def _parse_pytx(lines: Iterable[tuple[int, str | ParseError]]) -> Iterator[NewEntry | ParseError]:
    return _guarded(lines, _pytx_line)


def _pytx_line(number: int, text: str) -> NewEntry | ParseError | None:
    stripped = text.strip()
    if not stripped or stripped.startswith("#"):
        return None
    parts = stripped.split(None, 1)
    if len(parts) != 2:
        return ParseError(number, "expected '<signal_type> <value>'")
    name, value = parts[0].lower(), parts[1]
    st = PYTX_TO_BASTION.get(name) or PYTX_TEXT_TYPES.get(name)
    if st is None:
        known = ", ".join([*PYTX_TO_BASTION, *PYTX_TEXT_TYPES])
        return ParseError(number, f"unsupported signal type {name!r} (supported: {known})")
    if name == "trend_query" and not value.lstrip().startswith("{"):
        return ParseError(number, "a trend_query value must be a JSON object")
    fast = canonical_hex_entry(st, value)
    if fast is not None:
        return normalize_entry(fast)  # already canonical: returns it as is, at once
    return _entry(number, {"signal_type": st, "value": value})


_HEX_LENGTHS = {SignalType.PDQ: 64, SignalType.MD5: 32, SignalType.SHA256: 64}
_HEX_VALUE = re.compile(r"[0-9a-fA-F]+")


def canonical_hex_entry(
    st: SignalType, value: str, template: NewEntry | None = None
) -> NewEntry | None:
    """A canonical pdq/md5/sha256 entry for a well-formed hex ``value``, else None (then the
    caller takes the general path, which says what is wrong).

    The bulk of every large list is hex hashes; :func:`normalize_entry` on each costs more than
    storing it. ``template`` (itself canonical, from :func:`normalize_entry`) supplies the other
    fields, so the result equals what normalising the whole entry would give.
    """
    want = _HEX_LENGTHS.get(st)
    if want is None or len(value) != want or not _HEX_VALUE.fullmatch(value):
        return None
    if template is None:
        entry = NewEntry(st, value.lower())
    else:
        if not template.canonical:
            raise ValueError("template entry must be canonical (from normalize_entry)")
        entry = NewEntry(
            st,
            value.lower(),
            source=template.source,
            list_name=template.list_name,
            external_id=template.external_id,
            added_at=template.added_at,
            labels=list(template.labels),
            enabled=template.enabled,
            disabled_reason=template.disabled_reason,
            metadata=dict(template.metadata) if template.metadata else {},
        )
    object.__setattr__(entry, "canonical", True)
    return entry


# ---------------------------------------------------------------------------------------------
# IWF-style lists (read only)

#: Name of the IWF-style list format in :func:`parse` and :func:`detect_list_format`. Not a
#: :class:`BankFormat`: banks are never exported in it. The real IWF schema is shared with members
#: only; this is an assumed shape, documented in docs/exchanges-lists.md.
IWF = "iwf"
#: IWF-style hash fields Bastion matches, and those it skips (counted, not errors).
IWF_HASHES: dict[str, SignalType] = {
    "md5": SignalType.MD5,
    "sha256": SignalType.SHA256,
    "pdq": SignalType.PDQ,
}
IWF_SKIPPED = ("sha1", "photodna")
#: The keyword variant: a record with ``keyword`` (a term, optionally its ``language``) and no
#: hashes is a ``text`` entry labelled ``csam_trade`` and ``iwf:keyword`` (docs/text-signals.md).
IWF_COLUMNS = ("id", "category", *IWF_HASHES, *IWF_SKIPPED, "added", "keyword", "language")
IWF_KEYWORD_LABELS = ["csam_trade", "iwf:keyword"]
#: UK legal categories of indecent images of children → Bastion labels (with ``csam``).
IWF_CATEGORIES = {"a": "iwf:category-a", "b": "iwf:category-b", "c": "iwf:category-c"}


def iwf_category(raw: object) -> str:
    """``A``/``B``/``C`` from ``"A"``, ``"b"``, ``"Category C"``, ``"category-a"``; else
    ValueError."""
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError("category is missing (expected A, B or C)")
    text = raw.strip().lower()
    for prefix in ("category", "cat"):
        if text.startswith(prefix):
            text = text[len(prefix) :].lstrip(" -_:")
            break
    if text not in IWF_CATEGORIES:
        raise ValueError(f"unknown category {raw[:20]!r} (expected A, B or C)")
    return text.upper()


def detect_list_format(first_line: str) -> str:
    """The format of a hash list from its first meaningful line: ``iwf`` for a JSON object or
    CSV header with a ``category`` field and no ``signal_type``, else a :class:`BankFormat`
    value (see :func:`detect_format`). Raises ValueError when nothing fits."""
    text = first_line.removeprefix("\ufeff").strip()
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):
            obj = None
        if isinstance(obj, dict) and "category" in obj and "signal_type" not in obj:
            return IWF
    else:
        cells = {c.strip().strip('"').lower() for c in text.split(",")}
        if "category" in cells and "signal_type" not in cells:
            return IWF
    return _detect_line(text).value


def _parse_iwf(
    lines: Iterable[tuple[int, str | ParseError]], skipped: Counter[str]
) -> Iterator[NewEntry | ParseError]:
    """One record per line: JSON objects, or CSV under a header naming ``category``. Each record
    gives one entry per hash it carries, all with the record's id as external id."""
    columns: list[str] | None = None
    json_lines: bool | None = None
    bad_header = False

    def parse_line(number: int, text: str) -> Iterator[NewEntry | ParseError]:
        nonlocal columns, json_lines, bad_header
        if not text.strip():
            return
        if json_lines is None:
            json_lines = text.lstrip().startswith("{")
        if json_lines:
            try:
                obj = _json_loads(text, "not valid JSON")
            except ValueError as exc:
                yield ParseError(number, str(exc))
                return
            if not isinstance(obj, dict):
                yield ParseError(number, f"expected a JSON object, got {type(obj).__name__}")
                return
            yield from _iwf_record(number, obj, skipped)
            return
        try:
            cells = next(csv.reader([text], strict=True))
        except csv.Error as exc:
            yield ParseError(number, f"malformed CSV: {exc}")
            return
        if columns is None:
            header = [c.strip().lower() for c in cells]
            problem = _check_iwf_header(header)
            if problem:
                bad_header = True
                yield ParseError(number, problem)
                return
            columns = header
            return
        if len(cells) != len(columns):
            yield ParseError(number, f"expected {len(columns)} fields, found {len(cells)}")
            return
        row = {k: (v.strip() or None) for k, v in zip(columns, cells, strict=True)}
        yield from _iwf_record(number, row, skipped)

    for number, text in lines:
        if isinstance(text, ParseError):
            yield text
            continue
        try:
            results = list(parse_line(number, text))  # one record: a handful of entries
        except RecursionError:
            results = [ParseError(number, "nested too deeply")]
        except Exception as exc:  # the per-line backstop, as in _guarded
            detail = str(exc)[:200]
            results = [ParseError(number, f"cannot read line: {type(exc).__name__}: {detail}")]
        yield from results
        if bad_header:
            return


def _iwf_keyword(number: int, obj: dict[str, Any], key: str | None) -> NewEntry | ParseError:
    """The keyword variant's record: one ``text`` entry."""
    if any(obj.get(name) not in (None, "") for name in (*IWF_HASHES, *IWF_SKIPPED)):
        return ParseError(number, "a record carries a keyword or hashes, not both", key)
    language = obj.get("language")
    try:
        return normalize_entry(
            NewEntry(
                SignalType.TEXT,
                obj["keyword"],
                external_id=key,
                added_at=obj.get("added"),
                labels=list(IWF_KEYWORD_LABELS),
                metadata={"language": language} if language not in (None, "") else {},
            )
        )
    except (ValueError, TypeError) as exc:
        return ParseError(number, str(exc), key)


def _check_iwf_header(header: list[str]) -> str | None:
    unknown = [c for c in header if c not in IWF_COLUMNS]
    if unknown:
        return (
            f"unknown column(s) {', '.join(repr(c) for c in unknown)} in an IWF-style list; "
            f"allowed: {', '.join(IWF_COLUMNS)}"
        )
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        return f"duplicate column(s): {', '.join(dupes)}"
    if "category" not in header and "keyword" not in header:
        return "an IWF-style list needs a 'category' column (or, for keywords, 'keyword')"
    if not any(c in header for c in (*IWF_HASHES, *IWF_SKIPPED, "keyword")):
        return f"an IWF-style list needs at least one hash column ({', '.join(IWF_COLUMNS[2:7])})"
    return None


def _iwf_record(
    number: int, obj: dict[str, Any], skipped: Counter[str]
) -> Iterator[NewEntry | ParseError]:
    key = _key_of(obj.get("id"))
    if key is None and obj.get("id") not in (None, ""):
        yield ParseError(number, "id must be text of at most 255 characters")
        return
    unknown = sorted(set(obj) - set(IWF_COLUMNS))
    if unknown:
        allowed = ", ".join(IWF_COLUMNS)
        yield ParseError(
            number, f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: {allowed}", key
        )
        return
    if obj.get("keyword") not in (None, ""):
        yield _iwf_keyword(number, obj, key)
        return
    try:
        category = iwf_category(obj.get("category"))
        hashes = []
        for name, st in IWF_HASHES.items():
            value = obj.get(name)
            if value in (None, ""):
                continue
            if not isinstance(value, str):
                raise ValueError(f"{name} must be a string")
            hashes.append((st, value.strip()))
        for name in IWF_SKIPPED:
            if obj.get(name) not in (None, ""):
                skipped[name] += 1
        if not hashes:
            if not any(obj.get(name) not in (None, "") for name in IWF_SKIPPED):
                raise ValueError(f"no hash (expected one of {', '.join(IWF_COLUMNS[2:7])})")
            return  # only hashes Bastion cannot match: skipped and counted, not an error
        template = normalize_entry(
            NewEntry(
                SignalType.MD5,
                "0" * 32,
                external_id=key,
                added_at=obj.get("added"),
                labels=["csam", IWF_CATEGORIES[category.lower()]],
                metadata={"iwf_category": category},
            )
        )
        entries = []
        for st, value in hashes:
            entry = canonical_hex_entry(st, value, template)
            if entry is None:
                entry = normalize_entry(replace(template, signal_type=st, value=value))
            entries.append(entry)
    except (ValueError, TypeError) as exc:
        yield ParseError(number, str(exc), key)
        return
    yield from entries


# ---------------------------------------------------------------------------------------------
# Writing


def write(entries: Iterable[EntryLike], fmt: BankFormat | str, out: IO[str]) -> int:
    """Stream ``entries`` to the text stream ``out`` in ``fmt``; return how many were written.

    The pytx format carries only type and value; the others carry all provenance fields. pytx
    raises ValueError on a url entry matching by prefix or domain (see :func:`pytx_can_carry`),
    which it cannot express; lines before it are already written, so check first when that matters.
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
            if not pytx_can_carry(e):
                raise ValueError(
                    f"the pytx format has no url_match: the {e.url_match} entry {value!r} would "
                    "re-import as an exact URL; export url prefix/domain entries as csv or jsonl"
                )
            if SignalType(e.signal_type) is SignalType.TEXT:
                out.write(f"trend_query {_json(query_json(parse_keyword(value)))}\n")
                count += 1
                continue
            if "\n" in value or "\r" in value:
                raise ValueError(f"{e.signal_type} value contains a newline; cannot write it")
            out.write(f"{BASTION_TO_PYTX[SignalType(e.signal_type)]} {value}\n")
            count += 1
    return count


def pytx_can_carry(entry: EntryLike) -> bool:
    """False for url entries matching by prefix or domain: pytx lines say only type and value, so
    they would come back as exact-URL entries, silently narrowing what the list blocks."""
    return (
        SignalType(entry.signal_type) is not SignalType.URL or (entry.url_match or "url") == "url"
    )


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
