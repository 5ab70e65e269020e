"""Contact safety's tables (used by :mod:`bastion.contact.store`).

``contact_events`` is the record: one row per accepted platform event, its JSON as validated
(metadata and flags only, never message text). The other tables are projections of it, kept in
the same transaction as each batch, so reads are cheap: account facts, connections and each
account's risk (score, band, detectors). They are rebuilt from the events after a purge or an
erasure. ``contact_holds`` lists accounts under legal hold (their events are neither purged nor
erased); ``contact_state`` is one row that serialises ingest and tells processes when the
projections were rebuilt.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from bastion.store.tables import Base, BigId, JsonType, UTCDateTime


class ContactEventRow(Base):
    """One platform event. ``seq`` numbers rows in commit order (ingest is serialised on
    ``contact_state``), ``event_id`` is the platform's own id (unique: a re-sent event is
    recognised), ``digest`` the SHA-256 of its canonical JSON (a re-sent id with other content
    is refused). ``account`` is the event's account or actor, ``target`` its counterpart."""

    __tablename__ = "contact_events"
    __table_args__ = (
        Index("ix_contact_events_account_time", "account", "time"),
        Index("ix_contact_events_target_time", "target", "time"),
        Index("ix_contact_events_time", "time"),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(128), unique=True)
    type: Mapped[str] = mapped_column(String(32))
    account: Mapped[str] = mapped_column(String(128))
    target: Mapped[str | None] = mapped_column(String(128), nullable=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime)
    digest: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ContactAccountRow(Base):
    """An account's current facts, folded from its ``account``, ``profile_change`` and ``ban``
    events (latest time wins)."""

    __tablename__ = "contact_accounts"

    account: Mapped[str] = mapped_column(String(128), primary_key=True)
    age_band: Mapped[str] = mapped_column(String(16))
    age_source: Mapped[str | None] = mapped_column(String(16), nullable=True)
    age_confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    country: Mapped[str | None] = mapped_column(String(2), nullable=True)
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    banned: Mapped[bool] = mapped_column(Boolean)


class ContactConnectionRow(Base):
    """Two accounts currently connected (``a`` < ``b``), since the accepting event's time."""

    __tablename__ = "contact_connections"
    __table_args__ = (Index("ix_contact_connections_b", "b"),)

    a: Mapped[str] = mapped_column(String(128), primary_key=True)
    b: Mapped[str] = mapped_column(String(128), primary_key=True)


class ContactRiskRow(Base):
    """An account's risk as :class:`bastion.contact.risk.RiskState` last computed it."""

    __tablename__ = "contact_risk"
    __table_args__ = (Index("ix_contact_risk_band_score", "band", "score"),)

    account: Mapped[str] = mapped_column(String(128), primary_key=True)
    score: Mapped[int] = mapped_column(Integer)
    band: Mapped[str] = mapped_column(String(16))
    contributions: Mapped[list[dict[str, Any]]] = mapped_column(JsonType)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ContactHoldRow(Base):
    """An account under legal hold: none of the events it is part of are purged or erased."""

    __tablename__ = "contact_holds"

    account: Mapped[str] = mapped_column(String(128), primary_key=True)
    reason: Mapped[str] = mapped_column(Text)
    held_by: Mapped[str] = mapped_column(String(255))
    held_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ContactStateRow(Base):
    """One row (id 1). Ingest locks it first, so batches commit one at a time and ``seq`` order
    is commit order; ``applied_seq`` is the last event the projections include and
    ``generation`` changes whenever they are rebuilt (a purge, an erasure), so another
    process's in-memory risk state knows to reload."""

    __tablename__ = "contact_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    applied_seq: Mapped[int] = mapped_column(BigInteger)
    generation: Mapped[int] = mapped_column(BigInteger)
    #: SHA-256 of the risk settings the stored risk was computed with ('' before the first
    #: batch): a process with other settings rebuilds every projection before it writes.
    settings_digest: Mapped[str] = mapped_column(String(64))
