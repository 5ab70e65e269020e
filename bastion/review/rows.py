"""Review's tables: cases, their items, media, events, entry disputes and account cases'
per-detector findings (used by :mod:`bastion.review.store`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
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


class CaseRow(Base):
    """A unit of human review. ``priority`` is a rank (0 = critical … 3 = low) so queues sort by
    it; ``active_uploader`` is the uploader id while a content case is open or awaiting a second
    review and NULL once decided: its unique constraint makes "join the uploader's open case" safe
    when two scans of one uploader arrive at once. ``active_account`` is the same for an account
    case (``subject`` ``account``), so an account has at most one active account case beside its
    content case."""

    __tablename__ = "cases"
    __table_args__ = (
        UniqueConstraint("active_uploader", name="uq_cases_active_uploader"),
        Index("uq_cases_active_account", "active_account", unique=True),
        Index("ix_cases_queue_order", "state", "queue", "priority", "due_at", "id"),
        Index("ix_cases_uploader_state", "uploader_id", "state"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    state: Mapped[str] = mapped_column(String(16))
    queue: Mapped[str] = mapped_column(String(64))
    priority: Mapped[int] = mapped_column(Integer)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    uploader_id: Mapped[str | None] = mapped_column(String(512), nullable=True)
    active_uploader: Mapped[str | None] = mapped_column(String(512), nullable=True)
    rule: Mapped[str | None] = mapped_column(String(255), nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    lease_holder: Mapped[str | None] = mapped_column(String(255), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    first_reviewer: Mapped[str | None] = mapped_column(String(255), nullable=True)
    second_reviewer: Mapped[str | None] = mapped_column(String(255), nullable=True)
    #: 16 characters (sextortion); SQLite keeps the VARCHAR(8) it was created with (it does not
    #: enforce lengths, and widening it there means recreating the table: migration 0019).
    classification: Mapped[str | None] = mapped_column(
        String(16).with_variant(String(8), "sqlite"), nullable=True
    )
    labels: Mapped[list[str]] = mapped_column(JsonType, default=list)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    subject: Mapped[str] = mapped_column(String(16), default="content", server_default="content")
    active_account: Mapped[str | None] = mapped_column(String(512), nullable=True)


class CaseItemRow(Base):
    """One piece of content in a case, with the verdict that sent it there."""

    __tablename__ = "case_items"
    __table_args__ = (Index("ix_case_items_case", "case_id"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("cases.id", ondelete="CASCADE", name="case_items_case_id_fkey")
    )
    added_at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(32))
    format: Mapped[str | None] = mapped_column(String(32), nullable=True)
    content_id: Mapped[str | None] = mapped_column(String(512), nullable=True)
    uploader_id: Mapped[str | None] = mapped_column(String(512), nullable=True)
    conversation_id: Mapped[str | None] = mapped_column(String(512), nullable=True)
    source: Mapped[str | None] = mapped_column(String(255), nullable=True)
    age_band: Mapped[str | None] = mapped_column(String(16), nullable=True)
    scan_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    verdict: Mapped[str] = mapped_column(String(16))
    rule: Mapped[str | None] = mapped_column(String(255), nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    priority: Mapped[int] = mapped_column(Integer)
    queue: Mapped[str] = mapped_column(String(64))
    actions: Mapped[list[str]] = mapped_column(JsonType, default=list)
    view_required: Mapped[bool] = mapped_column(Boolean, default=True)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    signals: Mapped[list[dict[str, Any]]] = mapped_column(JsonType, default=list)
    matches: Mapped[list[dict[str, Any]]] = mapped_column(JsonType, default=list)
    media_type: Mapped[str | None] = mapped_column(String(255), nullable=True)
    filename: Mapped[str | None] = mapped_column(String(255), nullable=True)
    media_size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    media_note: Mapped[str] = mapped_column(Text, default="")


class CaseMediaRow(Base):
    """An item's media, sealed with ``bastion.crypto`` (never plaintext); a table of its own so
    reading a case never loads the blobs."""

    __tablename__ = "case_media"

    item_id: Mapped[int] = mapped_column(
        BigInteger,
        ForeignKey("case_items.id", ondelete="CASCADE", name="case_media_item_id_fkey"),
        primary_key=True,
        autoincrement=False,
    )
    sealed: Mapped[bytes] = mapped_column(LargeBinary)


class CaseEventRow(Base):
    """A case's history: claims, reveals, views, decisions. ``item_id`` is set for item events
    (a reveal is looked up by it when gating unblurred views)."""

    __tablename__ = "case_events"
    __table_args__ = (
        Index("ix_case_events_case", "case_id", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("cases.id", ondelete="CASCADE", name="case_events_case_id_fkey")
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32))
    item_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)


class EntryDisputeRow(Base):
    """A reviewer found a match to this bank entry not abusive. Kept even if the entry is later
    removed (no foreign key to it): it is feedback for the bank's source."""

    __tablename__ = "entry_disputes"
    __table_args__ = (Index("ix_entry_disputes_entry", "entry_id"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    entry_id: Mapped[int] = mapped_column(BigInteger)
    bank: Mapped[str] = mapped_column(String(64))
    case_id: Mapped[int | None] = mapped_column(
        BigInteger,
        ForeignKey("cases.id", ondelete="SET NULL", name="entry_disputes_case_id_fkey"),
        nullable=True,
    )
    reviewer: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(Text, default="")
    disable: Mapped[bool] = mapped_column(Boolean, default=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class DetectorFindingRow(Base):
    """A final decision on an account case, per risk detector that fired in it: ``confirmed``
    (the detector pointed at an account review confirmed), ``not_abusive`` (the reviewer found
    it wrong) or ``unjudged`` (it fired on an account found not abusive, but the reviewer did not
    name it). A detector's precision is confirmed / (confirmed + not_abusive)."""

    __tablename__ = "case_detector_findings"
    __table_args__ = (
        Index("ix_case_detector_findings_detector", "detector", "outcome"),
        Index("ix_case_detector_findings_case", "case_id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(
        BigInteger,
        ForeignKey("cases.id", ondelete="CASCADE", name="case_detector_findings_case_id_fkey"),
    )
    account: Mapped[str] = mapped_column(String(512))
    detector: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    reviewer: Mapped[str] = mapped_column(String(255))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
