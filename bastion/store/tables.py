"""The core tables (the store state and the audit log), ``Base`` every domain's rows derive
from, and the column types they share. Each domain's own tables are in its ``rows.py``;
:mod:`bastion.db` imports them all so ``Base.metadata`` is complete. The schema itself is
created by the Alembic revisions in ``migrations/``; a test checks that these tables and the
migrated database agree."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Index,
    Integer,
    String,
    Table,
    Text,
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


class StoreStateRow(Base):
    """One row holding the global change counter.

    Writers bump it first thing in their transaction, which also takes its row lock: writes are
    serialised, so revision order equals commit order and a reader that has seen revision N has
    seen every change numbered below N. (A plain sequence would not promise that.)
    """

    __tablename__ = "store_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    revision: Mapped[int] = mapped_column(BigInteger)


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


state_t = StoreStateRow.__table__
audit_t = AuditRow.__table__
audit_head_t = AuditHeadRow.__table__
