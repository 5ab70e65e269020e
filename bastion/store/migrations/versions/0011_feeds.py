"""Bastion-to-Bastion feeds: signing key, published feeds, versions, disputes.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels = None
depends_on = None

# Spelled out here, not imported from the models, so this revision stays fixed as models change.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "feed_signing_keys",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("public_key", sa.String(64), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("sealed_private", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
    )
    op.create_table(
        "feeds",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("organisation", sa.String(255), nullable=False),
        sa.Column("banks", Json, nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.UniqueConstraint("name", name="feeds_name_key"),
    )
    op.create_table(
        "feed_versions",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "feed_id",
            sa.Integer(),
            sa.ForeignKey("feeds.id", ondelete="CASCADE", name="feed_versions_feed_id_fkey"),
            nullable=False,
        ),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("root", sa.String(64), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("statement", sa.Text(), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.Column("key_fingerprint", sa.String(64), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.UniqueConstraint("feed_id", "version", name="uq_feed_versions_version"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "feed_feedback",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "feed_id",
            sa.Integer(),
            sa.ForeignKey("feeds.id", ondelete="CASCADE", name="feed_feedback_feed_id_fkey"),
            nullable=False,
        ),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("subscriber", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.UniqueConstraint("feed_id", "key", "subscriber", "kind", name="uq_feed_feedback_once"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_feed_feedback_feed_id", "feed_feedback", ["feed_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_feed_feedback_feed_id", table_name="feed_feedback")
    op.drop_table("feed_feedback")
    op.drop_table("feed_versions")
    op.drop_table("feeds")
    op.drop_table("feed_signing_keys")
