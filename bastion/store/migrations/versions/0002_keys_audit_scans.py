"""API keys, the hash-chained audit log and its head row, and scan records.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out here, not imported from the models, so this revision stays fixed as models change.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
#: The audit chain's genesis: the prev_hash of the first row.
GENESIS = "0" * 64


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("salt", sa.String(64), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("scopes", Json, nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("last_used_at", _ts(), nullable=True),
        sa.Column("revoked_at", _ts(), nullable=True),
        sa.Column("expires_at", _ts(), nullable=True),
        sa.UniqueConstraint("key_id", name="api_keys_key_id_key"),
        sa.UniqueConstraint("name", name="api_keys_name_key"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("at", _ts(), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("detail", Json, nullable=False),
        sa.Column("remote_addr", sa.String(64), nullable=True),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.Column("last_hash", sa.String(64), nullable=False),
    )
    op.bulk_insert(head, [{"id": 1, "last_id": 0, "last_hash": GENESIS}])
    op.create_table(
        "scans",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("at", _ts(), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("content_kind", sa.String(32), nullable=False),
        sa.Column("context", Json, nullable=False),
        sa.Column("signals", Json, nullable=False),
        sa.Column("matches", Json, nullable=False),
        sa.Column("verdict", sa.String(32), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_scans_at", "scans", ["at"])


def downgrade() -> None:
    op.drop_index("ix_scans_at", table_name="scans")
    op.drop_table("scans")
    op.drop_table("audit_head")
    op.drop_index("ix_audit_log_at", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_table("api_keys")
