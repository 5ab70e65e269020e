"""Exchanges: connectors that keep banks in sync with outside hash lists.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels = None
depends_on = None

# Spelled out here, not imported from the models, so this revision stays fixed as models change.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _exchange_fk(table: str) -> sa.Column:
    return sa.Column(
        "exchange_id",
        sa.Integer(),
        sa.ForeignKey("exchanges.id", ondelete="CASCADE", name=f"{table}_exchange_id_fkey"),
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "exchanges",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column(
            "bank_id",
            sa.Integer(),
            sa.ForeignKey("banks.id", ondelete="CASCADE", name="exchanges_bank_id_fkey"),
            nullable=False,
        ),
        sa.Column("config", Json, nullable=False),
        sa.Column("credentials", sa.LargeBinary(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("interval_seconds", sa.Float(), nullable=False),
        sa.Column("on_delete", sa.String(16), nullable=False),
        sa.Column("vouch_group", sa.String(64), nullable=True),
        sa.Column("min_vouchers", sa.Integer(), nullable=False),
        sa.Column("send_feedback", sa.Boolean(), nullable=False),
        sa.Column("checkpoint", Json, nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("lease_holder", sa.String(128), nullable=True),
        sa.Column("lease_until", _ts(), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("poison_attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_sync_at", _ts(), nullable=True),
        sa.Column("last_success_at", _ts(), nullable=True),
        sa.Column("next_sync_at", _ts(), nullable=True),
        sa.Column("totals", Json, nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.UniqueConstraint("name", name="uq_exchanges_name"),
        sa.UniqueConstraint("bank_id", name="uq_exchanges_bank"),
    )
    op.create_index("ix_exchanges_due", "exchanges", ["enabled", "next_sync_at"])
    op.create_index("ix_exchanges_vouch_group", "exchanges", ["vouch_group"])
    op.create_table(
        "exchange_errors",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        _exchange_fk("exchange_errors"),
        sa.Column("at", _ts(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("checkpoint", Json, nullable=True),
        sa.Column("key", sa.String(255), nullable=True),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_exchange_errors_exchange_id", "exchange_errors", ["exchange_id", "id"])
    op.create_table(
        "exchange_runs",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        _exchange_fk("exchange_runs"),
        sa.Column("worker_id", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("started_at", _ts(), nullable=False),
        sa.Column("finished_at", _ts(), nullable=True),
        sa.Column("pages", sa.Integer(), nullable=False),
        sa.Column("added", sa.BigInteger(), nullable=False),
        sa.Column("updated", sa.BigInteger(), nullable=False),
        sa.Column("removed", sa.BigInteger(), nullable=False),
        sa.Column("disabled", sa.BigInteger(), nullable=False),
        sa.Column("poisoned", sa.BigInteger(), nullable=False),
        sa.Column("skipped_pages", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("checkpoint", Json, nullable=True),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_exchange_runs_exchange_id", "exchange_runs", ["exchange_id", "id"])
    op.create_table(
        "exchange_seen",
        sa.Column(
            "exchange_id",
            sa.Integer(),
            sa.ForeignKey(
                "exchanges.id", ondelete="CASCADE", name="exchange_seen_exchange_id_fkey"
            ),
            primary_key=True,
        ),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("snapshot", sa.String(128), nullable=False),
    )
    op.create_table(
        "exchange_attestations",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        _exchange_fk("exchange_attestations"),
        sa.Column("at", _ts(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("root", sa.String(255), nullable=False),
        sa.Column("computed", sa.String(255), nullable=True),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("agrees", sa.Boolean(), nullable=False),
        sa.Column("detail", Json, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_exchange_attestations_exchange_id", "exchange_attestations", ["exchange_id", "id"]
    )
    op.create_table(
        "exchange_feedback",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        _exchange_fk("exchange_feedback"),
        sa.Column("entry_id", sa.BigInteger(), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("signal_type", sa.String(16), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("metadata", Json, nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("case_id", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _ts(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("sent_at", _ts(), nullable=True),
        sa.UniqueConstraint(
            "exchange_id", "key", "verdict", "case_id", name="uq_exchange_feedback_once"
        ),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_exchange_feedback_state_next", "exchange_feedback", ["state", "next_attempt_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_exchange_feedback_state_next", table_name="exchange_feedback")
    op.drop_table("exchange_feedback")
    op.drop_index("ix_exchange_attestations_exchange_id", table_name="exchange_attestations")
    op.drop_table("exchange_attestations")
    op.drop_table("exchange_seen")
    op.drop_index("ix_exchange_runs_exchange_id", table_name="exchange_runs")
    op.drop_table("exchange_runs")
    op.drop_index("ix_exchange_errors_exchange_id", table_name="exchange_errors")
    op.drop_table("exchange_errors")
    op.drop_index("ix_exchanges_vouch_group", table_name="exchanges")
    op.drop_index("ix_exchanges_due", table_name="exchanges")
    op.drop_table("exchanges")
