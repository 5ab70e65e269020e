"""Store.check_audit_chain names the record and what was done to it, after real tampering with
the rows through SQL on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path

from sqlalchemy import select, text, update

from bastion.accounts.model import LoginFailed
from bastion.accounts.store import AccountStore
from bastion.db import Store
from bastion.store.audit_chain import AUDIT_GENESIS, audit_hash
from bastion.store.tables import audit_head_t, audit_t
from tests.fixtures.clock import Clock

from .conftest import PASSWORD, START, CountingHasher


def _fill(store: Store, n: int) -> None:
    """Real events: user changes and logins through the account store."""
    accounts = AccountStore(store, hasher=CountingHasher(), now=Clock(START))
    accounts.create_user("boss", "admin", PASSWORD, actor="cli:alice")
    for i in range(n - 1):
        with contextlib.suppress(LoginFailed):
            accounts.authenticate("boss", PASSWORD if i % 2 else "wrong", remote_addr="::1")


def _sql(store: Store, *statements: str) -> None:
    with store.engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))


def test_an_intact_log(store: Store) -> None:
    empty = store.check_audit_chain()
    assert (empty.ok, empty.checked, empty.head_id, empty.head_hash) == (True, 0, 0, AUDIT_GENESIS)
    _fill(store, 6)
    check = store.check_audit_chain()
    last = store.iter_audit()[-1]
    assert (check.ok, check.checked, check.head_id, check.head_hash) == (True, 6, 6, last.hash)
    assert check.problem is None and check.kind is None and check.record_id is None


def test_an_edited_detail(store: Store) -> None:
    _fill(store, 6)
    _sql(store, """UPDATE audit_log SET detail = '{"rehashed": true}' WHERE id = 3""")
    check = store.check_audit_chain()
    assert (check.ok, check.kind, check.record_id, check.checked) == (False, "edited", 3, 2)
    assert check.problem == "record 3 was edited: its contents do not match its hash"
    assert store.verify_audit_chain() == 3


def test_an_edited_actor_or_time(store: Store) -> None:
    _fill(store, 4)
    _sql(store, "UPDATE audit_log SET actor = 'cli:mallory' WHERE id = 1")
    assert (store.check_audit_chain().kind, store.check_audit_chain().record_id) == ("edited", 1)
    _sql(store, "UPDATE audit_log SET actor = 'cli:alice' WHERE id = 1")
    assert store.check_audit_chain().ok
    with store.engine.begin() as conn:
        at = conn.execute(select(audit_t.c.at).where(audit_t.c.id == 4)).scalar_one()
        conn.execute(update(audit_t).where(audit_t.c.id == 4).values(at=at.replace(year=2020)))
    assert (store.check_audit_chain().kind, store.check_audit_chain().record_id) == ("edited", 4)


def test_a_deleted_record(store: Store) -> None:
    _fill(store, 6)
    _sql(store, "DELETE FROM audit_log WHERE id = 4")
    check = store.check_audit_chain()
    assert (check.kind, check.record_id, check.missing, check.checked) == ("deleted", 4, (4, 4), 3)
    assert check.problem == "record 4 is missing (deleted): the log jumps from record 3 to record 5"
    _sql(store, "DELETE FROM audit_log WHERE id IN (1, 2)")
    check = store.check_audit_chain()
    assert (check.kind, check.record_id, check.missing) == ("deleted", 1, (1, 2))
    assert check.problem == "records 1-2 are missing (deleted): the log starts to record 3"


def test_swapped_records(store: Store) -> None:
    _fill(store, 6)
    _sql(
        store,
        "UPDATE audit_log SET id = -1 WHERE id = 3",
        "UPDATE audit_log SET id = 3 WHERE id = 5",
        "UPDATE audit_log SET id = 5 WHERE id = -1",
    )
    check = store.check_audit_chain()
    assert (check.kind, check.record_id, check.checked) == ("reordered", 3, 2)
    assert check.problem.startswith("record 3 holds the event written as record 5: records were")
    assert store.verify_audit_chain() == 3


def test_swapped_contents_keeping_ids(store: Store) -> None:
    _fill(store, 5)
    columns = ["at", "actor", "action", "target", "detail", "remote_addr", "prev_hash", "hash"]
    with store.engine.begin() as conn:
        rows = {
            r.id: r._mapping for r in conn.execute(select(audit_t).where(audit_t.c.id.in_([2, 3])))
        }
        for mine, theirs in ((2, 3), (3, 2)):
            conn.execute(
                update(audit_t)
                .where(audit_t.c.id == mine)
                .values({c: rows[theirs][c] for c in columns})
            )
    check = store.check_audit_chain()
    assert (check.kind, check.record_id) == ("reordered", 2)
    assert "record 2 holds the event written as record 3" in (check.problem or "")


def test_a_replaced_record_is_caught_at_the_next_one(store: Store) -> None:
    """A forger who recomputes the edited row's own hash still breaks the next row's link."""
    _fill(store, 5)
    [row] = [e for e in store.iter_audit() if e.id == 2]
    forged = replace(row, target="someone-else")
    forged = replace(forged, hash=audit_hash(forged))
    with store.engine.begin() as conn:
        conn.execute(
            update(audit_t).where(audit_t.c.id == 2).values(target=forged.target, hash=forged.hash)
        )
    check = store.check_audit_chain()
    assert (check.kind, check.record_id, check.checked) == ("unlinked", 3, 2)
    assert check.problem.startswith("record 3 does not follow record 2: its prev_hash")
    assert "between ids 2 and 3" in check.problem


def test_records_cut_off_the_end(store: Store) -> None:
    _fill(store, 7)
    _sql(store, "DELETE FROM audit_log WHERE id >= 6")
    check = store.check_audit_chain()
    assert (check.kind, check.record_id, check.missing, check.checked) == (
        "truncated",
        6,
        (6, 7),
        5,
    )
    assert check.problem == (
        "the log ends at record 5 but the head says it ends at record 7: "
        "records 6-7 are missing (deleted from the end)"
    )
    assert store.verify_audit_chain() == 6


def test_a_rewritten_head(store: Store) -> None:
    _fill(store, 3)
    _sql(store, "DELETE FROM audit_log WHERE id = 3", "UPDATE audit_head SET last_id = 2")
    check = store.check_audit_chain()
    assert (check.kind, check.record_id) == ("head", 2)
    assert "the head's hash does not match record 2's" in (check.problem or "")
    assert store.verify_audit_chain() == 3


def test_rows_added_behind_the_log_s_back(store: Store) -> None:
    _fill(store, 3)
    with store.engine.begin() as conn:
        last = conn.execute(select(audit_t).where(audit_t.c.id == 3)).one()._mapping
        conn.execute(audit_t.insert().values({**last, "id": 4, "target": "ghost"}))
        conn.execute(audit_t.insert().values({**last, "id": 0, "target": "ghost"}))
    check = store.check_audit_chain()
    assert (check.kind, check.record_id) == ("inserted", 0)
    _sql(store, "DELETE FROM audit_log WHERE id = 0")
    check = store.check_audit_chain()
    assert (check.kind, check.record_id, check.checked) == ("extra", 4, 3)
    assert "1 record(s) from id 4 lie beyond the head (record 3)" in (check.problem or "")
    with store.engine.begin() as conn:
        head = conn.execute(select(audit_head_t)).one()
    assert head.last_id == 3


def test_unreadable_sqlite_rows_are_reported_not_raised(tmp_path: Path) -> None:
    """SQLite keeps whatever text is written into a JSON or time column."""
    with Store.open(f"sqlite:///{tmp_path / 'a.db'}") as store:
        _fill(store, 4)
        _sql(store, "UPDATE audit_log SET detail = '{not json' WHERE id = 2")
        check = store.check_audit_chain()
        assert (check.kind, check.record_id) == ("edited", 2)
        assert check.problem == "record 2 was edited: its detail is not valid JSON"
        _sql(store, """UPDATE audit_log SET detail = '"a string"' WHERE id = 2""")
        assert store.check_audit_chain().problem == (
            "record 2 was edited: its detail is not a JSON object"
        )
        _sql(store, "UPDATE audit_log SET at = 'yesterday' WHERE id = 1")
        check = store.check_audit_chain()
        assert (check.record_id, check.problem) == (
            1,
            "record 1 was edited: its time 'yesterday' is not a timestamp",
        )
