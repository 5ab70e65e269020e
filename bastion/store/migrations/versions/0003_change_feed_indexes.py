"""Composite (revision, id) indexes for the paged change feed.

Replicas page through changes by the keyset (revision, id). With an index on revision alone,
PostgreSQL without fresh statistics (right after a big import) scans a whole revision for every
page; ordering by id inside the index makes each page an index range scan.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_bank_entries_revision_id", "bank_entries", ["revision", "id"])
    op.drop_index("ix_bank_entries_revision", table_name="bank_entries")
    op.create_index(
        "ix_entry_tombstones_revision_entry", "entry_tombstones", ["revision", "entry_id"]
    )
    op.drop_index("ix_entry_tombstones_revision", table_name="entry_tombstones")


def downgrade() -> None:
    op.create_index("ix_entry_tombstones_revision", "entry_tombstones", ["revision"])
    op.drop_index("ix_entry_tombstones_revision_entry", table_name="entry_tombstones")
    op.create_index("ix_bank_entries_revision", "bank_entries", ["revision"])
    op.drop_index("ix_bank_entries_revision_id", table_name="bank_entries")
