"""A matcher kept current with its source of bank entries, for long-running processes.

A server replica loads every enabled entry once, then applies the store's change feed
(``changes_page``) on a timer and after its own writes, so an entry added or disabled through any
replica is matched by every replica within one poll interval, without rebuilding the index.
The source is any object with the three methods below: the index knows nothing of databases.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from bastion.index.matcher import EntryLike, Matcher

log = logging.getLogger("bastion.index")


class EntrySource(Protocol):
    def current_revision(self) -> int: ...
    def iter_index_entries(self) -> Iterable[EntryLike]: ...
    def changes_page(
        self, after: int | tuple[int, int], *, limit: int = ..., upto: int | None = ...
    ) -> tuple[list[Any], tuple[int, int] | None]: ...


class LiveIndex:
    """Thread-safe holder of a :class:`Matcher` and the store revision it reflects."""

    def __init__(self, source: EntrySource, *, page_size: int = 5_000) -> None:
        self._source = source
        # Changes are applied a page at a time, releasing the lookup lock between pages: a
        # 10M-line import or a bank rename must neither stall lookups nor sit whole in memory.
        self.page_size = page_size
        self._matcher = Matcher()
        # Lookups must not overlap an update of the PDQ index; one lock keeps that simple and
        # costs little: an update is microseconds, a lookup about a hundred.
        self._lock = threading.RLock()
        self._refresh_lock = threading.Lock()
        self.revision = -1
        self.loaded_at: float | None = None
        self.refreshed_at: float | None = None
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def loaded(self) -> bool:
        return self.loaded_at is not None

    def load(self) -> None:
        """Build the matcher from every enabled entry, then catch up with what changed meanwhile."""
        revision = self._source.current_revision()
        matcher = Matcher.from_entries(self._source.iter_index_entries())
        # Fold the load's batches into one segment per index: fewer probes on every lookup.
        matcher.pdq.compact()
        matcher.video_frames.compact()
        matcher.text.build()  # the keyword automaton, before the first text lookup needs it
        with self._lock:
            self._matcher = matcher
            self.revision = revision
        self.refresh()
        self.loaded_at = time.time()
        for entry_id, reason in matcher.rejected[:20]:
            log.warning("bank entry %s not indexed: %s", entry_id, reason)

    def refresh(self) -> int:
        """Apply changes made since the last refresh; returns how many were applied.

        Reads the store's revision once and pages up to it, taking the lookup lock per page, so
        lookups interleave with a large catch-up and may briefly see part of it (say, half of a
        bank's entries renamed). ``revision`` advances only once every page is applied: a failure
        midway makes the next refresh start over from the last complete one (re-applying a
        change is harmless).
        """
        with self._refresh_lock:
            upto = self._source.current_revision()
            cursor: int | tuple[int, int] | None = max(self.revision, 0)
            applied = 0
            while cursor is not None:
                changes, cursor = self._source.changes_page(cursor, limit=self.page_size, upto=upto)
                with self._lock:
                    self._apply(changes)
                applied += len(changes)
            with self._lock:
                self.revision = max(self.revision, upto)
            self.refreshed_at = time.time()
            self.last_error = None
            return applied

    def _apply(self, changes: Iterable[Any]) -> None:
        """Apply one page: removals, then the additions as one batch (PDQ hashes go into the
        index as an array, which is what lets a 10M-entry import catch up in minutes). A page
        names each entry at most once, so the order between the two does not matter."""
        added = []
        for change in changes:
            if change.active and change.entry is not None:
                added.append(change.entry)
            else:
                self._matcher.remove(change.entry_id)
        if added:
            rejected = len(self._matcher.rejected)
            self._matcher.add_many(added)
            for entry_id, reason in self._matcher.rejected[rejected:]:
                log.warning("bank entry %s not indexed: %s", entry_id, reason)

    @contextmanager
    def read(self) -> Iterator[Matcher]:
        with self._lock:
            yield self._matcher

    def is_current(self, max_lag: float) -> bool:
        """Loaded, and refreshed successfully within ``max_lag`` seconds."""
        return (
            self.loaded
            and self.refreshed_at is not None
            and time.time() - self.refreshed_at <= max_lag
        )

    def size(self) -> int:
        with self._lock:
            return len(self._matcher)

    def start(self, interval: float) -> None:
        """Poll the source in a daemon thread until :meth:`stop`."""
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._poll, args=(interval,), name="bastion-index-refresh", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _poll(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.refresh()
            except Exception as exc:  # keep polling: the database may come back
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("index refresh failed: %s", self.last_error)
