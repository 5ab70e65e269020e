"""The bank store: banks and entries in SQLite (embedded) or PostgreSQL (scaled).

Every write runs in one transaction that first bumps the global change counter (``store_state``),
which both numbers the change and serialises writers (see ``tables.StoreStateRow``).
An in-memory index catches up with the change feed (``bastion.banks.changes``).

:class:`Database` is the core every domain store builds on: open, migrate, close, the write
transactions and the revision counter, and the audit log (:class:`~bastion.store.audit.AuditLog`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

from alembic import command
from alembic.config import Config
from alembic.util.exc import CommandError as AlembicError
from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    event,
    select,
    update,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    NoSuchModuleError,
    SQLAlchemyError,
)
from sqlalchemy.pool import StaticPool

from bastion.store.audit import AuditLog
from bastion.store.errors import (
    InvalidInput,
    StoreUnavailable,
)
from bastion.store.tables import state_t

DEFAULT_URL = "sqlite:///bastion-data/bastion.db"


URL_ENV = "BASTION_DATABASE_URL"


MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


#: Any fixed number: PostgreSQL advisory lock taken while migrating, so replicas starting together
#: do not race to create the same tables.
_MIGRATION_LOCK = 0x42A5_7104


_SCHEMA_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


SQLITE_BUSY_MS = 30_000


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
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A deferred transaction that reads and then writes fails at once with "database is
        # locked" if another connection wrote in between (WAL cannot upgrade a stale snapshot,
        # and busy_timeout does not apply); writers therefore take the lock up front.
        immediate = conn.get_execution_options().get(_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Database(AuditLog):
    """A database connection with Bastion's schema. Thread-safe in the way an SQLAlchemy
    Engine is; open once per process and share. The full store (every domain's methods) is
    :class:`bastion.db.Store`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._init_audit()

    @classmethod
    def open(
        cls,
        url: str | None = None,
        *,
        schema: str | None = None,
        engine_options: dict[str, Any] | None = None,
        migrate: bool = True,
    ) -> Self:
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

    def __enter__(self) -> Self:
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

    def current_revision(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(state_t.c.revision)).scalar_one())
