"""The bank store: banks and entries in SQLite (embedded) or PostgreSQL (scaled).

Every write runs in one transaction that first bumps the global change counter (``store_state``),
which both numbers the change and serialises writers (see ``models.StoreStateRow``).
An in-memory index catches up with :meth:`Store.changes_since`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import threading
import weakref
from collections.abc import Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from itertools import chain
from pathlib import Path
from typing import IO, Any

from alembic import command
from alembic.config import Config
from alembic.util.exc import CommandError as AlembicError
from sqlalchemy import (
    Connection,
    Engine,
    Row,
    Select,
    Text,
    cast,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    DataError,
    IntegrityError,
    NoSuchModuleError,
    SQLAlchemyError,
)
from sqlalchemy.pool import StaticPool

from bastion.audit_keys import AuditKeyError, AuditKeyring
from bastion.banks.formats import BankFormat, ParseError, parse, write
from bastion.banks.model import (
    Bank,
    BankEntry,
    IndexEntry,
    NewEntry,
    normalize_entry,
    utcnow,
    validate_bank_name,
    validate_value,
)
from bastion.keys import (
    ApiKey,
    format_token,
    hash_secret,
    key_user,
    new_key_id,
    new_salt,
    new_secret,
    parse_scopes,
    parse_token,
    validate_key_name,
    verify_secret,
)
from bastion.signals.base import SignalType
from bastion.store.bulk import (
    SIGNAL_TYPES,
    bank_fields,
    banks_t,
    copy_rows,
    entries_t,
    entry_row,
    entry_select,
    executemany_rows,
    find_bank,
    json_doc,
    keyset_page,
    paging,
    require_bank,
    short_text,
    storable,
    to_entry,
    tomb_t,
    tombstone,
    touch_bank,
    value_hash,
)
from bastion.store.errors import (
    AuditKeyUnavailable,
    BankExists,
    EntryNotFound,
    ImportAborted,
    InvalidInput,
    KeyExists,
    KeyNotFound,
    ScanNotFound,
    StoreError,
    StoreUnavailable,
)
from bastion.store.models import (
    ApiKeyRow,
    AuditHeadRow,
    AuditRow,
    ScanRow,
    StoreStateRow,
    UserRow,
)

DEFAULT_URL = "sqlite:///bastion-data/bastion.db"
URL_ENV = "BASTION_DATABASE_URL"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: Any fixed number: PostgreSQL advisory lock taken while migrating, so replicas starting together
#: do not race to create the same tables.
_MIGRATION_LOCK = 0x42A5_7104
_SCHEMA_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

state_t = StoreStateRow.__table__
keys_t = ApiKeyRow.__table__
audit_t = AuditRow.__table__
audit_head_t = AuditHeadRow.__table__
scans_t = ScanRow.__table__

_SQLITE_BUSY_MS = 30_000
#: How long a ``last_used_at`` update may wait for a lock before it is skipped.
_TOUCH_WAIT_MS = 100
#: ``last_used_at`` is only as precise as this, to save a write per request.
KEY_TOUCH_INTERVAL = timedelta(minutes=1)
#: prev_hash of the first audit row (also the head's hash while the log is empty).
AUDIT_GENESIS = "0" * 64
#: The action of the record that starts a new audit key's epoch (:meth:`Store.rotate_audit_key`).
AUDIT_ROTATE_ACTION = "audit.rotate-key"
#: Domain tag in front of every keyed record's HMAC input.
_AUDIT_HMAC_TAG = b"bastion/audit/v2\x00"
#: Engine execution option naming the Store whose audit keys chain appends on its connections.
_AUDIT_STORE = "bastion_audit_store"
#: Audit keys this process has loaded, by key id, so :func:`audit_hash` can recompute a keyed
#: record's hash (as tests and tools do) without being handed the key.
_LOADED_AUDIT_KEYS: dict[str, bytes] = {}
_ACTION_RE = re.compile(r"^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*$")
_MAX_SCAN_JSON = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audit log row. ``hash`` chains it to the row before; see :meth:`Store.record_audit`."""

    id: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: dict[str, Any]
    remote_addr: str | None
    prev_hash: str
    hash: str
    #: The audit key the record is chained under (HMAC-SHA256); None for a legacy record chained
    #: with the old unkeyed SHA-256 before the upgrade.
    key_id: str | None = None


@dataclass(frozen=True, slots=True)
class AuditCheck:
    """What :meth:`Store.check_audit_chain` found. ``checked`` counts the records verified intact
    (all of them when ``ok``); ``head_id`` and ``head_hash`` are what the head row says the log
    ends with. On a problem, ``kind`` is one of ``edited``, ``deleted``, ``reordered``,
    ``unlinked``, ``inserted``, ``truncated``, ``head``, ``extra``, ``unkeyed`` (a record
    chained without a key where the audit key file accepts none) or ``key`` (a record under a
    key the file lacks, or a key change without a rotation record); ``record_id`` is the first
    record concerned; ``missing`` is the (first, last) id missing for ``deleted`` and
    ``truncated``; ``problem`` says it all in one sentence. ``legacy`` counts the verified
    records chained before the upgrade without a key; ``key_id`` is the key the log's last
    verified record is chained under."""

    ok: bool
    checked: int
    head_id: int
    head_hash: str
    problem: str | None = None
    kind: str | None = None
    record_id: int | None = None
    missing: tuple[int, int] | None = None
    legacy: int = 0
    key_id: str | None = None


@dataclass(frozen=True, slots=True)
class ScanRecord:
    """A stored scan: who asked, about what content (platform ids in ``context``), what it hashed
    to, what it matched and what was decided."""

    id: int
    at: datetime
    actor: str
    content_kind: str
    context: dict[str, Any]
    signals: list[dict[str, Any]]
    matches: list[dict[str, Any]]
    verdict: str


