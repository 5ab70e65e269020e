"""SQLAlchemy models. The schema itself is created by the Alembic revisions in ``migrations/``;
a test checks that these models and the migrated database agree."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

#: BIGINT on PostgreSQL; plain INTEGER on SQLite, where only that spelling is the rowid alias.
BigId = BigInteger().with_variant(Integer(), "sqlite")
JsonType = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Always hands back aware UTC datetimes; SQLite would otherwise return naive ones."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


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


class StoreStateRow(Base):
    """One row holding the global change counter.

    Writers bump it first thing in their transaction, which also takes its row lock: writes are
    serialised, so revision order equals commit order and a reader that has seen revision N has
    seen every change numbered below N. (A plain sequence would not promise that.)
    """

    __tablename__ = "store_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    revision: Mapped[int] = mapped_column(BigInteger)


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


class AuditRow(Base):
    """One audit event, append-only. ``hash`` chains it to the row before (see
    ``Store.record_audit``); ids come from ``AuditHeadRow`` and have no gaps."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at", "at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    remote_addr: Mapped[str | None] = mapped_column(String(64), nullable=True)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    #: The audit key (kept outside the database) ``hash`` is an HMAC under; NULL for records
    #: chained with the unkeyed SHA-256 before revision 0014.
    key_id: Mapped[str | None] = mapped_column(String(16), nullable=True)


