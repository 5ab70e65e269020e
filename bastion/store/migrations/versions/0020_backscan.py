"""Back-scans (issue 18): the review backlog of back-scan and re-match findings, and the
datasets whose stored signals re-matching follows.

Revision ID: 0020
Revises: 0019
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out here, not imported from the models, so this revision stays fixed as models change.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "backscan_intake",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("dedupe", sa.String(64), nullable=False, unique=True),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("label", sa.String(1024), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("queue", sa.String(64), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("bank_revision", sa.BigInteger(), nullable=True),
        sa.Column("payload", Json, nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("opened_at", _ts(), nullable=True),
        sa.Column("case_id", sa.BigInteger(), nullable=True),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_backscan_intake_due", "backscan_intake", ["state", "queue", "priority", "id"]
    )
    op.create_index("ix_backscan_intake_opened", "backscan_intake", ["queue", "opened_at"])
    op.create_table(
        "backscan_datasets",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("path", sa.String(1024), nullable=False, unique=True),
        sa.Column("source", sa.String(1024), nullable=False),
        sa.Column("objects", sa.BigInteger(), nullable=False),
        sa.Column("registered_at", _ts(), nullable=False),
        sa.Column("matched_revision", sa.BigInteger(), nullable=False),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("backscan_datasets")
    op.drop_index("ix_backscan_intake_opened", table_name="backscan_intake")
    op.drop_index("ix_backscan_intake_due", table_name="backscan_intake")
    op.drop_table("backscan_intake")
