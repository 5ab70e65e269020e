"""API keys bound to a console user (the user a key acts as on /v1/cases), and who created each key.

The throttle was keyed by user name, so anyone could lock any user out by failing five times;
it is keyed by the client's address now (``bastion.accounts.throttle_key``). The rows are short
lived counters, so the table is replaced rather than converted: upgrading (or downgrading)
forgets recent failed logins, nothing else.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels = None
depends_on = None

# Spelled out here, not imported from the models, so this revision stays fixed as models change.
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.drop_table("login_throttle")
    op.create_table(
        "login_throttle",
        sa.Column("address", sa.String(64), primary_key=True),
        sa.Column("failures", Json, nullable=False),
        sa.Column("wait_until", _ts(), nullable=True),
        sa.Column("updated_at", _ts(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("login_throttle")
    op.create_table(
        "login_throttle",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("failures", Json, nullable=False),
        sa.Column("locked_until", _ts(), nullable=True),
        sa.Column("updated_at", _ts(), nullable=False),
    )