@dataclass(slots=True)
class ImportReport:
    """Outcome of an import. ``errors`` keeps the first ``max_errors`` messages; ``error_count``
    counts them all."""

    added: int = 0
    duplicates: int = 0
    error_count: int = 0
    errors: list[str] = field(default_factory=list)
    batches: int = 0
    max_errors: int = 100

    def add_error(self, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < self.max_errors:
            self.errors.append(message)

    @property
    def ok(self) -> bool:
        return self.error_count == 0


@dataclass(frozen=True, slots=True)
class EntryChange:
    """One entry's state at ``revision``. ``active`` False means drop it from any index: it was
    disabled, its bank was disabled, or it was removed (then ``entry`` is None). ``entry`` holds
    only what an index needs (see :meth:`Store.get_entry` for the whole row)."""

    entry_id: int
    bank: str
    signal_type: SignalType
    value: str
    revision: int
    active: bool
    entry: IndexEntry | None

    @property
    def removed(self) -> bool:
        return self.entry is None


def database_url(url: str | None) -> str:
    """The URL to use: the argument, else ``BASTION_DATABASE_URL``, else ./bastion-data SQLite."""
    return url or os.environ.get(URL_ENV) or DEFAULT_URL


def data_dir(url: URL | str | None) -> Path:
    """Where files that belong with a database live (its master key, its policy): the SQLite
    file's directory, else ``./bastion-data`` (PostgreSQL, or an in-memory database)."""
    u = make_url(database_url(url) if isinstance(url, str | None) else url)
    if u.get_backend_name() == "sqlite" and u.database not in (None, "", ":memory:"):
        return Path(u.database).parent
    return Path("bastion-data")


def _redact(url: str) -> str:
    """``url`` with its whole ``user:password@`` part masked, for URLs make_url cannot parse
    (where no one can say where a password containing ``@`` or ``/`` ends)."""
    return re.sub(r"//.*@", "//***@", url, flags=re.DOTALL)


def _reason(exc: BaseException, url: URL) -> str:
    """The first line of the driver's complaint (not SQLAlchemy's wrapper and help link), with
    the password scrubbed in case a driver echoes it."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    if url.password:
        text = text.replace(str(url.password), "***")
    return text


def _sqlite_directory(path: Path) -> None:
    """Create the SQLite file's directory only when that is plainly intended: one level, under an
    existing directory (as for the default ``bastion-data/``). A mistyped deep path is an error
    rather than a silently created tree somewhere unexpected."""
    parent = path.parent
    try:
        if parent.is_dir():
            return
        if not parent.parent.is_dir():
            raise StoreUnavailable(
                f"cannot create SQLite database {str(path)!r}: directory {str(parent.parent)!r} "
                "does not exist"
            )
        parent.mkdir(exist_ok=True)
    except OSError as exc:
        raise StoreUnavailable(
            f"cannot create directory {str(parent)!r} for the SQLite database: "
            f"{exc.strerror or exc}"
        ) from None


#: Execution option that makes SQLite's BEGIN an immediate one (see :meth:`Store.begin_write`).
_IMMEDIATE = "bastion_sqlite_immediate"


def _sqlite_setup(engine: Engine, *, memory: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy (pysqlite's own is unreliable around DDL and
        # savepoints); the "begin" hook below issues BEGIN itself.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        if not memory:
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_MS}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A deferred transaction that reads and then writes fails at once with "database is
        # locked" if another connection wrote in between (WAL cannot upgrade a stale snapshot,
        # and busy_timeout does not apply); writers therefore take the lock up front.
        immediate = conn.get_execution_options().get(_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Store:
    """Banks and their entries. Thread-safe in the way an SQLAlchemy Engine is; open once per
    process and share."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # key pk -> earliest time this process tries to update its last_used_at again.
        self._touch_after: dict[int, datetime] = {}
        self._audit_key_file: Path | None = None
        self._audit_ring: AuditKeyring | None = None
        self._audit_lock = threading.Lock()
        # Appends made by domain stores get only a Connection: it finds this Store (and so the
        # audit keys) through the engine's options. Weak, so the engine does not keep us alive.
        engine.update_execution_options(**{_AUDIT_STORE: weakref.ref(self)})

    # -- lifecycle -----------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        url: str | None = None,
        *,
        schema: str | None = None,
        engine_options: dict[str, Any] | None = None,
        migrate: bool = True,
    ) -> Store:
        """Connect and bring the schema to the newest migration.

        ``schema`` (PostgreSQL only) puts every table in that schema, creating it if needed;
        tests use it for isolation. ``engine_options`` go to :func:`sqlalchemy.create_engine`.
        Raises :class:`StoreUnavailable` (message without the password) when the URL is malformed
        or the database cannot be reached, created or migrated. An SQLite file's directory is
        created only if its own parent exists (so ``bastion-data/`` is, a mistyped tree is not).
        """
        url = database_url(url)
        try:
            parsed = make_url(url)
        except (SQLAlchemyError, ValueError):
            raise StoreUnavailable(
                f"invalid database URL {_redact(url)!r}: expected e.g. "
                "sqlite:///path/to/bastion.db or postgresql+psycopg://user@host/db"
            ) from None
        shown = parsed.render_as_string(hide_password=True)
        options = dict(engine_options or {})
        is_sqlite = parsed.get_backend_name() == "sqlite"
        memory = is_sqlite and parsed.database in (None, "", ":memory:")
        if is_sqlite and not memory and not str(parsed.database).startswith("file:"):
            _sqlite_directory(Path(str(parsed.database)))
        if memory:
            options.setdefault("poolclass", StaticPool)
            options.setdefault("connect_args", {"check_same_thread": False})
        if schema is not None:
            if is_sqlite:
                raise InvalidInput("schema= is for PostgreSQL; SQLite has one schema per file")
            if not _SCHEMA_RE.match(schema):
                raise InvalidInput(f"invalid schema name {schema!r}")
            connect_args = dict(options.get("connect_args", {}))
            connect_args["options"] = (
                connect_args.get("options", "") + f" -csearch_path={schema}"
            ).strip()
            options["connect_args"] = connect_args
        try:
            engine = create_engine(parsed, **options)
        except NoSuchModuleError:
            raise StoreUnavailable(
                f"cannot use database URL {shown!r}: unknown database kind "
                f"{parsed.drivername!r} (Bastion supports sqlite and postgresql+psycopg)"
            ) from None
        except (SQLAlchemyError, ImportError) as exc:
            raise StoreUnavailable(
                f"cannot use database URL {shown!r}: {_reason(exc, parsed)}"
            ) from None
        if is_sqlite:
            _sqlite_setup(engine, memory=memory)
        store = cls(engine)
        try:
            if schema is not None:
                with engine.begin() as conn:
                    conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            if migrate:
                store.migrate()
            else:
                with engine.connect():  # fail here, not at the first query
                    pass
        except (SQLAlchemyError, OSError, AlembicError) as exc:
            engine.dispose()
            raise StoreUnavailable(
                f"cannot open database {shown!r}: {_reason(exc, parsed)}"
            ) from None
        except BaseException:
            engine.dispose()
            raise
        return store

    @property
    def data_dir(self) -> Path:
        return data_dir(self.engine.url)

    def migrate(self) -> None:
        """Run Alembic migrations to head (a no-op when already there)."""
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def begin_write(self) -> Iterator[Connection]:
        """A transaction that will write: on SQLite it takes the write lock at BEGIN, so it waits
        (busy_timeout) for other writers instead of failing when it first writes after reading.
        Domain stores use it in place of ``engine.begin()`` for read-then-write transactions."""
        with self.engine.connect() as conn:
            conn.execution_options(**{_IMMEDIATE: True})
            with conn.begin():
                yield conn

    @contextmanager
    def write(self) -> Iterator[tuple[Connection, int]]:
        """A write transaction and its revision number. Bumping the counter first takes its lock,
        so concurrent writers queue here rather than deadlock later."""
        with self.engine.begin() as conn:
            rev = conn.execute(
                update(state_t)
                .where(state_t.c.id == 1)
                .values(revision=state_t.c.revision + 1)
                .returning(state_t.c.revision)
            ).scalar_one()
            yield conn, rev

    # -- banks ---------------------------------------------------------------------------------

    def create_bank(
        self,
        name: str,
        *,
        description: str = "",
        labels: Iterable[str] = (),
        source: str = "",
        is_demo: bool = False,
        enabled: bool = True,
        actor: str | None = None,
        remote_addr: str | None = None,
    ) -> Bank:
        """Create a bank. With ``actor``, a ``bank.create`` audit event is written in the same
        transaction (as for every bank change below that takes an actor)."""
        name = _bank_name(name)
        fields = bank_fields({"description": description, "labels": list(labels), "source": source})
        audit = _maybe_audit(
            actor,
            "bank.create",
            name,
            {
                "labels": fields["labels"],
                "source": fields["source"],
                "enabled": enabled,
                "is_demo": is_demo,
            },
            remote_addr,
        )
        now = utcnow()
        try:
            with self.write() as (conn, _rev):
                if find_bank(conn, name) is not None:
                    raise BankExists(f"bank {name!r} already exists")
                conn.execute(
                    insert(banks_t).values(
                        name=name,
                        enabled=enabled,
                        is_demo=is_demo,
                        version=1,
                        created_at=now,
                        updated_at=now,
                        **fields,
                    )
                )
                _append_if(conn, audit)
        except IntegrityError:
            raise BankExists(f"bank {name!r} already exists") from None
        return self.get_bank(name)

    def get_bank(self, name: str) -> Bank:
        with self.engine.connect() as conn:
            return _to_bank(require_bank(conn, name))

    def list_banks(self) -> list[Bank]:
        """All banks by name, each with ``entry_count`` filled."""
        counts = (
            select(entries_t.c.bank_id, func.count().label("n"))
            .group_by(entries_t.c.bank_id)
            .subquery()
        )
        stmt = (
            select(banks_t, func.coalesce(counts.c.n, 0).label("entry_count"))
            .outerjoin(counts, counts.c.bank_id == banks_t.c.id)
            .order_by(banks_t.c.name)
        )
        with self.engine.connect() as conn:
            return [_to_bank(r, r.entry_count) for r in conn.execute(stmt)]

    def bank_labels(self) -> dict[str, list[str]]:
        """Each bank's labels: a read of the banks table alone (no entry counts), cheap enough
        for the scan path."""
        with self.engine.connect() as conn:
            return {
                r.name: list(r.labels or ())
                for r in conn.execute(select(banks_t.c.name, banks_t.c.labels))
            }

    def update_bank(
        self,
        name: str,
        /,
        *,
        actor: str | None = None,
        remote_addr: str | None = None,
        **fields: Any,
    ) -> Bank:
        """Change any of name (a rename), description, labels, source, enabled, is_demo. With
        ``actor``, audited (``bank.update``, the fields as details) in the same transaction."""
        allowed = {"name", "description", "labels", "source", "enabled", "is_demo"}
        unknown = sorted(set(fields) - allowed)
        if unknown:
            raise InvalidInput(f"cannot update bank field(s): {', '.join(unknown)}")
        values = bank_fields(
            {k: v for k, v in fields.items() if k in ("description", "labels", "source")}
        )
        for flag in ("enabled", "is_demo"):
            if flag in fields:
                if not isinstance(fields[flag], bool):
                    raise InvalidInput(f"{flag} must be true or false")
                values[flag] = fields[flag]
        new_name = _bank_name(fields["name"]) if "name" in fields else None
        changed = {**values, **({"name": new_name} if new_name is not None else {})}
        audit = _maybe_audit(actor, "bank.update", str(name), changed, remote_addr)
        with self.write() as (conn, rev):
            row = require_bank(conn, name)
            if new_name is not None and new_name != row.name:
                if find_bank(conn, new_name) is not None:
                    raise BankExists(f"bank {new_name!r} already exists")
                values["name"] = new_name
            touch_bank(conn, row.id, **values)
            # Entries carry their bank's name and enabled state to replicas: renumber them.
            if "name" in values or values.get("enabled", row.enabled) != row.enabled:
                conn.execute(
                    update(entries_t).where(entries_t.c.bank_id == row.id).values(revision=rev)
                )
            final = values.get("name", row.name)
            if audit is not None:
                _append_audit(conn, {**audit, "target": row.name})
        return self.get_bank(final)

    def set_bank_enabled(
        self, name: str, enabled: bool, *, actor: str | None = None, remote_addr: str | None = None
    ) -> Bank:
        return self.update_bank(name, enabled=enabled, actor=actor, remote_addr=remote_addr)

    def delete_bank(
        self, name: str, *, actor: str | None = None, remote_addr: str | None = None
    ) -> None:
        """Delete a bank and all its entries (leaving tombstones for replicas). With ``actor``,
        audited (``bank.delete``, with the number of entries) in the same transaction."""
        audit = _maybe_audit(actor, "bank.delete", str(name), None, remote_addr)
        with self.write() as (conn, rev):
            row = require_bank(conn, name)
            tombstone(conn, entries_t.c.bank_id == row.id, rev)
            gone = conn.execute(delete(entries_t).where(entries_t.c.bank_id == row.id)).rowcount
            conn.execute(delete(banks_t).where(banks_t.c.id == row.id))
            if audit is not None:
                _append_audit(conn, {**audit, "target": row.name, "detail": {"entries": gone}})

    # -- adding entries ------------------------------------------------------------------------

    def add_entries(
        self,
        bank: str,
        entries: Iterable[NewEntry | ParseError],
        *,
        batch_size: int = 5000,
        max_errors: int = 100,
        actor: str | None = None,
        remote_addr: str | None = None,
    ) -> ImportReport:
        """Validate and add entries, ``batch_size`` per transaction.

        An entry identical in (signal type, value, url_match) to one already in the bank, or
        earlier in the stream, counts as a duplicate and is skipped. A bad entry is reported and
        skipped. ParseErrors in the stream are reported as they are. If the stream raises,
        earlier batches stay committed and :class:`ImportAborted` carries the report. With
        ``actor``, every transaction that adds entries also records ``bank.entries.add`` (how
        many it added), so each committed batch is audited with it.
        """
        if batch_size < 1:
            raise InvalidInput("batch_size must be at least 1")
        name = self.get_bank(bank).name
        audit = _maybe_audit(actor, "bank.entries.add", name, None, remote_addr)
        report = ImportReport(max_errors=max_errors)
        batch: list[NewEntry] = []
        try:
            for number, item in enumerate(entries, 1):
                if isinstance(item, ParseError):
                    report.add_error(str(item))
                    continue
                try:
                    batch.append(normalize_entry(item))
                except (ValueError, TypeError, AttributeError, OverflowError) as exc:
                    report.add_error(f"entry {number}: {exc}")
                except RecursionError:
                    report.add_error(f"entry {number}: nested too deeply")
                    continue
                if len(batch) >= batch_size:
                    self._insert_batch(name, batch, report, audit)
                    batch = []
            if batch:
                self._insert_batch(name, batch, report, audit)
        except StoreError:
            raise
        except (OSError, SQLAlchemyError, UnicodeError, RuntimeError) as exc:
            raise ImportAborted(
                f"import into bank {name!r} stopped after {report.added} added entries "
                f"(earlier batches are kept): {exc}",
                report,
            ) from exc
        return report

    def _insert_batch(
        self,
        bank: str,
        batch: list[NewEntry],
        report: ImportReport,
        audit: dict[str, Any] | None = None,
    ) -> None:
        unique: dict[tuple[str, str, str], tuple[Any, ...]] = {}
        for e in batch:
            row = entry_row(e)
            key = (row[0], row[2], row[4])  # signal_type, value_hash, url_match
            if key in unique:
                report.duplicates += 1
            else:
                unique[key] = row
        try:
            with self.write() as (conn, rev):
                self._insert_rows(conn, bank, rev, unique, report, audit)
        except (IntegrityError, DataError):
            # Validation should have caught everything the database rejects; if not, find the
            # offending rows one by one rather than lose the batch.
            for key, row in unique.items():
                try:
                    with self.write() as (conn, rev):
                        self._insert_rows(conn, bank, rev, {key: row}, report, audit)
                except (IntegrityError, DataError) as exc:
                    report.add_error(
                        f"{row[0]} {row[1][:40]!r}: database rejected the "
                        f"entry: {getattr(exc, 'orig', exc)}"
                    )
        report.batches += 1

    @staticmethod
    def _insert_rows(
        conn: Connection,
        bank: str,
        rev: int,
        rows: dict[tuple[str, str, str], tuple[Any, ...]],
        report: ImportReport,
        audit: dict[str, Any] | None = None,
    ) -> None:
        """Insert ``rows`` (from :func:`entry_row`) skipping values the bank already holds.

        The rows go to the driver as plain tuples, converted here once per batch rather than per
        row by SQLAlchemy's type machinery (which cost more than the insert itself): PostgreSQL
        takes them by ``COPY`` into a temporary table and one ``INSERT ... SELECT ... ON CONFLICT
        DO NOTHING``, SQLite by one ``executemany``. ON CONFLICT DO NOTHING lets the unique index
        find duplicates: no read-then-write race, and no reliance on planner statistics that lag
        behind a table growing mid-import.
        """
        bank_row = require_bank(conn, bank)
        if rows:
            if conn.dialect.name == "postgresql":
                copy_rows(conn, bank_row.id, rev, rows.values())
            else:
                executemany_rows(conn, bank_row.id, rev, rows.values())
        # The rows this transaction inserted are exactly those carrying its revision (RETURNING
        # would say the same but makes PostgreSQL bulk inserts several times slower).
        added = conn.execute(
            select(func.count()).select_from(entries_t).where(entries_t.c.revision == rev)
        ).scalar_one()
        if added:
            touch_bank(conn, bank_row.id)
            if audit is not None:
                detail = {"added": added, "duplicates": len(rows) - added, "revision": rev}
                _append_audit(conn, {**audit, "detail": detail})
        report.added += added
        report.duplicates += len(rows) - added

    def import_file(
        self,
        bank: str,
        source: str | os.PathLike[str] | IO[str] | IO[bytes],
        fmt: BankFormat | str | None = None,
        *,
        batch_size: int = 5000,
        max_errors: int = 100,
        actor: str | None = None,
        remote_addr: str | None = None,
    ) -> ImportReport:
        """Parse a bank file (path or open stream) and add its entries; see :meth:`add_entries`.
        Per-line problems are collected as ``line N: message``."""
        audited = {"actor": actor, "remote_addr": remote_addr}
        self.get_bank(bank)  # fail before reading anything
        fmt = _format(fmt) if fmt is not None else None
        if isinstance(source, str | os.PathLike):
            path = Path(source)
            if path.is_dir():
                raise InvalidInput(f"cannot import {str(path)!r}: it is a directory")
            try:
                fh = path.open("rb")
            except OSError as exc:
                raise InvalidInput(
                    f"cannot read {str(path)!r}: {exc.strerror or type(exc).__name__}"
                ) from None
            with fh:
                return self.add_entries(
                    bank, parse(fh, fmt), batch_size=batch_size, max_errors=max_errors, **audited
                )
        return self.add_entries(
            bank, parse(source, fmt), batch_size=batch_size, max_errors=max_errors, **audited
        )

    # -- reading -------------------------------------------------------------------------------

    def export(
        self,
        bank: str,
        fmt: BankFormat | str,
        out: IO[str],
        *,
        include_disabled: bool = False,
        actor: str | None = None,
        remote_addr: str | None = None,
    ) -> int:
        """Write a bank's entries to ``out``; returns the count. Disabled entries are left out
        unless asked for (the formats have no column for the enabled flag). With ``actor``, the
        export is audited (``bank.export``) before any value is read out.

        Everything that can be checked is checked before the first byte is written: the bank, the
        format, that a pytx export loses nothing (it cannot say a url entry matches by prefix or
        domain: :class:`InvalidInput`), and that the entry query runs.
        """
        fmt = _format(fmt)
        name = self.get_bank(bank).name
        if fmt is BankFormat.PYTX:
            stmt = (
                select(func.count())
                .select_from(entries_t)
                .join(banks_t, banks_t.c.id == entries_t.c.bank_id)
                .where(
                    banks_t.c.name == name,
                    entries_t.c.signal_type == SignalType.URL.value,
                    entries_t.c.url_match.in_(["prefix", "domain"]),
                )
            )
            if not include_disabled:
                stmt = stmt.where(entries_t.c.enabled.is_(True))
            with self.engine.connect() as conn:
                lossy = conn.execute(stmt).scalar_one()
            if lossy:
                raise InvalidInput(
                    f"bank {name!r} has {lossy} url entries matching by prefix or domain, which "
                    "the pytx format cannot express (they would re-import as exact URLs); "
                    "export as csv or jsonl"
                )
        if actor is not None:
            detail = {"format": fmt.value, "include_disabled": include_disabled}
            self.record_audit(
                actor=actor,
                action="bank.export",
                target=name,
                detail=detail,
                remote_addr=remote_addr,
            )
        entries = self._iter(
            banks=[name], entries_enabled=not include_disabled, banks_enabled=False
        )
        try:
            first = next(entries, None)  # run the query before writing a header
            return write(chain([first], entries) if first is not None else (), fmt, out)
        finally:
            entries.close()

    def iter_entries(
        self,
        *,
        banks: Sequence[str] | None = None,
        enabled_only: bool = True,
        signal_types: Sequence[SignalType | str] | None = None,
        batch: int = 10000,
    ) -> Iterator[BankEntry]:
        """Stream entries in id order without loading them all (server-side cursor on
        PostgreSQL). ``enabled_only`` keeps enabled entries of enabled banks."""
        return self._iter(
            banks=banks,
            entries_enabled=enabled_only,
            banks_enabled=enabled_only,
            signal_types=signal_types,
            batch=batch,
        )

    def _iter(
        self,
        *,
        banks: Sequence[str] | None,
        entries_enabled: bool,
        banks_enabled: bool,
        signal_types: Sequence[SignalType | str] | None = None,
        batch: int = 10000,
    ) -> Generator[BankEntry]:
        stmt = entry_select().order_by(entries_t.c.id)
        if banks is not None:
            stmt = stmt.where(banks_t.c.name.in_([str(b).lower() for b in banks]))
        if entries_enabled:
            stmt = stmt.where(entries_t.c.enabled.is_(True))
        if banks_enabled:
            stmt = stmt.where(banks_t.c.enabled.is_(True))
        if signal_types is not None:
            stmt = stmt.where(entries_t.c.signal_type.in_([str(t) for t in signal_types]))
        with self.engine.connect() as conn:
            result = conn.execution_options(yield_per=batch).execute(stmt)
            for row in result:
                yield to_entry(row)

    def list_entries(self, bank: str, *, after: int = 0, limit: int = 100) -> list[BankEntry]:
        """One page of a bank's entries (enabled or not) in id order, after id ``after``."""
        bank_row = self.get_bank(bank)
        if after >= 2**63 - 1:  # no id is larger; and past BIGINT the query would be a DB error
            return []
        stmt = (
            entry_select()
            .where(banks_t.c.name == bank_row.name, entries_t.c.id > after)
            .order_by(entries_t.c.id)
            .limit(max(1, min(limit, 10_000)))
        )
        with self.engine.connect() as conn:
            return [to_entry(r) for r in conn.execute(stmt)]

    def iter_index_entries(
        self,
        *,
        banks: Sequence[str] | None = None,
        signal_types: Sequence[SignalType | str] | None = None,
        batch: int = 50_000,
    ) -> Iterator[IndexEntry]:
        """Stream what the matcher needs of every enabled entry of every enabled bank.

        Selects seven columns instead of the whole row: loading a 1M-entry bank into the index
        is bound by row decoding, and dates and metadata are never needed there.
        """
        stmt = (
            select(*_INDEX_COLUMNS)
            .join(banks_t, banks_t.c.id == entries_t.c.bank_id)
            .where(entries_t.c.enabled.is_(True), banks_t.c.enabled.is_(True))
            .order_by(entries_t.c.id)
        )
        if banks is not None:
            stmt = stmt.where(banks_t.c.name.in_([str(b).lower() for b in banks]))
        if signal_types is not None:
            stmt = stmt.where(entries_t.c.signal_type.in_([str(t) for t in signal_types]))
        with self.engine.connect() as conn:
            result = conn.execution_options(yield_per=batch).execute(stmt)
            for row in result:
                yield _to_index_entry(row)

    def get_entry(self, entry_id: int) -> BankEntry:
        row = None
        if isinstance(entry_id, int) and 0 < entry_id < 2**63:
            with self.engine.connect() as conn:
                row = conn.execute(entry_select().where(entries_t.c.id == entry_id)).first()
        if row is None:
            raise EntryNotFound(f"no bank entry with id {entry_id}")
        return to_entry(row)

    def find_entries(
        self,
        bank: str,
        *,
        external_id: str | None = None,
        value: str | None = None,
        signal_type: SignalType | str | None = None,
    ) -> list[BankEntry]:
        """Entries of ``bank`` matching all the given criteria (the value in any signal type it
        is valid for, unless ``signal_type`` says which)."""
        with self.engine.connect() as conn:
            bank_row = require_bank(conn, bank)
            stmt = entry_select().where(entries_t.c.bank_id == bank_row.id)
            if external_id is not None:
                if not storable(str(external_id)):  # stored external ids never are
                    return []
                stmt = stmt.where(entries_t.c.external_id == str(external_id))
            if signal_type is not None:
                stmt = stmt.where(entries_t.c.signal_type == str(SignalType(signal_type)))
            if value is not None:
                types = [SignalType(signal_type)] if signal_type is not None else list(SignalType)
                hashes = _value_hashes(value, types)
                if not hashes:
                    return []
                stmt = stmt.where(entries_t.c.value_hash.in_(hashes))
            return [to_entry(r) for r in conn.execute(stmt.order_by(entries_t.c.id))]

    # -- changing entries ----------------------------------------------------------------------

    def disable_entry(
        self,
        bank: str,
        entry_ref: int | str,
        reason: str = "",
        *,
        actor: str | None = None,
        remote_addr: str | None = None,
    ) -> list[BankEntry]:
        """Disable the entries ``entry_ref`` names (id, external id, or value); returns them.
        With ``actor``, audited (``bank.entry.disable``) in the same transaction."""
        return self._set_enabled(bank, entry_ref, False, reason, actor, remote_addr)

    def enable_entry(
        self,
        bank: str,
        entry_ref: int | str,
        *,
        actor: str | None = None,
        remote_addr: str | None = None,
    ) -> list[BankEntry]:
        return self._set_enabled(bank, entry_ref, True, "", actor, remote_addr)

    def _set_enabled(
        self,
        bank: str,
        entry_ref: int | str,
        enabled: bool,
        reason: str,
        actor: str | None = None,
        remote_addr: str | None = None,
    ) -> list[BankEntry]:
        if not isinstance(reason, str) or len(reason) > 2000 or "\x00" in reason:
            raise InvalidInput("reason must be text of at most 2000 characters")
        action = "bank.entry.enable" if enabled else "bank.entry.disable"
        audit = _maybe_audit(actor, action, f"{bank}/{entry_ref}", None, remote_addr)
        with self.write() as (conn, rev):
            bank_row = require_bank(conn, bank)
            ids = _resolve(conn, bank_row, entry_ref)
            conn.execute(
                update(entries_t)
                .where(entries_t.c.id.in_(ids))
                .values(enabled=enabled, disabled_reason=reason, revision=rev, updated_at=utcnow())
            )
            touch_bank(conn, bank_row.id)
            rows = conn.execute(entry_select().where(entries_t.c.id.in_(ids))).all()
            if audit is not None:
                detail: dict[str, Any] = {"entries": sorted(ids)}
                if not enabled:
                    detail["reason"] = reason
                _append_audit(conn, {**audit, "detail": detail})
        return [to_entry(r) for r in rows]

    def remove_entry(
        self,
        bank: str,
        entry_ref: int | str,
        *,
        actor: str | None = None,
        remote_addr: str | None = None,
    ) -> list[BankEntry]:
        """Delete the entries ``entry_ref`` names; returns what they were. With ``actor``,
        audited (``bank.entry.delete``) in the same transaction."""
        audit = _maybe_audit(actor, "bank.entry.delete", f"{bank}/{entry_ref}", None, remote_addr)
        with self.write() as (conn, rev):
            bank_row = require_bank(conn, bank)
            ids = _resolve(conn, bank_row, entry_ref)
            rows = conn.execute(entry_select().where(entries_t.c.id.in_(ids))).all()
            tombstone(conn, entries_t.c.id.in_(ids), rev)
            conn.execute(delete(entries_t).where(entries_t.c.id.in_(ids)))
            touch_bank(conn, bank_row.id)
            if audit is not None:
                _append_audit(conn, {**audit, "detail": {"entries": sorted(ids)}})
        return [to_entry(r) for r in rows]

    # -- replication ---------------------------------------------------------------------------

    def current_revision(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(state_t.c.revision)).scalar_one())

    def changes_since(self, revision: int) -> tuple[list[EntryChange], int]:
        """Entry changes after ``revision``, oldest first, and the revision to ask from next.

        To build an index: note ``current_revision()``, load ``iter_entries()``, then apply
        ``changes_since(noted)`` (applying a change twice is harmless). Every change numbered up
        to the returned revision has been committed, so none is ever skipped.

        Holds every change in memory at once: a long-running index should page through
        :meth:`changes_page` instead.
        """
        upto = self.current_revision()
        changes: list[EntryChange] = []
        cursor: int | tuple[int, int] | None = revision
        while cursor is not None:
            page, cursor = self.changes_page(cursor, upto=upto)
            changes += page
        return changes, max(upto, revision)

    def changes_page(
        self,
        after: int | tuple[int, int],
        *,
        limit: int = 10_000,
        upto: int | None = None,
    ) -> tuple[list[EntryChange], tuple[int, int] | None]:
        """At most ``limit`` changes strictly after ``after``, oldest first, and the cursor to ask
        from next (None once none are left).

        Changes are ordered by ``(revision, entry id)``: one import batch or bank rename shares a
        revision, so the cursor is that pair, and an int ``after`` means "after every change of
        that revision". ``upto`` caps the revision read: pass ``current_revision()`` noted once
        before the first page, so every page stops at the same committed point (everything at or
        below it is committed, whatever commits meanwhile) and the caller may then record ``upto``
        as applied. Only the columns an index needs are read, so a page's memory is bounded.
        """
        if limit < 1:
            raise InvalidInput(f"limit must be at least 1, got {limit}")
        rev, after_id = (after, None) if isinstance(after, int) else after
        with self.engine.connect() as conn:
            if upto is None:
                upto = int(conn.execute(select(state_t.c.revision)).scalar_one())
            if rev >= upto and (after_id is None or rev > upto):
                return [], None
            entry_rows = keyset_page(
                conn,
                select(
                    *_INDEX_COLUMNS,
                    entries_t.c.revision,
                    entries_t.c.enabled,
                    banks_t.c.enabled,
                ).join(banks_t, banks_t.c.id == entries_t.c.bank_id),
                (entries_t.c.revision, entries_t.c.id),
                (rev, after_id, upto, limit),
            )
            tomb_rows = keyset_page(
                conn,
                select(
                    tomb_t.c.entry_id,
                    tomb_t.c.bank_name,
                    tomb_t.c.signal_type,
                    tomb_t.c.value,
                    tomb_t.c.revision,
                ),
                (tomb_t.c.revision, tomb_t.c.entry_id),
                (rev, after_id, upto, limit),
            )
        types = SIGNAL_TYPES
        changes = []
        for row in entry_rows:
            entry = _to_index_entry(row)
            revision, enabled, bank_enabled = row[len(_INDEX_COLUMNS) :]
            changes.append(
                EntryChange(
                    entry_id=entry.id,
                    bank=entry.bank,
                    signal_type=entry.signal_type,
                    value=entry.value,
                    revision=revision,
                    active=bool(enabled) and bool(bank_enabled),
                    entry=entry,
                )
            )
        changes += [
            EntryChange(
                entry_id=i,
                bank=bank,
                signal_type=types[st],
                value=value,
                revision=r,
                active=False,
                entry=None,
            )
            for i, bank, st, value, r in tomb_rows
        ]
        # Each query returned its own first ``limit``; the merged first ``limit`` is among them.
        # An id is never both live and a tombstone (ids are never reused), so keys are unique.
        changes.sort(key=lambda c: (c.revision, c.entry_id))
        if len(changes) < limit:
            return changes, None
        del changes[limit:]
        return changes, (changes[-1].revision, changes[-1].entry_id)

    # -- API keys ------------------------------------------------------------------------------

    def create_api_key(
        self,
        name: str,
        scopes: str | Iterable[str],
        *,
        expires_at: datetime | None = None,
        actor: str | None = None,
        remote_addr: str | None = None,
        user: str | None = None,
    ) -> tuple[ApiKey, str]:
        """Create a key; returns it and its token, which is never stored and cannot be shown
        again. With ``actor``, a ``key.create`` audit event is written in the same transaction,
        and the actor is kept as the key's ``created_by``.

        ``user`` binds the key to that console user (it acts as them on ``/v1/cases``): the
        user must exist and be enabled now, checked in the same transaction. Callers decide who
        may bind (the user themself in the console, an operator on the host); the store only
        refuses a name ``<user>@<label>`` on a key not bound to that user, so a name never
        claims a user the key does not act as."""
        name = _key_name(name)
        named = key_user(name)
        bound = user.lower() if isinstance(user, str) else None
        if user is not None and not bound:
            raise InvalidInput("user must be a console user's name")
        if named is not None and named != bound:
            raise InvalidInput(
                f"a key named {name!r} must be bound to the console user {named!r}: only "
                f"{named!r} (the console's My API keys page) or an operator on the host "
                f"(`bastion key create {name}`) may create it"
            )
        try:
            scope_set = parse_scopes(scopes)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        now = utcnow()
        if expires_at is not None:
            if not isinstance(expires_at, datetime) or expires_at.tzinfo is None:
                raise InvalidInput("expires_at must be a timezone-aware datetime")
            if expires_at <= now:
                raise InvalidInput(f"expires_at {expires_at.isoformat()} is in the past")
        for _attempt in range(5):
            key_id, secret, salt = new_key_id(), new_secret(), new_salt()
            audit = None
            if actor is not None:
                detail = {
                    "key_id": key_id,
                    "scopes": sorted(scope_set),
                    "expires_at": expires_at.isoformat() if expires_at else None,
                }
                if bound is not None:
                    detail["user"] = bound
                audit = _audit_values(actor, "key.create", name, detail, remote_addr)
            try:
                with self.engine.begin() as conn:
                    if _find_key(conn, name) is not None:
                        raise KeyExists(f"an API key named {name!r} already exists")
                    user_id = _check_key_user(conn, bound) if bound is not None else None
                    conn.execute(
                        insert(keys_t).values(
                            key_id=key_id,
                            name=name,
                            salt=salt,
                            secret_hash=hash_secret(secret, salt),
                            scopes=sorted(scope_set),
                            created_at=now,
                            expires_at=expires_at,
                            user_id=user_id,
                            created_by=actor,
                        )
                    )
                    if audit is not None:
                        _append_audit(conn, audit)
            except IntegrityError:
                with self.engine.connect() as conn:
                    if _find_key(conn, name) is not None:
                        raise KeyExists(f"an API key named {name!r} already exists") from None
                continue  # a key_id collision: draw again
            return self.get_api_key(name), format_token(key_id, secret)
        raise StoreError("could not allocate a unique key id")  # pragma: no cover

    def get_api_key(self, name: str) -> ApiKey:
        with self.engine.connect() as conn:
            row = _find_key(conn, name)
        if row is None:
            raise KeyNotFound(f"no API key named {name!r}")
        return _to_key(row)

    def list_api_keys(self, *, user: str | None = None) -> list[ApiKey]:
        """Every key by name (with ``user``, those bound to that console user), revoked and
        expired ones included; no secret material."""
        stmt = _key_select().order_by(keys_t.c.name)
        if user is not None:
            stmt = stmt.where(UserRow.__table__.c.name == user)
        with self.engine.connect() as conn:
            return [_to_key(r) for r in conn.execute(stmt)]

    def revoke_api_key(
        self, name: str, *, actor: str | None = None, remote_addr: str | None = None
    ) -> ApiKey:
        """Revoke a key for good, keeping its row for the record. Revoking twice keeps the first
        time. With ``actor``, a ``key.revoke`` audit event is written in the same transaction."""
        with self.engine.begin() as conn:
            row = _find_key(conn, name)
            if row is None:
                raise KeyNotFound(f"no API key named {name!r}")
            if row.revoked_at is None:
                conn.execute(
                    update(keys_t).where(keys_t.c.id == row.id).values(revoked_at=utcnow())
                )
            if actor is not None:
                detail = {"key_id": row.key_id, "already_revoked": row.revoked_at is not None}
                _append_audit(
                    conn, _audit_values(actor, "key.revoke", row.name, detail, remote_addr)
                )
        return self.get_api_key(row.name)

    def verify_api_key(self, token: object) -> ApiKey | None:
        """The key a bearer token belongs to, or None if the token is malformed, unknown, wrong,
        revoked or expired. Costs one indexed read; ``last_used_at`` is written at most once a
        minute per key, and that write gives up quickly rather than queue behind a bulk import."""
        parsed = parse_token(token)
        if parsed is None:
            return None
        key_id, secret = parsed
        with self.engine.connect() as conn:
            row = conn.execute(_key_select().where(keys_t.c.key_id == key_id)).first()
        if row is None:
            verify_secret(secret, None, None)
            return None
        if not verify_secret(secret, row.salt, row.secret_hash):
            return None
        key = _to_key(row)
        now = utcnow()
        if not key.is_active(now):
            return None
        if (key.last_used_at is None or now - key.last_used_at >= KEY_TOUCH_INTERVAL) and (
            self._touch_after.get(key.id, now) <= now
        ):
            self._touch_after[key.id] = now + KEY_TOUCH_INTERVAL
            if self._touch_key(key, now):
                key = replace(key, last_used_at=now)
        return key

    def _touch_key(self, key: ApiKey, now: datetime) -> bool:
        """Best effort: a busy database skips the update rather than stalling the request. The
        same transaction records ``key.use`` in the audit log, so key use is audited at the
        granularity of ``KEY_TOUCH_INTERVAL`` without a write per request."""
        pk = key.id
        stmt = (
            update(keys_t)
            .where(
                keys_t.c.id == pk,
                or_(
                    keys_t.c.last_used_at.is_(None),
                    keys_t.c.last_used_at <= now - KEY_TOUCH_INTERVAL,
                ),
            )
            .values(last_used_at=now)
        )
        try:
            with self.engine.connect() as conn:
                sqlite = conn.dialect.name == "sqlite"
                raw = conn.connection.dbapi_connection
                if sqlite and raw is not None:
                    raw.execute(f"PRAGMA busy_timeout={_TOUCH_WAIT_MS}")
                try:
                    with conn.begin():
                        if not sqlite:
                            conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{_TOUCH_WAIT_MS}ms'")
                        if conn.execute(stmt).rowcount == 0:
                            return False
                        _append_audit(
                            conn,
                            _audit_values(f"key:{key.name}", "key.use", key.key_id, None, None),
                        )
                        return True
                finally:
                    if sqlite and raw is not None:
                        raw.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_MS}")
        except SQLAlchemyError:
            return False

    # -- audit log -----------------------------------------------------------------------------

    def use_audit_key_file(self, path: str | Path) -> None:
        """Chain and verify this store's audit log with the keyring at ``path`` (from the
        settings' ``audit_key_file``). Unset, the store finds it as the CLI does: from
        ``Settings.load()`` placed in :attr:`data_dir`."""
        with self._audit_lock:
            self._audit_key_file = Path(path).expanduser()
            self._audit_ring = None

    def use_settings_audit_keys(self, settings: Any) -> None:
        """Take the audit key file from the settings a server starts with when they place it
        (``audit_key_file``, or ``secret_key_file`` or ``key_dir`` it defaults to) and this
        store has not settled on one yet. Otherwise the store finds it from the environment as
        the CLI does, which gives the same default."""
        chosen = getattr(settings, "audit_key_file", None)
        if chosen is None and any(
            getattr(settings, name, None) for name in ("secret_key_file", "key_dir")
        ):
            chosen = settings.in_data_dir(self.data_dir).audit_key_file
        with self._audit_lock:
            if chosen and self._audit_key_file is None:
                self._audit_key_file = Path(str(chosen)).expanduser()

    @property
    def audit_key_file(self) -> Path:
        with self._audit_lock:
            if self._audit_key_file is None:
                from bastion.config import ConfigError, Settings

                try:
                    found = Settings.load().in_data_dir(self.data_dir).audit_key_file
                except ConfigError as exc:
                    raise AuditKeyUnavailable(f"cannot locate the audit key file: {exc}") from None
                self._audit_key_file = Path(str(found)).expanduser()
            return self._audit_key_file

    def read_audit_keyring(self) -> AuditKeyring | None:
        """The audit keyring as now on disk (None: no file, so nothing can be keyed yet)."""
        try:
            ring = AuditKeyring.read(self.audit_key_file)
        except AuditKeyError as exc:
            raise AuditKeyUnavailable(str(exc)) from None
        if ring is not None:
            _remember_audit_keys(ring)
        return ring

    def _keyring_for_append(
        self, head_key: str | None, last_id: int, last_hash: str
    ) -> AuditKeyring:
        """The keyring to chain the next record with, given the head as the appender locked it.

        Created on first use (mode 0600), marking the records already chained without a key as
        legacy. Re-read when the head names a key this process has not seen (rotated by another
        process). Refused when the head names a key the file lacks, or when the log holds
        unkeyed records the file does not accept: those were written or rewritten without the
        key, and chaining after them would vouch for them."""
        path = self.audit_key_file
        with self._audit_lock:
            ring = self._audit_ring
            if ring is None or (head_key is not None and ring.secret(head_key) is None):
                try:
                    ring = AuditKeyring.read(path)
                    if ring is None:
                        if head_key is not None:
                            raise AuditKeyUnavailable(
                                f"the audit log is chained under audit key {head_key}, but the "
                                f"audit key file {str(path)!r} does not exist: restore it (a "
                                "new key cannot continue the chain)"
                            )
                        ring = AuditKeyring.create(path, (last_id, last_hash))
                except AuditKeyError as exc:
                    raise AuditKeyUnavailable(str(exc)) from None
                _remember_audit_keys(ring)
                self._audit_ring = ring
        if head_key is not None:
            if ring.secret(head_key) is None:
                raise AuditKeyUnavailable(
                    f"the audit log is chained under audit key {head_key}, which the audit key "
                    f"file {str(path)!r} does not hold: copy the current keyring here"
                )
        elif last_id > 0 and (
            ring.legacy is None
            or (ring.legacy.last_id, ring.legacy.last_hash) != (last_id, last_hash)
        ):
            raise AuditKeyUnavailable(
                f"the audit log holds {last_id} record(s) chained without a key that the audit "
                f"key file {str(path)!r} does not accept: they were written after the upgrade "
                "without the key, or this key file belongs to another database (run "
                "`bastion audit verify`)"
            )
        return ring

    def record_audit(
        self,
        *,
        actor: str,
        action: str,
        target: str = "",
        detail: dict[str, Any] | None = None,
        remote_addr: str | None = None,
    ) -> int:
        """Append an audit event and return its id.

        Each row stores ``prev_hash`` (the row before's hash), the id of the audit key it is
        chained under, and ``hash = HMAC-SHA256(key, prev_hash + canonical JSON of the row)``
        (:func:`audit_hash`), so editing, inserting or deleting a row breaks the chain
        (:meth:`check_audit_chain`), and nobody without the key, which is kept in a file outside
        the database, can recompute it. A holder of the key could; signed checkpoints of the
        head, kept elsewhere, catch that (``bastion audit checkpoint``). Appends are serialised
        on the ``audit_head`` row; a transaction that also bumps the store revision must bump
        it first.
        """
        values = _audit_values(actor, action, target, detail, remote_addr)
        with self.engine.begin() as conn:
            return _append_audit(conn, values)

    def rotate_audit_key(
        self, *, actor: str, remote_addr: str | None = None
    ) -> tuple[str | None, str]:
        """Start a new audit key epoch: add a fresh key to the keyring (old keys stay, so their
        records still verify) and append an ``audit.rotate-key`` record, the first chained
        under the new key. Returns (old key id or None, new key id)."""
        values = _audit_values(actor, AUDIT_ROTATE_ACTION, "", None, remote_addr)
        with self.engine.begin() as conn:
            event = _append_event(conn, values, rotate=True)
        assert event.key_id is not None
        return event.detail.get("from"), event.key_id

    def audit_head(self) -> tuple[int, str, str | None]:
        """The head as the log says it ends: last record id, its hash and its key id."""
        with self.engine.connect() as conn:
            head = conn.execute(select(audit_head_t).where(audit_head_t.c.id == 1)).one()
        return int(head.last_id), str(head.last_hash), head.key_id

    def audit_record_hash(self, record_id: int) -> str | None:
        """The stored chain hash of record ``record_id`` (None: no such record)."""
        with self.engine.connect() as conn:
            found = conn.execute(select(audit_t.c.hash).where(audit_t.c.id == record_id)).first()
        return None if found is None else str(found[0])

    def iter_audit(self, *, since_id: int = 0, limit: int = 1000) -> list[AuditEvent]:
        """Up to ``limit`` events with ids above ``since_id``, oldest first."""
        since_id, limit = paging(since_id, limit, 10_000)
        stmt = select(audit_t).where(audit_t.c.id > since_id).order_by(audit_t.c.id).limit(limit)
        with self.engine.connect() as conn:
            return [_to_audit(r) for r in conn.execute(stmt)]

    def verify_audit_chain(self) -> int | None:
        """None when the log is intact, else the id of the first row that was changed, inserted
        or removed (for rows cut off the end, the first missing id). :meth:`check_audit_chain`
        says what happened."""
        check = self.check_audit_chain()
        if check.ok:
            return None
        if check.kind == "head":  # the record after the last one is what went missing
            return check.head_id + 1 if check.record_id is None else check.record_id + 1
        return check.record_id if check.record_id is not None else check.checked + 1

    def check_audit_chain(self) -> AuditCheck:
        """Walk the whole log in id order, in one snapshot, and say where and how it breaks.

        Ids come from the head row without gaps, each row's hash covers its own id and fields
        and its ``prev_hash`` names the row before, so: a row whose fields do not hash to its
        hash was edited (or, when they hash right under another id, moved); a gap in the ids is
        deleted rows; a row that hashes right but does not name its predecessor follows a
        replaced or inserted row; a log shorter than the head was cut off at the end; rows
        beyond the head were not appended through the log. A forger who rewrites every later
        row and the head is not caught here: that needs the head hash kept somewhere else.

        Keyed records are checked with their key from the audit key file (a key it lacks is a
        problem); unkeyed records only where the file accepts them, as the legacy records the
        log held when it was upgraded (all of them while there is no file yet). The key may only
        change at an ``audit.rotate-key`` record, to a key newer in the file.
        """
        with self.engine.connect() as conn:
            sqlite = conn.dialect.name == "sqlite"
            if not sqlite:  # one snapshot: rows appended meanwhile are neither judged nor extra
                conn.execution_options(isolation_level="REPEATABLE READ")
            head = conn.execute(select(audit_head_t).where(audit_head_t.c.id == 1)).one()
            head_id, head_hash = int(head.last_id), str(head.last_hash)
            # Read after the snapshot began: a key rotated meanwhile is on disk before its record
            # commits, so every key the snapshot can name is in the file.
            try:
                ring = self.read_audit_keyring()
            except AuditKeyUnavailable as exc:
                return AuditCheck(
                    ok=False,
                    checked=0,
                    head_id=head_id,
                    head_hash=head_hash,
                    problem=f"cannot check the keyed records: {exc}",
                    kind="key",
                )
            # Read the columns SQLite could hold anything in as text, so a mangled row is
            # reported as edited rather than stopping the check with a decoding error.
            at_col = cast(audit_t.c.at, Text).label("at") if sqlite else audit_t.c.at
            stmt = (
                select(*(c for c in audit_t.c if c.name not in ("at", "detail")))
                .add_columns(at_col, cast(audit_t.c.detail, Text).label("detail"))
                .where(audit_t.c.id <= head_id)
                .order_by(audit_t.c.id)
            )
            walk = _ChainWalk(head_id, head_hash, ring, head.key_id, str(self.audit_key_file))
            for row in conn.execution_options(yield_per=5000).execute(stmt):
                found = walk.step(row)
                if found is not None:
                    return found
            found = walk.finish()
            if found is not None:
                return found
            extra = conn.execute(
                select(func.count(), func.min(audit_t.c.id)).where(audit_t.c.id > head_id)
            ).one()
        if extra[0]:
            return walk.fail(
                "extra",
                int(extra[1]),
                f"{extra[0]} record(s) from id {extra[1]} lie beyond the head (record "
                f"{head_id}): they were added to the table, not appended through the log",
            )
        return AuditCheck(
            ok=True,
            checked=walk.checked,
            head_id=head_id,
            head_hash=head_hash,
            legacy=walk.legacy,
            key_id=walk.key,
        )

    def recent_audit(
        self, limit: int = 50, *, action: str | None = None, before_id: int | None = None
    ) -> list[AuditEvent]:
        """Up to ``limit`` events, newest first. ``action`` keeps that action and the ones under
        it (``login`` or ``login.`` keeps ``login.success``, ``login.failure``...); pass the
        last id seen as ``before_id`` to page back."""
        _, limit = paging(0, limit, 10_000)
        stmt = select(audit_t).order_by(audit_t.c.id.desc()).limit(limit)
        if action is not None:
            prefix = short_text("action", action, 64, empty=False).strip().rstrip(".")
            stmt = stmt.where(
                or_(
                    audit_t.c.action == prefix,
                    audit_t.c.action.startswith(prefix + ".", autoescape=True),
                )
            )
        if before_id is not None:
            start, _ = paging(before_id, 1, 1)
            stmt = stmt.where(audit_t.c.id < start)
        with self.engine.connect() as conn:
            return [_to_audit(r) for r in conn.execute(stmt)]

    # -- scans ---------------------------------------------------------------------------------

    def record_scan(
        self,
        *,
        actor: str,
        content_kind: str,
        context: dict[str, Any],
        signals: list[dict[str, Any]],
        matches: list[dict[str, Any]],
        verdict: str,
    ) -> int:
        """Store a scan and return its id. The row is committed when this returns, so a caller
        that answers afterwards never reports a match it has not recorded."""
        values = {
            "at": utcnow(),
            "actor": short_text("actor", actor, 255, empty=False),
            "content_kind": short_text("content_kind", content_kind, 32, empty=False),
            "context": json_doc("context", context, dict, _MAX_SCAN_JSON),
            "signals": json_doc("signals", signals, list, _MAX_SCAN_JSON),
            "matches": json_doc("matches", matches, list, _MAX_SCAN_JSON),
            "verdict": short_text("verdict", verdict, 32, empty=False),
        }
        with self.engine.begin() as conn:
            return int(conn.execute(insert(scans_t).values(**values)).inserted_primary_key[0])

    def get_scan(self, scan_id: int) -> ScanRecord:
        row = None
        if isinstance(scan_id, int) and not isinstance(scan_id, bool) and 0 < scan_id < 2**63:
            with self.engine.connect() as conn:
                row = conn.execute(select(scans_t).where(scans_t.c.id == scan_id)).first()
        if row is None:
            raise ScanNotFound(f"no scan with id {scan_id!r}")
        return _to_scan(row)

    def iter_scans(self, limit: int = 100, *, before_id: int | None = None) -> list[ScanRecord]:
        """Up to ``limit`` scans, newest first; pass the last id seen as ``before_id`` to page."""
        _, limit = paging(0, limit, 10_000)
        stmt = select(scans_t).order_by(scans_t.c.id.desc()).limit(limit)
        if before_id is not None:
            start, _ = paging(before_id, 1, 1)
            stmt = stmt.where(scans_t.c.id < start)
        with self.engine.connect() as conn:
            return [_to_scan(r) for r in conn.execute(stmt)]


