"""Public helpers every domain's store shares: input checks (:func:`short_text`,
:func:`json_doc`, :func:`storable`), paging arguments (:func:`paging`), keyset paging
(:func:`keyset_page`) and the current time (:func:`utcnow`). Nothing here knows a domain's
tables; the banks' bulk paths and row mapping are in :mod:`bastion.banks.sql`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Row, Select

from bastion.store.errors import InvalidInput


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (what every stored timestamp is)."""
    return datetime.now(UTC)


def storable(text: str) -> bool:
    """Whether every database can take ``text`` as a query parameter or a value: PostgreSQL
    refuses NUL characters, and a lone surrogate cannot be encoded at all."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def keyset_page(
    conn: Connection,
    stmt: Select[Any],
    key: tuple[Any, Any],
    window: tuple[int, int | None, int, int],
) -> list[Row[Any]]:
    """The first ``limit`` rows of ``stmt`` keyed (revision, id) strictly after ``(rev, after_id)``
    (after all of ``rev`` when ``after_id`` is None) and at most revision ``upto``.

    Two range queries rather than one ``OR``: the rest of revision ``rev`` in id order (an index
    range scan, however many rows the revision holds), then the revisions after it. A single
    ``revision > r OR (revision = r AND id > i)`` makes PostgreSQL read and sort the whole of
    revision ``r`` for every page: quadratic for a bank rename of millions of entries.
    """
    rev_col, id_col = key
    rev, after_id, upto, limit = window
    rows: list[Row[Any]] = []
    if after_id is not None:
        rows = list(
            conn.execute(
                stmt.where(rev_col == rev, id_col > after_id).order_by(id_col).limit(limit)
            )
        )
    if len(rows) < limit:
        rows += conn.execute(
            stmt.where(rev_col > rev, rev_col <= upto)
            .order_by(rev_col, id_col)
            .limit(limit - len(rows))
        ).all()
    return rows


def paging(start: int, limit: int, most: int) -> tuple[int, int]:
    if not isinstance(start, int) or isinstance(start, bool) or not 0 <= start < 2**63:
        raise InvalidInput(f"an id to page from must be a whole number >= 0, not {start!r}")
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= most:
        raise InvalidInput(f"limit must be a whole number from 1 to {most}, not {limit!r}")
    return start, limit


def short_text(what: str, value: object, limit: int, *, empty: bool = True) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string, not {type(value).__name__}")
    if len(value) > limit or (not empty and not value.strip()) or "\x00" in value:
        need = "" if empty else "non-empty "
        raise InvalidInput(f"{what} must be {need}text of at most {limit} characters, no NULs")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{what} is not valid Unicode text") from None
    return value


def json_doc(what: str, value: object, kind: type, limit: int) -> Any:
    """``value`` as it will read back from the database (a JSON round trip), or InvalidInput.
    Storing the round-tripped form is what lets the audit hash be recomputed later."""
    if not isinstance(value, kind):
        raise InvalidInput(f"{what} must be a JSON {kind.__name__}, not {type(value).__name__}")
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        raise InvalidInput(f"{what} is not storable as JSON: {exc}") from None
    if "\\u0000" in text:  # PostgreSQL's jsonb refuses NUL in strings
        raise InvalidInput(f"{what} contains a NUL character")
    if len(text) > limit:
        raise InvalidInput(f"{what} is {len(text)} characters of JSON; the limit is {limit}")
    return json.loads(text)
