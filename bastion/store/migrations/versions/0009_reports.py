"""Mandatory reports: NCMEC CyberTipline and UK NCA, durable state.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels = None
depends_on = None

# Spelled out here, not imported from the models, so this revision stays fixed as models change.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "reports",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "case_id",
            sa.BigInteger(),
            sa.ForeignKey("cases.id", ondelete="RESTRICT", name="reports_case_id_fkey"),
            nullable=False,
        ),
        sa.Column("authority", sa.String(16), nullable=False),
        sa.Column("environment", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("incident_type", sa.String(100), nullable=False),
        sa.Column("report_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("external_id", sa.String(64), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _ts(), nullable=False),
        sa.Column("locked_by", sa.String(128), nullable=True),
        sa.Column("locked_until", _ts(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_response_code", sa.Integer(), nullable=True),
        sa.Column("retract_reason", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("confirmed_at", _ts(), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.Column("submitted_at", _ts(), nullable=True),
        sa.Column("finished_at", _ts(), nullable=True),
        sa.Column("retracted_at", _ts(), nullable=True),
        sa.Column("priority", sa.String(4), nullable=True),
        sa.Column("deadline_at", _ts(), nullable=True),
        sa.Column("keep_until", _ts(), nullable=True),
        sa.UniqueConstraint("case_id", "authority", name="uq_reports_case_authority"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_reports_state_next_attempt", "reports", ["state", "next_attempt_at"])
    op.create_index("ix_reports_authority_deadline", "reports", ["authority", "deadline_at"])
    op.create_table(
        "report_files",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "report_id",
            sa.BigInteger(),
            sa.ForeignKey("reports.id", ondelete="CASCADE", name="report_files_report_id_fkey"),
            nullable=False,
        ),
        sa.Column("item_id", sa.BigInteger(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("details_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("external_id", sa.String(128), nullable=True),
        sa.Column("uploaded_at", _ts(), nullable=True),
        sa.Column("described_at", _ts(), nullable=True),
        sa.UniqueConstraint("report_id", "item_id", name="uq_report_files_item"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "report_credentials",
        sa.Column("authority", sa.String(16), primary_key=True),
        sa.Column("environment", sa.String(16), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("updated_by", sa.String(255), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("report_credentials")
    op.drop_table("report_files")
    op.drop_index("ix_reports_authority_deadline", table_name="reports")
    op.drop_index("ix_reports_state_next_attempt", table_name="reports")
    op.drop_table("reports")
