"""The identity sharing groups' table: each group's HMAC key, sealed under the master key."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from bastion.store.tables import Base, UTCDateTime


class IdentityGroupRow(Base):
    """A sharing group. ``sealed_key`` is the group's HMAC key sealed (AES-256-GCM) under the
    master key; ``key_id`` is a public fingerprint partners compare to know they hold the same
    key."""

    __tablename__ = "identity_groups"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    sealed_key: Mapped[bytes] = mapped_column(LargeBinary)
    key_id: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(255))
