"""Cases, case items, case events, entry disputes, encrypted review media.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out here, not imported from the models, so this revision stays fixed as models change.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "cases",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("queue", sa.String(64), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("opened_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.Column("due_at", _ts(), nullable=False),
        sa.Column("uploader_id", sa.String(512), nullable=True),
        sa.Column("active_uploader", sa.String(512), nullable=True),
        sa.Column("rule", sa.String(255), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("lease_holder", sa.String(255), nullable=True),
        sa.Column("lease_until", _ts(), nullable=True),
        sa.Column("first_reviewer", sa.String(255), nullable=True),
        sa.Column("second_reviewer", sa.String(255), nullable=True),
        sa.Column("classification", sa.String(8), nullable=True),
        sa.Column("labels", Json, nullable=False),
        sa.Column("decided_at", _ts(), nullable=True),
        sa.UniqueConstraint("active_uploader", name="uq_cases_active_uploader"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_cases_queue_order", "cases", ["state", "queue", "priority", "due_at", "id"])
    op.create_index("ix_cases_uploader_state", "cases", ["uploader_id", "state"])

    op.create_table(
        "case_items",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "case_id",
            sa.BigInteger(),
            sa.ForeignKey("cases.id", ondelete="CASCADE", name="case_items_case_id_fkey"),
            nullable=False,
        ),
        sa.Column("added_at", _ts(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("format", sa.String(32), nullable=True),
        sa.Column("content_id", sa.String(512), nullable=True),
        sa.Column("uploader_id", sa.String(512), nullable=True),
        sa.Column("conversation_id", sa.String(512), nullable=True),
        sa.Column("source", sa.String(255), nullable=True),
        sa.Column("age_band", sa.String(16), nullable=True),
        sa.Column("scan_id", sa.BigInteger(), nullable=True),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("rule", sa.String(255), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("queue", sa.String(64), nullable=False),
        sa.Column("actions", Json, nullable=False),
        sa.Column("view_required", sa.Boolean(), nullable=False),
        sa.Column("due_at", _ts(), nullable=False),
        sa.Column("signals", Json, nullable=False),
        sa.Column("matches", Json, nullable=False),
        sa.Column("media_type", sa.String(255), nullable=True),
        sa.Column("filename", sa.String(255), nullable=True),
        sa.Column("media_size", sa.BigInteger(), nullable=True),
        sa.Column("media_note", sa.Text(), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_case_items_case", "case_items", ["case_id"])

    op.create_table(
        "case_media",
        sa.Column(
            "item_id",
            sa.BigInteger(),
            sa.ForeignKey("case_items.id", ondelete="CASCADE", name="case_media_item_id_fkey"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
    )

    op.create_table(
        "case_events",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "case_id",
            sa.BigInteger(),
            sa.ForeignKey("cases.id", ondelete="CASCADE", name="case_events_case_id_fkey"),
            nullable=False,
        ),
        sa.Column("at", _ts(), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("item_id", sa.BigInteger(), nullable=True),
        sa.Column("detail", Json, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_case_events_case", "case_events", ["case_id", "id"])

    op.create_table(
        "entry_disputes",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("entry_id", sa.BigInteger(), nullable=False),
        sa.Column("bank", sa.String(64), nullable=False),
        sa.Column(
            "case_id",
            sa.BigInteger(),
            sa.ForeignKey("cases.id", ondelete="SET NULL", name="entry_disputes_case_id_fkey"),
            nullable=True,
        ),
        sa.Column("reviewer", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("disable", sa.Boolean(), nullable=False),
        sa.Column("at", _ts(), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_entry_disputes_entry", "entry_disputes", ["entry_id"])


def downgrade() -> None:
    op.drop_index("ix_entry_disputes_entry", table_name="entry_disputes")
    op.drop_table("entry_disputes")
    op.drop_index("ix_case_events_case", table_name="case_events")
    op.drop_table("case_events")
    op.drop_table("case_media")
    op.drop_index("ix_case_items_case", table_name="case_items")
    op.drop_table("case_items")
    op.drop_index("ix_cases_uploader_state", table_name="cases")
    op.drop_index("ix_cases_queue_order", table_name="cases")
    op.drop_table("cases")
