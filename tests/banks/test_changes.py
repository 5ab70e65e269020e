"""The global revision and changes_since: what a replica's index uses to catch up."""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable

import pytest

from bastion.banks.model import EntryChange, IndexEntry, NewEntry
from bastion.db import Store
from bastion.index.live import LiveIndex
from bastion.index.matcher import Matcher
from bastion.signals.base import Signal, SignalType
from bastion.store import InvalidInput


def _apply(index: dict[int, str], store: Store, since: int) -> int:
    changes, rev = store.changes_since(since)
    revisions = [c.revision for c in changes]
    assert revisions == sorted(revisions)
    for c in changes:
        if c.active:
            index[c.entry_id] = c.value
        else:
            index.pop(c.entry_id, None)
    return rev


def test_changes_since_tracks_every_kind_of_change(
    store: Store, make_bank: Callable[..., str]
) -> None:
    assert store.changes_since(0) == ([], 0)
    bank = make_bank()
    hashes = [secrets.token_hex(32) for _ in range(4)]
    r0 = store.current_revision()
    store.add_entries(bank, [NewEntry(SignalType.PDQ, h) for h in hashes], batch_size=2)
    r1 = store.current_revision()
    assert r1 > r0

    changes, rev = store.changes_since(r0)
    assert rev == r1
    assert sorted(c.value for c in changes) == sorted(hashes)
    assert all(c.active and c.entry is not None and c.bank == bank for c in changes)
    assert len({c.revision for c in changes}) == 2  # one revision per batch

    store.disable_entry(bank, hashes[0])
    store.remove_entry(bank, hashes[1])
    changes, rev = store.changes_since(r1)
    assert [(c.value, c.active, c.removed) for c in changes] == [
        (hashes[0], False, False),
        (hashes[1], False, True),
    ]
    assert rev == store.current_revision()
    assert store.changes_since(rev) == ([], rev)


def test_replica_index_converges(store: Store, make_bank: Callable[..., str]) -> None:
    """A replica that builds from iter_entries and then follows changes equals a fresh build."""
    bank = make_bank()
    other = make_bank("other")
    mark = store.current_revision()
    index = {e.id: e.value for e in store.iter_entries()}
    store.add_entries(bank, [NewEntry(SignalType.MD5, f"{i:032x}") for i in range(10)])
    store.add_entries(other, [NewEntry(SignalType.MD5, f"{i:032x}") for i in range(3)])
    mark = _apply(index, store, mark)
    store.disable_entry(bank, "0" * 32)
    store.set_bank_enabled(other, False)  # its entries must leave the index
    mark = _apply(index, store, mark)
    assert index == {e.id: e.value for e in store.iter_entries()}
    assert len(index) == 9
    store.set_bank_enabled(other, True)
    store.enable_entry(bank, "0" * 32)
    store.remove_entry(bank, f"{1:032x}")
    mark = _apply(index, store, mark)
    assert index == {e.id: e.value for e in store.iter_entries()}
    assert len(index) == 12
    store.update_bank(other, name="renamed")
    store.delete_bank(bank)
    changes, mark = store.changes_since(mark)
    assert {c.bank for c in changes if c.active} == {"renamed"}
    assert sum(c.removed for c in changes) == 9
    for c in changes:
        if c.active:
            index[c.entry_id] = c.value
        else:
            index.pop(c.entry_id, None)
    assert index == {e.id: e.value for e in store.iter_entries()}


def test_removed_ids_are_never_reused(store: Store, make_bank: Callable[..., str]) -> None:
    bank = make_bank()
    store.add_entries(bank, [NewEntry(SignalType.MD5, "1" * 32)])
    [old] = store.remove_entry(bank, "1" * 32)
    store.add_entries(bank, [NewEntry(SignalType.MD5, "1" * 32)])
    [new] = store.find_entries(bank)
    assert new.id > old.id
    changes, _ = store.changes_since(0)
    assert [(c.entry_id, c.removed) for c in changes] == [(old.id, True), (new.id, False)]


def _all_pages(
    store: Store, after: int | tuple[int, int], limit: int, upto: int | None = None
) -> list[EntryChange]:
    changes: list[EntryChange] = []
    cursor: int | tuple[int, int] | None = after
    while cursor is not None:
        page, cursor = store.changes_page(cursor, limit=limit, upto=upto)
        assert len(page) <= limit
        changes += page
    return changes


def _key(c: EntryChange) -> tuple[int, int]:
    return (c.revision, c.entry_id)


