"""The feeds tables: the signing key, published feeds, their signed versions, subscriber
feedback and which keys may read which feed.

The schema is created by the Alembic revisions in ``bastion/store/migrations``."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
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


class FeedKeyRow(Base):
    """The instance's Ed25519 feed signing key (one row, id 1): the private half sealed with the
    master key, the public half in the clear to be shared out of band."""

    __tablename__ = "feed_signing_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    public_key: Mapped[str] = mapped_column(String(64))
    fingerprint: Mapped[str] = mapped_column(String(64))
    sealed_private: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class FeedRow(Base):
    """A published feed: which banks it shares, under which organisation name."""

    __tablename__ = "feeds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    organisation: Mapped[str] = mapped_column(String(255))
    banks: Mapped[list[str]] = mapped_column(JsonType, default=list)
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class FeedVersionRow(Base):
    """A signed statement of what a feed held at a store revision (its Merkle root and count).
    ``statement`` is the exact canonical text that ``signature`` covers."""

    __tablename__ = "feed_versions"
    __table_args__ = (
        UniqueConstraint("feed_id", "version", name="uq_feed_versions_version"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    feed_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("feeds.id", ondelete="CASCADE", name="feed_versions_feed_id_fkey")
    )
    version: Mapped[int] = mapped_column(BigInteger)
    revision: Mapped[int] = mapped_column(BigInteger)
    root: Mapped[str] = mapped_column(String(64))
    count: Mapped[int] = mapped_column(BigInteger)
    statement: Mapped[str] = mapped_column(Text)
    signature: Mapped[str] = mapped_column(String(128))
    key_fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class FeedFeedbackRow(Base):
    """A subscriber's finding about one record: ``kind`` dispute (false positive) or confirm.
    One per subscriber (its API key name), record and kind; ids order "changed since"."""

    __tablename__ = "feed_feedback"
    __table_args__ = (
        UniqueConstraint("feed_id", "key", "subscriber", "kind", name="uq_feed_feedback_once"),
        Index("ix_feed_feedback_feed_id", "feed_id", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    feed_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("feeds.id", ondelete="CASCADE", name="feed_feedback_feed_id_fkey")
    )
    key: Mapped[str] = mapped_column(String(255))
    subscriber: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class FeedKeyGrantRow(Base):
    """A ``feed``-scoped API key may read feed ``feed_id`` (and send feedback on it). A key with
    no row here reads no feed; admin keys read every feed. Gone with the key or the feed."""

    __tablename__ = "feed_key_grants"
    __table_args__ = (Index("ix_feed_key_grants_feed_id", "feed_id"),)

    key_id: Mapped[int] = mapped_column(
        Integer,
        ForeignKey("api_keys.id", ondelete="CASCADE", name="feed_key_grants_key_id_fkey"),
        primary_key=True,
    )
    feed_id: Mapped[int] = mapped_column(
        Integer,
        ForeignKey("feeds.id", ondelete="CASCADE", name="feed_key_grants_feed_id_fkey"),
        primary_key=True,
    )
    granted_by: Mapped[str] = mapped_column(String(255))
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime)