# ---------------------------------------------------------------------------------------------
# helpers


def _format(fmt: BankFormat | str) -> BankFormat:
    try:
        return BankFormat(str(fmt).strip().lower())
    except ValueError:
        valid = ", ".join(f.value for f in BankFormat)
        raise InvalidInput(f"unknown bank file format {fmt!r} (expected one of: {valid})") from None


def _bank_name(name: str) -> str:
    try:
        return validate_bank_name(name)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def _resolve(conn: Connection, bank_row: Row[Any], ref: int | str) -> list[int]:
    """Entry ids in the bank named by ``ref``: an id, an external id, or a value."""
    base = select(entries_t.c.id).where(entries_t.c.bank_id == bank_row.id)
    if isinstance(ref, int) and not isinstance(ref, bool):
        ids = _by_id(conn, base, ref)
    elif isinstance(ref, str) and ref.strip():
        ids = []
        if storable(ref):
            ids = list(conn.execute(base.where(entries_t.c.external_id == ref.strip())).scalars())
        if not ids:
            hashes = _value_hashes(ref, list(SignalType))
            if hashes:
                ids = list(conn.execute(base.where(entries_t.c.value_hash.in_(hashes))).scalars())
        if not ids and ref.strip().isdigit():
            ids = _by_id(conn, base, int(ref))
    else:
        raise InvalidInput(f"an entry reference must be an id, external id or value, not {ref!r}")
    if not ids:
        raise EntryNotFound(
            f"bank {bank_row.name!r} has no entry with id, external id or value {ref!r}"
        )
    return ids


