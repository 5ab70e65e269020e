"""Private matching for E2EE messaging: pdata, vouchers, account shares.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out here, not imported from the models, so this revision stays fixed as models change.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "psi_tables",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("root", sa.String(64), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("params", Json, nullable=False),
        sa.Column("stats", Json, nullable=False),
        sa.Column("banks", Json, nullable=True),
        sa.Column("blob", sa.LargeBinary(), nullable=False),
        sa.Column("sealed_secret", sa.LargeBinary(), nullable=False),
        sa.UniqueConstraint("root", name="uq_psi_tables_root"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "psi_builds",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("banks", Json, nullable=True),
        sa.Column("params", Json, nullable=False),
        sa.Column("requested_by", sa.String(255), nullable=False),
        sa.Column("requested_at", _ts(), nullable=False),
        sa.Column("remote_addr", sa.String(64), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(255), nullable=True),
        sa.Column("lease_until", _ts(), nullable=True),
        sa.Column("started_at", _ts(), nullable=True),
        sa.Column("finished_at", _ts(), nullable=True),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("table_id", sa.BigInteger(), nullable=True),
        sa.Column("root", sa.String(64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_psi_builds_state", "psi_builds", ["state", "id"])
    op.create_table(
        "psi_secrets",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
    )
    op.create_table(
        "voucher_counts",
        sa.Column("account", sa.String(255), primary_key=True),
        sa.Column("hour", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("accepted", sa.BigInteger(), nullable=False),
        sa.Column("rejected", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "voucher_groups",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("account", sa.String(255), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("grp", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("shares", sa.Integer(), nullable=False),
        sa.Column("real", sa.Integer(), nullable=False),
        sa.Column("synthetic", sa.Integer(), nullable=False),
        sa.Column("verified", sa.Integer(), nullable=False),
        sa.Column("sealed_key", sa.LargeBinary(), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("opened_at", _ts(), nullable=True),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.UniqueConstraint("account", "epoch", "grp", name="uq_voucher_groups_account_epoch"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "voucher_shares",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "group_id",
            sa.BigInteger(),
            sa.ForeignKey(
                "voucher_groups.id", ondelete="CASCADE", name="voucher_shares_group_id_fkey"
            ),
            nullable=False,
        ),
        sa.Column("table_id", sa.BigInteger(), nullable=False),
        sa.Column("received_at", _ts(), nullable=False),
        sa.Column("x", sa.String(32), nullable=False),
        sa.Column("share", sa.LargeBinary(), nullable=False),
        sa.Column("dhf", sa.LargeBinary(), nullable=False),
        sa.Column("part_a", sa.LargeBinary(), nullable=False),
        sa.Column("part_b", sa.LargeBinary(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_voucher_shares_group_x", "voucher_shares", ["group_id", "x"])
    op.create_table(
        "voucher_items",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "share_id",
            sa.BigInteger(),
            sa.ForeignKey(
                "voucher_shares.id", ondelete="CASCADE", name="voucher_items_share_id_fkey"
            ),
            nullable=False,
        ),
        sa.Column("group_id", sa.BigInteger(), nullable=False),
        sa.Column("account", sa.String(255), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("item_id", sa.String(512), nullable=False),
        sa.Column("pdq", sa.String(64), nullable=False),
        sa.Column("quality", sa.Integer(), nullable=False),
        sa.Column("matches", Json, nullable=False),
        sa.Column("media_type", sa.String(64), nullable=False),
        sa.Column("media_size", sa.Integer(), nullable=False),
        sa.Column("media_sha256", sa.String(64), nullable=False),
        sa.Column("sealed_media", sa.LargeBinary(), nullable=False),
        sa.Column("opened_at", _ts(), nullable=False),
        sa.Column("handed_off_at", _ts(), nullable=True),
        sa.UniqueConstraint("share_id", name="uq_voucher_items_share"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_voucher_items_account", "voucher_items", ["account", "epoch"])
    op.create_index("ix_voucher_items_handed_off", "voucher_items", ["handed_off_at"])
    op.create_table(
        "franking_reports",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("at", _ts(), nullable=False),
        sa.Column("reporter", sa.String(255), nullable=False),
        sa.Column("sender", sa.String(255), nullable=False),
        sa.Column("recipient", sa.String(255), nullable=False),
        sa.Column("sent_at", _ts(), nullable=False),
        sa.Column("commitment", sa.String(64), nullable=False),
        sa.Column("message_size", sa.BigInteger(), nullable=False),
        sa.Column("message_sha256", sa.String(64), nullable=False),
        sa.Column("sealed_message", sa.LargeBinary(), nullable=False),
        sa.Column("context", Json, nullable=False),
        sa.Column("handed_off_at", _ts(), nullable=True),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_franking_reports_handed_off", "franking_reports", ["handed_off_at"])


def downgrade() -> None:
    op.drop_index("ix_franking_reports_handed_off", table_name="franking_reports")
    op.drop_table("franking_reports")
    op.drop_index("ix_voucher_items_handed_off", table_name="voucher_items")
    op.drop_index("ix_voucher_items_account", table_name="voucher_items")
    op.drop_table("voucher_items")
    op.drop_index("ix_voucher_shares_group_x", table_name="voucher_shares")
    op.drop_table("voucher_shares")
    op.drop_table("voucher_groups")
    op.drop_table("voucher_counts")
    op.drop_table("psi_secrets")
    op.drop_index("ix_psi_builds_state", table_name="psi_builds")
    op.drop_table("psi_builds")
    op.drop_table("psi_tables")
