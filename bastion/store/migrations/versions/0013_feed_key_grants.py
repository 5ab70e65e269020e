"""Feed keys tied to feeds: a per-key feed access list.

A ``feed``-scoped API key reads (and disputes on) only the feeds granted to it here; admin keys
read every feed. Keys that had the ``feed`` scope before this revision get no grant, so they
read nothing until an operator grants them their feeds (``bastion feed grant KEY FEED``): the
old behaviour (any feed key reads every feed) was the flaw this closes.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feed_key_grants",
        sa.Column(
            "key_id",
            sa.Integer(),
            sa.ForeignKey("api_keys.id", ondelete="CASCADE", name="feed_key_grants_key_id_fkey"),
            nullable=False,
        ),
        sa.Column(
            "feed_id",
            sa.Integer(),
            sa.ForeignKey("feeds.id", ondelete="CASCADE", name="feed_key_grants_feed_id_fkey"),
            nullable=False,
        ),
        sa.Column("granted_by", sa.String(255), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key_id", "feed_id", name="feed_key_grants_pkey"),
    )
    # Removing a feed cascades to its grants: without this, PostgreSQL scans the table.
    op.create_index("ix_feed_key_grants_feed_id", "feed_key_grants", ["feed_id"])


def downgrade() -> None:
    op.drop_index("ix_feed_key_grants_feed_id", table_name="feed_key_grants")
    op.drop_table("feed_key_grants")
