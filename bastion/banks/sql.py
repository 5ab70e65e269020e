"""The banks' SQL building blocks, shared by the bank, change-feed, feed and exchange stores:
the table aliases, bank lookup and versioning, validated bank fields, tombstones, entry row
mapping, and the bank-entry bulk paths (COPY on PostgreSQL, one executemany on SQLite)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import BigInteger, Connection, Row, Select, insert, literal, select, update
from sqlalchemy.exc import DBAPIError

from bastion.banks.model import BankEntry, NewEntry, normalize_labels, utcnow
from bastion.banks.rows import BankRow, EntryRow, TombstoneRow
from bastion.signals.base import SignalType
from bastion.store.bulk import storable
from bastion.store.errors import BankNotFound, InvalidInput
from bastion.store.tables import UTCDateTime

banks_t = BankRow.__table__
entries_t = EntryRow.__table__
tomb_t = TombstoneRow.__table__


def value_hash(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def bank_fields(fields: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, limit in (("description", 10_000), ("source", 255)):
        if key in fields:
            value = fields[key]
            if not isinstance(value, str) or len(value) > limit or not storable(value):
                raise InvalidInput(
                    f"bank {key} must be text of at most {limit} characters, without NUL "
                    "characters or lone surrogates"
                )
            out[key] = value
    if "labels" in fields:
        try:
            out["labels"] = normalize_labels(list(fields["labels"]))
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"bank {exc}") from None
    return out


def find_bank(conn: Connection, name: str) -> Row[Any] | None:
    if not isinstance(name, str) or not storable(name):  # then no bank has that name
        return None
    return conn.execute(select(banks_t).where(banks_t.c.name == name.lower())).first()


def require_bank(conn: Connection, name: str) -> Row[Any]:
    row = find_bank(conn, name)
    if row is None:
        raise BankNotFound(f"no bank named {name!r}")
    return row


def touch_bank(conn: Connection, bank_id: int, **values: Any) -> None:
    conn.execute(
        update(banks_t)
        .where(banks_t.c.id == bank_id)
        .values(version=banks_t.c.version + 1, updated_at=utcnow(), **values)
    )


def tombstone(conn: Connection, where: Any, rev: int) -> None:
    doomed = (
        select(
            entries_t.c.id,
            banks_t.c.name,
            entries_t.c.signal_type,
            entries_t.c.value,
            literal(rev, BigInteger()),
            literal(utcnow(), UTCDateTime()),
        )
        .join(banks_t, banks_t.c.id == entries_t.c.bank_id)
        .where(where)
    )
    conn.execute(
        insert(tomb_t).from_select(
            ["entry_id", "bank_name", "signal_type", "value", "revision", "removed_at"], doomed
        )
    )


def entry_values(e: NewEntry, now: Any) -> dict[str, Any]:
    return {
        "signal_type": str(e.signal_type),
        "value": e.value,
        "value_hash": value_hash(e.value),
        "quality": e.quality,
        "url_match": e.url_match or "",
        "source": e.source,
        "list_name": e.list_name,
        "external_id": e.external_id,
        "added_at": e.added_at or now,
        "labels": e.labels,
        "enabled": e.enabled,
        "disabled_reason": e.disabled_reason,
        "metadata": e.metadata,
        "created_at": now,
        "updated_at": now,
    }


#: Columns of a bulk insert, in :func:`entry_row` order after ``bank_id``; ``revision`` last.
INSERT_COLUMNS = (
    "bank_id",
    "signal_type",
    "value",
    "value_hash",
    "quality",
    "url_match",
    "source",
    "list_name",
    "external_id",
    "added_at",
    "labels",
    "enabled",
    "disabled_reason",
    "metadata",
    "created_at",
    "updated_at",
    "revision",
)


_ADDED_AT, _LABELS, _METADATA = 8, 9, 12  # positions in an entry_row tuple


def entry_row(e: NewEntry) -> tuple[Any, ...]:
    """The stored columns of a canonical entry, in ``INSERT_COLUMNS`` order without
    ``bank_id``, the timestamps and ``revision`` (the batch adds those): the same values as
    :func:`entry_values`, as a tuple, which costs a fraction of a dict per row."""
    value = e.value
    return (
        e.signal_type.value,
        value,
        hashlib.sha256(value.encode("utf-8")).hexdigest(),
        e.quality,
        e.url_match or "",
        e.source,
        e.list_name,
        e.external_id,
        e.added_at,
        e.labels,
        e.enabled,
        e.disabled_reason,
        e.metadata,
    )


def _json_text(value: Any, empty: str) -> str:
    return json.dumps(value) if value else empty


def copy_rows(
    conn: Connection,
    bank_id: int,
    rev: int,
    rows: Iterable[tuple[Any, ...]],
    *,
    now: datetime | None = None,
    skip_duplicates: bool = True,
) -> None:
    """PostgreSQL bulk insert of :func:`entry_row` tuples by COPY. Skipping duplicates, it goes
    into a temporary table shaped like ``bank_entries`` (dropped at commit), then one INSERT ...
    SELECT ... ON CONFLICT DO NOTHING, ids in stream order; a caller that already knows none of
    the rows is there (the exchange engine) copies straight into the table. JSON columns go as
    text (what SQLAlchemy's psycopg JSONB binding sends, ``json.dumps``); timestamps as aware
    UTC datetimes, as ``UTCDateTime`` binds them."""
    now = (now or utcnow()).astimezone(UTC)
    cols = ", ".join(INSERT_COLUMNS)
    table = entries_t.name
    target = "_bastion_import" if skip_duplicates else table
    raw: Any = conn.connection.dbapi_connection  # psycopg's, with cursor().copy()
    assert raw is not None
    labels_text: dict[tuple[str, ...], str] = {}
    try:
        if skip_duplicates:
            conn.exec_driver_sql(
                f"CREATE TEMP TABLE _bastion_import ON COMMIT DROP AS "
                f"SELECT {cols} FROM {table} WITH NO DATA"
            )
        with raw.cursor() as cur, cur.copy(f"COPY {target} ({cols}) FROM STDIN") as copy:
            write = copy.write_row
            for r in rows:
                labels = tuple(r[_LABELS])
                text = labels_text.get(labels)
                if text is None:
                    text = labels_text[labels] = _json_text(r[_LABELS], "[]")
                added = r[_ADDED_AT]
                write(
                    (
                        bank_id,
                        *r[:_ADDED_AT],
                        now if added is None else _aware_utc(added),
                        text,
                        r[10],
                        r[11],
                        _json_text(r[_METADATA], "{}"),
                        now,
                        now,
                        rev,
                    )
                )
    except conn.dialect.loaded_dbapi.Error as exc:
        # Raised by the driver itself, below SQLAlchemy: wrap it the way SQLAlchemy would, so
        # callers see IntegrityError/DataError/OperationalError as from any other statement.
        raise DBAPIError.instance(
            f"COPY {target}", None, exc, conn.dialect.loaded_dbapi.Error
        ) from exc
    if skip_duplicates:
        conn.exec_driver_sql(
            f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _bastion_import ORDER BY ctid "
            "ON CONFLICT (bank_id, signal_type, value_hash, url_match) DO NOTHING"
        )
        conn.exec_driver_sql("DROP TABLE _bastion_import")


def executemany_rows(
    conn: Connection,
    bank_id: int,
    rev: int,
    rows: Iterable[tuple[Any, ...]],
    *,
    now: datetime | None = None,
    skip_duplicates: bool = True,
) -> None:
    """SQLite bulk insert of :func:`entry_row` tuples: one executemany whose dates and JSON are
    converted by the columns' own SQLAlchemy bind processors (so stored text is byte for byte
    what the ORM path writes), the batch's time and each distinct label list once."""
    dialect = conn.dialect
    date_bind = _bind_processor(entries_t.c.added_at, dialect)
    labels_bind = _bind_processor(entries_t.c.labels, dialect)
    meta_bind = _bind_processor(entries_t.c.metadata, dialect)
    stamp = date_bind(now or utcnow())
    no_meta = meta_bind({})
    labels_text: dict[tuple[str, ...], Any] = {}
    params = []
    for r in rows:
        labels = tuple(r[_LABELS])
        text = labels_text.get(labels)
        if text is None:
            text = labels_text[labels] = labels_bind(r[_LABELS])
        params.append(
            (
                bank_id,
                *r[:_ADDED_AT],
                stamp if r[_ADDED_AT] is None else date_bind(r[_ADDED_AT]),
                text,
                r[10],
                r[11],
                meta_bind(r[_METADATA]) if r[_METADATA] else no_meta,
                stamp,
                stamp,
                rev,
            )
        )
    marks = ", ".join("?" for _ in INSERT_COLUMNS)
    conflict = (
        " ON CONFLICT (bank_id, signal_type, value_hash, url_match) DO NOTHING"
        if skip_duplicates
        else ""
    )
    conn.exec_driver_sql(
        f"INSERT INTO {entries_t.name} ({', '.join(INSERT_COLUMNS)}) VALUES ({marks}){conflict}",
        params,
    )


