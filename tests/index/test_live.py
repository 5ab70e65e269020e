"""LiveIndex catch-up: a large change feed is applied in pages, lookups run between pages, and
one page's worth of changes (not the whole feed) is held in memory at a time."""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from bastion.banks.model import NewEntry
from bastion.db import Store
from bastion.index.live import LiveIndex
from bastion.signals.base import Signal, SignalType

N = 50_000


@pytest.fixture(scope="module")
def big_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """N MD5 entries in one bank; the first 20k share one revision (a page boundary falls inside
    it), then one more revision per 10k, then a few tombstones and disables."""
    path = tmp_path_factory.mktemp("live") / "bastion.db"
    store = Store.open(f"sqlite:///{path}")
    store.create_bank("big")
    entries = (NewEntry(SignalType.MD5, f"{i:032x}") for i in range(N + 10))
    store.add_entries("big", entries, batch_size=20_000)
    for i in range(5):
        store.remove_entry("big", f"{N + i:032x}")
        store.disable_entry("big", f"{N + 5 + i:032x}")
    try:
        yield store
    finally:
        store.close()


class CountingSource:
    """The store, counting ``changes_page`` calls; optionally pausing after the first page."""

    def __init__(self, store: Store, pause: threading.Event | None = None) -> None:
        self.store = store
        self.calls = 0
        self.pause = pause
        self.first_page = threading.Event()

    def current_revision(self) -> int:
        return self.store.current_revision()

    def iter_index_entries(self) -> Any:
        return self.store.iter_index_entries()

    def changes_page(self, after: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == 2:  # the first page has been applied; its lock released
            self.first_page.set()
            if self.pause is not None:
                assert self.pause.wait(timeout=30), "no lookup ran between pages"
        return self.store.changes_page(after, **kwargs)


@pytest.mark.slow  # over ~5 s: `make test` runs it, `make test-fast` does not
def test_refresh_applies_large_feed_in_pages(big_store: Store) -> None:
    source = CountingSource(big_store)
    live = LiveIndex(source, page_size=4_000)
    assert live.refresh() == N + 10
    # 50,010 changes (50,005 rows and 5 tombstones) in pages of 4,000: 13 pages, the last short.
    assert source.calls == 13
    assert live.size() == N
    assert live.revision == big_store.current_revision()
    with live.read() as m:
        assert m.match([Signal(SignalType.MD5, f"{N - 1:032x}")])
        assert not m.match([Signal(SignalType.MD5, f"{N:032x}")])  # removed
        assert not m.match([Signal(SignalType.MD5, f"{N + 5:032x}")])  # disabled
    assert live.refresh() == 0  # nothing new: one call, nothing applied twice
    assert source.calls == 14


def test_lookup_runs_between_pages(big_store: Store) -> None:
    go = threading.Event()
    source = CountingSource(big_store, pause=go)
    live = LiveIndex(source, page_size=10_000)
    seen: list[tuple[int, int]] = []

    def lookup() -> None:
        assert source.first_page.wait(timeout=30)
        with live.read() as m:  # blocks forever if refresh kept the lock across pages
            seen.append((len(m), live.revision))
        go.set()

    thread = threading.Thread(target=lookup)
    thread.start()
    applied = live.refresh()
    thread.join(timeout=30)
    assert seen == [(10_000, -1)]  # one page visible; revision not advanced until the end
    assert applied == N + 10
    assert live.revision == big_store.current_revision()


def _transient_peak(store: Store, page_size: int) -> int:
    """Memory a refresh held beyond what the finished index keeps."""
    live = LiveIndex(store, page_size=page_size)
    tracemalloc.start()
    try:
        live.refresh()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert live.size() == N
    return peak - current


@pytest.mark.slow  # over ~5 s: `make test` runs it, `make test-fast` does not
def test_refresh_memory_is_bounded_by_a_page(big_store: Store) -> None:
    whole = _transient_peak(big_store, N + 10)  # the whole feed as one page, as before paging
    paged = _transient_peak(big_store, 2_000)
    assert whole > 10_000_000  # 50k changes in memory at once: tens of MB
    assert paged < whole / 5, (paged, whole)