def test_changes_page_keyset_within_and_across_revisions(
    store: Store, make_bank: Callable[..., str]
) -> None:
    """One batch shares a revision: a page boundary inside it must neither skip nor repeat."""
    bank = make_bank()
    values = [f"{i:032x}" for i in range(23)]
    store.add_entries(bank, [NewEntry(SignalType.MD5, v) for v in values[:17]])  # one revision
    store.add_entries(bank, [NewEntry(SignalType.MD5, v) for v in values[17:]], batch_size=2)
    store.disable_entry(bank, values[3])
    store.remove_entry(bank, values[5])
    store.remove_entry(bank, values[18])
    full, rev = store.changes_since(0)
    assert [_key(c) for c in full] == sorted({_key(c) for c in full})  # ordered, no repeats
    assert len(full) == 23  # every entry once, at its latest state
    for limit in (1, 2, 3, 4, 16, 17, 23, 100):
        paged = _all_pages(store, 0, limit)
        assert paged == full, limit
    by_value = {c.value: c for c in full}
    assert by_value[values[3]].active is False and by_value[values[3]].entry is not None
    assert by_value[values[5]].removed and by_value[values[18]].removed
    assert by_value[values[0]].entry == IndexEntry(
        by_value[values[0]].entry_id, bank, SignalType.MD5, values[0], None, None, []
    )
    # A cursor inside a revision resumes right after that entry.
    first, cursor = store.changes_page(0, limit=5)
    assert cursor == _key(first[-1])
    rest, _ = store.changes_page(cursor, limit=1000)
    assert first + rest == full
    assert store.changes_page(rev) == ([], None)


def test_changes_page_stops_at_upto(store: Store, make_bank: Callable[..., str]) -> None:
    """Pages read with one ``upto`` never include a later change, so recording upto is safe."""
    bank = make_bank()
    store.add_entries(bank, [NewEntry(SignalType.MD5, f"{i:032x}") for i in range(6)])
    upto = store.current_revision()
    store.add_entries(bank, [NewEntry(SignalType.MD5, f"{i:032x}") for i in range(6, 9)])
    store.remove_entry(bank, f"{0:032x}")  # a tombstone after upto hides the entry's old row
    paged = _all_pages(store, 0, 2, upto=upto)
    assert {c.revision for c in paged} == {upto}
    assert len(paged) == 5  # entry 0 is gone at upto's row level: its tombstone is later
    assert store.changes_page(_key(paged[-1]), upto=upto) == ([], None)
    assert store.changes_page(upto - 1, limit=100, upto=upto - 1) == ([], None)
    with pytest.raises(InvalidInput, match="limit"):
        store.changes_page(0, limit=0)


def _snapshot(m: Matcher) -> dict[int, object]:
    return dict(m.refs)


def test_paged_live_index_equals_fresh_load(store: Store) -> None:
    """Random adds, disables, removes, bank disables, renames and deletes, applied in tiny pages
    (so boundaries fall inside revisions and among tombstones), leave the live index equal to a
    fresh full load every time."""
    rng = random.Random(1234)
    live = LiveIndex(store, page_size=3)
    live.load()
    banks = [store.create_bank(f"bank-{i}").name for i in range(3)]
    counter = 0
    for step in range(60):
        op = rng.choice(["add", "add", "disable", "enable", "remove", "bank", "rename", "delete"])
        bank = rng.choice(banks)
        values = [e.value for e in store.find_entries(bank)] if op != "add" else []
        if op == "add" or (not values and op in ("disable", "enable", "remove")):
            n = rng.randint(1, 9)
            news = []
            for _ in range(n):
                counter += 1
                stype = rng.choice([SignalType.MD5, SignalType.PDQ])
                value = f"{counter:032x}" if stype is SignalType.MD5 else secrets.token_hex(32)
                news.append(NewEntry(stype, value, labels=["x"] if counter % 3 else []))
            store.add_entries(bank, news, batch_size=rng.choice([2, 4, 100]))
        elif op == "disable":
            store.disable_entry(bank, rng.choice(values))
        elif op == "enable":
            store.enable_entry(bank, rng.choice(values))
        elif op == "remove":
            store.remove_entry(bank, rng.choice(values))
        elif op == "bank":
            store.set_bank_enabled(bank, not store.get_bank(bank).enabled)
        elif op == "rename":
            new = f"renamed-{step}"
            store.update_bank(bank, name=new)
            banks[banks.index(bank)] = new
        elif op == "delete":
            store.delete_bank(bank)
            banks[banks.index(bank)] = store.create_bank(f"fresh-{step}").name
        if rng.random() < 0.4:
            live.refresh()
            fresh = Matcher.from_entries(store.iter_index_entries())
            with live.read() as m:
                assert _snapshot(m) == _snapshot(fresh), step
                assert len(m) == len(fresh)
            assert live.revision == store.current_revision()
    live.refresh()
    fresh = Matcher.from_entries(store.iter_index_entries())
    with live.read() as m:
        assert _snapshot(m) == _snapshot(fresh)
        # Every enabled value is found by a lookup (PDQ at distance 0), under its current bank.
        for entry in store.iter_index_entries():
            hits = m.match([Signal(entry.signal_type, entry.value, quality=100)], threshold=0)
            assert [(h.entry_id, h.bank) for h in hits] == [(entry.id, entry.bank)]