def _by_id(conn: Connection, base: Select[Any], entry_id: int) -> list[int]:
    if not 0 < entry_id < 2**63:  # outside BIGINT: cannot be an id, and would be a DB error
        return []
    return list(conn.execute(base.where(entries_t.c.id == entry_id)).scalars())


def _value_hashes(value: str, types: Iterable[SignalType]) -> list[str]:
    """Hashes of every canonical form ``value`` takes among ``types`` (skipping invalid ones)."""
    out: set[str] = set()
    for st in types:
        for url_match in ("url", "prefix", "domain") if st is SignalType.URL else (None,):
            try:
                out.add(value_hash(validate_value(st, value, url_match)))
            except (ValueError, ImportError):
                continue
    return sorted(out)


#: What the in-memory index needs of an entry, in IndexEntry field order. Labels are read as text
#: and parsed only when non-empty: the JSON type's per-row decoding costs more than the rest.
_INDEX_COLUMNS = (
    entries_t.c.id,
    banks_t.c.name,
    entries_t.c.signal_type,
    entries_t.c.value,
    entries_t.c.url_match,
    entries_t.c.external_id,
    cast(entries_t.c.labels, Text),
)


def _to_index_entry(r: Row[Any]) -> IndexEntry:
    i, bank, st, value, um, ext, labels = r[: len(_INDEX_COLUMNS)]
    parsed = json.loads(labels) if labels and labels != "[]" else []
    return IndexEntry(i, bank, SIGNAL_TYPES[st], value, um or None, ext, parsed)


