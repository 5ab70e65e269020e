"""The audit log: append-only rows, read back in order, hash-chained so edits are detected."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import delete, select, update

from bastion.db import Store
from bastion.store import InvalidInput
from bastion.store.audit_chain import AUDIT_GENESIS, audit_hash
from bastion.store.tables import audit_head_t, audit_t
from tests.fixtures.stores import Database


def _fill(store: Store, n: int) -> list[int]:
    return [
        store.record_audit(
            actor=f"key:k{i % 3}",
            action="bank.entry.disable",
            target=f"bank-{i}",
            detail={"entry": i, "reason": "false positive"},
            remote_addr="203.0.113.7",
        )
        for i in range(n)
    ]


def test_events_read_back_in_order_with_every_field(store: Store) -> None:
    detail = {
        "nested": {"b": [1, 2.5, None, True], "a": "ünïcode ✓"},
        "big": 2**62,
        "huge": 10**30,
        "tiny": 1e-300,
        "large_float": 1e300,
        "whole_float": 3.0,
    }
    first = store.record_audit(
        actor="key:ops", action="bank.create", target="csam-ncmec", detail=detail
    )
    second = store.record_audit(actor="cli:root", action="key.revoke", remote_addr="::1")
    assert (first, second) == (1, 2)
    a, b = store.iter_audit()
    assert (a.id, a.actor, a.action, a.target) == (1, "key:ops", "bank.create", "csam-ncmec")
    # PostgreSQL's jsonb hands 1e300 back as the integer 10**300: the same number, another type.
    # The chain hash is computed over a form where both read alike, so it still verifies.
    got = dict(a.detail)
    assert float(got.pop("large_float")) == 1e300
    assert got == {k: v for k, v in detail.items() if k != "large_float"}
    assert a.remote_addr is None and a.prev_hash == AUDIT_GENESIS
    assert a.at.tzinfo is not None and a.at <= b.at
    assert (b.target, b.detail, b.remote_addr, b.prev_hash) == ("", {}, "::1", a.hash)
    assert audit_hash(a) == a.hash and audit_hash(b) == b.hash
    assert store.verify_audit_chain() is None


def test_paging_by_id(store: Store) -> None:
    ids = _fill(store, 7)
    assert ids == list(range(1, 8))
    assert [e.id for e in store.iter_audit(limit=3)] == [1, 2, 3]
    assert [e.id for e in store.iter_audit(since_id=3, limit=3)] == [4, 5, 6]
    assert [e.id for e in store.iter_audit(since_id=6)] == [7]
    assert store.iter_audit(since_id=7) == []
    with pytest.raises(InvalidInput, match="limit must be"):
        store.iter_audit(limit=0)
    with pytest.raises(InvalidInput, match="id to page from"):
        store.iter_audit(since_id=-1)


def test_empty_log_verifies(store: Store) -> None:
    assert store.iter_audit() == []
    assert store.verify_audit_chain() is None


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("actor", "key:someone-else"),
        ("action", "bank.create"),
        ("target", "another-bank"),
        ("detail", {"entry": 999}),
        ("remote_addr", None),
        ("prev_hash", "f" * 64),
    ],
)
def test_an_edited_row_breaks_the_chain(store: Store, column: str, value: object) -> None:
    _fill(store, 5)
    with store.engine.begin() as conn:
        conn.execute(update(audit_t).where(audit_t.c.id == 3).values({column: value}))
    assert store.verify_audit_chain() == 3


def test_an_edited_time_breaks_the_chain(store: Store) -> None:
    _fill(store, 3)
    with store.engine.begin() as conn:
        at = conn.execute(select(audit_t.c.at).where(audit_t.c.id == 1)).scalar_one()
        conn.execute(update(audit_t).where(audit_t.c.id == 1).values(at=at.replace(microsecond=0)))
    assert store.verify_audit_chain() == 1


def test_a_rehashed_edit_is_caught_at_the_next_row(store: Store) -> None:
    _fill(store, 4)
    (row,) = [e for e in store.iter_audit() if e.id == 2]
    forged = row.__class__(**{**_fields(row), "target": "forged"})
    forged = forged.__class__(**{**_fields(forged), "hash": audit_hash(forged)})
    with store.engine.begin() as conn:
        conn.execute(
            update(audit_t).where(audit_t.c.id == 2).values(target="forged", hash=forged.hash)
        )
    assert store.verify_audit_chain() == 3


def test_removed_rows_break_the_chain(store: Store) -> None:
    _fill(store, 5)
    with store.engine.begin() as conn:
        conn.execute(delete(audit_t).where(audit_t.c.id == 2))
    assert store.verify_audit_chain() == 2
    with store.engine.begin() as conn:
        conn.execute(delete(audit_t).where(audit_t.c.id >= 2))
    # Cut off the end: the head row still remembers id 5.
    assert store.verify_audit_chain() == 2


def test_a_row_appended_behind_the_log_s_back_is_caught(store: Store) -> None:
    _fill(store, 2)
    last = store.iter_audit()[-1]
    with store.engine.begin() as conn:
        conn.execute(
            update(audit_head_t).values(last_hash="e" * 64)  # a head that does not match
        )
    assert store.verify_audit_chain() == last.id + 1


def test_bad_input_is_refused_and_writes_nothing(store: Store) -> None:
    bad: list[tuple[dict[str, object], str]] = [
        ({"action": "Bank Create"}, "invalid audit action"),
        ({"action": ""}, "action must be non-empty"),
        ({"actor": ""}, "actor must be non-empty"),
        ({"actor": "x" * 256}, "actor must be"),
        ({"target": "a\x00b"}, "target must be"),
        ({"target": "\ud800"}, "target is not valid Unicode"),
        ({"detail": ["not", "a", "dict"]}, "detail must be a JSON dict"),
        ({"detail": {"x": float("nan")}}, "detail is not storable as JSON"),
        ({"detail": {"x": object()}}, "detail is not storable as JSON"),
        ({"detail": {"x": "nul\x00"}}, "detail contains a NUL"),
        ({"detail": {"x": "y" * 70_000}}, "the limit is 65536"),
        ({"remote_addr": 12}, "remote_addr must be a string"),
    ]
    for override, message in bad:
        kwargs: dict[str, object] = {"actor": "cli:me", "action": "bank.create", **override}
        with pytest.raises(InvalidInput, match=message):
            store.record_audit(**kwargs)  # type: ignore[arg-type]
    assert store.iter_audit() == []
    assert store.record_audit(actor="cli:me", action="bank.create") == 1


def test_concurrent_writers_keep_one_unbroken_chain(db: Database) -> None:
    stores = [db.open() for _ in range(4)]
    errors: list[BaseException] = []

    def work(s: Store, w: int) -> None:
        try:
            for i in range(15):
                s.record_audit(actor=f"w{w}", action="scan.match", detail={"i": i})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s, w)) for w, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    events = stores[0].iter_audit()
    assert [e.id for e in events] == list(range(1, 61))
    assert sorted((e.actor, e.detail["i"]) for e in events) == sorted(
        (f"w{w}", i) for w in range(4) for i in range(15)
    )
    assert stores[0].verify_audit_chain() is None


def _fields(event: object) -> dict[str, object]:
    return {name: getattr(event, name) for name in event.__slots__}  # type: ignore[attr-defined]
