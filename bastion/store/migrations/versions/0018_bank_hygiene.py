"""Bank hygiene and identity signals (issue 16): a bank is a block or an allow list, with a
PDQ/vPDQ distance per signal type and an expected match rate per entry and hour; per-entry
match counts by minute and the quarantine of entries that flood past their rate; and the
identity sharing groups, whose HMAC keys are kept sealed under the master key.

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out here, not imported from the models, so this revision stays fixed as models change.
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    # Plain ADD COLUMN (no batch copy): on SQLite a table copy would drop ``banks``, and with
    # foreign keys on that deletes every entry by cascade.
    op.add_column("banks", sa.Column("kind", sa.String(8), nullable=False, server_default="block"))
    op.add_column("banks", sa.Column("thresholds", Json, nullable=False, server_default="{}"))
    op.add_column("banks", sa.Column("expected_rate", sa.Integer(), nullable=True))
    op.create_table(
        "entry_match_counts",
        sa.Column("entry_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("minute", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("n", sa.Integer(), nullable=False),
    )
    op.create_index("ix_entry_match_counts_minute", "entry_match_counts", ["minute"])
    op.create_table(
        "entry_quarantine",
        sa.Column("entry_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("bank_name", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("matches", sa.Integer(), nullable=False),
        sa.Column("expected_rate", sa.Integer(), nullable=False),
        sa.Column("quarantined_at", _ts(), nullable=False),
        sa.Column("resolved_at", _ts(), nullable=True),
        sa.Column("resolved_by", sa.String(255), nullable=True),
    )
    op.create_index("ix_entry_quarantine_state", "entry_quarantine", ["state"])
    op.create_table(
        "identity_groups",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("sealed_key", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("identity_groups")
    op.drop_index("ix_entry_quarantine_state", table_name="entry_quarantine")
    op.drop_table("entry_quarantine")
    op.drop_index("ix_entry_match_counts_minute", table_name="entry_match_counts")
    op.drop_table("entry_match_counts")
    op.drop_column("banks", "expected_rate")
    op.drop_column("banks", "thresholds")
    op.drop_column("banks", "kind")
