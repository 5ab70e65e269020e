"""The global revision and changes_since: what a replica's index uses to catch up."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from bastion.banks.model import NewEntry
from bastion.signals.base import SignalType
from bastion.store import Store


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
