"""Back-scan tables: the review backlog (``backscan_intake``) and the stored signal sets that
re-matching follows (``backscan_datasets``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from bastion.store.tables import Base, BigId, JsonType, UTCDateTime


class BackscanIntakeRow(Base):
    """A back-scan or re-match finding waiting for review, or already opened as a case.

    ``dedupe`` is the SHA-256 of the content key (content id, else uri) and the matched entry
    ids: a rerun of the same scan, or a re-match of the same revisions, finds its row and opens
    nothing; a later match of the same content with a new entry is new information and is kept.
    ``payload`` holds what the case needs (kind, context, signals, matches and the verdict)."""

    __tablename__ = "backscan_intake"
    __table_args__ = (
        Index("ix_backscan_intake_due", "state", "queue", "priority", "id"),
        Index("ix_backscan_intake_opened", "queue", "opened_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    dedupe: Mapped[str] = mapped_column(String(64), unique=True)
    origin: Mapped[str] = mapped_column(String(16))  # backscan | rematch
    label: Mapped[str] = mapped_column(String(1024))
    state: Mapped[str] = mapped_column(String(16))  # pending | opened
    queue: Mapped[str] = mapped_column(String(64))
    priority: Mapped[int] = mapped_column(Integer)  # PRIORITY_RANK: lower opens first
    bank_revision: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    case_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class BackscanDatasetRow(Base):
    """A completed back-scan dataset whose signals re-matching streams when banks grow, and the
    bank revision all of its rows have been matched up to."""

    __tablename__ = "backscan_datasets"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    path: Mapped[str] = mapped_column(String(1024), unique=True)
    source: Mapped[str] = mapped_column(String(1024))
    objects: Mapped[int] = mapped_column(BigInteger)
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    matched_revision: Mapped[int] = mapped_column(BigInteger)