def _aware_utc(value: datetime) -> datetime:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)


def _bind_processor(column: Any, dialect: Any) -> Any:
    process = column.type.dialect_impl(dialect).bind_processor(dialect)
    return process if process is not None else (lambda v: v)


_ENTRY_COLUMNS = (
    entries_t.c.id,
    banks_t.c.name,
    entries_t.c.signal_type,
    entries_t.c.value,
    entries_t.c.quality,
    entries_t.c.url_match,
    entries_t.c.source,
    entries_t.c.list_name,
    entries_t.c.external_id,
    entries_t.c.added_at,
    entries_t.c.labels,
    entries_t.c.enabled,
    entries_t.c.disabled_reason,
    entries_t.c.metadata,
    entries_t.c.created_at,
    entries_t.c.updated_at,
    entries_t.c.revision,
    banks_t.c.enabled.label("bank_enabled"),
)


SIGNAL_TYPES = {t.value: t for t in SignalType}


def entry_select() -> Select[Any]:
    """Columns in BankEntry field order (then the bank's enabled flag), for cheap row mapping."""
    return select(*_ENTRY_COLUMNS).join(banks_t, banks_t.c.id == entries_t.c.bank_id)


def to_entry(r: Row[Any]) -> BankEntry:
    row = cast("tuple[Any, ...]", r)  # a Row is a tuple; unpacked without copying
    (i, bank, st, value, q, um, src, lst, ext, added, labels, en, reason, meta, cr, up, rev, _) = (
        row
    )
    return BankEntry(
        i,
        bank,
        SIGNAL_TYPES[st],
        value,
        q,
        um or None,
        src,
        lst,
        ext,
        added,
        list(labels or ()),
        bool(en),
        reason,
        dict(meta or {}),
        cr,
        up,
        rev,
    )
