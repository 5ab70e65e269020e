"""Large imports: memory bounded independently of the list's size, and a live index that takes
the new entries through the change feed without a rebuild. Speed is measured in
``benchmarks/bench_import.py``, not here."""

from __future__ import annotations

import random
import tracemalloc
from collections.abc import Callable

import pytest

from bastion.banks.model import NewEntry
from bastion.db import Store
from bastion.index.live import LiveIndex
from bastion.signals.base import Signal, SignalType

#: Minutes of data and peak-memory measurements: `make test` runs them, `make test-fast` does not.
pytestmark = pytest.mark.slow

#: Peak Python allocations of an import, whatever its size: one batch of parsed entries and
#: their rows (5,000 at a time) plus the driver's buffers take a few MB.
PEAK_BOUND = 16 * 2**20


class GeneratedList:
    """A python-threatexchange hash list of ``n`` random md5/pdq lines, made as it is read: the
    test never holds the list, so whatever the import holds shows in the peak."""

    def __init__(self, n: int, seed: int) -> None:
        self.remaining = n
        self.rng = random.Random(seed)

    def readline(self, limit: int = -1) -> bytes:
        if self.remaining <= 0:
            return b""
        self.remaining -= 1
        if self.remaining % 4:
            return b"pdq %064x\n" % self.rng.getrandbits(256)
        return b"md5 %032x\n" % self.rng.getrandbits(128)


def _peak_import(store: Store, bank: str, n: int, seed: int) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        report = store.import_file(bank, GeneratedList(n, seed), "pytx")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (report.added, report.error_count) == (n, 0)
    return peak


def test_import_peak_memory_does_not_grow_with_the_list(
    store: Store, make_bank: Callable[..., str]
) -> None:
    small = _peak_import(store, make_bank("small"), 50_000, seed=1)
    large = _peak_import(store, make_bank("large"), 200_000, seed=2)
    assert large < PEAK_BOUND, (small, large)
    # Four times the entries, about the same peak: nothing accumulates per entry.
    assert large < small * 1.5 + 2**20, (small, large)


def test_live_index_takes_an_import_without_a_rebuild(
    store: Store, make_bank: Callable[..., str]
) -> None:
    bank = make_bank()
    store.import_file(bank, GeneratedList(1_000, seed=3), "pytx")
    index = LiveIndex(store)
    index.load()
    with index.read() as before:
        assert len(before) == 1_000
    lines = GeneratedList(60_000, seed=4)
    probe = GeneratedList(60_000, seed=4).readline().split()[1].decode()  # the first pdq line
    report = store.import_file(bank, lines, "pytx", batch_size=5_000)
    assert report.added == 60_000 and report.batches == 12
    assert index.refresh() == 60_000  # applied from the change feed, no load()
    with index.read() as after:
        assert after is before  # the same matcher object, grown
        assert len(after) == 61_000
        hits = after.match([Signal(SignalType.PDQ, probe, quality=100)])
    (stored,) = store.find_entries(bank, value=probe)
    assert [h.entry_id for h in hits if h.distance == 0] == [stored.id]


@pytest.mark.parametrize("batch_size", [1, 7, 5_000])
def test_batches_keep_counting_duplicates_and_errors(
    store: Store, make_bank: Callable[..., str], batch_size: int
) -> None:
    """The bulk insert paths count exactly as before: duplicates within a batch, across batches
    and against stored entries, and per-line errors, for any batch size."""
    bank = make_bank()
    values = [f"{random.Random(9).getrandbits(256) + i:064x}" for i in range(20)]
    store.import_file(bank, _lines(values[:5]), "pytx")
    text = values[3:15] + values[3:6] + ["nothex"] + values[14:20]
    report = store.import_file(bank, _lines(text), "pytx", batch_size=batch_size)
    assert report.added == 15
    assert report.duplicates == 2 + 3 + 1
    assert report.error_count == 1 and report.errors[0].startswith("line 16:")
    stored = {e.value for e in store.iter_entries(banks=[bank])}
    assert stored == set(values)


def _lines(values: list[str]) -> GeneratedLines:
    return GeneratedLines(values)


class GeneratedLines:
    def __init__(self, values: list[str]) -> None:
        self.lines = iter(f"pdq {v}\n".encode() for v in values)

    def readline(self, limit: int = -1) -> bytes:
        return next(self.lines, b"")


def _forged(value: str, **fields: object) -> NewEntry:
    """An entry marked canonical without being validated: stands for whatever validation might
    miss, to reach the database's own checks."""
    entry = NewEntry(SignalType.PDQ, value, **fields)  # type: ignore[arg-type]
    object.__setattr__(entry, "canonical", True)
    return entry


def test_a_row_the_database_rejects_costs_only_that_row(
    store: Store, make_bank: Callable[..., str]
) -> None:
    bank = make_bank()
    values = [f"{i:064x}" for i in range(1, 5)]
    entries = [NewEntry(SignalType.PDQ, values[0]), _forged(values[1], source=None)]
    entries += [NewEntry(SignalType.PDQ, v) for v in values[2:]]
    if store.engine.dialect.name == "postgresql":  # SQLite does not enforce VARCHAR lengths
        entries.append(_forged(f"{9:064x}", list_name="x" * 300))  # fails inside COPY
    report = store.add_entries(bank, entries)
    assert report.added == 3, report
    assert report.error_count == len(entries) - 3
    assert all("database rejected the entry" in e for e in report.errors), report.errors
    assert {e.value for e in store.iter_entries(banks=[bank])} == {values[0], *values[2:]}
