"""Private matching for E2EE messaging: pdata, vouchers, account shares.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
