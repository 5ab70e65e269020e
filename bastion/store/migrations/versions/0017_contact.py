"""Contact safety (issue 15): platform events (metadata and flags, never message text), their
projections (account facts, connections, per-account risk), legal holds and the ingest state.

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out here, not imported from the models, so this revision stays fixed as models change.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "contact_events",
        sa.Column("seq", BigId, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(128), nullable=False, unique=True),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("account", sa.String(128), nullable=False),
        sa.Column("target", sa.String(128), nullable=True),
        sa.Column("time", _ts(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("received_at", _ts(), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_contact_events_account_time", "contact_events", ["account", "time"])
    op.create_index("ix_contact_events_target_time", "contact_events", ["target", "time"])
    op.create_index("ix_contact_events_time", "contact_events", ["time"])
    op.create_table(
        "contact_accounts",
        sa.Column("account", sa.String(128), primary_key=True),
        sa.Column("age_band", sa.String(16), nullable=False),
        sa.Column("age_source", sa.String(16), nullable=True),
        sa.Column("age_confidence", sa.Float(), nullable=True),
        sa.Column("country", sa.String(2), nullable=True),
        sa.Column("created_at", _ts(), nullable=True),
        sa.Column("banned", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "contact_connections",
        sa.Column("a", sa.String(128), primary_key=True),
        sa.Column("b", sa.String(128), primary_key=True),
    )
    op.create_index("ix_contact_connections_b", "contact_connections", ["b"])
    op.create_table(
        "contact_risk",
        sa.Column("account", sa.String(128), primary_key=True),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("band", sa.String(16), nullable=False),
        sa.Column("contributions", Json, nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
    )
    op.create_index("ix_contact_risk_band_score", "contact_risk", ["band", "score"])
    op.create_table(
        "contact_holds",
        sa.Column("account", sa.String(128), primary_key=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("held_by", sa.String(255), nullable=False),
        sa.Column("held_at", _ts(), nullable=False),
    )
    state = op.create_table(
        "contact_state",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("applied_seq", sa.BigInteger(), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("settings_digest", sa.String(64), nullable=False),
    )
    op.bulk_insert(state, [{"id": 1, "applied_seq": 0, "generation": 0, "settings_digest": ""}])


def downgrade() -> None:
    op.drop_table("contact_state")
    op.drop_table("contact_holds")
    op.drop_index("ix_contact_risk_band_score", table_name="contact_risk")
    op.drop_table("contact_risk")
    op.drop_index("ix_contact_connections_b", table_name="contact_connections")
    op.drop_table("contact_connections")
    op.drop_table("contact_accounts")
    op.drop_index("ix_contact_events_time", table_name="contact_events")
    op.drop_index("ix_contact_events_target_time", table_name="contact_events")
    op.drop_index("ix_contact_events_account_time", table_name="contact_events")
    op.drop_table("contact_events")
