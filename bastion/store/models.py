"""SQLAlchemy models. The schema itself is created by the Alembic revisions in ``migrations/``;
a test checks that these models and the migrated database agree."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

#: BIGINT on PostgreSQL; plain INTEGER on SQLite, where only that spelling is the rowid alias.
BigId = BigInteger().with_variant(Integer(), "sqlite")
JsonType = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Always hands back aware UTC datetimes; SQLite would otherwise return naive ones."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    #: Every model maps a plain Table (SQLAlchemy types it as any FromClause), so Core
    #: statements such as ``insert(Row.__table__)`` type-check.
    __table__: ClassVar[Table]


class BankRow(Base):
    __tablename__ = "banks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    labels: Mapped[list[str]] = mapped_column(JsonType, default=list)
    source: Mapped[str] = mapped_column(String(255), default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    is_demo: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[int] = mapped_column(BigInteger, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class EntryRow(Base):
    __tablename__ = "bank_entries"
    __table_args__ = (
        # value_hash (SHA-256 of the canonical value) rather than value: vpdq values and long URLs
        # exceed PostgreSQL's B-tree row limit. url_match is '' (not NULL) for non-url entries
        # because NULLs never collide in a unique constraint.
        UniqueConstraint(
            "bank_id", "signal_type", "value_hash", "url_match", name="uq_bank_entries_value"
        ),
        Index("ix_bank_entries_type_enabled", "signal_type", "enabled"),
        Index("ix_bank_entries_revision_id", "revision", "id"),
        Index("ix_bank_entries_bank_external", "bank_id", "external_id"),
        Index("ix_bank_entries_value_hash", "value_hash"),
        # Never reuse an id on SQLite: a replica must not confuse a new entry with a removed one.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    bank_id: Mapped[int] = mapped_column(ForeignKey("banks.id", ondelete="CASCADE"))
    signal_type: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(Text)
    value_hash: Mapped[str] = mapped_column(String(64))
    quality: Mapped[int | None] = mapped_column(Integer, nullable=True)
    url_match: Mapped[str] = mapped_column(String(8), default="")
    source: Mapped[str] = mapped_column(String(255), default="")
    list_name: Mapped[str] = mapped_column(String(255), default="")
    external_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime)
    labels: Mapped[list[str]] = mapped_column(JsonType, default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str] = mapped_column(Text, default="")
    # "metadata" is reserved on declarative classes, hence the attribute name.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JsonType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revision: Mapped[int] = mapped_column(BigInteger)


class TombstoneRow(Base):
    """A removed entry, kept so replicas catching up by revision learn to drop it."""

    __tablename__ = "entry_tombstones"
    __table_args__ = (Index("ix_entry_tombstones_revision_entry", "revision", "entry_id"),)

    entry_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    bank_name: Mapped[str] = mapped_column(String(64))
    signal_type: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(Text)
    revision: Mapped[int] = mapped_column(BigInteger)
    removed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class StoreStateRow(Base):
    """One row holding the global change counter.

    Writers bump it first thing in their transaction, which also takes its row lock: writes are
    serialised, so revision order equals commit order and a reader that has seen revision N has
    seen every change numbered below N. (A plain sequence would not promise that.)
    """

    __tablename__ = "store_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    revision: Mapped[int] = mapped_column(BigInteger)


class ApiKeyRow(Base):
    """An API key. Only a salted hash of the secret is kept (see ``bastion.keys``); ``key_id`` is
    the public part of the token and the lookup key on every request."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(16), unique=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    salt: Mapped[str] = mapped_column(String(64))
    secret_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(JsonType, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: The console user this key acts as (``/v1/cases``), or NULL for a key of the platform;
    #: set only by that user (console "My API keys") or an operator on the host (CLI).
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", name="api_keys_user_id_fkey"), nullable=True
    )
    #: Who made the key (``user:<name>``, ``cli:<os user>``); NULL if unknown (older keys).
    created_by: Mapped[str | None] = mapped_column(String(255), nullable=True)


class AuditRow(Base):
    """One audit event, append-only. ``hash`` chains it to the row before (see
    ``Store.record_audit``); ids come from ``AuditHeadRow`` and have no gaps."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at", "at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    remote_addr: Mapped[str | None] = mapped_column(String(64), nullable=True)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    #: The audit key (kept outside the database) ``hash`` is an HMAC under; NULL for records
    #: chained with the unkeyed SHA-256 before revision 0014.
    key_id: Mapped[str | None] = mapped_column(String(16), nullable=True)


class AuditHeadRow(Base):
    """One row: the last audit id and hash. Appenders update it first, taking its row lock, so
    appends are serialised without holding the bank writers' revision lock; it also lets a check
    notice rows cut off the end of the log."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_id: Mapped[int] = mapped_column(BigInteger)
    last_hash: Mapped[str] = mapped_column(String(64))
    #: The key the next record is chained under (the last record's; NULL before any keyed one).
    key_id: Mapped[str | None] = mapped_column(String(16), nullable=True)


class ScanRow(Base):
    """A scan worth keeping (one that matched), written before the caller gets its answer."""

    __tablename__ = "scans"
    __table_args__ = (Index("ix_scans_at", "at"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(255))
    content_kind: Mapped[str] = mapped_column(String(32))
    context: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    signals: Mapped[list[dict[str, Any]]] = mapped_column(JsonType, default=list)
    matches: Mapped[list[dict[str, Any]]] = mapped_column(JsonType, default=list)
    verdict: Mapped[str] = mapped_column(String(32))


# -- accounts: users, sessions, exposure (bastion.store.accounts) ------------------------------


class UserRow(Base):
    """A console user. ``password_hash`` is an argon2id hash string (see ``bastion.accounts``);
    users are disabled, never deleted, so the audit log's ``user:<name>`` always resolves."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(32))
    queues: Mapped[list[str]] = mapped_column(JsonType, default=list)
    password_hash: Mapped[str] = mapped_column(String(255))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class UserSessionRow(Base):
    """A console login. Only the SHA-256 of the session token is kept. ``idle_until`` is
    ``last_seen_at`` plus the idle limit, stored so expiry is a plain comparison on any
    database."""

    __tablename__ = "user_sessions"
    __table_args__ = (Index("ix_user_sessions_user_id", "user_id"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    idle_seconds: Mapped[int] = mapped_column(Integer)
    idle_until: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    remote_addr: Mapped[str | None] = mapped_column(String(64), nullable=True)


class LoginThrottleRow(Base):
    """Recent failed logins from one client address (``bastion.accounts.throttle_key``: IPv6 by
    its /64), as a JSON list of ISO times, and until when the address must wait. Keyed by
    address, never by name, so no one can lock another user out (migration 0015)."""

    __tablename__ = "login_throttle"

    address: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[list[str]] = mapped_column(JsonType, default=list)
    wait_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ExposureRow(Base):
    """How many items a user revealed on one UTC day (reviewer wellbeing). ``day`` is the ISO
    date text, which sorts and compares the same on every database."""

    __tablename__ = "user_exposure"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)


# -- end accounts --
