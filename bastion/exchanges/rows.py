"""The exchanges' tables: each configured exchange, its sync runs, the records it could not read,
the keys seen by the snapshot in progress, the partners' attestations and the feedback queue.
The schema itself is created by the Alembic revisions in ``bastion/store/migrations``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from bastion.store.tables import Base, BigId, JsonType, UTCDateTime


class ExchangeRow(Base):
    """A configured connection to an outside hash list, feeding the one bank it owns.

    ``checkpoint`` commits in the same transaction as the entries of the page it follows, so a
    crash loses and repeats nothing. ``credentials`` is sealed with ``bastion.crypto``. A worker
    syncing it holds ``lease_holder`` until ``lease_until`` and checks it again in every page's
    transaction; ``poison_attempts`` counts consecutive unreadable pages at ``checkpoint``.
    """

    __tablename__ = "exchanges"
    __table_args__ = (
        UniqueConstraint("name", name="uq_exchanges_name"),
        UniqueConstraint("bank_id", name="uq_exchanges_bank"),
        Index("ix_exchanges_due", "enabled", "next_sync_at"),
        Index("ix_exchanges_vouch_group", "vouch_group"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    bank_id: Mapped[int] = mapped_column(
        ForeignKey("banks.id", ondelete="CASCADE", name="exchanges_bank_id_fkey")
    )
    config: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    credentials: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    interval_seconds: Mapped[float] = mapped_column(Float)
    on_delete: Mapped[str] = mapped_column(String(16))
    vouch_group: Mapped[str | None] = mapped_column(String(64), nullable=True)
    min_vouchers: Mapped[int] = mapped_column(Integer, default=1)
    send_feedback: Mapped[bool] = mapped_column(Boolean, default=True)
    checkpoint: Mapped[dict[str, Any] | None] = mapped_column(JsonType, nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    lease_holder: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    poison_attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_sync_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    next_sync_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    totals: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ExchangeErrorRow(Base):
    """A record or page the exchange could not read (``kind`` poisoned_item / poisoned_page), or
    a failed sync (transient / permanent), with the checkpoint it happened at."""

    __tablename__ = "exchange_errors"
    __table_args__ = (
        Index("ix_exchange_errors_exchange_id", "exchange_id", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    exchange_id: Mapped[int] = mapped_column(
        ForeignKey("exchanges.id", ondelete="CASCADE", name="exchange_errors_exchange_id_fkey")
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(16))
    checkpoint: Mapped[dict[str, Any] | None] = mapped_column(JsonType, nullable=True)
    key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    error: Mapped[str] = mapped_column(Text)
    raw: Mapped[str] = mapped_column(Text, default="")


class ExchangeRunRow(Base):
    """One sync run: counts are updated in each page's transaction, so they are exact even for
    a run that was killed (its state stays ``running`` until a later run marks it
    ``interrupted``)."""

    __tablename__ = "exchange_runs"
    __table_args__ = (
        Index("ix_exchange_runs_exchange_id", "exchange_id", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    exchange_id: Mapped[int] = mapped_column(
        ForeignKey("exchanges.id", ondelete="CASCADE", name="exchange_runs_exchange_id_fkey")
    )
    worker_id: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    pages: Mapped[int] = mapped_column(Integer, default=0)
    added: Mapped[int] = mapped_column(BigInteger, default=0)
    updated: Mapped[int] = mapped_column(BigInteger, default=0)
    removed: Mapped[int] = mapped_column(BigInteger, default=0)
    disabled: Mapped[int] = mapped_column(BigInteger, default=0)
    poisoned: Mapped[int] = mapped_column(BigInteger, default=0)
    skipped_pages: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    checkpoint: Mapped[dict[str, Any] | None] = mapped_column(JsonType, nullable=True)


class ExchangeSeenRow(Base):
    """Keys delivered by the snapshot in progress: the seen set lives here, not in memory, so
    a 10M-entry listing sweeps in bounded memory and survives a crash midway."""

    __tablename__ = "exchange_seen"

    exchange_id: Mapped[int] = mapped_column(
        ForeignKey("exchanges.id", ondelete="CASCADE", name="exchange_seen_exchange_id_fkey"),
        primary_key=True,
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    snapshot: Mapped[str] = mapped_column(String(128))


class ExchangeAttestationRow(Base):
    """What the partner said the whole list is (``root``) and what our copy gave (``computed``)."""

    __tablename__ = "exchange_attestations"
    __table_args__ = (
        Index("ix_exchange_attestations_exchange_id", "exchange_id", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    exchange_id: Mapped[int] = mapped_column(
        ForeignKey(
            "exchanges.id", ondelete="CASCADE", name="exchange_attestations_exchange_id_fkey"
        )
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(BigInteger)
    root: Mapped[str] = mapped_column(String(255))
    computed: Mapped[str | None] = mapped_column(String(255), nullable=True)
    count: Mapped[int] = mapped_column(BigInteger)
    agrees: Mapped[bool] = mapped_column(Boolean)
    detail: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)


class ExchangeFeedbackRow(Base):
    """A reviewer's finding about an exchange's entry, waiting to go upstream.

    Written in the decision's transaction; the unique constraint (``case_id`` 0 when none) keeps
    a retried decision from queueing twice. ``signal_type``/``value``/``metadata`` are copied from
    the entry so feedback still goes out if the entry is removed meanwhile.
    """

    __tablename__ = "exchange_feedback"
    __table_args__ = (
        UniqueConstraint(
            "exchange_id", "key", "verdict", "case_id", name="uq_exchange_feedback_once"
        ),
        Index("ix_exchange_feedback_state_next", "state", "next_attempt_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    exchange_id: Mapped[int] = mapped_column(
        ForeignKey("exchanges.id", ondelete="CASCADE", name="exchange_feedback_exchange_id_fkey")
    )
    entry_id: Mapped[int] = mapped_column(BigInteger)
    key: Mapped[str] = mapped_column(String(255))
    signal_type: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(Text)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JsonType, default=dict)
    verdict: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(64), default="")
    case_id: Mapped[int] = mapped_column(BigInteger, default=0)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


#: The tables as Core ``Table`` objects, for the store's and the engine's statements.
ex_t = ExchangeRow.__table__
err_t = ExchangeErrorRow.__table__
runs_t = ExchangeRunRow.__table__
seen_t = ExchangeSeenRow.__table__
att_t = ExchangeAttestationRow.__table__
fb_t = ExchangeFeedbackRow.__table__
