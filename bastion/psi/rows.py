"""Private matching's tables: pdata tables and builds, server secrets, vouchers (counts,
groups, shares, queue, opened items) and franking reports (used by :mod:`bastion.psi.store`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
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
