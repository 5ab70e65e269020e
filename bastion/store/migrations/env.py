"""Alembic environment. Store.open passes its own connection in ``config.attributes``; when run
by hand, the URL comes from BASTION_DATABASE_URL or the default SQLite file."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

import bastion.db  # noqa: F401  (every domain's tables, so Base.metadata is complete)
from bastion.store.tables import Base

config = context.config
target_metadata = Base.metadata


def _render_as_batch(dialect_name: str) -> bool:
    # SQLite cannot ALTER most things; batch mode rebuilds tables for it in future revisions.
    return dialect_name == "sqlite"


def run_migrations_offline() -> None:
    from bastion.store.engine import database_url

    url = database_url(None)
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=_render_as_batch(connection.dialect.name),
        )
        with context.begin_transaction():
            context.run_migrations()
        return

    from bastion.store.engine import database_url

    engine = create_engine(database_url(None))
    with engine.connect() as conn:
        context.configure(
            connection=conn,
            target_metadata=target_metadata,
            render_as_batch=_render_as_batch(conn.dialect.name),
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