class AuditHeadRow(Base):
    """One row: the last audit id and hash. Appenders update it first, taking its row lock, so
    appends are serialised without holding the bank writers' revision lock; it also lets a check
    notice rows cut off the end of the log."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_id: Mapped[int] = mapped_column(BigInteger)
    last_hash: Mapped[str] = mapped_column(String(64))
    #: The key the next record is chained under (the last record's; NULL before any keyed one).
    key_id: Mapped[str | None] = mapped_column(String(16), nullable=True)


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


# -- review: cases, items, events, disputes, media (bastion.store.review) ----------------------


class CaseRow(Base):
    """A unit of human review. ``priority`` is a rank (0 = critical … 3 = low) so queues sort by
    it; ``active_uploader`` is the uploader id while the case is open or awaiting a second review
    and NULL once decided: its unique constraint makes "join the uploader's open case" safe when
    two scans of one uploader arrive at once."""

    __tablename__ = "cases"
    __table_args__ = (
        UniqueConstraint("active_uploader", name="uq_cases_active_uploader"),
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
    classification: Mapped[str | None] = mapped_column(String(8), nullable=True)
    labels: Mapped[list[str]] = mapped_column(JsonType, default=list)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


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


# -- end review --

# -- accounts: users, sessions, exposure (bastion.store.accounts) ------------------------------


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


# -- end accounts --


# -- actions: webhook outbox (bastion.store.outbox) ---------------------------------------------
class OutboxRow(Base):
    """An action to send by webhook, written in the same transaction as the decision behind it.

    ``body`` is the exact JSON sent on every attempt; ``payload`` is its ``data`` part, kept as
    JSON for display. ``idempotency_key`` is unique: enqueueing the same key twice keeps one row.
    A worker holds a ``delivering`` row until ``locked_until``; past that it is due again.
    Target secrets live in the config, never here.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("idempotency_key", name="uq_outbox_idempotency_key"),
        Index("ix_outbox_state_next_attempt", "state", "next_attempt_at"),
        Index("ix_outbox_case_id", "case_id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    action: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    body: Mapped[str] = mapped_column(Text)
    idempotency_key: Mapped[str] = mapped_column(String(200))
    case_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    locked_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    target: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


# -- end actions --

# -- vouchers: private matching for E2EE messaging (bastion.store.vouchers) ---------------------


class PsiTableRow(Base):
    """A published pdata table: the bytes clients download, its root, and the server's secret
    for it, sealed with the master key. The newest row is current; a few older ones still open
    vouchers made against them."""

    __tablename__ = "psi_tables"
    __table_args__ = (
        UniqueConstraint("root", name="uq_psi_tables_root"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    root: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    params: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    stats: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    banks: Mapped[list[str] | None] = mapped_column(JsonType, nullable=True)
    blob: Mapped[bytes] = mapped_column(LargeBinary)
    sealed_secret: Mapped[bytes] = mapped_column(LargeBinary)


class PsiBuildRow(Base):
    """A requested pdata build: ``POST /v1/pdata`` records it (pending), a worker claims it
    under a lease (building), and it ends done (with the table it published) or failed. Builds
    take minutes for large banks, so they never run inside a web request."""

    __tablename__ = "psi_builds"
    __table_args__ = (
        Index("ix_psi_builds_state", "state", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    state: Mapped[str] = mapped_column(String(16))
    banks: Mapped[list[str] | None] = mapped_column(JsonType, nullable=True)
    params: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    requested_by: Mapped[str] = mapped_column(String(255))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    remote_addr: Mapped[str | None] = mapped_column(String(64), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(255), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    table_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    root: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class PsiSecretRow(Base):
    """A named server secret (the franking key), sealed with the master key."""

    __tablename__ = "psi_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class VoucherCountRow(Base):
    """Vouchers per account per hour (unix hour): accepted, and refused by the rate limit."""

    __tablename__ = "voucher_counts"

    account: Mapped[str] = mapped_column(String(255), primary_key=True)
    hour: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    accepted: Mapped[int] = mapped_column(BigInteger, default=0)
    rejected: Mapped[int] = mapped_column(BigInteger, default=0)


class VoucherGroupRow(Base):
    """The matched shares of one account in one epoch (``grp`` names threshold and dhf size).
    ``state``: collecting or opened. ``sealed_key`` is the account key, sealed, kept only once
    the verified items cover t distinct pictures (the account opened). ``discarded``: vouchers
    whose shares decoded but were not kept (they failed the bank re-check: forged in this
    account's name, or false positives); their sealed parts are destroyed."""

    __tablename__ = "voucher_groups"
    __table_args__ = (
        UniqueConstraint("account", "epoch", "grp", name="uq_voucher_groups_account_epoch"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account: Mapped[str] = mapped_column(String(255))
    epoch: Mapped[int] = mapped_column(BigInteger)
    grp: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))
    shares: Mapped[int] = mapped_column(Integer, default=0)
    real: Mapped[int] = mapped_column(Integer, default=0)
    synthetic: Mapped[int] = mapped_column(Integer, default=0)
    verified: Mapped[int] = mapped_column(Integer, default=0)
    discarded: Mapped[int] = mapped_column(Integer, default=0)
    sealed_key: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    note: Mapped[str] = mapped_column(Text, default="")
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class VoucherShareRow(Base):
    """A voucher that matched (really or synthetically): its share, detection row and the two
    parts sealed under the account key. Vouchers that match nothing are never stored.
    ``state``: pending, verified, synthetic, and, with their sealed parts destroyed (emptied),
    unverified (real, but not within the verify distance of a bank entry) or discarded (decoded
    in a group that did not open, and failed the re-check)."""

    __tablename__ = "voucher_shares"
    __table_args__ = (
        Index("ix_voucher_shares_group_x", "group_id", "x"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    group_id: Mapped[int] = mapped_column(
        BigInteger,
        ForeignKey("voucher_groups.id", ondelete="CASCADE", name="voucher_shares_group_id_fkey"),
    )
    table_id: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    x: Mapped[str] = mapped_column(String(32))
    share: Mapped[bytes] = mapped_column(LargeBinary)
    dhf: Mapped[bytes] = mapped_column(LargeBinary)
    part_a: Mapped[bytes] = mapped_column(LargeBinary)
    part_b: Mapped[bytes] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(String(16))


class VoucherQueueRow(Base):
    """A voucher accepted by ``POST /v1/vouchers`` and not yet processed: the worker opens it
    (or not) later, so the platform's answer cannot depend on whether it matched, not even in
    its timing. ``account`` is the sender the platform stated (the voucher's header agrees).
    Deleted once processed; only matched shares are kept."""

    __tablename__ = "voucher_queue"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account: Mapped[str] = mapped_column(String(255))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    blob: Mapped[bytes] = mapped_column(LargeBinary)
    actor: Mapped[str] = mapped_column(String(255))
    remote_addr: Mapped[str | None] = mapped_column(String(64), nullable=True)


class VoucherItemRow(Base):
    """An opened item: what the account's threshold crossing revealed for review. The derivative
    is sealed with the master key; ``handed_off_at`` is set once the ``on_open`` hook (the review
    system) has taken it."""

    __tablename__ = "voucher_items"
    __table_args__ = (
        UniqueConstraint("share_id", name="uq_voucher_items_share"),
        Index("ix_voucher_items_account", "account", "epoch"),
        Index("ix_voucher_items_handed_off", "handed_off_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    share_id: Mapped[int] = mapped_column(
        BigInteger,
        ForeignKey("voucher_shares.id", ondelete="CASCADE", name="voucher_items_share_id_fkey"),
    )
    group_id: Mapped[int] = mapped_column(BigInteger)
    account: Mapped[str] = mapped_column(String(255))
    epoch: Mapped[int] = mapped_column(BigInteger)
    item_id: Mapped[str] = mapped_column(String(512))
    pdq: Mapped[str] = mapped_column(String(64))
    quality: Mapped[int] = mapped_column(Integer)
    matches: Mapped[list[dict[str, Any]]] = mapped_column(JsonType, default=list)
    media_type: Mapped[str] = mapped_column(String(64))
    media_size: Mapped[int] = mapped_column(Integer)
    media_sha256: Mapped[str] = mapped_column(String(64))
    sealed_media: Mapped[bytes] = mapped_column(LargeBinary)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    handed_off_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class FrankingReportRow(Base):
    """A verified user report of an end-to-end encrypted message; the message is sealed."""

    __tablename__ = "franking_reports"
    __table_args__ = (
        Index("ix_franking_reports_handed_off", "handed_off_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    reporter: Mapped[str] = mapped_column(String(255))
    sender: Mapped[str] = mapped_column(String(255))
    recipient: Mapped[str] = mapped_column(String(255))
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime)
    commitment: Mapped[str] = mapped_column(String(64))
    message_size: Mapped[int] = mapped_column(BigInteger)
    message_sha256: Mapped[str] = mapped_column(String(64))
    sealed_message: Mapped[bytes] = mapped_column(LargeBinary)
    context: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    handed_off_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


# -- end vouchers --

# -- vault: preserved evidence (bastion.store.vault) ---------------------------------------------


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


# -- end vault --

# -- reports: NCMEC CyberTipline and UK NCA reports (bastion.store.reports) ----------------------


class ReportRow(Base):
    """A mandatory report of a confirmed case to an authority, as a durable state machine.

    The unique (case_id, authority) constraint is what makes "never a second report for one
    case" hold whoever drafts it. ``report_sealed`` is the report XML sealed with
    ``bastion.crypto`` (it names the reported user). A reporter holds the row while it runs a
    step (``locked_by``/``locked_until``); ``attempts`` counts consecutive failures.
    """

    __tablename__ = "reports"
    __table_args__ = (
        UniqueConstraint("case_id", "authority", name="uq_reports_case_authority"),
        Index("ix_reports_state_next_attempt", "state", "next_attempt_at"),
        Index("ix_reports_authority_deadline", "authority", "deadline_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("cases.id", ondelete="RESTRICT", name="reports_case_id_fkey")
    )
    authority: Mapped[str] = mapped_column(String(16))
    environment: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    incident_type: Mapped[str] = mapped_column(String(100))
    report_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    external_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    locked_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_response_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    retract_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_by: Mapped[str] = mapped_column(String(255))
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    retracted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # UK NCA reports only (authority "nca"): priority P1-P3, when the report is due, and until
    # when the NCA reference (``external_id``, entered from the portal) is kept (+5 years).
    priority: Mapped[str | None] = mapped_column(String(4), nullable=True)
    deadline_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    keep_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ReportFileRow(Base):
    """One file of a report: the case item it comes from, its fileDetails (sealed: names and
    hashes) and NCMEC's file id once uploaded. ``state`` is pending, uploaded or described."""

    __tablename__ = "report_files"
    __table_args__ = (
        UniqueConstraint("report_id", "item_id", name="uq_report_files_item"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    report_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("reports.id", ondelete="CASCADE", name="report_files_report_id_fkey")
    )
    item_id: Mapped[int] = mapped_column(BigInteger)
    position: Mapped[int] = mapped_column(Integer)
    details_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(String(16))
    external_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    uploaded_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    described_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ReportCredentialRow(Base):
    """An authority's endpoint and login set in the console, sealed with ``bastion.crypto``
    (URL, username and password together); environment variables override it."""

    __tablename__ = "report_credentials"

    authority: Mapped[str] = mapped_column(String(16), primary_key=True)
    environment: Mapped[str] = mapped_column(String(16))
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    updated_by: Mapped[str] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


# -- end reports --


# -- feeds: Bastion-to-Bastion publishing (bastion.store.feeds) ---------------------------------


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


# -- end feeds --
