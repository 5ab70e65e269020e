"""Revision 0012 on a database with voucher groups in it (SQLite and PostgreSQL): a key kept
before t items were verified is forgotten, parts of items that failed the re-check destroyed,
and opened groups keep what they have."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from bastion.store.engine import MIGRATIONS_DIR
from tests.fixtures.stores import postgres_schema_url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        eng = sa.create_engine(f"sqlite:///{tmp_path / 'm.db'}")
        yield eng
        eng.dispose()
        return
    with postgres_schema_url("t_vmig") as url:
        eng = sa.create_engine(url)
        yield eng
        eng.dispose()


def _upgrade(engine: sa.Engine, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def test_0012_forgets_keys_kept_before_opening_and_destroys_failed_parts(
    engine: sa.Engine,
) -> None:
    _upgrade(engine, "0011")
    meta = sa.MetaData()
    meta.reflect(engine, only=["voucher_groups", "voucher_shares"])
    groups, shares = meta.tables["voucher_groups"], meta.tables["voucher_shares"]
    now = datetime.now(UTC)
    with engine.begin() as conn:
        for gid, account, state in [(1, "alice", "reconstructed"), (2, "bob", "opened")]:
            conn.execute(
                groups.insert().values(
                    id=gid,
                    account=account,
                    epoch=7,
                    grp="5.16",
                    state=state,
                    shares=3,
                    real=2,
                    synthetic=1,
                    verified=1,
                    sealed_key=b"sealed",
                    note="",
                    updated_at=now,
                )
            )
        sid = 0
        for gid in (1, 2):
            for state in ("verified", "unverified", "synthetic", "pending"):
                sid += 1
                conn.execute(
                    shares.insert().values(
                        id=sid,
                        group_id=gid,
                        table_id=1,
                        received_at=now,
                        x=f"{sid:032x}",
                        share=b"s",
                        dhf=b"d",
                        part_a=b"A" * 62,
                        part_b=b"B" * 100,
                        state=state,
                    )
                )
    _upgrade(engine, "0012")
    with engine.connect() as conn:
        g = {r.account: r for r in conn.execute(sa.text("SELECT * FROM voucher_groups"))}
        rows = conn.execute(
            sa.text("SELECT group_id, state, part_a, part_b FROM voucher_shares ORDER BY id")
        ).all()
    assert (g["alice"].state, g["alice"].sealed_key, g["alice"].discarded) == (
        "collecting",
        None,
        0,
    )
    assert (g["bob"].state, bytes(g["bob"].sealed_key)) == ("opened", b"sealed")
    after = [(r.group_id, r.state, bytes(r.part_a), bytes(r.part_b)) for r in rows]
    assert after == [
        # Not opened: classified under a key now forgotten, so candidates again; the item that
        # failed the re-check is discarded, its parts destroyed.
        (1, "pending", b"A" * 62, b"B" * 100),
        (1, "discarded", b"", b""),
        (1, "pending", b"A" * 62, b"B" * 100),
        (1, "pending", b"A" * 62, b"B" * 100),
        # Opened: as it was, except the failed item's parts.
        (2, "verified", b"A" * 62, b"B" * 100),
        (2, "unverified", b"", b""),
        (2, "synthetic", b"A" * 62, b"B" * 100),
        (2, "pending", b"A" * 62, b"B" * 100),
    ]
