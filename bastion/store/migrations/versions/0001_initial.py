"""Banks, bank entries, entry tombstones and the global change counter.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out here, not imported from the models, so this revision stays fixed as models change.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "banks",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("labels", Json, nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("is_demo", sa.Boolean(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.UniqueConstraint("name", name="banks_name_key"),
    )
    op.create_table(
        "bank_entries",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "bank_id",
            sa.Integer(),
            sa.ForeignKey("banks.id", ondelete="CASCADE", name="bank_entries_bank_id_fkey"),
            nullable=False,
        ),
        sa.Column("signal_type", sa.String(16), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("value_hash", sa.String(64), nullable=False),
        sa.Column("quality", sa.Integer(), nullable=True),
        sa.Column("url_match", sa.String(8), nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("list_name", sa.String(255), nullable=False),
        sa.Column("external_id", sa.String(255), nullable=True),
        sa.Column("added_at", _ts(), nullable=False),
        sa.Column("labels", Json, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=False),
        sa.Column("metadata", Json, nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint(
            "bank_id", "signal_type", "value_hash", "url_match", name="uq_bank_entries_value"
        ),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_bank_entries_type_enabled", "bank_entries", ["signal_type", "enabled"])
    op.create_index("ix_bank_entries_revision", "bank_entries", ["revision"])
    op.create_index("ix_bank_entries_bank_external", "bank_entries", ["bank_id", "external_id"])
    op.create_index("ix_bank_entries_value_hash", "bank_entries", ["value_hash"])
    op.create_table(
        "entry_tombstones",
        sa.Column("entry_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("bank_name", sa.String(64), nullable=False),
        sa.Column("signal_type", sa.String(16), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("removed_at", _ts(), nullable=False),
    )
    op.create_index("ix_entry_tombstones_revision", "entry_tombstones", ["revision"])
    state = op.create_table(
        "store_state",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
    )
    op.bulk_insert(state, [{"id": 1, "revision": 0}])


def downgrade() -> None:
    op.drop_table("store_state")
    op.drop_index("ix_entry_tombstones_revision", table_name="entry_tombstones")
    op.drop_table("entry_tombstones")
    op.drop_index("ix_bank_entries_value_hash", table_name="bank_entries")
    op.drop_index("ix_bank_entries_bank_external", table_name="bank_entries")
    op.drop_index("ix_bank_entries_revision", table_name="bank_entries")
    op.drop_index("ix_bank_entries_type_enabled", table_name="bank_entries")
    op.drop_table("bank_entries")
    op.drop_table("banks")
