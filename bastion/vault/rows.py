"""The evidence vault's table (used by :mod:`bastion.vault.store`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Index, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from bastion.store.tables import Base, BigId, JsonType, UTCDateTime


class EvidenceRow(Base):
    """One preserved case item: its content sealed under the master key (AAD bound to this row's
    id), SHA-256/MD5 of the plaintext, the case's metadata as canonical JSON text (hashed as
    stored, so an edit shows), retention and legal hold. Purging clears ``sealed`` and sets
    ``purged_at``; the row and its hashes stay. No foreign key to the case: evidence must
    outlive whatever happens to review data."""

    __tablename__ = "evidence"
    __table_args__ = (
        UniqueConstraint("case_id", "item_id", name="uq_evidence_case_item"),
        Index("ix_evidence_retain_until", "retain_until"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(BigInteger)
    item_id: Mapped[int] = mapped_column(BigInteger)
    content_id: Mapped[str | None] = mapped_column(String(512), nullable=True)
    uploader_id: Mapped[str | None] = mapped_column(String(512), nullable=True)
    conversation_id: Mapped[str | None] = mapped_column(String(512), nullable=True)
    media_type: Mapped[str | None] = mapped_column(String(255), nullable=True)
    size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    md5: Mapped[str | None] = mapped_column(String(32), nullable=True)
    has_content: Mapped[bool] = mapped_column(Boolean)
    sealed: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    metadata_json: Mapped[str] = mapped_column(Text)
    metadata_sha256: Mapped[str] = mapped_column(String(64))
    jurisdictions: Mapped[list[str]] = mapped_column(JsonType, default=list)
    preserved_at: Mapped[datetime] = mapped_column(UTCDateTime)
    preserved_by: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(Text, default="")
    retain_until: Mapped[datetime] = mapped_column(UTCDateTime)
    reported_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    reports: Mapped[list[dict[str, Any]]] = mapped_column(JsonType, default=list)
    legal_hold: Mapped[bool] = mapped_column(Boolean, default=False)
    hold_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    held_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    held_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