def _to_bank(r: Row[Any], entry_count: int | None = None) -> Bank:
    m = r._mapping
    return Bank(
        id=m[banks_t.c.id],
        name=m[banks_t.c.name],
        description=m[banks_t.c.description],
        labels=list(m[banks_t.c.labels] or []),
        source=m[banks_t.c.source],
        enabled=bool(m[banks_t.c.enabled]),
        is_demo=bool(m[banks_t.c.is_demo]),
        created_at=m[banks_t.c.created_at],
        updated_at=m[banks_t.c.updated_at],
        version=m[banks_t.c.version],
        entry_count=entry_count,
    )


# -- keys, audit and scan helpers --------------------------------------------------------------


def _key_name(name: str) -> str:
    try:
        return validate_key_name(name)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def _check_key_user(conn: Connection, name: str) -> int:
    """The id of the console user a key is bound to, who must exist and be enabled."""
    users_t = UserRow.__table__
    row = conn.execute(
        select(users_t.c.id, users_t.c.disabled).where(users_t.c.name == name)
    ).first()
    if row is None:
        raise InvalidInput(f"no console user named {name!r} to bind the key to")
    if row.disabled:
        raise InvalidInput(f"console user {name!r} is disabled; a key cannot act as them")
    return int(row.id)


def _key_select() -> Any:
    """Keys with the name of the console user each is bound to (``user_name``, or NULL)."""
    users_t = UserRow.__table__
    return select(keys_t, users_t.c.name.label("user_name")).select_from(
        keys_t.outerjoin(users_t, users_t.c.id == keys_t.c.user_id)
    )


