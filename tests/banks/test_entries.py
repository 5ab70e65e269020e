"""Adding, finding, disabling, enabling, removing and streaming entries."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest

from bastion.banks.model import NewEntry
from bastion.db import Store
from bastion.signals.base import SignalType
from bastion.store import BankNotFound, EntryNotFound, InvalidInput


def _pdq() -> str:
    return secrets.token_hex(32)


def test_add_entries_stores_every_field(store: Store, make_bank: Callable[..., str]) -> None:
    bank = make_bank()
    h = _pdq()
    report = store.add_entries(
        bank,
        [
            NewEntry(
                SignalType.PDQ,
                h.upper(),
                quality=77,
                source="NCMEC",
                list_name="ncmec-2024",
                external_id="n-1",
                labels=["csam", "B2"],
                metadata={"width": 640, "tags": ["x"]},
            )
        ],
    )
    assert (report.added, report.duplicates, report.error_count) == (1, 0, 0)
    [entry] = store.find_entries(bank)
    assert entry.value == h and entry.signal_type is SignalType.PDQ and entry.bank == bank
    assert (entry.quality, entry.source, entry.list_name, entry.external_id) == (
        77,
        "NCMEC",
        "ncmec-2024",
        "n-1",
    )
    assert entry.labels == ["csam", "B2"] and entry.metadata == {"width": 640, "tags": ["x"]}
    assert entry.enabled and entry.url_match is None
    assert entry.added_at.tzinfo is not None and entry.revision > 0
    assert store.get_entry(entry.id) == entry
    assert store.get_bank(bank).version == 2


def test_duplicates_are_skipped_not_errors(store: Store, make_bank: Callable[..., str]) -> None:
    bank = make_bank()
    other = make_bank("other")
    h = _pdq()
    first = store.add_entries(
        bank, [NewEntry(SignalType.PDQ, h), NewEntry(SignalType.PDQ, h.upper())]
    )
    assert (first.added, first.duplicates) == (1, 1)
    # Same value across batches and in another import: duplicate; same value in another bank or
    # under another signal type: a distinct entry.
    again = store.add_entries(
        bank,
        [NewEntry(SignalType.PDQ, h, external_id="different"), NewEntry(SignalType.SHA256, h)],
        batch_size=1,
    )
    assert (again.added, again.duplicates, again.error_count) == (1, 1, 0)
    assert store.add_entries(other, [NewEntry(SignalType.PDQ, h)]).added == 1
    assert len(store.find_entries(bank)) == 2
    assert store.find_entries(bank, value=h, signal_type="pdq")[0].external_id is None


def test_bad_entries_are_reported_and_the_rest_stored(
    store: Store, make_bank: Callable[..., str]
) -> None:
    bank = make_bank()
    good = [_pdq() for _ in range(5)]
    items = [
        NewEntry(SignalType.PDQ, good[0]),
        NewEntry(SignalType.PDQ, "xyz"),
        NewEntry(SignalType.PDQ, good[1], source="s" * 300),
        NewEntry(SignalType.MD5, "0" * 32, quality=3),
        *[NewEntry(SignalType.PDQ, v) for v in good[1:]],
    ]
    report = store.add_entries(bank, items, batch_size=2, max_errors=2)
    assert report.added == 5
    assert report.error_count == 3
    assert report.errors == [
        "entry 2: pdq value must be 64 hexadecimal characters, got 3 characters: 'xyz'",
        "entry 3: source is longer than 255 characters",
    ]
    assert sorted(e.value for e in store.find_entries(bank)) == sorted(good)


def test_add_entries_to_missing_bank(store: Store) -> None:
    with pytest.raises(BankNotFound):
        store.add_entries("nope", [NewEntry(SignalType.MD5, "0" * 32)])


def test_find_by_external_id_and_value(store: Store, make_bank: Callable[..., str]) -> None:
    bank = make_bank()
    h = _pdq()
    store.add_entries(
        bank,
        [
            NewEntry(SignalType.PDQ, h, external_id="item-9"),
            NewEntry(SignalType.MD5, "a" * 32, external_id="item-9"),
            NewEntry(SignalType.MD5, "b" * 32),
        ],
    )
    assert {e.signal_type for e in store.find_entries(bank, external_id="item-9")} == {
        SignalType.PDQ,
        SignalType.MD5,
    }
    assert [e.value for e in store.find_entries(bank, value="B" * 32)] == ["b" * 32]
    assert store.find_entries(bank, value="not a hash") == []
    assert store.find_entries(bank, external_id="item-9", value="a" * 32)[0].value == "a" * 32


def test_disable_enable_remove_by_id_external_id_and_value(
    store: Store, make_bank: Callable[..., str]
) -> None:
    bank = make_bank()
    h1, h2, h3 = _pdq(), _pdq(), _pdq()
    store.add_entries(
        bank,
        [
            NewEntry(SignalType.PDQ, h1, external_id="e1"),
            NewEntry(SignalType.PDQ, h2),
            NewEntry(SignalType.PDQ, h3),
        ],
    )
    ids = {e.value: e.id for e in store.find_entries(bank)}

    [by_ext] = store.disable_entry(bank, "e1", reason="false positive")
    assert by_ext.value == h1 and not by_ext.enabled and by_ext.disabled_reason == "false positive"
    [by_value] = store.disable_entry(bank, h2.upper())
    assert by_value.id == ids[h2] and not by_value.enabled
    [by_id] = store.disable_entry(bank, ids[h3])
    assert by_id.value == h3
    assert list(store.iter_entries()) == []
    assert len(list(store.iter_entries(enabled_only=False))) == 3

    [back] = store.enable_entry(bank, ids[h1])
    assert back.enabled and back.disabled_reason == ""
    assert [e.value for e in store.iter_entries()] == [h1]

    [gone] = store.remove_entry(bank, str(ids[h2]))  # numeric text falls back to the id
    assert gone.value == h2
    with pytest.raises(EntryNotFound):
        store.get_entry(ids[h2])
    with pytest.raises(EntryNotFound, match="has no entry with id, external id or value 'zzz'"):
        store.disable_entry(bank, "zzz")
    with pytest.raises(InvalidInput):
        store.remove_entry(bank, "")
    other = make_bank("other")
    with pytest.raises(EntryNotFound):  # an id from another bank is not this bank's entry
        store.remove_entry(other, ids[h1])


def test_iter_entries_filters_and_streams(store: Store, make_bank: Callable[..., str]) -> None:
    a = make_bank("a")
    b = make_bank("b")
    store.add_entries(a, [NewEntry(SignalType.PDQ, _pdq()) for _ in range(25)])
    store.add_entries(a, [NewEntry(SignalType.MD5, f"{i:032x}") for i in range(5)])
    store.add_entries(b, [NewEntry(SignalType.MD5, f"{i:032x}") for i in range(7)])
    got = list(store.iter_entries(batch=4))
    assert len(got) == 37
    assert [e.id for e in got] == sorted(e.id for e in got)
    assert len(list(store.iter_entries(banks=["A"], signal_types=["md5"]))) == 5
    assert len(list(store.iter_entries(signal_types=[SignalType.PDQ]))) == 25
    store.set_bank_enabled(a, False)
    assert {e.bank for e in store.iter_entries()} == {"b"}
    assert len(list(store.iter_entries(enabled_only=False))) == 37


def test_list_entries_pages_and_accepts_any_cursor(
    store: Store, make_bank: Callable[..., str]
) -> None:
    bank = make_bank()
    store.add_entries(bank, [NewEntry(SignalType.MD5, f"{i:032x}") for i in range(5)])
    first = store.list_entries(bank, limit=3)
    assert len(first) == 3
    rest = store.list_entries(bank, after=first[-1].id)
    assert [e.id for e in first + rest] == sorted(e.id for e in first + rest) and len(rest) == 2
    # A cursor past the largest possible id (an API caller can send any integer) is an empty
    # page, not a database error.
    assert store.list_entries(bank, after=2**63) == []
    assert store.list_entries(bank, after=10**30) == []
    with pytest.raises(BankNotFound):
        store.list_entries("no_such_bank", after=2**63)


def test_lookups_by_text_no_database_can_hold_find_nothing(
    store: Store, make_bank: Callable[..., str]
) -> None:
    """PostgreSQL refuses NUL in a query parameter, and a lone surrogate cannot be encoded:
    looking up such a name is "not found", not a database error."""
    bank = make_bank()
    store.add_entries(bank, [NewEntry(SignalType.MD5, "0" * 32, external_id="e1")])
    for bad in ("a\x00b", "\ud800"):
        with pytest.raises(BankNotFound):
            store.get_bank(bad)
        assert store.find_entries(bank, external_id=bad) == []
        with pytest.raises(EntryNotFound):
            store.disable_entry(bank, bad)
    with pytest.raises(InvalidInput, match="lone surrogates"):
        store.update_bank(bank, description="\ud800")
    with pytest.raises(InvalidInput, match="not valid Unicode"):
        store.create_bank("x_bank", labels=["\udfff"])
