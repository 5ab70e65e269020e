"""The reports tables: a report's state machine, its files and the authorities' sealed logins.

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

from bastion.store.tables import Base, BigId, UTCDateTime


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