def _find_key(conn: Connection, name: str) -> Row[Any] | None:
    if not isinstance(name, str):
        return None
    return conn.execute(_key_select().where(keys_t.c.name == name.lower())).first()


def _to_key(r: Row[Any]) -> ApiKey:
    return ApiKey(
        id=r.id,
        key_id=r.key_id,
        name=r.name,
        scopes=frozenset(r.scopes or ()),
        created_at=r.created_at,
        last_used_at=r.last_used_at,
        revoked_at=r.revoked_at,
        expires_at=r.expires_at,
        user=r.user_name,
        created_by=r.created_by,
    )


def _audit_values(
    actor: object, action: object, target: object, detail: object, remote_addr: object
) -> dict[str, Any]:
    action = short_text("action", action, 64, empty=False)
    if not _ACTION_RE.match(action):
        raise InvalidInput(
            f"invalid audit action {action!r}: use dotted lowercase words like 'bank.create'"
        )
    return {
        "actor": short_text("actor", actor, 255, empty=False),
        "action": action,
        "target": short_text("target", target, 2000),
        "detail": json_doc("detail", {} if detail is None else detail, dict, 65_536),
        "remote_addr": None if remote_addr is None else short_text("remote_addr", remote_addr, 64),
    }


def _maybe_audit(
    actor: str | None,
    action: str,
    target: str,
    detail: dict[str, Any] | None,
    remote_addr: str | None,
) -> dict[str, Any] | None:
    """The audit event a change made by ``actor`` records (None without an actor), validated
    before the change starts so bad input fails it cleanly."""
    if actor is None:
        return None
    return _audit_values(actor, action, target[:2000], detail, remote_addr)


