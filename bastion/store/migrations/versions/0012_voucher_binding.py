"""E2EE vouchers bound to the sender's account: discarded-voucher counts and verified openings.

Vouchers are accepted into a queue (``voucher_queue``) and opened by the worker, so the answer to
the platform cannot depend on whether one matched; a group counts the vouchers it discarded
(decoded, but not kept: they failed the bank re-check).

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels = None
depends_on = None

# Spelled out here, not imported from the models, so this revision stays fixed as models change.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "voucher_queue",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("account", sa.String(255), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("blob", sa.LargeBinary(), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("remote_addr", sa.String(64), nullable=True),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("voucher_groups") as batch:
        batch.add_column(sa.Column("discarded", sa.Integer(), nullable=False, server_default="0"))
    # Keys kept before t items were verified are forgotten, and the sealed parts of items that
    # failed the re-check destroyed: only opened groups keep a key.
    groups = sa.table(
        "voucher_groups",
        sa.column("id", sa.BigInteger()),
        sa.column("state", sa.String()),
        sa.column("sealed_key", sa.LargeBinary()),
    )
    shares = sa.table(
        "voucher_shares",
        sa.column("group_id", sa.BigInteger()),
        sa.column("state", sa.String()),
        sa.column("part_a", sa.LargeBinary()),
        sa.column("part_b", sa.LargeBinary()),
    )
    not_opened = shares.c.group_id.in_(sa.select(groups.c.id).where(groups.c.state != "opened"))
    # Classified under a key that is now forgotten: candidates again (a "synthetic" one may be
    # a genuine item classified under a key forged in the account's name).
    op.execute(
        shares.update()
        .where(not_opened, shares.c.state.in_(["verified", "synthetic"]))
        .values(state="pending")
    )
    op.execute(
        shares.update().where(not_opened, shares.c.state == "unverified").values(state="discarded")
    )
    op.execute(
        shares.update()
        .where(shares.c.state.in_(["unverified", "discarded"]))
        .values(part_a=b"", part_b=b"")
    )
    op.execute(
        groups.update()
        .where(groups.c.state != "opened")
        .values(state="collecting", sealed_key=None)
    )


def downgrade() -> None:
    with op.batch_alter_table("voucher_groups") as batch:
        batch.drop_column("discarded")
    op.drop_table("voucher_queue")
