"""The accounts' tables: API keys, console users, their sessions, login throttling and
exposure counters."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from bastion.store.tables import Base, BigId, JsonType, UTCDateTime


class ApiKeyRow(Base):
    """An API key. Only a salted hash of the secret is kept (see ``bastion.keys``); ``key_id`` is
    the public part of the token and the lookup key on every request."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(16), unique=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    salt: Mapped[str] = mapped_column(String(64))
    secret_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(JsonType, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: The console user this key acts as (``/v1/cases``), or NULL for a key of the platform;
    #: set only by that user (console "My API keys") or an operator on the host (CLI).
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", name="api_keys_user_id_fkey"), nullable=True
    )
    #: Who made the key (``user:<name>``, ``cli:<os user>``); NULL if unknown (older keys).
    created_by: Mapped[str | None] = mapped_column(String(255), nullable=True)


class UserRow(Base):
    """A console user. ``password_hash`` is an argon2id hash string (see ``bastion.accounts``);
    users are disabled, never deleted, so the audit log's ``user:<name>`` always resolves."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(32))
    queues: Mapped[list[str]] = mapped_column(JsonType, default=list)
    password_hash: Mapped[str] = mapped_column(String(255))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class UserSessionRow(Base):
    """A console login. Only the SHA-256 of the session token is kept. ``idle_until`` is
    ``last_seen_at`` plus the idle limit, stored so expiry is a plain comparison on any
    database."""

    __tablename__ = "user_sessions"
    __table_args__ = (Index("ix_user_sessions_user_id", "user_id"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    idle_seconds: Mapped[int] = mapped_column(Integer)
    idle_until: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    remote_addr: Mapped[str | None] = mapped_column(String(64), nullable=True)


class LoginThrottleRow(Base):
    """Recent failed logins from one client address (``bastion.accounts.throttle_key``: IPv6 by
    its /64), as a JSON list of ISO times, and until when the address must wait. Keyed by
    address, never by name, so no one can lock another user out (migration 0015)."""

    __tablename__ = "login_throttle"

    address: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[list[str]] = mapped_column(JsonType, default=list)
    wait_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ExposureRow(Base):
    """How many items a user revealed on one UTC day (reviewer wellbeing). ``day`` is the ISO
    date text, which sorts and compares the same on every database."""

    __tablename__ = "user_exposure"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
