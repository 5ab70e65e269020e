"""Keyed audit chain: HMAC links under a key kept outside the database, and signed checkpoints.

Each audit record names the audit key its hash is an HMAC under (``key_id``; the key itself
lives in the audit key file, never here). Records written before this revision keep a NULL key
id: they were chained with the unkeyed SHA-256 and verify as legacy records (docs/audit.md). The
head remembers the key the next record is chained under, so every process follows a rotation.

Downgrading drops the key ids: keyed records then no longer verify under the older code.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("audit_log", sa.Column("key_id", sa.String(16), nullable=True))
    op.add_column("audit_head", sa.Column("key_id", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_head") as batch:
        batch.drop_column("key_id")
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("key_id")
