"""Flood protection's store (issue 16), on SQLite and PostgreSQL: counts over a sliding hour,
quarantine exactly past the rate even with concurrent scans, release and purge."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from bastion.banks import NewEntry
from bastion.banks.flood import counts_t
from bastion.db import Store
from bastion.signals.base import SignalType

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _entry(store: Store, rate: int | None) -> int:
    store.create_bank("b", expected_rate=rate)
    store.add_entries("b", [NewEntry(SignalType.MD5, "b" * 32)])
    (entry,) = store.iter_entries()
    return entry.id


def test_the_rate_is_per_sliding_hour_and_a_bank_without_one_is_never_held(store: Store) -> None:
    entry = _entry(store, 3)
    rules = store.bank_rules()
    at = [T0 + timedelta(minutes=m) for m in (0, 20, 40)]
    assert [store.note_matches({entry: "b"}, rules, now=t) for t in at] == [set()] * 3
    # 70 minutes on, the first match has left the window: 3 in the hour, not past the rate.
    assert store.note_matches({entry: "b"}, rules, now=T0 + timedelta(minutes=70)) == set()
    assert store.note_matches({entry: "b"}, rules, now=T0 + timedelta(minutes=71)) == {entry}
    assert store.get_quarantine(entry).matches == 4
    # Held stays held (no more counting), whatever the time.
    later = T0 + timedelta(days=2)
    assert store.note_matches({entry: "b"}, rules, now=later) == {entry}
    # Purging keeps only the last hour's counts.
    assert store.purge_match_counts(now=T0 + timedelta(minutes=75)) == 1
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(counts_t)).scalar_one() == 4
    store.update_bank("b", expected_rate=None)
    other = store.add_entries("b", [NewEntry(SignalType.MD5, "c" * 32)])
    assert other.added == 1
    second = max(e.id for e in store.iter_entries())
    rules = store.bank_rules()
    assert all(store.note_matches({second: "b"}, rules) == set() for _ in range(50))


def test_concurrent_scans_act_at_most_the_rate(store: Store) -> None:
    rate, threads, each = 10, 4, 8
    entry = _entry(store, rate)
    rules = store.bank_rules()
    free: list[int] = []
    lock = threading.Lock()

    def scan() -> None:
        for _ in range(each):
            held = store.note_matches({entry: "b"}, rules)
            if not held:
                with lock:
                    free.append(1)

    workers = [threading.Thread(target=scan) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(free) == rate  # exactly the rate acted; every later match was held
    assert store.get_quarantine(entry).state == "quarantined"
    actions = [e.action for e in store.iter_audit() if e.action == "bank.entry.quarantine"]
    assert len(actions) >= 1
