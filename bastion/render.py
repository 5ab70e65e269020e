"""Print rows as a Rich table, JSON or CSV, streaming so a million-file scan never piles up."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"


Row = dict[str, Any]


def emit(
    rows: Iterable[Row],
    fmt: OutputFormat,
    columns: Sequence[str],
    out: TextIO,
    *,
    title: str | None = None,
    console: Console | None = None,
) -> int:
    """Write ``rows``; returns how many were written.

    JSON is a single array written element by element; CSV flattens nested values to JSON text.
    """
    if fmt is OutputFormat.JSON:
        return _emit_json(rows, out)
    if fmt is OutputFormat.CSV:
        writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        n = 0
        for row in rows:
            writer.writerow({k: _flat(row.get(k)) for k in columns})
            n += 1
        return n
    table = Table(title=title, show_lines=False)
    for col in columns:
        table.add_column(col, overflow="fold")
    n = 0
    for row in rows:
        # Text, not markup: file names and list lines are untrusted and may contain [brackets].
        table.add_row(*(Text(_cell(row.get(c))) for c in columns))
        n += 1
    (console or Console(file=out, soft_wrap=False)).print(table)
    return n


def _emit_json(rows: Iterable[Row], out: TextIO) -> int:
    out.write("[")
    n = 0
    for row in rows:
        out.write(",\n" if n else "\n")
        out.write(json.dumps(row, ensure_ascii=False, default=str))
        n += 1
    out.write("\n]\n" if n else "]\n")
    out.flush()
    return n


def _flat(value: Any) -> Any:
    if isinstance(value, list | dict | tuple):
        return json.dumps(value, ensure_ascii=False, default=str)
    return "" if value is None else value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return "\n".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)
