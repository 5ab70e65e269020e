"""API keys bound to a console user (the user a key acts as on /v1/cases), and who created each key.

The binding was read from the key's name (``alice@tooling``), so whoever could name a key could
make it act as any user. It is a column now, ``api_keys.user_id`` (the users table's id; users
are disabled, never deleted), set only by the user themself or an operator on the host; and
``api_keys.created_by`` records the actor who made the key (``user:<name>``, ``cli:<os user>``),
which four-eyes compares against the first reviewer. Keys made before this revision and named
``<user>@<label>`` for a user who exists are bound to that user here, so they keep working;
their creator is taken from the key's ``key.create`` audit record where there is one.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("user_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("created_by", sa.String(255), nullable=True))
        batch.create_foreign_key("api_keys_user_id_fkey", "users", ["user_id"], ["id"])
    conn = op.get_bind()
    keys = sa.table(
        "api_keys",
        sa.column("id", sa.Integer),
        sa.column("name", sa.String),
        sa.column("user_id", sa.Integer),
        sa.column("created_by", sa.String),
    )
    users = sa.table("users", sa.column("id", sa.Integer), sa.column("name", sa.String))
    audit = sa.table(
        "audit_log",
        sa.column("id", sa.BigInteger),
        sa.column("actor", sa.String),
        sa.column("action", sa.String),
        sa.column("target", sa.Text),
    )
    user_ids = dict(conn.execute(sa.select(users.c.name, users.c.id)).all())
    creators = dict(
        conn.execute(
            sa.select(audit.c.target, audit.c.actor)
            .where(audit.c.action == "key.create")
            .order_by(audit.c.id)
        ).all()
    )
    for key_id, name in conn.execute(sa.select(keys.c.id, keys.c.name)).all():
        user, sep, _ = name.partition("@")
        values = {"created_by": creators.get(name)}
        if sep and user in user_ids:
            values["user_id"] = user_ids[user]
        conn.execute(sa.update(keys).where(keys.c.id == key_id).values(**values))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_constraint("api_keys_user_id_fkey", type_="foreignkey")
        batch.drop_column("created_by")
        batch.drop_column("user_id")
