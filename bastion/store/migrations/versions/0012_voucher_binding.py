"""E2EE vouchers bound to the sender's account: discarded-voucher counts and verified openings.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
