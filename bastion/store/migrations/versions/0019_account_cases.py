"""Account cases (issue 15): a case has a subject (content or an account); an account has at
most one active account case (``active_account``, unique, beside the content cases'
``active_uploader``); classifications up to 16 characters (grooming, sextortion); and each
final decision on an account case recorded per risk detector (``case_detector_findings``), so
each detector's precision can be measured.

``cases.classification`` is widened on PostgreSQL only: SQLite does not enforce VARCHAR lengths,
and widening it there would mean recreating ``cases``, whose DROP cascades to its items.

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out here, not imported from the models, so this revision stays fixed as models change.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column(
        "cases",
        sa.Column("subject", sa.String(16), nullable=False, server_default="content"),
    )
    op.add_column("cases", sa.Column("active_account", sa.String(512), nullable=True))
    op.create_index("uq_cases_active_account", "cases", ["active_account"], unique=True)
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("cases", "classification", type_=sa.String(16))
    op.create_table(
        "case_detector_findings",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "case_id",
            sa.BigInteger(),
            sa.ForeignKey(
                "cases.id", ondelete="CASCADE", name="case_detector_findings_case_id_fkey"
            ),
            nullable=False,
        ),
        sa.Column("account", sa.String(512), nullable=False),
        sa.Column("detector", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reviewer", sa.String(255), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_case_detector_findings_detector", "case_detector_findings", ["detector", "outcome"]
    )
    op.create_index("ix_case_detector_findings_case", "case_detector_findings", ["case_id"])


def downgrade() -> None:
    op.drop_table("case_detector_findings")
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("cases", "classification", type_=sa.String(8))
    op.drop_index("uq_cases_active_account", table_name="cases")
    # Not a batch (table copy) on SQLite: dropping ``cases`` there would cascade to its items.
    # SQLite 3.35+ drops a column in place.
    for column in ("active_account", "subject"):
        op.execute(f"ALTER TABLE cases DROP COLUMN {column}")