def _append_if(conn: Connection, audit: dict[str, Any] | None) -> None:
    if audit is not None:
        _append_audit(conn, audit)


def append_audit(
    conn: Connection,
    *,
    actor: str,
    action: str,
    target: str = "",
    detail: dict[str, Any] | None = None,
    remote_addr: str | None = None,
) -> int:
    """Append an audit event inside the caller's transaction, so the event and the change it
    records commit or roll back together. A transaction that also bumps the store revision must
    bump it before calling this (lock order: ``store_state``, then ``audit_head``)."""
    return _append_audit(conn, _audit_values(actor, action, target, detail, remote_addr))


def _append_audit(conn: Connection, values: dict[str, Any]) -> int:
    return _append_event(conn, values).id


def _append_event(conn: Connection, values: dict[str, Any], *, rotate: bool = False) -> AuditEvent:
    """Append one event inside ``conn``'s transaction, chained under the key the head names (the
    keyring's newest for the first keyed record). Bumping the head first takes its lock, so the
    id, the previous hash and the key are read and replaced by one appender at a time. With
    ``rotate``, a new key is added to the keyring and the event, chained under it, records the
    change."""
    last_id, prev, head_key = conn.execute(
        update(audit_head_t)
        .where(audit_head_t.c.id == 1)
        .values(last_id=audit_head_t.c.last_id + 1)
        .returning(audit_head_t.c.last_id, audit_head_t.c.last_hash, audit_head_t.c.key_id)
    ).one()
    store = _audit_store(conn)
    ring = store._keyring_for_append(head_key, last_id - 1, prev)
    key_id = head_key or ring.newest.key_id
    if rotate:
        try:
            ring, new = ring.rotate()
        except AuditKeyError as exc:
            raise AuditKeyUnavailable(str(exc)) from None
        _remember_audit_keys(ring)
        with store._audit_lock:
            store._audit_ring = ring
        values = {**values, "target": new.key_id, "detail": {"from": head_key, "to": new.key_id}}
        key_id = new.key_id
    event = AuditEvent(id=last_id, at=utcnow(), prev_hash=prev, hash="", key_id=key_id, **values)
    event = replace(event, hash=audit_hash(event, ring.secret(key_id)))
    conn.execute(
        insert(audit_t).values(
            id=event.id,
            at=event.at,
            prev_hash=prev,
            hash=event.hash,
            key_id=key_id,
            **values,
        )
    )
    conn.execute(
        update(audit_head_t)
        .where(audit_head_t.c.id == 1)
        .values(last_hash=event.hash, key_id=key_id)
    )
    return event


def _audit_store(conn: Connection) -> Store:
    ref = conn.get_execution_options().get(_AUDIT_STORE)
    store = ref() if ref is not None else None
    if store is None:
        raise AuditKeyUnavailable(
            "cannot append to the audit log on a connection not opened through a Store: the "
            "Store holds the audit key"
        )
    return store


def _remember_audit_keys(ring: AuditKeyring) -> None:
    for key in ring.keys:
        _LOADED_AUDIT_KEYS[key.key_id] = key.secret


