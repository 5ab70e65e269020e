"""Evidence vault: preserved items, retention and legal hold.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out here, not imported from the models, so this revision stays fixed as models change.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "evidence",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("case_id", sa.BigInteger(), nullable=False),
        sa.Column("item_id", sa.BigInteger(), nullable=False),
        sa.Column("content_id", sa.String(512), nullable=True),
        sa.Column("uploader_id", sa.String(512), nullable=True),
        sa.Column("conversation_id", sa.String(512), nullable=True),
        sa.Column("media_type", sa.String(255), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("md5", sa.String(32), nullable=True),
        sa.Column("has_content", sa.Boolean(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=True),
        sa.Column("metadata_json", sa.Text(), nullable=False),
        sa.Column("metadata_sha256", sa.String(64), nullable=False),
        sa.Column("jurisdictions", Json, nullable=False),
        sa.Column("preserved_at", _ts(), nullable=False),
        sa.Column("preserved_by", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("retain_until", _ts(), nullable=False),
        sa.Column("reported_at", _ts(), nullable=True),
        sa.Column("reports", Json, nullable=False),
        sa.Column("legal_hold", sa.Boolean(), nullable=False),
        sa.Column("hold_reason", sa.Text(), nullable=True),
        sa.Column("held_at", _ts(), nullable=True),
        sa.Column("held_by", sa.String(255), nullable=True),
        sa.Column("purged_at", _ts(), nullable=True),
        sa.UniqueConstraint("case_id", "item_id", name="uq_evidence_case_item"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_evidence_retain_until", "evidence", ["retain_until"])


def downgrade() -> None:
    op.drop_index("ix_evidence_retain_until", table_name="evidence")
    op.drop_table("evidence")
