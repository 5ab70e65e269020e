"""The banks' tables: banks, their entries, and the tombstones the change feed reports
removals from."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from bastion.store.tables import Base, BigId, JsonType, UTCDateTime


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
    #: ``block`` (a list of what to find) or ``allow`` (known benign items that suppress matches
    #: of other banks).
    kind: Mapped[str] = mapped_column(String(8), default="block", server_default="block")
    #: Signal type -> largest distance that counts as a match in this bank (pdq, vpdq).
    thresholds: Mapped[dict[str, int]] = mapped_column(JsonType, default=dict, server_default="{}")
    #: Matches per entry and hour above which an entry is quarantined (None: no limit).
    expected_rate: Mapped[int | None] = mapped_column(Integer, nullable=True)


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


class MatchCountRow(Base):
    """Matches of one entry in one minute (Unix minute): the flood check sums the last hour."""

    __tablename__ = "entry_match_counts"
    __table_args__ = (Index("ix_entry_match_counts_minute", "minute"),)

    entry_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    minute: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    n: Mapped[int] = mapped_column(Integer)


class QuarantineRow(Base):
    """An entry that matched more than its bank's expected rate: its matches go to review and
    never act on their own until a person releases it (or disputes it, which disables it)."""

    __tablename__ = "entry_quarantine"
    __table_args__ = (Index("ix_entry_quarantine_state", "state"),)

    entry_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    bank_name: Mapped[str] = mapped_column(String(64))
    #: quarantined | released | disputed
    state: Mapped[str] = mapped_column(String(16))
    matches: Mapped[int] = mapped_column(Integer)
    expected_rate: Mapped[int] = mapped_column(Integer)
    quarantined_at: Mapped[datetime] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    resolved_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
