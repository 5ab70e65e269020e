"""Bank CRUD on both databases."""

from __future__ import annotations

import pytest

from bastion.banks.model import NewEntry
from bastion.db import Store
from bastion.signals.base import SignalType
from bastion.store import BankExists, BankNotFound, EntryNotFound, InvalidInput


def test_create_get_and_list(store: Store) -> None:
    bank = store.create_bank(
        "IWF-Demo",
        description="demo list",
        labels=["csam", "A1"],
        source="IWF (demo)",
        is_demo=True,
    )
    assert bank.name == "iwf-demo"
    assert (bank.description, bank.labels, bank.source) == (
        "demo list",
        ["csam", "A1"],
        "IWF (demo)",
    )
    assert bank.is_demo and bank.enabled and bank.version == 1
    assert bank.created_at.tzinfo is not None
    assert store.get_bank("IWF-DEMO") == bank
    store.create_bank("another")
    store.add_entries("another", [NewEntry(SignalType.MD5, f"{i:032x}") for i in range(3)])
    listed = {b.name: b.entry_count for b in store.list_banks()}
    assert listed == {"another": 3, "iwf-demo": 0}
    # The scan path's read: labels only, no entry counts.
    assert store.bank_labels() == {"another": [], "iwf-demo": ["csam", "A1"]}


def test_duplicate_and_invalid_names(store: Store) -> None:
    store.create_bank("ncmec")
    with pytest.raises(BankExists, match="bank 'ncmec' already exists"):
        store.create_bank("NCMEC")
    with pytest.raises(InvalidInput, match="invalid bank name"):
        store.create_bank("no spaces")
    with pytest.raises(InvalidInput, match="label"):
        store.create_bank("x", labels=["a;b"])
    with pytest.raises(BankNotFound, match="no bank named 'missing'"):
        store.get_bank("missing")


def test_update_bank_fields_and_rename(store: Store) -> None:
    store.create_bank("old")
    updated = store.update_bank("old", name="New", description="d", labels=["ncii"], source="s")
    assert (updated.name, updated.description, updated.labels, updated.source) == (
        "new",
        "d",
        ["ncii"],
        "s",
    )
    assert updated.version == 2
    with pytest.raises(BankNotFound):
        store.get_bank("old")
    store.create_bank("taken")
    with pytest.raises(BankExists):
        store.update_bank("new", name="taken")
    with pytest.raises(InvalidInput, match="cannot update bank field"):
        store.update_bank("new", version=9)
    with pytest.raises(InvalidInput, match="enabled must be true or false"):
        store.update_bank("new", enabled="no")
    assert store.set_bank_enabled("new", False).enabled is False
    assert store.get_bank("new").version == 3


def test_delete_bank_cascades_to_entries(store: Store) -> None:
    store.create_bank("doomed")
    store.create_bank("other")
    store.add_entries("doomed", [NewEntry(SignalType.MD5, "1" * 32)])
    store.add_entries("other", [NewEntry(SignalType.MD5, "2" * 32)])
    doomed_id = store.find_entries("doomed")[0].id
    store.delete_bank("doomed")
    with pytest.raises(BankNotFound):
        store.get_bank("doomed")
    with pytest.raises(EntryNotFound):
        store.get_entry(doomed_id)
    assert [e.value for e in store.iter_entries(enabled_only=False)] == ["2" * 32]
    with pytest.raises(BankNotFound):
        store.delete_bank("doomed")