def _canon_numbers(value: Any) -> Any:
    """Floats, and ints beyond 2**53, as float reprs: PostgreSQL's jsonb may hand ``1e300`` back
    as a 301-digit integer, which is the same number but not the same JSON text."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float) or (isinstance(value, int) and abs(value) > 2**53):
        return {"$float": repr(float(value))}
    if isinstance(value, dict):
        return {k: _canon_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canon_numbers(v) for v in value]
    return value


def audit_hash(event: AuditEvent, key: bytes | None = None) -> str:
    """The chain hash of ``event``, as hex.

    Keyed (``event.key_id`` set): HMAC-SHA256 under that audit key (``key``, else the one this
    process loaded under that id) of a domain tag, ``prev_hash`` and the canonical JSON of the
    event's other fields, the key id included. Legacy (no key id): sha256(prev_hash + canonical
    JSON), as records were chained before the audit key; ``key`` is then ignored."""
    body = {
        "id": event.id,
        "at": event.at.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor": event.actor,
        "action": event.action,
        "target": event.target,
        "detail": _canon_numbers(event.detail),
        "remote_addr": event.remote_addr,
    }
    if event.key_id is None:
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256((event.prev_hash + text).encode("utf-8")).hexdigest()
    if key is None:
        key = _LOADED_AUDIT_KEYS.get(event.key_id)
        if key is None:
            raise AuditKeyUnavailable(f"audit key {event.key_id} is not loaded in this process")
    body["key_id"] = event.key_id
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    message = _AUDIT_HMAC_TAG + (event.prev_hash + text).encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _to_audit(r: Row[Any]) -> AuditEvent:
    return AuditEvent(
        id=r.id,
        at=r.at,
        actor=r.actor,
        action=r.action,
        target=r.target,
        detail=dict(r.detail or {}),
        remote_addr=r.remote_addr,
        prev_hash=r.prev_hash,
        hash=r.hash,
        key_id=r.key_id,
    )


#: How far either side of a row the check looks for the id its contents were written under.
_MOVE_SEARCH = 1000


class _ChainWalk:
    """The state of :meth:`Store.check_audit_chain` as it reads rows in id order."""

    def __init__(
        self,
        head_id: int,
        head_hash: str,
        ring: AuditKeyring | None = None,
        head_key: str | None = None,
        key_file: str = "",
    ) -> None:
        self.head_id, self.head_hash = head_id, head_hash
        self.expected, self.prev, self.checked = 1, AUDIT_GENESIS, 0
        self.ring, self.head_key, self.key_file = ring, head_key, key_file
        #: The key the last verified record is chained under, and how many were unkeyed.
        self.key: str | None = None
        self.legacy = 0

    def fail(
        self, kind: str, record_id: int | None, problem: str, missing: tuple[int, int] | None = None
    ) -> AuditCheck:
        return AuditCheck(
            ok=False,
            checked=self.checked,
            head_id=self.head_id,
            head_hash=self.head_hash,
            problem=problem,
            kind=kind,
            record_id=record_id,
            missing=missing,
            legacy=self.legacy,
            key_id=self.key,
        )

    def _key_for(self, event: AuditEvent) -> tuple[bytes | None, AuditCheck | None]:
        """The secret to check ``event`` with (None for a legacy record), or the problem that
        its key, or its lack of one, is."""
        rid, ring = event.id, self.ring
        if event.key_id is None:
            if self.key is not None:
                return None, self.fail(
                    "unkeyed",
                    rid,
                    f"record {rid} is chained without a key after keyed records: it was "
                    "rewritten by someone without the audit key",
                )
            if ring is not None and (ring.legacy is None or rid > ring.legacy.last_id):
                upto = (
                    f"after record {ring.legacy.last_id}" if ring.legacy is not None else "at all"
                )
                return None, self.fail(
                    "unkeyed",
                    rid,
                    f"record {rid} is chained without a key, but the audit key file accepts no "
                    f"unkeyed records {upto}: the log was rewritten by someone without the "
                    "audit key (or written by a Bastion older than the audit key)",
                )
            return None, None
        if ring is None:
            return None, self.fail(
                "key",
                rid,
                f"record {rid} is chained under audit key {event.key_id}, but there is no "
                f"audit key file at {self.key_file!r} to check it with",
            )
        secret = ring.secret(event.key_id)
        if secret is None:
            return None, self.fail(
                "key",
                rid,
                f"record {rid} is chained under audit key {event.key_id}, which the audit key "
                f"file {self.key_file!r} does not hold",
            )
        if self.key is not None and event.key_id != self.key:
            detail = event.detail
            old, new = ring.position(self.key), ring.position(event.key_id)
            if not (
                event.action == AUDIT_ROTATE_ACTION
                and detail.get("from") == self.key
                and detail.get("to") == event.key_id
                and old is not None
                and new is not None
                and new > old
            ):
                return None, self.fail(
                    "key",
                    rid,
                    f"record {rid} is chained under audit key {event.key_id} but record "
                    f"{rid - 1} under {self.key}, with no rotation to a newer key between "
                    "them: records were forged with an old or foreign key",
                )
        return secret, None

    def step(self, row: Row[Any]) -> AuditCheck | None:
        rid, expected = row.id, self.expected
        if not isinstance(rid, int) or isinstance(rid, bool) or rid < expected:
            # Ids are unique and sorted, so only a non-number or one below 1 can come first.
            return self.fail(
                "inserted",
                rid if isinstance(rid, int) else None,
                f"a record with id {rid!r} was inserted: ids start at 1",
            )
        if rid > expected:
            where = f"jumps from record {expected - 1}" if expected > 1 else "starts"
            span = _span(expected, rid - 1)
            return self.fail(
                "deleted",
                expected,
                f"{span} missing (deleted): the log {where} to record {rid}",
                (expected, rid - 1),
            )
        try:
            event = _raw_audit(row)
        except (ValueError, TypeError) as exc:
            return self.fail("edited", rid, f"record {rid} was edited: {exc}")
        secret, problem = self._key_for(event)
        if problem is not None:
            return problem
        if audit_hash(event, secret) != event.hash:
            moved = _written_as(event, self.head_id, secret)
            if moved is not None:
                return self.fail(
                    "reordered",
                    rid,
                    f"record {rid} holds the event written as record {moved}: records were "
                    "reordered, or inserted or deleted with the ids renumbered",
                )
            return self.fail(
                "edited", rid, f"record {rid} was edited: its contents do not match its hash"
            )
        if event.prev_hash != self.prev:
            if rid == 1:
                problem = (
                    "record 1 does not start the chain: its prev_hash is not the genesis hash, "
                    "so records were inserted or reordered before it"
                )
            else:
                problem = (
                    f"record {rid} does not follow record {rid - 1}: its prev_hash is not "
                    f"record {rid - 1}'s hash, so record {rid - 1} was replaced, or records "
                    f"were inserted or reordered between ids {rid - 1} and {rid}"
                )
            return self.fail("unlinked", rid, problem)
        legacy = self.ring.legacy if self.ring is not None else None
        if legacy is not None and rid == legacy.last_id and event.hash != legacy.last_hash:
            return self.fail(
                "edited",
                rid,
                f"records 1-{rid}, chained without a key before the upgrade, were rewritten: "
                f"record {rid}'s hash is not the one the audit key file recorded",
            )
        self.checked += 1
        self.expected, self.prev = rid + 1, event.hash
        self.key = event.key_id
        self.legacy += event.key_id is None
        return None

    def finish(self) -> AuditCheck | None:
        last = self.expected - 1
        if last < self.head_id:
            missing = (self.expected, self.head_id)
            return self.fail(
                "truncated",
                self.expected,
                f"the log ends at record {last} but the head says it ends at record "
                f"{self.head_id}: {_span(*missing)} missing (deleted from the end)",
                missing,
            )
        if self.prev != self.head_hash:
            return self.fail(
                "head",
                last or None,
                f"the head's hash does not match record {last}'s: record {last} was replaced "
                "(with records after it deleted), or the head row was altered",
            )
        legacy = self.ring.legacy if self.ring is not None else None
        if legacy is not None and last < legacy.last_id:
            missing = (last + 1, legacy.last_id)
            return self.fail(
                "truncated",
                last + 1,
                f"the log ends at record {last} but held {legacy.last_id} records when the "
                f"audit key file was created: {_span(*missing)} missing (deleted from the end)",
                missing,
            )
        if self.head_key != self.key:
            return self.fail(
                "head",
                last or None,
                f"the head names audit key {self.head_key} but record {last} is chained under "
                f"{self.key}: the head row was altered",
            )
        return None


def _span(first: int, last: int) -> str:
    return f"record {first} is" if first == last else f"records {first}-{last} are"


def _raw_audit(r: Row[Any]) -> AuditEvent:
    """An event from a row read with ``at`` (SQLite) and ``detail`` as raw text; ValueError
    saying which field cannot be read."""
    at = r.at
    if isinstance(at, str):
        try:
            at = datetime.fromisoformat(at)
        except ValueError:
            raise ValueError(f"its time {at[:40]!r} is not a timestamp") from None
    if not isinstance(at, datetime):
        raise ValueError("its time is not a timestamp")
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at
    try:
        detail = json.loads(r.detail) if isinstance(r.detail, str) else r.detail
    except ValueError:
        raise ValueError("its detail is not valid JSON") from None
    if not isinstance(detail, dict):
        raise ValueError("its detail is not a JSON object")
    for name in ("actor", "action", "target", "prev_hash", "hash"):
        if not isinstance(getattr(r, name), str):
            raise ValueError(f"its {name} is not text")
    for name in ("remote_addr", "key_id"):
        if getattr(r, name) is not None and not isinstance(getattr(r, name), str):
            raise ValueError(f"its {name} is not text")
    return AuditEvent(
        id=r.id,
        at=at,
        actor=r.actor,
        action=r.action,
        target=r.target,
        detail=detail,
        remote_addr=r.remote_addr,
        prev_hash=r.prev_hash,
        hash=r.hash,
        key_id=r.key_id,
    )


def _written_as(event: AuditEvent, last_id: int, key: bytes | None) -> int | None:
    """The id under which ``event``'s fields hash to its hash, when that is not its own id (a
    row moved to another id), searching nearby ids; None when it was edited instead."""
    low, high = max(1, event.id - _MOVE_SEARCH), min(last_id, event.id + _MOVE_SEARCH)
    for other in sorted(range(low, high + 1), key=lambda i: abs(i - event.id)):
        if other != event.id and audit_hash(replace(event, id=other), key) == event.hash:
            return other
    return None


def _to_scan(r: Row[Any]) -> ScanRecord:
    return ScanRecord(
        id=r.id,
        at=r.at,
        actor=r.actor,
        content_kind=r.content_kind,
        context=dict(r.context or {}),
        signals=list(r.signals or ()),
        matches=list(r.matches or ()),
        verdict=r.verdict,
    )
