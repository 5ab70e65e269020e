"""The scans' table."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Index,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from bastion.store.tables import Base, BigId, JsonType, UTCDateTime


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
